"""gunicorn settings for the dermal example on a 512 MB host.

    gunicorn -c examples/django/gunicorn.conf.py dermal_site.wsgi

The master loads the model (preload_app with DERMAL_PRELOAD=1) and then forks
GUNICORN_WORKERS workers, which share its weights and LibTorch copy-on-write:
a worker adds only what its own requests touch. Measured with loadtest.py
(reference EfficientNetV2-S, 78 MB of weights, Grad-CAM on, 2-3 MP photos),
total PSS of the master and its workers on a host of its own: 330-337 MB
after start whatever the number of workers, ~367 MB after 200 requests with
1 or 2 workers (what the first requests fault in is mostly shared), and a
peak of 375 MB with 1 worker, 417-420 MB with 2 (three runs) and 465 MB with
3, while every worker runs an inference. Two workers fit a 512 MB host; a
third leaves no room for larger photos.
Every value below can be overridden by GUNICORN_* variables named alongside.
"""
import os

# Loopback by default; behind a platform router set GUNICORN_BIND=0.0.0.0:$PORT.
bind = os.environ.get("GUNICORN_BIND", "127.0.0.1:8000")

# The master imports the application, and with it loads the model
# (dermal_site/wsgi.py calls services.start(); DERMAL_PRELOAD=1, the
# default), before forking the workers. dermal supports fork() after loading:
# each worker starts its own inference threads at its first request and
# needs nothing else. The workers never load the model themselves, and a
# worker restarted by the master is forked with the model already in place.
# With DERMAL_PRELOAD=0 nothing is loaded in the master and every worker
# loads a copy of its own at its first request.
preload_app = True

# Processes serving requests. Each runs one inference at a time
# (DERMAL_MAX_CONCURRENT=1) on DERMAL_THREADS (default 1) LibTorch threads,
# so on a 2-core host two workers keep both cores busy; on one core, set
# GUNICORN_WORKERS=1 (a second worker would only add its memory).
workers = int(os.environ.get("GUNICORN_WORKERS", "2"))
# Threads accept requests while an inference runs (health checks, uploads,
# queueing). The inferences themselves run on the model's own
# DERMAL_MAX_CONCURRENT (default 1) inference threads, so activation and
# per-thread LibTorch memory stay those of one inference per worker however
# many request threads there are.
worker_class = "gthread"
threads = int(os.environ.get("GUNICORN_THREADS", "4"))

# Memory stays flat from request to request (the library hands freed heap
# back; loadtest.py: +1.3 MB over 900 requests), so workers are not
# recycled: max_requests = 0 and no jitter.
max_requests = 0

# A worker silent for this long is killed and restarted; one inference (a few
# seconds on a slow shared CPU, plus waiting in the queue for
# DERMAL_QUEUE_TIMEOUT_MS) fits well inside it. The model loads in the master,
# outside this limit.
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
    """Limits glibc to one malloc arena in the worker, shared by its request
    threads and the model's inference thread: by default glibc gives threads
    arenas of their own, which keep memory after the requests. dermal itself
    needs nothing here (a worker starts its inference threads on its own).
    loadtest.py, 2 workers, 200 requests, total PSS on a host of its own
    after the run / peak: one arena 367 / 417-419 MB (two runs); two arenas
    412-416 / 421-427 MB (two runs); glibc's default 427 / 441 MB (one run)."""
    import ctypes

    M_ARENA_MAX = -8
    ctypes.CDLL("libc.so.6").mallopt(M_ARENA_MAX, 1)
