#!/usr/bin/python3
"""Memory, throughput and reliability benchmark of the Django example under gunicorn (not a unit test).

    /usr/bin/python3 examples/django/loadtest.py [--workers 1 2 3] [--requests 200] [--clients C]

For each worker count in --workers, starts gunicorn with
examples/django/gunicorn.conf.py on 127.0.0.1 (the master loads the model,
then forks the workers) serving the reference EfficientNetV2-S export with
Grad-CAM on (exported into build/loadtest/ first if missing). From this
process it sends a warm-up round, then --requests POST /api/predict from
--clients concurrent clients (default: 2 per worker), each request bounded by
a timeout, while sampling every 50 ms the total PSS of all gunicorn processes
(the sum of Pss in /proc/PID/smaps_rollup of the master and its workers).
Prints per worker count that total at idle (after start, before any request),
after the first 100 requests (or half of a shorter run) and after the run,
both idle, the highest sample, throughput, latency and each worker's CPU
time; exits 1 if a target is missed. PSS splits a file page among all the
processes mapping it, so another LibTorch program on the machine lowers the
sum; run as root, the script also counts each file page the server maps
once and whole (from /proc/PID/pagemap), as on a host of its own, and
judges with that figure (its peak adds the file pages at the end of the run,
which only grow while serving, to the highest sum without file pages: an
upper bound). Photos: the bundled samples plus one 2048x1536
JPEG made from a sample (a 12 MP photo needs more: see README.md).

Targets: no failed request; total PSS after the run within 10 MB of the
figure after the first 100 requests; the model loaded once, by the master;
with 1 or 2 workers a peak total PSS of at most 420 MB; when both 1 and 2
workers are measured, 2 serving at least 1.8 times the requests per second
of 1.
"""
import argparse
import array
import concurrent.futures
import glob
import io
import json
import os
import re
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
EXPORT = [sys.executable, "-m", "dermal.convert", "torchvision", "--arch", "efficientnet_v2_s",
          "--seed", "0", "--labels", "akiec,bcc,bkl,df,mel,nv,vasc", "--size", "300", "--out", MODEL]
MB = 1024 * 1024
PSS_TARGET_MB = 420      # peak total PSS with 1 or 2 workers
PSS_TARGET_WORKERS = 2   # the largest worker count the memory target applies to
SPEEDUP_TARGET = 1.8     # requests/s of 2 workers over 1
DRIFT_TARGET_MB = 10
CHECKPOINT = 100         # requests before the PSS the end of the run is compared with
SAMPLE_SECONDS = 0.05
SETTLE_SECONDS = 0.5     # pause before an idle PSS reading (the last responses' memory is being freed)
REQUEST_TIMEOUT = 120    # seconds for one request, queueing included
STARTUP_TIMEOUT = 180
PAGE = os.sysconf("SC_PAGE_SIZE")
FRAME_MASK = (1 << 55) - 1
LOADED = re.compile(r"dermal model .* opened by process (\d+)")


def status_field(pid, field):
    """A kB field of /proc/PID/status, in bytes."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} missing for pid {pid}")


def rollup(pid):
    """(Pss, Pss_File) of /proc/PID/smaps_rollup in bytes; zeros once the process has exited."""
    fields = {}
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                name, _, value = line.partition(":")
                if name in ("Pss", "Pss_File"):
                    fields[name] = int(value.split()[0]) * 1024
    except (FileNotFoundError, ProcessLookupError):
        return 0, 0
    return fields["Pss"], fields["Pss_File"]


def children(pid):
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(child) for child in f.read().split()]
    except FileNotFoundError:
        return []


def group_pss(master):
    """(pids, summed Pss, summed Pss without file pages) of the master and its current workers, in bytes."""
    pids = [master] + children(master)
    total = without_files = 0
    for pid in pids:
        pss, pss_file = rollup(pid)
        total, without_files = total + pss, without_files + pss - pss_file
    return pids, total, without_files


def file_pages(pids):
    """Bytes of the distinct physical pages of files (libraries, the Python runtime) that the processes
    map, each page counted once; None when page frame numbers are hidden (they need root)."""
    frames = set()
    for pid in pids:
        try:
            with open(f"/proc/{pid}/maps") as maps, open(f"/proc/{pid}/pagemap", "rb") as pagemap:
                for line in maps:
                    fields = line.split()
                    if len(fields) < 6 or fields[4] == "0":  # no inode: anonymous memory, counted by Pss
                        continue
                    start, end = (int(address, 16) for address in fields[0].split("-"))
                    pagemap.seek(start // PAGE * 8)
                    entries = array.array("Q", pagemap.read((end - start) // PAGE * 8))
                    # present (bit 63) and file-backed (bit 61), not a private copy; the frame is in bits 0-54
                    frames.update(entry & FRAME_MASK for entry in entries if entry >> 61 & 0b101 == 0b101)
        except (FileNotFoundError, ProcessLookupError):
            continue
    if frames == {0}:
        return None
    return len(frames) * PAGE


def memory(master):
    """(total PSS, the same on a host of its own) of the master and its workers, in bytes; the second is
    None without root. PSS splits a file page among all processes that map it, including processes
    outside this gunicorn (another LibTorch program), so the sum of Pss falls when such processes run;
    the second figure counts every file page the group maps once and whole, as a host running only
    this server would hold it."""
    pids, total, without_files = group_pss(master)
    files = file_pages(pids)
    return total, None if files is None else without_files + files


def cpu_seconds(pid):
    """User plus system CPU time of the process so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


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


def read_log(log):
    """The whole log. pread, not seek and read: gunicorn writes through the same file description
    (an access line can follow the answer), and a seek would move where it writes."""
    return os.pread(log.fileno(), os.fstat(log.fileno()).st_size, 0).decode(errors="replace")


def wait_ready(base, server, log, workers):
    """The worker pids, once the master has forked all of them and /health says the model is loaded."""
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        if server.poll() is not None:
            sys.exit("loadtest: gunicorn exited:\n" + read_log(log)[-3000:])
        pids = children(server.pid)
        try:
            with urllib.request.urlopen(base + "/health", timeout=2) as response:
                health = json.load(response)
            if health["model_loaded"] and len(pids) == workers:
                return health, pids
        except OSError:
            pass
        time.sleep(0.2)
    sys.exit("loadtest: the server did not start its workers with the model loaded in time")


class Sampler(threading.Thread):
    """Sums the PSS of the gunicorn processes every SAMPLE_SECONDS until stopped; keeps the highest sum,
    with and without file pages."""

    def __init__(self, master):
        super().__init__(daemon=True)
        self.master, self.highest, self.highest_without_files, self.stopped = master, 0, 0, threading.Event()

    def run(self):
        while not self.stopped.is_set():
            _, total, without_files = group_pss(self.master)
            self.highest = max(self.highest, total)
            self.highest_without_files = max(self.highest_without_files, without_files)
            self.stopped.wait(SAMPLE_SECONDS)


def serve(workers, requests, clients, images):
    """Starts gunicorn with `workers` workers, loads it, and returns the figures of one run."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = dict(os.environ, DERMAL_MODEL=MODEL, DERMAL_EXPLAIN="1", DERMAL_PRELOAD="1",
               GUNICORN_WORKERS=str(workers), GUNICORN_BIND=f"127.0.0.1:{port}",
               DJANGO_SETTINGS_MODULE="dermal_site.settings",
               PYTHONPATH=os.pathsep.join([os.path.join(ROOT, "capi", "python"), HERE]))
    log = tempfile.TemporaryFile()
    server = subprocess.Popen([sys.executable, "-m", "gunicorn", "-c", os.path.join(HERE, "gunicorn.conf.py"),
                               "dermal_site.wsgi:application"], cwd=HERE, env=env, stdout=log,
                              stderr=subprocess.STDOUT)
    run = {"workers": workers, "clients": clients, "requests": requests}
    try:
        run["health"], pids = wait_ready(base, server, log, workers)
        time.sleep(SETTLE_SECONDS)
        run["master_peak"] = status_field(server.pid, "VmHWM")
        run["idle"] = memory(server.pid)
        sampler = Sampler(server.pid)
        sampler.start()
        with concurrent.futures.ThreadPoolExecutor(clients) as pool:
            warm_up = list(pool.map(lambda i: predict(base, images[i % len(images)]), range(clients)))
            if not all(ok for ok, _, _ in warm_up):
                sys.exit("loadtest: a warm-up request failed: " + next(d for ok, _, d in warm_up if not ok))
            cpu_before = {pid: cpu_seconds(pid) for pid in pids}
            checkpoint = min(CHECKPOINT, requests // 2)
            results, elapsed, after = [], 0.0, []
            for first, last in [(0, checkpoint), (checkpoint, requests)]:
                started = time.monotonic()
                results += pool.map(lambda i: predict(base, images[i % len(images)]), range(first, last))
                elapsed += time.monotonic() - started
                time.sleep(SETTLE_SECONDS)
                after.append(memory(server.pid))
        sampler.stopped.set()
        sampler.join()
        current = children(server.pid)
        run["restarted"] = sorted(set(current) - set(pids))  # workers that replaced one that died
        run["cpu"] = [cpu_seconds(pid) - cpu_before[pid] for pid in pids if pid in current]
        run["checkpoint"], (run["after_checkpoint"], run["after_run"]) = checkpoint, after
        # file pages are only added while serving (code faulted in), so those at the end bound them at the peak
        files_at_end = file_pages([server.pid] + current)
        run["peak"] = (sampler.highest,
                       None if files_at_end is None else sampler.highest_without_files + files_at_end)
        run["elapsed"], run["results"] = elapsed, results
    finally:
        server.terminate()
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        run["loaded_by"] = [int(pid) for pid in LOADED.findall(read_log(log))]
        run["master"] = server.pid
        log.close()
    return run


def figures(pair):
    """'summed / own' of a (sum of Pss, on a host of its own) pair, in MB."""
    return f"{pair[0] / MB:.1f} / " + ("n/a" if pair[1] is None else f"{pair[1] / MB:.1f}")


def percentile(sorted_values, fraction):
    return sorted_values[max(0, int(len(sorted_values) * fraction + 0.5) - 1)]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], metavar="N",
                        help="worker counts to measure one after the other (default: 1 2)")
    parser.add_argument("--requests", type=int, default=200, help="requests per worker count (default 200)")
    parser.add_argument("--clients", type=int, default=None,
                        help="concurrent clients (default: 2 per worker)")
    args = parser.parse_args()
    if min(args.workers) < 1 or args.requests < 2 or (args.clients is not None and args.clients < 1):
        sys.exit("loadtest: --workers needs counts >= 1, --requests at least 2 and --clients at least 1")
    library = os.path.abspath(os.environ.get("DERMAL_LIBRARY", os.path.join(BUILD, "capi", "libdermal_c.so")))
    if not os.path.exists(library):
        sys.exit(f"loadtest: {library} is missing; build it first (bash tools/setup.sh --build)")
    os.environ["DERMAL_LIBRARY"] = library
    if not os.path.exists(MODEL):
        print(f"exporting the reference EfficientNetV2-S to {MODEL} (about a minute) ...", flush=True)
        os.makedirs(os.path.dirname(MODEL), exist_ok=True)
        subprocess.run(EXPORT, check=True, timeout=900, stdout=subprocess.DEVNULL,
                       env=dict(os.environ, PYTHONPATH=os.path.join(ROOT, "capi", "python")))
    images = photos()
    threads = os.environ.get("DERMAL_THREADS", "1")
    with open("/proc/loadavg") as f:
        load_before = f.read().split()[0]
    print(f"model: {os.path.relpath(MODEL, ROOT)} ({os.path.getsize(MODEL) / MB:.1f} MB file), Grad-CAM on, "
          f"DERMAL_THREADS={threads}; {os.cpu_count()} cores, load average {load_before} before the first run")
    print(f"photos: {', '.join(name for name, _ in images)} (round robin)")

    runs = []
    for workers in args.workers:
        clients = args.clients or 2 * workers
        run = serve(workers, args.requests, clients, images)
        runs.append(run)
        latencies = sorted(seconds for _, seconds, _ in run["results"])
        run["rate"] = args.requests / run["elapsed"]
        run["p50"], run["p95"] = percentile(latencies, 0.50), percentile(latencies, 0.95)
        run["failures"] = [detail for ok, _, detail in run["results"] if not ok]
        print(f"\n{workers} worker(s), dermal {run['health']['version']}, {clients} clients: {args.requests} requests "
              f"in {run['elapsed']:.1f} s ({run['rate']:.2f}/s); latency p50 {run['p50']:.2f} s, "
              f"p95 {run['p95']:.2f} s, max {latencies[-1]:.2f} s; {len(run['failures'])} failed")
        print("  total PSS of the master and its workers, summed here / on a host of its own (file pages whole): "
              + "; ".join(f"{name} {figures(run[key])} MB" for name, key in
                          [("idle", "idle"), (f"after {run['checkpoint']} requests", "after_checkpoint"),
                           ("after the run", "after_run"), ("highest sampled", "peak")]))
        print(f"  master VmHWM (its load) {run['master_peak'] / MB:.1f} MB; CPU seconds of each worker during the "
              f"run: {', '.join(f'{s:.1f}' for s in run['cpu'])}; model loaded by: {run['loaded_by']} "
              f"(master {run['master']})" + (f"; workers restarted: {run['restarted']}" if run["restarted"] else ""))

    with open("/proc/loadavg") as f:
        load_after = f.read().split()[0]
    print(f"\nload average after the last run: {load_after}")
    own = all(run[key][1] is not None for run in runs for key in ("idle", "after_checkpoint", "after_run", "peak"))
    judged = 1 if own else 0  # which figure the targets and the table use
    print("total PSS below: " + ("on a host of its own (file pages counted whole); the sums of Pss measured "
                                 "here are in the lines above" if own else
                                 "the sum of Pss (run as root to count file pages whole, as on a host of its own)"))
    print("\n| workers | clients | requests/s | p50 (s) | p95 (s) | total PSS idle (MB) | total PSS peak (MB) "
          f"| after {runs[0]['checkpoint']} requests → end (MB) |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for run in runs:
        print(f"| {run['workers']} | {run['clients']} | {run['rate']:.2f} | {run['p50']:.2f} | {run['p95']:.2f} "
              f"| {run['idle'][judged] / MB:.0f} | {run['peak'][judged] / MB:.0f} "
              f"| {run['after_checkpoint'][judged] / MB:.0f} → {run['after_run'][judged] / MB:.0f} |")
    print()

    verdicts = []
    for run in runs:
        n = run["workers"]
        drift = (run["after_run"][judged] - run["after_checkpoint"][judged]) / MB
        verdicts += [
            (f"{n} worker(s): failed requests {len(run['failures'])} of {args.requests} (target 0)", not run["failures"]),
            (f"{n} worker(s): model loaded by {run['loaded_by']}, the master is {run['master']} "
             "(target: once, by the master)", run["loaded_by"] == [run["master"]]),
            (f"{n} worker(s): total PSS after the run vs after {run['checkpoint']} requests: {drift:+.1f} MB "
             f"(target within {DRIFT_TARGET_MB} MB)", abs(drift) <= DRIFT_TARGET_MB),
        ]
        if n <= PSS_TARGET_WORKERS:
            peak = run["peak"][judged] / MB
            verdicts.append((f"{n} worker(s): peak total PSS {peak:.1f} MB (target <= {PSS_TARGET_MB} MB)",
                             peak <= PSS_TARGET_MB))
    rates = {run["workers"]: run["rate"] for run in runs}
    if 1 in rates and 2 in rates:
        verdicts.append((f"2 workers serve {rates[2] / rates[1]:.2f}x the requests/s of 1 (target >= {SPEEDUP_TARGET}x)",
                         rates[2] >= SPEEDUP_TARGET * rates[1]))
    for text, met in verdicts:
        print(("PASS  " if met else "MISS  ") + text)
    for run in runs:
        for detail in run["failures"][:5]:
            print(f"  failed ({run['workers']} worker(s)): {detail}")
    return 0 if all(met for _, met in verdicts) else 1


if __name__ == "__main__":
    sys.exit(main())
