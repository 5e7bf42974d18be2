"""gunicorn settings for the dermal example on a 512 MB host.

    gunicorn -c examples/django/gunicorn.conf.py dermal_site.wsgi

Memory, measured with the reference EfficientNetV2-S (78 MB of weights) and
Grad-CAM on (see loadtest.py): the worker holds LibTorch, the weights and the
activations of DERMAL_MAX_CONCURRENT inferences: with dermal 0.2.0,
~360 MB after start and 370-395 MB while serving 2-3 MP photos, peak 395-400
MB (two load tests). There is room for exactly one worker; requests share it
through threads.
Every value below can be overridden by GUNICORN_* variables named alongside.
"""
import os

# Loopback by default; behind a platform router set GUNICORN_BIND=0.0.0.0:$PORT.
bind = os.environ.get("GUNICORN_BIND", "127.0.0.1:8000")

# One process: a second would load the weights and LibTorch a second time.
workers = 1
# Threads accept requests while an inference runs (health checks, uploads,
# queueing). The inferences themselves run on the model's own
# DERMAL_MAX_CONCURRENT (default 1) inference threads, so activation and
# per-thread LibTorch memory stay those of one inference however many
# request threads there are.
worker_class = "gthread"
threads = int(os.environ.get("GUNICORN_THREADS", "4"))

# The model is loaded in the worker, when wsgi.py is imported, not in the
# master: LibTorch's thread pools do not survive fork(), and a copy in the
# master would count against the 512 MB as well. So the application is not
# preloaded by gunicorn; DERMAL_PRELOAD=1 (the default) makes the worker load
# the model before it takes its first request.
preload_app = False

# Memory stays flat from request to request (the library hands freed heap
# back), so workers are not recycled: max_requests = 0 and no jitter.
max_requests = 0

# A worker silent for this long is killed and restarted; loading the model
# (under a second) and one inference (a few seconds on a slow shared CPU,
# plus waiting in the queue for DERMAL_QUEUE_TIMEOUT_MS) fit well inside it.
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "120"))
graceful_timeout = 30
keepalive = 5

# Upload limits are enforced by the application (DERMAL_MAX_UPLOAD_BYTES);
# these only bound request lines and headers.
limit_request_line = 8190
limit_request_fields = 100

# Heartbeat file in RAM, not on a possibly slow container disk.
worker_tmp_dir = "/dev/shm" if os.path.isdir("/dev/shm") else None

accesslog = os.environ.get("GUNICORN_ACCESSLOG", "-")
errorlog = "-"
loglevel = os.environ.get("GUNICORN_LOGLEVEL", "info")


def post_fork(server, worker):
    """Limits glibc to two malloc arenas in the worker, not one per thread
    (request threads and the model's inference threads): each arena keeps
    freed memory of its own, up to the trim threshold (32 MiB with
    DERMAL_TUNE_ALLOCATOR). Still worth it with the library's own inference
    threads: loadtest.py, two runs each, worker peak 395 and 400 MB with it,
    409 and 408 MB without."""
    import ctypes

    M_ARENA_MAX = -8
    ctypes.CDLL("libc.so.6").mallopt(M_ARENA_MAX, 2)
