"""Debian 13's LibTorch 2.6 against Debian 12's 1.13 on this machine, from one
run: the reference model through dermal (`dermal_stages`: Grad-CAM on a
decoded photo and end to end) and the bare forward, each optimised and frozen
only (`--optimise 1|0`), at 1 and 2 threads, each in a fresh process,
the two releases alternated round by round. Writes
benchmarks/results/releases.md (and .json) with medians over the rounds of
each process's median latency, CPU time per request and peak resident set.

Run by `bash tools/debian13.sh --releases` (as root), which builds both sides
and exports the reference model first; on its own:
    /usr/bin/python3 benchmarks/releases.py --root /var/cache/dermal/trixie-root
"""
import argparse
import datetime
import json
import os
import statistics
import subprocess

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
MODEL, PHOTO = "build/reference-effnetv2s.pt", "build/benchmark-lesion.jpg"
PROGRAMS = {  # row name -> (program, extra arguments)
    "dermal, optimised": ("dermal_stages", ["--optimise", "1"]),
    "dermal, frozen only": ("dermal_stages", ["--optimise", "0"]),
    "bare forward, optimised": ("bare_forward", ["--optimise", "1"]),
    "bare forward, frozen only": ("bare_forward", ["--optimise", "0"]),
}


def command_on(side, root, line):
    """`line` run by bash in the repository of `side` ("host" or "root", the
    Debian 13 chroot, with a clean environment)."""
    if side == "host":
        return ["bash", "-c", f"cd {ROOT} && {line}"]
    return ["chroot", root, "/usr/bin/env", "-i", "HOME=/root", "LANG=C.UTF-8",
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "bash", "-c", f"cd /work/dermal && {line}"]


def run(side, root, line):
    result = subprocess.run(command_on(side, root, line), capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"{side}: {line} failed ({result.returncode}):\n{result.stderr[-2000:]}")
    return result.stdout


def measure(side, root, cap, row, threads, repeats):
    """One program's figures, run under `cap` (ONEDNN_MAX_CPU_ISA's value; empty: none)."""
    program, extra = PROGRAMS[row]
    out = run(side, root, " ".join([*([f"ONEDNN_MAX_CPU_ISA={cap}"] if cap else []), f"build/benchmarks/{program}",
                                    MODEL, PHOTO, "--threads", str(threads), "--repeats", str(repeats), *extra]))
    report = json.loads([line for line in out.splitlines() if line.startswith("{")][-1])
    if program == "bare_forward":
        return {"ms": report["forward_median_ms"], "cpu_ms": report["forward_median_cpu_ms"],
                "peak_mb": report["process_peak_mb"], "load_ms": report["load_ms"]}
    stages = report["stages"]
    return {"ms": stages["predict_gradcam"]["median_ms"], "cpu_ms": stages["predict_gradcam"]["median_cpu_ms"],
            "end_to_end_ms": stages["end_to_end_gradcam"]["median_ms"], "peak_mb": report["process_peak_mb"],
            "load_ms": report["load_ms"], "probe_result": report["probe_result"]}


def describe(side, root):
    """LibTorch's version, oneDNN's check without tools/onednn-cap.sh, and the
    cap that script sets (empty: none), which every run of the side then gets."""
    versions = run(side, root, "dpkg-query -W -f '${Version}' libtorch-dev")
    check = run(side, root, "/usr/bin/python3 tools/onednn_check.py || true").strip()
    cap = run(side, root, '. tools/onednn-cap.sh 2> /dev/null; echo "${ONEDNN_MAX_CPU_ISA:-}"').strip()
    return {"libtorch": versions, "onednn_check_uncapped": check, "cap": cap}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", default=os.environ.get("DERMAL_TRIXIE_ROOT", "/var/cache/dermal/trixie-root"))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()

    sides = {"host": "Debian 12", "root": "Debian 13"}
    about = {side: describe(side, args.root) for side in sides}
    samples = {}
    for round_index in range(args.rounds):
        for threads in (1, 2):
            for row in PROGRAMS:
                order = list(sides) if round_index % 2 == 0 else list(reversed(sides))
                for side in order:
                    print(f"== round {round_index + 1}, {sides[side]}, {row}, {threads} thread(s)", flush=True)
                    samples.setdefault(f"{side}|{row}|{threads}", []).append(
                        measure(side, args.root, about[side]["cap"], row, threads, args.repeats))

    def median_of(key, field):
        values = [s[field] for s in samples[key] if s.get(field) is not None]
        return statistics.median(values) if values else None

    lines = [
        "# Debian 13 (LibTorch 2.6) against Debian 12 (LibTorch 1.13), one run",
        "",
        f"{datetime.datetime.now().isoformat(timespec='seconds')}, `bash tools/debian13.sh --releases` "
        f"(`benchmarks/releases.py`): the reference model (EfficientNetV2-S, 300×300, "
        f"`{MODEL}`) and a 1024×768 JPEG, each program in a fresh process, the releases alternated; "
        f"{args.rounds} rounds, each a median of {args.repeats} requests. dermal: Grad-CAM on a decoded photo "
        "(`predict_gradcam`; end to end: JPEG in, JPEG overlay out). Bare forward: the whole module frozen and "
        "optimised (`optimize_for_inference`), or frozen only, on a preprocessed tensor. CPU: the process's CPU "
        "time per request, all threads. Peak: the process's VmHWM, load included. Served: the graphs dermal "
        "served (its probe_result: `passed`, or `frozen_fallback` where the load's checks refused the optimised "
        "graphs).",
        "",
    ]
    for side, name in sides.items():
        lines.append(f"- {name}: LibTorch {about[side]['libtorch']}; uncapped check: "
                     f"{about[side]['onednn_check_uncapped']}; ISA cap in these runs: {about[side]['cap'] or 'none'}.")
    lines += ["", "| release | program | threads | latency (ms) | end to end (ms) | CPU per request (ms) | peak (MB) | "
              "load (s) | served |", "|---|---|---:|---:|---:|---:|---:|---:|---|"]
    for side, name in sides.items():
        for threads in (1, 2):
            for row in PROGRAMS:
                key = f"{side}|{row}|{threads}"
                fmt = lambda v, d=0, scale=1: "–" if v is None else f"{v * scale:,.{d}f}"  # noqa: E731
                lines.append(f"| {name} | {row} | {threads} | {fmt(median_of(key, 'ms'), 1)} | "
                             f"{fmt(median_of(key, 'end_to_end_ms'), 1)} | {fmt(median_of(key, 'cpu_ms'), 1)} | "
                             f"{fmt(median_of(key, 'peak_mb'))} | {fmt(median_of(key, 'load_ms'), 2, 1e-3)} | "
                             f"{', '.join(sorted({s['probe_result'] for s in samples[key] if 'probe_result' in s})) or '–'} |")
    text = "\n".join(lines) + "\n"
    results = os.path.join(ROOT, "benchmarks", "results")
    with open(os.path.join(results, "releases.md"), "w") as f:
        f.write(text)
    with open(os.path.join(results, "releases.json"), "w") as f:
        json.dump({"about": about, "samples": samples}, f, indent=1)
    print(text)


if __name__ == "__main__":
    main()
