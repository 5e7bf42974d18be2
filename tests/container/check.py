#!/usr/bin/python3
"""The container test: the dermal image under an enforced memory limit (run by tests/container/run.sh).

    /usr/bin/python3 tests/container/check.py --image dermal:test --model build/loadtest/efficientnet_v2_s.pt
        [--requests 300] [--clients 4] [--limits 512 448 384 320 256] [--skip-search]

With the image built and the reference EfficientNetV2-S exported on the host,
runs containers of the image with `docker run` and checks, printing one
PASS/FAIL line per check and a closing `N passed, N failed`:

- the image: a non-root user, no compiler, no -dev package, no apt lists; its size;
- settings: the bundled demo model when DERMAL_MODEL is not set, PORT,
  DERMAL_EXPLAIN, DERMAL_MAX_PIXELS and GUNICORN_WORKERS taken from the environment;
- load at 512 MB (--memory 512m --memory-swap 512m --cpus 2), 1 then 2
  gunicorn workers, the model mounted read-only and named in DERMAL_MODEL:
  --requests POST /api/predict with Grad-CAM from --clients concurrent
  clients over loopback, cycling through the bundled samples (640x480), a
  2048x1536 and a 4000x3000 photo and hostile uploads (the bad inputs of
  tests/fixtures, an 11 MB file, a request without the image). Every photo
  must get a 200 with an overlay, every hostile upload a 4xx, nothing a 5xx
  or a broken connection; the container must never see an OOM kill (the
  cgroup's oom_kill count and Docker's OOMKilled). Prints the cgroup's peak
  (memory.max_usage_in_bytes, or memory.peak under cgroup v2: page cache
  included), the highest sampled anonymous memory, requests/s and p50/p95
  of the photo requests;
- the smallest of --limits the same load survives, for 1 and 2 workers, by
  bisection (a limit below one that failed is not run, nor one above one that
  survived), printed as a table;
- a worker killed (SIGKILL) in the middle of a 4000x3000 request: gunicorn
  starts another, forked with the model in place, and the next requests succeed;
- --cpus 2, then --cpus 0.1 (Render's free share), 1 worker: time from
  `docker run` to a /health that says the model is loaded, the first
  request's latency and the steady latency of each kind of photo, with no
  worker timed out.

Docker must be running; run.sh starts it, makes the base image and builds
the image. The figures depend on the machine: print them, don't compare
them to constants (the limits are the test's subject).
"""
import argparse
import concurrent.futures
import io
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "examples", "django"))
import loadtest  # noqa: E402  (the Django example's load generator: its photos and multipart bodies)

MB = 1024 * 1024
MODEL_IN_CONTAINER = "/models/reference.pt"
REQUEST_TIMEOUT = 300      # seconds for one request (the --cpus 0.1 run included)
STARTUP_TIMEOUT = 600      # seconds from `docker run` to a loaded model, at 0.1 CPU included
SAMPLE_SECONDS = 0.2       # cgroup memory sampling period
LOADED = re.compile(r"dermal model .* opened by process (\d+)")

results = []  # (passed, text)


def check(passed, text):
    """Records and prints one verdict."""
    results.append((bool(passed), text))
    print(("PASS  " if passed else "FAIL  ") + text, flush=True)
    return passed


def docker(*args, check=True, timeout=120):
    """stdout of one docker command; raises with its stderr on failure when check."""
    done = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)
    if check and done.returncode != 0:
        raise RuntimeError(f"docker {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout.strip()


# ---------------------------------------------------------------- uploads

def hostile_uploads():
    """(name, multipart body, content type) of uploads the site must refuse with a 4xx: every bad
    input of tests/fixtures/bad_inputs that is not a valid image, an 11 MB file (over
    DERMAL_MAX_UPLOAD_BYTES) and a form without the image field."""
    directory = os.path.join(ROOT, "tests", "fixtures", "bad_inputs")
    uploads = []
    with open(os.path.join(directory, "expected.txt")) as f:
        for line in f:
            name, expected = line.split()[:2]
            if expected != "ok":
                with open(os.path.join(directory, name), "rb") as image:
                    uploads.append((name, *loadtest.multipart(image.read(), name)))
    uploads.append(("11MB.jpg", *loadtest.multipart(b"\xff\xd8\xff" + os.urandom(11 * MB), "11MB.jpg")))
    boundary = uuid.uuid4().hex
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"top_k\"\r\n\r\n3\r\n"
            f"--{boundary}--\r\n").encode()
    uploads.append(("no image field", body, f"multipart/form-data; boundary={boundary}"))
    return uploads


def photo_uploads():
    """(name, multipart body, content type) of the photos: the bundled samples, a 2048x1536 and a
    4000x3000 photo made from a sample (loadtest.photos)."""
    from PIL import Image

    photos = loadtest.photos()
    large = io.BytesIO()
    Image.open(io.BytesIO(photos[0][1])).resize((4000, 3000), Image.BILINEAR).save(large, "JPEG", quality=90)
    photos.append(("photo-4000x3000.jpg", large.getvalue()))
    return [(name, *loadtest.multipart(data, name)) for name, data in photos]


def mix(photos, hostile, count):
    """count uploads, (kind, upload): rounds of every photo then two hostile uploads, taking the
    hostile ones in turn."""
    uploads, h = [], 0
    while len(uploads) < count:
        for photo in photos:
            uploads.append(("photo", photo))
        for _ in range(2):
            uploads.append(("hostile", hostile[h % len(hostile)]))
            h += 1
    return uploads[:count]


def post(base, upload, timeout=REQUEST_TIMEOUT):
    """(HTTP status or None, seconds, answer or error text) of one POST /api/predict with Grad-CAM."""
    name, body, content_type = upload
    request = urllib.request.Request(base + "/api/predict", data=body, headers={"Content-Type": content_type})
    started = time.monotonic()
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, time.monotonic() - started, json.load(response)
    except urllib.error.HTTPError as error:
        try:
            answer = json.load(error)
        except ValueError:
            answer = None
        return error.code, time.monotonic() - started, answer
    except (OSError, ValueError) as error:
        return None, time.monotonic() - started, f"{type(error).__name__}: {error}"


OVERSIZED = "11MB.jpg"
CLOSED_WHILE_SENDING = ("Broken pipe", "Connection reset")


def judge(kind, upload, status, answer):
    """'' when the answer is what an upload of this kind must get, else what was wrong. The
    oversized upload is refused from its Content-Length before its body is read: the server answers
    413 and closes, so a client still sending may see the connection closed instead of the 413;
    both count as refused (closed_early tells them apart)."""
    name = upload[0]
    if status is None and name == OVERSIZED and any(text in str(answer) for text in CLOSED_WHILE_SENDING):
        return ""
    if status is None:
        return f"{name}: no answer ({answer})"
    if kind == "photo":
        if status == 200 and answer.get("explanation") and answer["explanation"].get("overlay"):
            return ""
        return f"{name}: HTTP {status} {str(answer)[:200]}"
    if 400 <= status < 500 and isinstance(answer, dict) and answer.get("error"):
        return ""
    return f"{name} (hostile): HTTP {status} {str(answer)[:200]}"


# ---------------------------------------------------------------- containers

class Container:
    """One `docker run -d` of the image, published on a loopback port; removed by close()."""

    def __init__(self, image, memory_mb=512, cpus=2.0, env=None, model=None, port=8000):
        self.name = f"dermal-test-{uuid.uuid4().hex[:8]}"
        args = ["run", "-d", "--name", self.name, "--memory", f"{memory_mb}m", "--memory-swap", f"{memory_mb}m",
                "--cpus", str(cpus), "--health-interval", "2s", "-p", f"127.0.0.1::{port}"]
        for key, value in (env or {}).items():
            args += ["-e", f"{key}={value}"]
        if model:
            args += ["-v", f"{os.path.abspath(model)}:{MODEL_IN_CONTAINER}:ro", "-e", f"DERMAL_MODEL={MODEL_IN_CONTAINER}"]
        self.started = time.monotonic()
        self.id = docker(*args, image)
        self.base = "http://" + docker("port", self.name, f"{port}/tcp").splitlines()[0]
        self.cgroup = cgroup_directory(self.id)

    def state(self):
        return json.loads(docker("inspect", "-f", "{{json .State}}", self.name))

    def logs(self):
        done = subprocess.run(["docker", "logs", self.name], capture_output=True, text=True, timeout=60)
        return done.stdout + done.stderr

    def wait_loaded(self, timeout=STARTUP_TIMEOUT):
        """Seconds from `docker run` to a /health answer saying the model is loaded."""
        deadline = self.started + timeout
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(self.base + "/health", timeout=5) as response:
                    health = json.load(response)
                if health.get("model_loaded"):
                    return time.monotonic() - self.started, health
            except (OSError, ValueError):
                pass
            state = self.state()
            if not state["Running"]:
                raise RuntimeError(f"the container exited ({state}):\n{self.logs()[-3000:]}")
            time.sleep(0.1)
        raise RuntimeError(f"no loaded model within {timeout} s:\n{self.logs()[-3000:]}")

    def wait_healthy(self, timeout=60):
        """Whether Docker's HEALTHCHECK reports healthy within timeout seconds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            health = self.state().get("Health") or {}
            if health.get("Status") == "healthy":
                return True
            time.sleep(0.5)
        return False

    def processes(self):
        """(host pid, parent pid, command) of the container's processes."""
        rows = docker("top", self.name, "-o", "pid,ppid,args").splitlines()[1:]
        return [(int(r.split(None, 2)[0]), int(r.split(None, 2)[1]), r.split(None, 2)[2]) for r in rows]

    def workers(self):
        """Host pids of the gunicorn workers (children of the master, which is the container's first process)."""
        procs = self.processes()
        pids = {pid for pid, _, _ in procs}
        master = [pid for pid, ppid, args in procs if ppid not in pids and "gunicorn" in args]
        return sorted(pid for pid, ppid, args in procs if master and ppid == master[0] and "gunicorn" in args)

    def memory(self):
        """(peak bytes, oom kills) of the container's cgroup so far."""
        return read_cgroup(self.cgroup)

    def close(self):
        docker("rm", "-f", self.name, check=False)


def cgroup_directory(container_id):
    """The container's memory cgroup directory (cgroup v1 or v2, cgroupfs or systemd driver)."""
    candidates = [f"/sys/fs/cgroup/memory/docker/{container_id}",
                  f"/sys/fs/cgroup/memory/system.slice/docker-{container_id}.scope",
                  f"/sys/fs/cgroup/system.slice/docker-{container_id}.scope",
                  f"/sys/fs/cgroup/docker/{container_id}"]
    for directory in candidates:
        if os.path.isdir(directory):
            return directory
    raise RuntimeError(f"no memory cgroup found for container {container_id} (tried {candidates})")


def read_cgroup(directory):
    """(peak bytes, OOM kills, anonymous bytes now) of a memory cgroup, v1 or v2."""
    def read(name):
        with open(os.path.join(directory, name)) as f:
            return f.read()

    if os.path.exists(os.path.join(directory, "memory.max_usage_in_bytes")):   # v1
        peak = int(read("memory.max_usage_in_bytes"))
        events, stat, anon_key = read("memory.oom_control"), read("memory.stat"), "total_rss"
    else:                                                                       # v2
        peak = int(read("memory.peak"))
        events, stat, anon_key = read("memory.events"), read("memory.stat"), "anon"
    kills = int(re.search(r"^oom_kill (\d+)", events, re.M).group(1))
    anon = int(re.search(rf"^{anon_key} (\d+)", stat, re.M).group(1))
    return peak, kills, anon


class Sampler(threading.Thread):
    """Samples the cgroup every SAMPLE_SECONDS until stopped: the highest anonymous memory, and
    whether an OOM kill happened (then `killed` is set)."""

    def __init__(self, container):
        super().__init__(daemon=True)
        self.container, self.highest_anon, self.stopped, self.killed = container, 0, threading.Event(), threading.Event()

    def run(self):
        while not self.stopped.is_set():
            try:
                _, kills, anon = self.container.memory()
            except OSError:      # the cgroup went with the container
                self.killed.set()
                return
            self.highest_anon = max(self.highest_anon, anon)
            if kills:
                self.killed.set()
            self.stopped.wait(SAMPLE_SECONDS)


def load(container, uploads, clients, stop_on_failure=False):
    """Sends the uploads from `clients` threads; returns ([(kind, status, seconds, problem)], seconds,
    highest anonymous bytes). With stop_on_failure, no request is started after the first
    problem or OOM kill."""
    sampler = Sampler(container)
    sampler.start()
    failed = threading.Event()
    queue = iter(enumerate(uploads))
    lock = threading.Lock()
    answers = []

    def client():
        while True:
            if stop_on_failure and (failed.is_set() or sampler.killed.is_set()):
                return
            with lock:
                item = next(queue, None)
            if item is None:
                return
            _, (kind, upload) = item
            status, seconds, answer = post(container.base, upload)
            problem = judge(kind, upload, status, answer)
            if problem:
                failed.set()
            with lock:
                answers.append((kind, status, seconds, problem))

    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        for future in [pool.submit(client) for _ in range(clients)]:
            future.result()
    elapsed = time.monotonic() - started
    sampler.stopped.set()
    sampler.join()
    return answers, elapsed, sampler.highest_anon


def run_load(image, model, workers, memory_mb, uploads, clients, stop_on_failure=False):
    """One container under the limit serving the uploads: a dict of its figures."""
    container = Container(image, memory_mb=memory_mb, cpus=2,
                          env={"GUNICORN_WORKERS": workers}, model=model)
    try:
        try:
            startup, health = container.wait_loaded()
        except RuntimeError as error:  # e.g. OOM-killed while loading under a small limit
            state = container.state()
            return {"workers": workers, "memory_mb": memory_mb, "startup": None, "answers": [], "elapsed": 0.0,
                    "sent": 0, "problems": [f"did not start: {str(error)[:300]}"], "photos_ok": 0, "hostile_refused": 0,
                    "closed_early": 0,
                    "server_errors": 0, "peak": None, "oom_kills": None, "oom_killed": state.get("OOMKilled"),
                    "running": state["Running"], "highest_anon": 0, "rate": 0.0, "p50": None, "p95": None,
                    "healthy": False}
        answers, elapsed, highest_anon = load(container, uploads, clients, stop_on_failure)
        time.sleep(1)  # an OOM kill at the last request shows in the counters
        state = container.state()
        try:
            peak, kills, _ = container.memory()
        except OSError:
            peak, kills = None, None
        photo_seconds = sorted(s for kind, status, s, _ in answers if kind == "photo")
        return {
            "workers": workers, "memory_mb": memory_mb, "startup": startup, "health": health,
            "answers": answers, "elapsed": elapsed, "sent": len(answers),
            "problems": [p for *_, p in answers if p],
            "photos_ok": sum(1 for kind, _, _, p in answers if kind == "photo" and not p),
            "hostile_refused": sum(1 for kind, _, _, p in answers if kind == "hostile" and not p),
            "closed_early": sum(1 for kind, status, _, _ in answers if kind == "hostile" and status is None),
            "server_errors": sum(1 for _, status, _, _ in answers if status is not None and status >= 500),
            "peak": peak, "oom_kills": kills, "oom_killed": state.get("OOMKilled"), "running": state["Running"],
            "highest_anon": highest_anon,
            "rate": len(answers) / elapsed if elapsed else 0.0,
            "p50": loadtest.percentile(photo_seconds, 0.50) if photo_seconds else None,
            "p95": loadtest.percentile(photo_seconds, 0.95) if photo_seconds else None,
            "healthy": container.wait_healthy(timeout=30) if state["Running"] else False,
        }
    finally:
        container.close()


def survived(run):
    return (not run["problems"] and run["sent"] > 0 and not run["oom_kills"] and not run["oom_killed"]
            and run["running"])


def mb(value):
    return "n/a" if value is None else f"{value / MB:.0f} MB"


def describe(run):
    p50 = "n/a" if run["p50"] is None else f"{run['p50']:.2f} s"
    p95 = "n/a" if run["p95"] is None else f"{run['p95']:.2f} s"
    return (f"{run['workers']} worker(s), --memory {run['memory_mb']}m: {run['sent']} requests in "
            f"{run['elapsed']:.1f} s ({run['rate']:.2f}/s), {run['photos_ok']} photos answered with Grad-CAM, "
            f"{run['hostile_refused']} hostile refused with 4xx ({run['closed_early']} of them the {OVERSIZED} "
            f"upload seeing the connection closed while sending, after the early 413), {len(run['problems'])} failed, "
            f"{run['server_errors']} server errors (5xx), OOM kills {run['oom_kills']}, "
            f"OOMKilled {run['oom_killed']}; cgroup peak {mb(run['peak'])} (page cache included), highest "
            f"sampled anonymous {mb(run['highest_anon'])}; photo latency p50 {p50}, p95 {p95}"
            + ("; did not start" if run["startup"] is None else
               f"; model loaded {run['startup']:.1f} s after docker run"))


# ---------------------------------------------------------------- the parts

def image_checks(image):
    size = int(docker("image", "inspect", "-f", "{{.Size}}", image))
    print(f"image {image}: {size / 1e6:.0f} MB ({size / MB:.0f} MiB)")

    def inside(script):
        return subprocess.run(["docker", "run", "--rm", "--network", "none", "--entrypoint", "bash", image,
                               "-c", script], capture_output=True, text=True, timeout=120)

    user = inside("id -u; id -un").stdout.split()
    check(user and user[0] != "0", f"the image runs as a non-root user ({' '.join(user)})")
    compilers = inside("for c in cc gcc g++ c++ clang cmake make; do command -v $c; done").stdout.split()
    check(not compilers, f"no compiler or build tool in the image ({compilers or 'none found'})")
    dev = inside("dpkg-query -W -f '${Package}\\n' | grep -- '-dev$' || true").stdout.split()
    check(not dev, f"no -dev package in the image ({dev or 'none installed'})")
    lists = inside("ls /var/lib/apt/lists | grep -v '^lock$\\|^partial$' || true").stdout.split()
    check(not lists, f"no apt lists in the image ({len(lists)} files in /var/lib/apt/lists)")
    return size


def settings_checks(image, photos):
    """The demo model by default; PORT and a few DERMAL_*/GUNICORN_* settings from the environment."""
    container = Container(image, memory_mb=512, cpus=2, port=9123,
                          env={"PORT": 9123, "DERMAL_EXPLAIN": 0, "DERMAL_MAX_PIXELS": 2_000_000,
                               "GUNICORN_WORKERS": 1})
    try:
        _, health = container.wait_loaded(timeout=180)
        check(health["model"] == "model.pt" and container.wait_healthy(),
              f"default model (the bundled demo model baked as /app/models/model.pt) served on PORT=9123, "
              f"Docker's HEALTHCHECK healthy: {health}")
        check(health["explain"] is False, "DERMAL_EXPLAIN=0 from the environment: /health says explain false")
        sample = next(p for p in photos if p[0].endswith("_1.jpg"))
        status, _, answer = post(container.base, sample)
        check(status == 200 and answer.get("explanation") is None and answer.get("top"),
              f"a sample photo with Grad-CAM off: HTTP {status}, explanation {str(answer.get('explanation'))[:40]}")
        big = next(p for p in photos if "2048x1536" in p[0])
        status, _, answer = post(container.base, big)
        check(status == 413 and answer.get("error") == "image_too_large",
              f"DERMAL_MAX_PIXELS=2000000: a 2048x1536 photo refused with HTTP {status} {answer.get('error')}")
        check(len(container.workers()) == 1, f"GUNICORN_WORKERS=1: {len(container.workers())} worker(s) running")
    finally:
        container.close()


def load_checks(image, model, uploads, clients):
    runs = {}
    for workers in (1, 2):
        run = run_load(image, model, workers, 512, uploads, clients)
        runs[workers] = run
        print(describe(run), flush=True)
        check(not run["problems"], f"{workers} worker(s) at 512 MB: {len(run['problems'])} of {run['sent']} "
                                   f"requests failed (0 allowed)")
        for problem in run["problems"][:5]:
            print("      " + problem)
        check(run["server_errors"] == 0, f"{workers} worker(s) at 512 MB: {run['server_errors']} server errors")
        hostile = sum(1 for kind, *_ in run["answers"] if kind == "hostile")
        check(run["hostile_refused"] == hostile and hostile > 0,
              f"{workers} worker(s) at 512 MB: {run['hostile_refused']} of {hostile} hostile uploads refused with 4xx "
              f"({run['closed_early']} {OVERSIZED} closed while sending)")
        check(not run["oom_kills"] and not run["oom_killed"] and run["running"],
              f"{workers} worker(s) at 512 MB: never OOM-killed (cgroup oom_kill {run['oom_kills']}, "
              f"OOMKilled {run['oom_killed']}, running {run['running']})")
        check(run["healthy"], f"{workers} worker(s) at 512 MB: Docker's HEALTHCHECK reports healthy after the load")
    return runs


def limit_search(image, model, uploads, clients, limits, known):
    """{workers: {limit: run}} for 1 and 2 workers, by bisection over the limits (descending),
    assuming that a load which survives a limit survives every larger one; `known` holds the runs
    already made at some limit."""
    table = {}
    for workers in (1, 2):
        tried = {}
        if known.get(workers) and known[workers]["memory_mb"] in limits:
            tried[known[workers]["memory_mb"]] = known[workers]
        survives = [i for i, limit in enumerate(limits) if limit in tried and survived(tried[limit])]
        fails = [i for i, limit in enumerate(limits) if limit in tried and not survived(tried[limit])]
        low = max(survives, default=-1)             # index of the smallest limit known to survive
        high = min(fails, default=len(limits))      # index of the largest limit known to fail
        while high - low > 1:
            middle = (low + high) // 2
            run = run_load(image, model, workers, limits[middle], uploads, clients, stop_on_failure=True)
            tried[limits[middle]] = run
            print("  " + describe(run), flush=True)
            if survived(run):
                low = middle
            else:
                high = middle
        table[workers] = tried
    return table


def print_table(limits, table):
    print("\n| gunicorn workers | " + " | ".join(f"{l} MB" for l in limits) + " | smallest that survived |")
    print("|---:|" + "---|" * len(limits) + "---:|")
    for workers, tried in table.items():
        cells = []
        for limit in limits:
            run = tried.get(limit)
            if run is None:
                below = [l for l in tried if l > limit and not survived(tried[l])]
                cells.append("(not run: a larger limit failed)" if below else "(not run: a smaller limit survived)")
            elif survived(run):
                cells.append(f"{run['sent']} ok, peak {mb(run['peak'])}")
            else:
                how = "OOM-killed" if run["oom_kills"] or run["oom_killed"] else "failed"
                cells.append(f"{how} after {run['sent']} requests")
        ok = [l for l in limits if l in tried and survived(tried[l])]
        print(f"| {workers} | " + " | ".join(cells) + (f" | {min(ok)} MB |" if ok else " | none |"))
    print()


def kill_check(image, model, photos):
    """Kills a worker in the middle of a 4000x3000 request; the next requests must succeed."""
    container = Container(image, memory_mb=512, cpus=2, env={"GUNICORN_WORKERS": 2}, model=model)
    try:
        container.wait_loaded()
        large = next(p for p in photos if "4000x3000" in p[0])
        before = container.workers()
        cpu = {pid: cpu_seconds(pid) for pid in before}
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            futures = [pool.submit(post, container.base, large) for _ in range(2)]
            busy, deadline = None, time.monotonic() + 60
            while busy is None and time.monotonic() < deadline:  # a worker burning CPU is inside a request
                time.sleep(0.1)
                busy = next((pid for pid in before if cpu_seconds(pid) > cpu[pid] + 0.3), None)
            if busy is None:
                return check(False, "worker kill: no worker started on the request within 60 s")
            os.kill(busy, signal.SIGKILL)
            answers = [f.result() for f in futures]
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and (busy in container.workers() or len(container.workers()) < 2):
            time.sleep(0.2)
        after = container.workers()
        check(busy not in after and len(after) == 2,
              f"worker kill: worker {busy} killed mid-request, gunicorn runs 2 workers again ({before} -> {after})")
        failed = [a for a in answers if a[0] != 200]
        print(f"      the two requests in flight: HTTP {[a[0] for a in answers]} "
              f"({len(failed)} lost with the killed worker: {[str(a[2])[:80] for a in failed]})")
        next_answers = [post(container.base, photos[i % len(photos)]) for i in range(8)]
        ok = [status == 200 and answer.get("explanation") for status, _, answer in next_answers]
        check(all(ok), f"worker kill: the next {len(ok)} requests succeed ({sum(map(bool, ok))} with Grad-CAM)")
        loads = LOADED.findall(container.logs())
        check(len(loads) == 1, f"worker kill: the model was loaded once, by the master (loads logged: {loads}); "
                               "the new worker was forked with it in place")
    finally:
        container.close()


def cpu_seconds(pid):
    try:
        return loadtest.cpu_seconds(pid)
    except OSError:
        return 0.0


def startup_check(image, model, photos, cpus):
    """1 worker, 512 MB, `cpus` CPUs: time from docker run to a loaded model, the first request's
    latency and the steady latency of each kind of photo; no worker timed out."""
    container = Container(image, memory_mb=512, cpus=cpus, env={"GUNICORN_WORKERS": 1}, model=model)
    try:
        startup, _ = container.wait_loaded()
        sample = next(p for p in photos if p[0].endswith("_1.jpg"))
        first = post(container.base, sample)
        steady = {}
        for name in [sample[0], "photo-2048x1536.jpg", "photo-4000x3000.jpg"]:
            photo = next(p for p in photos if p[0] == name)
            steady[name] = [post(container.base, photo) for _ in range(3 if name == sample[0] else 2)]
        print(f"--cpus {cpus}, 1 worker, 512 MB: /health with the model loaded {startup:.1f} s after docker run; "
              f"first request (640x480) {first[1]:.2f} s; steady: " + "; ".join(
                  f"{name} median {statistics.median(s for _, s, _ in answers):.2f} s "
                  f"({', '.join(f'{s:.2f}' for _, s, _ in answers)})" for name, answers in steady.items()))
        everything = [first] + [a for answers in steady.values() for a in answers]
        check(all(status == 200 for status, _, _ in everything),
              f"--cpus {cpus}: all {len(everything)} requests answered 200 ({[a[0] for a in everything]})")
        logs = container.logs()
        check("WORKER TIMEOUT" not in logs and "SIGKILL" not in logs,
              f"--cpus {cpus}: no gunicorn worker timed out or was killed")
    finally:
        container.close()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--image", required=True)
    parser.add_argument("--model", required=True, help="the reference model file on the host (mounted read-only)")
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--limits", type=int, nargs="+", default=[512, 448, 384, 320, 256], metavar="MB")
    parser.add_argument("--skip-search", action="store_true", help="no smallest-limit search")
    args = parser.parse_args()
    limits = sorted(set(args.limits), reverse=True)
    started = time.monotonic()

    photos, hostile = photo_uploads(), hostile_uploads()
    uploads = mix(photos, hostile, args.requests)
    print(f"uploads: {args.requests} requests from {args.clients} clients, rounds of "
          f"{', '.join(p[0] for p in photos)} and 2 hostile uploads (of {len(hostile)}: bad inputs, an 11 MB "
          f"file, no image field); model {os.path.relpath(args.model, ROOT)} "
          f"({os.path.getsize(args.model) / MB:.1f} MB), Grad-CAM on", flush=True)
    try:
        image_checks(args.image)
        settings_checks(args.image, photos)
        runs = load_checks(args.image, args.model, uploads, args.clients)
        if not args.skip_search:
            print(f"\nsmallest limit for the same load, --memory = --memory-swap in {limits} MB, bisection:")
            table = limit_search(args.image, args.model, uploads, args.clients, limits, runs)
            print_table(limits, table)
            check(all(any(survived(r) for r in tried.values()) for tried in table.values()),
                  "limit search: a smallest surviving limit found for 1 and 2 workers")
        kill_check(args.image, args.model, photos)
        for cpus in (2, 0.1):
            startup_check(args.image, args.model, photos, cpus)
    except (RuntimeError, subprocess.SubprocessError) as error:
        check(False, f"stopped: {error}")
    passed = sum(1 for ok, _ in results if ok)
    print(f"\ncontainer test: {(time.monotonic() - started) / 60:.1f} min of runs")
    print(f"{passed} passed, {len(results) - passed} failed")
    return 0 if passed == len(results) else 1


if __name__ == "__main__":
    sys.exit(main())
