#!/usr/bin/python3
"""Memory and reliability benchmark of the Django example under gunicorn (not a unit test).

    /usr/bin/python3 examples/django/loadtest.py [--requests 100] [--clients 4]

Starts one gunicorn worker (examples/django/gunicorn.conf.py) on 127.0.0.1
serving the reference EfficientNetV2-S export with Grad-CAM on (exporting it
into build/loadtest/ first if missing), sends one warm-up request and then
--requests POST /api/predict from --clients concurrent clients, each request
bounded by a timeout, while sampling the worker's VmRSS from
/proc/<pid>/status. Prints the worker's peak RSS (VmHWM), the failed requests
and the RSS after the run against the RSS after the first request; exits 1
if a target is missed. Photos: the bundled samples plus one 2048x1536
JPEG made from a sample (a 12 MP photo needs more: see README.md).
"""
import argparse
import concurrent.futures
import glob
import io
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
BUILD = os.environ.get("DERMAL_BUILD_DIR", os.path.join(ROOT, "build"))
MODEL = os.path.join(BUILD, "loadtest", "efficientnet_v2_s.pt")
EXPORT = [sys.executable, os.path.join(ROOT, "tools", "export_model.py"), "--arch", "efficientnet_v2_s",
          "--seed", "0", "--labels", "akiec,bcc,bkl,df,mel,nv,vasc", "--size", "300", "--out", MODEL]
MB = 1024 * 1024
PEAK_TARGET_MB, DRIFT_TARGET_MB = 450, 10
REQUEST_TIMEOUT = 120  # seconds for one request, queueing included
STARTUP_TIMEOUT = 180


def rss(pid, field="VmRSS"):
    """The field (kB in /proc) of the process, in bytes."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} missing for pid {pid}")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def photos():
    """(name, JPEG bytes) of the bundled samples and one 2048x1536 photo."""
    from PIL import Image

    paths = sorted(glob.glob(os.path.join(ROOT, "examples", "data", "samples", "*.jpg")))
    if not paths:
        sys.exit("loadtest: no samples in examples/data/samples")
    result = []
    for path in paths:
        with open(path, "rb") as f:
            result.append((os.path.basename(path), f.read()))
    big = io.BytesIO()
    Image.open(paths[0]).convert("RGB").resize((2048, 1536), Image.BILINEAR).save(big, "JPEG", quality=90)
    result.append(("photo-2048x1536.jpg", big.getvalue()))
    return result


def multipart(data, name):
    boundary = uuid.uuid4().hex
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"{name}\"\r\n"
            f"Content-Type: application/octet-stream\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def predict(base, photo):
    """(ok, seconds, detail) of one POST /api/predict."""
    name, data = photo
    body, content_type = multipart(data, name)
    request = urllib.request.Request(base + "/api/predict", data=body, headers={"Content-Type": content_type})
    started = time.monotonic()
    try:
        with urllib.request.urlopen(request, timeout=REQUEST_TIMEOUT) as response:
            answer = json.load(response)
        ok = response.status == 200 and len(answer["top"]) == 3 and bool(answer["explanation"] and answer["explanation"]["overlay"])
        return ok, time.monotonic() - started, "" if ok else f"{name}: incomplete answer"
    except urllib.error.HTTPError as error:
        return False, time.monotonic() - started, f"{name}: HTTP {error.code} {error.read()[:200]!r}"
    except (OSError, ValueError) as error:
        return False, time.monotonic() - started, f"{name}: {error}"


def worker_pid(master):
    """The pid of gunicorn's single worker (a child of the master)."""
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        with open(f"/proc/{master}/task/{master}/children") as f:
            children = f.read().split()
        if children:
            return int(children[0])
        time.sleep(0.1)
    raise RuntimeError("gunicorn started no worker")


def wait_healthy(base, server, log):
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        if server.poll() is not None:
            log.seek(0)
            sys.exit("loadtest: gunicorn exited:\n" + log.read().decode(errors="replace")[-3000:])
        try:
            with urllib.request.urlopen(base + "/health", timeout=2) as response:
                health = json.load(response)
                if health["model_loaded"]:
                    return health
        except OSError:
            pass
        time.sleep(0.2)
    sys.exit("loadtest: the server did not load the model in time")


class Sampler(threading.Thread):
    """Reads the worker's VmRSS every 20 ms until stopped; keeps the highest."""

    def __init__(self, pid):
        super().__init__(daemon=True)
        self.pid, self.highest, self.stopped = pid, 0, threading.Event()

    def run(self):
        while not self.stopped.is_set():
            self.highest = max(self.highest, rss(self.pid))
            self.stopped.wait(0.02)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=100)
    parser.add_argument("--clients", type=int, default=4)
    args = parser.parse_args()
    library = os.path.abspath(os.environ.get("DERMAL_LIBRARY", os.path.join(BUILD, "capi", "libdermal_c.so")))
    if not os.path.exists(library):
        sys.exit(f"loadtest: {library} is missing; build it first (bash tools/setup.sh --build)")
    if not os.path.exists(MODEL):
        print(f"exporting the reference EfficientNetV2-S to {MODEL} (about a minute) ...", flush=True)
        os.makedirs(os.path.dirname(MODEL), exist_ok=True)
        subprocess.run(EXPORT, check=True, timeout=900, stdout=subprocess.DEVNULL)
    images = photos()

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = dict(os.environ, DERMAL_LIBRARY=library, DERMAL_MODEL=MODEL, DERMAL_EXPLAIN="1",
               DERMAL_PRELOAD="1", GUNICORN_BIND=f"127.0.0.1:{port}", DJANGO_SETTINGS_MODULE="dermal_site.settings",
               PYTHONPATH=os.pathsep.join([os.path.join(ROOT, "capi", "python"), HERE]))
    log = tempfile.TemporaryFile()
    server = subprocess.Popen([sys.executable, "-m", "gunicorn", "-c", os.path.join(HERE, "gunicorn.conf.py"),
                               "dermal_site.wsgi:application"], cwd=HERE, env=env, stdout=log,
                              stderr=subprocess.STDOUT)
    try:
        health = wait_healthy(base, server, log)
        pid = worker_pid(server.pid)
        after_start = rss(pid)
        sampler = Sampler(pid)
        sampler.start()
        ok, first_seconds, detail = predict(base, images[-1])
        if not ok:
            sys.exit("loadtest: the first request failed: " + detail)
        after_first = rss(pid)

        started = time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(args.clients) as pool:
            results = list(pool.map(lambda i: predict(base, images[i % len(images)]), range(args.requests)))
        elapsed = time.monotonic() - started
        after_run = rss(pid)
        sampler.stopped.set()
        sampler.join()
        peak = rss(pid, "VmHWM")
        with urllib.request.urlopen(base + "/memory", timeout=10) as response:
            memory = json.load(response)
    finally:
        server.terminate()
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        log.close()

    failures = [detail for ok, _, detail in results if not ok]
    latencies = sorted(seconds for _, seconds, _ in results)
    drift = (after_run - after_first) / MB
    print(f"model: {os.path.relpath(MODEL, ROOT)} ({os.path.getsize(MODEL) / MB:.1f} MB file, "
          f"{memory['weight_bytes'] / MB:.1f} MB weights), Grad-CAM on, dermal {health['version']}")
    print(f"server: gunicorn, 1 worker (pid {pid}), gunicorn.conf.py defaults, 127.0.0.1:{port}")
    print(f"photos: {', '.join(name for name, _ in images)} (round robin)")
    print(f"first request ({images[-1][0]}): {first_seconds:.2f} s")
    print(f"{args.requests} requests from {args.clients} clients in {elapsed:.1f} s "
          f"({args.requests / elapsed:.2f}/s); latency p50 {latencies[len(latencies) // 2]:.2f} s, "
          f"p95 {latencies[int(len(latencies) * 0.95) - 1]:.2f} s, max {latencies[-1]:.2f} s")
    print(f"worker RSS after start {after_start / MB:.1f} MB, after the first request {after_first / MB:.1f} MB, "
          f"after the run {after_run / MB:.1f} MB, highest sampled {sampler.highest / MB:.1f} MB")
    verdicts = [
        (f"peak RSS of the worker (VmHWM): {peak / MB:.1f} MB (target <= {PEAK_TARGET_MB} MB)",
         peak <= PEAK_TARGET_MB * MB),
        (f"failed requests: {len(failures)} of {args.requests} (target 0)", not failures),
        (f"RSS after the run vs after the first request: {drift:+.1f} MB (target within {DRIFT_TARGET_MB} MB)",
         abs(drift) <= DRIFT_TARGET_MB),
    ]
    for text, met in verdicts:
        print(("PASS  " if met else "MISS  ") + text)
    for detail in failures[:5]:
        print("  failed: " + detail)
    return 0 if all(met for _, met in verdicts) else 1


if __name__ == "__main__":
    sys.exit(main())
