"""Settings of the dermal example site.

Every DERMAL_* value is read from the environment once, here, into the
DERMAL dict; a malformed value stops start-up with a message naming it.
"""
import os
import secrets
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent
REPO_DIR = BASE_DIR.parent.parent
DEMO_MODEL = REPO_DIR / "examples" / "data" / "demo-model.pt"
IMAGE_TYPES = ("jpeg", "png", "bmp")


def _env(name, default):
    value = os.environ.get(name, "").strip()
    return value if value else default


def _env_bool(name, default):
    value = _env(name, None)
    if value is None:
        return default
    if value.lower() in ("1", "true", "yes", "on"):
        return True
    if value.lower() in ("0", "false", "no", "off"):
        return False
    raise ImproperlyConfigured(f"{name}={value!r}: expected 1/0, true/false, yes/no or on/off")


def _env_number(name, default, kind, minimum):
    value = _env(name, None)
    if value is None:
        return default
    try:
        number = kind(value)
    except ValueError:
        number = None
    if number is None or number < minimum:
        raise ImproperlyConfigured(f"{name}={value!r}: expected a {kind.__name__} >= {minimum}")
    return number


def _env_image_types(name):
    value = _env(name, ",".join(IMAGE_TYPES))
    types = tuple(t.strip().lower() for t in value.split(",") if t.strip())
    unknown = [t for t in types if t not in IMAGE_TYPES]
    if unknown or not types:
        raise ImproperlyConfigured(f"{name}={value!r}: expected a comma-separated subset of {','.join(IMAGE_TYPES)}")
    return types


DERMAL = {
    "model": _env("DERMAL_MODEL", str(DEMO_MODEL)),
    "preload": _env_bool("DERMAL_PRELOAD", True),
    "explain": _env_bool("DERMAL_EXPLAIN", True),
    # 0: frozen graphs only (slower); /health's probe_result says whether
    # the optimised ones were refused on this machine anyway.
    "optimise": _env_bool("DERMAL_OPTIMISE", True),
    # Off: Score-CAM costs one forward per CAM-layer channel, minutes and
    # nearly all of a 512 MB worker for one request on a real network
    # (benchmarks/results/cam-methods.md). On only where the model is small.
    "scorecam": _env_bool("DERMAL_SCORECAM", False),
    "threads": _env_number("DERMAL_THREADS", 1, int, 1),
    "max_concurrent": _env_number("DERMAL_MAX_CONCURRENT", 1, int, 1),
    "queue_timeout_ms": _env_number("DERMAL_QUEUE_TIMEOUT_MS", 30_000, int, 0),
    # On in this example, deliberately (the library's default is off): it
    # sets glibc's malloc thresholds for the whole worker process, not only
    # for dermal, so that freed copies of the weights go back to the system
    # while the model loads, when a worker peaks (reference model: 337 ->
    # 320 MB). This worker exists to serve the model on a 512 MB host, so
    # that trade is the site's to make; a site running other memory-hungry
    # work in the same process may prefer DERMAL_TUNE_ALLOCATOR=0.
    "tune_allocator": _env_bool("DERMAL_TUNE_ALLOCATOR", True),
    # The library's default: after each request the worker's freed heap goes
    # back to the system. 0 keeps it for the next request (faster where page
    # faults are slow, ~14 MB more per idle worker; see the README).
    "release_memory_after_predict": _env_bool("DERMAL_RELEASE_MEMORY_AFTER_PREDICT", True),
    "max_upload_bytes": _env_number("DERMAL_MAX_UPLOAD_BYTES", 10 * 1024 * 1024, int, 1),
    "max_pixels": _env_number("DERMAL_MAX_PIXELS", 40_000_000, int, 1),
    "image_types": _env_image_types("DERMAL_IMAGE_TYPES"),
}

# Nothing is signed or stored, so a per-process key is enough unless one is given.
SECRET_KEY = _env("DJANGO_SECRET_KEY", secrets.token_urlsafe(48))
DEBUG = _env_bool("DJANGO_DEBUG", False)
ALLOWED_HOSTS = [h.strip() for h in _env("DJANGO_ALLOWED_HOSTS", "127.0.0.1,localhost").split(",") if h.strip()]

INSTALLED_APPS = ["classifier"]
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]
ROOT_URLCONF = "dermal_site.urls"
WSGI_APPLICATION = "dermal_site.wsgi.application"
TEMPLATES = [{
    "BACKEND": "django.template.backends.django.DjangoTemplates",
    "APP_DIRS": True,
    "OPTIONS": {},
}]
DATABASES = {}
USE_TZ = True

# Uploads stay in memory (never a temporary file); the views refuse bodies
# over DERMAL_MAX_UPLOAD_BYTES before reading them.
FILE_UPLOAD_MAX_MEMORY_SIZE = DERMAL["max_upload_bytes"] + 64 * 1024

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": "WARNING"},
    "loggers": {"classifier": {"handlers": ["console"], "level": "INFO", "propagate": False}},
}
