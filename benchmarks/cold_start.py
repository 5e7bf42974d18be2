#!/usr/bin/python3
"""Cold start from outside: spawns benchmarks' cold_start program N times in
fresh processes and prints the medians of its split and of the time from
spawn to its "first-result" line, as one JSON object.

    /usr/bin/python3 benchmarks/cold_start.py MODEL PHOTO [--runs 7] [--threads 1]
"""
import argparse
import json
import os
import statistics
import subprocess
import time

BUILD = os.environ.get("DERMAL_BUILD_DIR",
                       os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "build"))


def run_once(model, photo, threads):
    environment = dict(os.environ, DERMAL_SPAWNED_NS=str(time.time_ns()))
    started = time.perf_counter()
    process = subprocess.Popen([os.path.join(BUILD, "benchmarks", "cold_start"), model, photo,
                                "--threads", str(threads)], stdout=subprocess.PIPE, text=True, env=environment)
    first_result_ms = None
    report = None
    for line in process.stdout:
        if line.strip() == "first-result":
            first_result_ms = (time.perf_counter() - started) * 1e3
        elif line.startswith("{"):
            report = json.loads(line)
    if process.wait() != 0 or report is None or first_result_ms is None:
        raise SystemExit(f"cold_start failed with status {process.returncode}")
    report["spawn_to_first_result_ms"] = first_result_ms
    return report


def flatten(report, prefix=""):
    for key, value in report.items():
        if isinstance(value, dict):
            yield from flatten(value, prefix + key + ".")
        elif isinstance(value, (int, float)):
            yield prefix + key, value


def measure(model, photo, runs=7, threads=1):
    """The medians of `runs` cold starts, flattened ("load.freeze_ms", ...)."""
    reports = [dict(flatten(run_once(model, photo, threads))) for _ in range(runs)]
    medians = {key: round(statistics.median(report[key] for report in reports), 1) for key in reports[0]}
    with open("/proc/loadavg") as loadavg:
        medians["loadavg_1min_after"] = float(loadavg.read().split()[0])
    medians["runs"] = runs
    return medians


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model")
    parser.add_argument("photo")
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    print(json.dumps(measure(args.model, args.photo, args.runs, args.threads)))


if __name__ == "__main__":
    main()
