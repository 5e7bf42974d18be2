"""The Django example (examples/django) through Django's test client: every
endpoint, every refusal as a 4xx JSON error naming what was wrong, and the
environment configuration; and gunicorn with gunicorn.conf.py: the master
loads the model, the workers forked from it answer. Uses the real dermal
package and the demo model."""
import base64
import importlib
import io
import json
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
import zlib

import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
BUILD = os.environ.get("DERMAL_BUILD_DIR", os.path.join(ROOT, "build"))
LIBRARY = os.path.join(BUILD, "capi", "libdermal_c.so")
DEMO_MODEL = os.path.join(ROOT, "examples", "data", "demo-model.pt")
SAMPLES = os.path.join(ROOT, "examples", "data", "samples")

# Missing prerequisites fail the run (never skip).
for needed, remedy in [(LIBRARY, "build first: bash tools/setup.sh --build"),
                       (DEMO_MODEL, "the bundled demo model is missing from examples/data")]:
    if not os.path.exists(needed):
        pytest.fail(f"{needed} is missing; {remedy}", pytrace=False)
os.environ.setdefault("DERMAL_LIBRARY", LIBRARY)
os.environ["DJANGO_SETTINGS_MODULE"] = "dermal_site.settings"
sys.path[:0] = [os.path.join(ROOT, "capi", "python"), os.path.join(ROOT, "examples", "django")]

import django  # noqa: E402
from django.core.exceptions import ImproperlyConfigured  # noqa: E402
from django.test import Client, override_settings  # noqa: E402
from django.test.utils import setup_test_environment  # noqa: E402
from PIL import Image  # noqa: E402

django.setup()
setup_test_environment()

import dermal  # noqa: E402
from classifier import services  # noqa: E402
from dermal_site import settings as site_settings  # noqa: E402

LABELS = ["melanoma", "nevus", "vascular"]
BASE = {
    "model": DEMO_MODEL, "preload": True, "explain": True, "optimise": True, "scorecam": False, "threads": 1,
    "max_concurrent": 1, "queue_timeout_ms": 200, "tune_allocator": False, "release_memory_after_predict": True,
    "max_upload_bytes": 2 * 1024 * 1024,
    "max_pixels": 40_000_000, "image_types": ("jpeg", "png", "bmp"),
}


@pytest.fixture
def configure():
    """Applies BASE (plus changes) as settings.DERMAL and starts the site's model afresh."""
    overrides = []

    def apply(**changes):
        override = override_settings(DERMAL={**BASE, **changes})
        override.enable()
        overrides.append(override)
        services.reset()
        services.start()

    yield apply
    services.reset()
    for override in reversed(overrides):
        override.disable()


@pytest.fixture
def client(configure):
    configure()
    return Client()


def sample(name="melanoma_1.jpg"):
    with open(os.path.join(SAMPLES, name), "rb") as f:
        return f.read()


def encoded(fmt, size=(96, 72), color=(150, 90, 70)):
    out = io.BytesIO()
    Image.new("RGB", size, color).save(out, fmt)
    return out.getvalue()


def upload(data, name="photo.jpg"):
    f = io.BytesIO(data)
    f.name = name
    return f


def post(client, data, name="photo.jpg", **fields):
    return client.post("/api/predict", {"image": upload(data, name), **fields})


def assert_error(response, status, code, *words):
    """The response is `status` with JSON {"error": code, "message": ...} mentioning every word."""
    assert response.status_code == status, response.content
    assert response["Content-Type"] == "application/json"
    body = response.json()
    assert body["error"] == code, body
    for word in words:
        assert word.lower() in body["message"].lower(), body
    return body


def png_header_only(width, height):
    """A PNG whose header declares width x height, with one tiny IDAT (not enough pixels)."""
    def chunk(kind, payload):
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
            + chunk(b"IEND", b""))


# --- the page -----------------------------------------------------------------

def test_page_has_upload_form_notice_and_no_external_assets(client):
    response = client.get("/")
    assert response.status_code == 200
    html = response.content.decode()
    assert 'type="file"' in html and 'name="image"' in html
    assert "Not a diagnosis" in html and "not a diagnosis" in html
    assert "http://" not in html and "https://" not in html and "//cdn" not in html
    assert "default-src 'none'" in response["Content-Security-Policy"]


# --- predictions ----------------------------------------------------------------

def test_predict_sample_gives_top3_probabilities_and_overlay(client):
    photo = sample()
    response = post(client, photo)
    assert response.status_code == 200, response.content
    body = response.json()
    assert [s["label"] for s in body["top"]] == sorted(body["probabilities"], key=body["probabilities"].get,
                                                       reverse=True)
    assert len(body["top"]) == 3 and set(body["probabilities"]) == set(LABELS)
    assert sum(body["probabilities"].values()) == pytest.approx(1.0, abs=1e-4)
    for score in body["top"]:
        assert LABELS[score["index"]] == score["label"]
        assert score["probability"] == pytest.approx(body["probabilities"][score["label"]])
    explanation = body["explanation"]
    assert explanation["label"] == body["top"][0]["label"] and explanation["cam_method"] == "gradcam"
    assert explanation["flat"] is False and explanation["overlay_type"] == "image/jpeg"
    overlay = Image.open(io.BytesIO(base64.b64decode(explanation["overlay"])))
    assert overlay.format == "JPEG" and overlay.size == Image.open(io.BytesIO(photo)).size
    assert "not a diagnosis" in body["notice"]


def test_predict_matches_the_library_called_directly(client):
    photo = sample("vascular_1.jpg")
    body = post(client, photo).json()
    with dermal.Model(DEMO_MODEL) as model:
        direct = model.predict(photo)
    assert [s["label"] for s in body["top"]] == [s.label for s in direct.top]
    for label, probability in direct.probabilities.items():
        assert body["probabilities"][label] == pytest.approx(probability, abs=1e-6)
    assert base64.b64decode(body["explanation"]["overlay"]) == direct.explanations[0].overlay


@pytest.mark.parametrize("fmt", ["PNG", "BMP"])
def test_png_and_bmp_are_accepted_whatever_the_file_name(client, fmt):
    response = post(client, encoded(fmt), name="photo.txt")
    assert response.status_code == 200, response.content
    assert len(response.json()["top"]) == 3


def test_options_top_k_explain_off_cam_method_and_cam_class(client, configure):
    body = post(client, sample(), top_k="1").json()
    assert len(body["top"]) == 1
    body = post(client, sample(), explain="false").json()
    assert body["explanation"] is None and len(body["top"]) == 3
    body = post(client, sample(), cam_class="nevus").json()
    assert body["explanation"]["label"] == "nevus" and body["explanation"]["overlay"]
    body = post(client, sample(), cam_method="gradcam++").json()
    assert body["explanation"]["cam_method"] == "gradcam++" and body["explanation"]["overlay"]
    assert "faithfulness" not in body["explanation"]
    body = post(client, sample(), cam_method="kpcacam", faithfulness="true").json()
    figures = body["explanation"]["faithfulness"]
    assert body["explanation"]["cam_method"] == "kpcacam" and sorted(figures["road"]) == ["10", "20", "50", "80"]
    assert all(-1 <= v <= 1 for v in [figures["cam_mult_image_change"], *figures["road"].values()])
    assert_error(post(client, sample(), cam_method="scorecam"), 409, "scorecam_disabled", "DERMAL_SCORECAM=0")
    configure(scorecam=True)
    plain = post(client, sample(), cam_method="scorecam").json()["explanation"]
    smoothed = post(client, sample(), cam_method="scorecam", aug_smooth="true").json()["explanation"]
    assert plain["cam_method"] == smoothed["cam_method"] == "scorecam" and smoothed["overlay"]
    assert smoothed["overlay"] != plain["overlay"]  # aug_smooth reached the library


def test_bad_options_are_400(client):
    assert_error(post(client, sample(), top_k="many"), 400, "invalid_argument", "top_k")
    assert_error(post(client, sample(), top_k="0"), 400, "invalid_argument", "top_k")
    assert_error(post(client, sample(), explain="maybe"), 400, "invalid_argument", "explain")
    assert_error(post(client, sample(), faithfulness="maybe"), 400, "invalid_argument", "faithfulness")
    assert_error(post(client, sample(), aug_smooth="maybe"), 400, "invalid_argument", "aug_smooth")
    assert_error(post(client, sample(), cam_method="gradcam+++"), 400, "invalid_argument", "gradcam+++")
    assert_error(post(client, sample(), cam_class="freckle"), 400, "unknown_class", "freckle")


# --- refused uploads ---------------------------------------------------------------

def test_no_file_is_400(client):
    assert_error(client.post("/api/predict"), 400, "missing_image", "'image'")
    assert_error(client.post("/api/predict", {"photo": upload(sample())}), 400, "missing_image", "multipart")
    assert_error(client.post("/api/predict", data=b'{"image": 1}', content_type="application/json"),
                 400, "missing_image")


def test_malformed_multipart_is_400(client):
    response = client.post("/api/predict", data=b"--x\r\n", content_type="multipart/form-data")
    assert_error(response, 400, "malformed_request", "multipart")


def test_empty_file_is_400(client):
    assert_error(post(client, b""), 400, "empty_image", "empty")


@pytest.mark.parametrize("data, words", [
    (b"name,size\nmole,3\n", ["not an image", "content", "JPEG, PNG, BMP"]),
    (encoded("GIF"), ["GIF", "JPEG, PNG, BMP"]),
    (encoded("TIFF"), ["TIFF"]),
])
def test_not_an_accepted_image_is_415_whatever_the_name(client, data, words):
    assert_error(post(client, data, name="photo.jpg"), 415, "unsupported_image_type", *words)


def test_accepted_types_come_from_configuration(configure):
    configure(image_types=("jpeg",))
    client = Client()
    assert_error(post(client, encoded("PNG"), name="photo.jpg"), 415, "unsupported_image_type", "PNG", "JPEG")
    assert post(client, sample()).status_code == 200


def test_corrupt_images_are_400(client):
    photo = sample()
    assert_error(post(client, photo[:300]), 400, "invalid_image")
    assert_error(post(client, b"\xff\xd8\xff" + bytes(range(256)) * 8), 400, "invalid_image")
    png = encoded("PNG")
    assert_error(post(client, png[:40], name="photo.png"), 400, "invalid_image")


def test_file_over_the_upload_limit_is_413(configure):
    photo = sample()
    configure(max_upload_bytes=len(photo) - 1)
    client = Client()
    assert_error(post(client, photo), 413, "file_too_large", "limit")
    # far over: refused from Content-Length, before the body is parsed
    assert_error(post(client, photo + bytes(200_000)), 413, "file_too_large", "limit")


def test_oversized_dimensions_are_413(client):
    assert_error(post(client, png_header_only(20_000, 20_000), name="photo.png"), 413, "image_too_large")


def test_pixel_limit_comes_from_configuration(configure):
    configure(max_pixels=50 * 50)
    client = Client()
    assert_error(post(client, encoded("PNG", size=(60, 60))), 413, "image_too_large")
    assert post(client, encoded("PNG", size=(40, 40))).status_code == 200


@pytest.mark.parametrize("method, path, allow", [
    ("get", "/api/predict", "POST"),
    ("put", "/api/predict", "POST"),
    ("delete", "/api/predict", "POST"),
    ("post", "/health", "GET, HEAD"),
    ("post", "/memory", "GET, HEAD"),
    ("post", "/", "GET, HEAD"),
])
def test_wrong_method_is_405_with_allow(client, method, path, allow):
    response = getattr(client, method)(path)
    assert_error(response, 405, "method_not_allowed", method.upper())
    assert response["Allow"] == allow


def test_unknown_path_is_404_json(client):
    assert_error(client.get("/predict"), 404, "not_found", "/api/predict")


# --- explain switched off, queueing, model problems ---------------------------------------

def test_explain_off_gives_labels_only_or_409_when_asked(configure):
    configure(explain=False)
    client = Client()
    body = post(client, sample()).json()
    assert body["explanation"] is None and len(body["top"]) == 3
    assert_error(post(client, sample(), explain="true"), 409, "explain_disabled", "DERMAL_EXPLAIN")
    assert client.get("/health").json()["explain"] is False


def test_requests_that_wait_too_long_for_the_inference_thread_get_503(configure):
    configure(max_concurrent=1, queue_timeout_ms=0)
    photo, responses = sample(), []

    def request():
        for _ in range(10):
            responses.append(post(Client(), photo))

    threads = [threading.Thread(target=request) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    statuses = sorted({response.status_code for response in responses})
    assert len(responses) == 40 and statuses == [200, 503], statuses
    busy = next(response for response in responses if response.status_code == 503)
    assert_error(busy, 503, "busy", "1 inference thread(s) stayed busy for 0 ms")
    assert busy["Retry-After"]


def test_concurrent_requests_all_succeed_within_the_limit(configure):
    configure(max_concurrent=2, queue_timeout_ms=60_000)
    photo, statuses = sample(), []

    def request():
        statuses.append(post(Client(), photo).status_code)

    threads = [threading.Thread(target=request) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert statuses == [200] * 6


@pytest.mark.parametrize("preload", [True, False])
def test_a_missing_model_is_503_and_reported_by_health(configure, preload):
    if preload:
        with pytest.raises(dermal.DermalError):
            configure(model="/nonexistent/model.pt", preload=True)
    else:
        configure(model="/nonexistent/model.pt", preload=False)
    client = Client()
    assert_error(post(client, sample()), 503, "model_unavailable", "could not be")
    health = client.get("/health")
    assert health.status_code == 503 and health.json()["error"] == "model_unavailable"
    assert health.json()["model_loaded"] is False


def test_a_model_failing_its_numerics_probe_is_503_and_reported_by_health(configure):
    wrong = os.path.join(BUILD, "tests", "models", "probe_wrong_logits.pt")  # made by tools/make_model_fixtures.py
    configure(model=wrong, preload=False)
    client = Client()
    assert_error(post(client, sample()), 503, "model_unavailable", "probe", "ONEDNN_MAX_CPU_ISA")
    health = client.get("/health")
    assert health.status_code == 503 and "numerics_mismatch" in health.json()["message"]


# --- health and memory -----------------------------------------------------------------

def test_health_with_preload(client, agreed_probe_result):
    response = client.get("/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "model": "demo-model.pt", "model_loaded": True,
                               "probe_result": agreed_probe_result, "preload": True, "explain": True,
                               "version": dermal.library_version()}


def test_lazy_loading_happens_on_the_first_prediction_only(configure):
    configure(preload=False)
    client = Client()
    assert client.get("/health").json()["model_loaded"] is False
    assert client.get("/memory").json()["weight_bytes"] == 0
    assert client.get("/health").json()["model_loaded"] is False  # looking does not load
    assert post(client, sample()).status_code == 200
    assert client.get("/health").json()["model_loaded"] is True
    assert client.get("/memory").json()["weight_bytes"] > 0


def test_the_model_is_created_once_under_concurrent_first_use(configure):
    configure(preload=False)
    models, barrier = [], threading.Barrier(8)

    def first_use():
        barrier.wait()
        models.append(services.model())

    threads = [threading.Thread(target=first_use) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(models) == 8 and all(m is models[0] for m in models)


def test_memory_reports_rss_and_weights(client):
    body = client.get("/memory").json()
    assert set(body) == {"current_rss_bytes", "peak_rss_bytes", "weight_bytes", "model_loaded"}
    assert 0 < body["current_rss_bytes"] <= body["peak_rss_bytes"]
    assert body["model_loaded"] is True
    assert body["weight_bytes"] == services.model().weight_bytes > 0


# --- configuration from the environment -------------------------------------------------

def test_environment_values_are_parsed_and_bad_ones_named(monkeypatch):
    monkeypatch.setenv("DERMAL_PRELOAD", "off")
    monkeypatch.setenv("DERMAL_MAX_CONCURRENT", "3")
    monkeypatch.setenv("DERMAL_QUEUE_TIMEOUT_MS", "2500")
    monkeypatch.setenv("DERMAL_IMAGE_TYPES", "JPEG, png")
    assert site_settings._env_bool("DERMAL_PRELOAD", True) is False
    assert site_settings._env_number("DERMAL_MAX_CONCURRENT", 1, int, 1) == 3
    assert site_settings._env_number("DERMAL_QUEUE_TIMEOUT_MS", 30_000, int, 0) == 2500
    assert site_settings._env_image_types("DERMAL_IMAGE_TYPES") == ("jpeg", "png")
    monkeypatch.setenv("DERMAL_THREADS", "two")
    with pytest.raises(ImproperlyConfigured, match="DERMAL_THREADS"):
        site_settings._env_number("DERMAL_THREADS", 1, int, 1)
    monkeypatch.setenv("DERMAL_EXPLAIN", "sometimes")
    with pytest.raises(ImproperlyConfigured, match="DERMAL_EXPLAIN"):
        site_settings._env_bool("DERMAL_EXPLAIN", True)
    monkeypatch.setenv("DERMAL_IMAGE_TYPES", "jpeg,gif")
    with pytest.raises(ImproperlyConfigured, match="DERMAL_IMAGE_TYPES"):
        site_settings._env_image_types("DERMAL_IMAGE_TYPES")


def test_the_example_tunes_the_allocator_unless_told_not_to(monkeypatch):
    monkeypatch.delenv("DERMAL_TUNE_ALLOCATOR", raising=False)
    assert importlib.reload(site_settings).DERMAL["tune_allocator"] is True
    monkeypatch.setenv("DERMAL_TUNE_ALLOCATOR", "0")
    assert importlib.reload(site_settings).DERMAL["tune_allocator"] is False


def test_the_example_releases_memory_after_each_request_unless_told_not_to(monkeypatch):
    monkeypatch.delenv("DERMAL_RELEASE_MEMORY_AFTER_PREDICT", raising=False)
    assert importlib.reload(site_settings).DERMAL["release_memory_after_predict"] is True
    monkeypatch.setenv("DERMAL_RELEASE_MEMORY_AFTER_PREDICT", "0")
    assert importlib.reload(site_settings).DERMAL["release_memory_after_predict"] is False


# --- gunicorn: the master loads the model, the workers forked from it serve ----------------

WORKERS = 2


def _children(pid):
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return sorted(int(child) for child in f.read().split())


def _read(log):
    """The whole log. pread, not seek and read: gunicorn writes through the same file description
    (its access line can come after the client has its answer), and a seek would move where it writes."""
    return os.pread(log.fileno(), os.fstat(log.fileno()).st_size, 0).decode(errors="replace")


@pytest.fixture(scope="module")
def gunicorn_site():
    """gunicorn with the example's gunicorn.conf.py, WORKERS workers, on a free loopback port;
    yields (base URL, master pid, worker pids, log file) once every worker is up and /health says loaded."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    here = os.path.join(ROOT, "examples", "django")
    env = dict(os.environ, DERMAL_MODEL=DEMO_MODEL, DERMAL_PRELOAD="1", DERMAL_EXPLAIN="1",
               GUNICORN_WORKERS=str(WORKERS), GUNICORN_THREADS="2", GUNICORN_BIND=f"127.0.0.1:{port}",
               PYTHONPATH=os.pathsep.join([os.path.join(ROOT, "capi", "python"), here]))
    log = tempfile.TemporaryFile()
    server = subprocess.Popen([sys.executable, "-m", "gunicorn", "-c", os.path.join(here, "gunicorn.conf.py"),
                               "dermal_site.wsgi:application"], cwd=here, env=env, stdout=log,
                              stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert server.poll() is None, "gunicorn exited:\n" + _read(log)[-4000:]
            workers = _children(server.pid)
            try:
                with urllib.request.urlopen(base + "/health", timeout=2) as response:
                    if json.load(response)["model_loaded"] and len(workers) == WORKERS:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, "gunicorn did not start its workers:\n" + _read(log)[-4000:]
            time.sleep(0.2)
        yield base, server.pid, workers, log
    finally:
        server.terminate()
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        log.close()


def _post_to(base, photo):
    """POST /api/predict over loopback; the JSON answer."""
    boundary = uuid.uuid4().hex
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"photo.jpg\"\r\n"
            f"Content-Type: image/jpeg\r\n\r\n").encode() + photo + f"\r\n--{boundary}--\r\n".encode()
    request = urllib.request.Request(base + "/api/predict", data=body,
                                     headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    with urllib.request.urlopen(request, timeout=60) as response:
        assert response.status == 200
        return json.load(response)


def test_gunicorn_forks_the_configured_workers_after_the_master_loaded_the_model(gunicorn_site):
    base, master, workers, log = gunicorn_site
    assert len(workers) == WORKERS
    loaded_by = [int(pid) for pid in re.findall(r"dermal model \S+ opened by process (\d+)", _read(log))]
    assert loaded_by == [master], _read(log)[-4000:]


def test_every_gunicorn_worker_answers_as_one_process_does(gunicorn_site):
    """Each worker in turn is the only one running (the others stopped with SIGSTOP, so only it can
    accept the connection); its answer must equal the library's in this process, and no worker may
    load the model (the site logs every load with the process's pid)."""
    base, master, workers, log = gunicorn_site
    photo = sample("nevus_1.jpg")
    with dermal.Model(DEMO_MODEL) as model:
        direct = model.predict(photo)
    for worker in workers:
        others = [pid for pid in workers if pid != worker]
        for pid in others:
            os.kill(pid, signal.SIGSTOP)
        try:
            body = _post_to(base, photo)
        finally:
            for pid in others:
                os.kill(pid, signal.SIGCONT)
        assert [s["label"] for s in body["top"]] == [s.label for s in direct.top], worker
        for label, probability in direct.probabilities.items():
            assert body["probabilities"][label] == pytest.approx(probability, abs=1e-6), worker
        assert base64.b64decode(body["explanation"]["overlay"]) == direct.explanations[0].overlay, worker
    assert _children(master) == workers  # none died and was replaced
    loaded_by = [int(pid) for pid in re.findall(r"dermal model \S+ opened by process (\d+)", _read(log))]
    assert loaded_by == [master], _read(log)[-4000:]
