#!/usr/bin/python3
"""Runs every benchmark configuration, each in its own fresh process, on one
photo, and writes benchmarks/results/{results.json,results.md,chart.png}.
Called by benchmarks/run.sh, which builds the programs and prepares the
models and the photo first.

    /usr/bin/python3 benchmarks/run.py --photo P --reference M [--bf16 M] [--keras M] [--demo M]
        [--threads 1,2] [--repeats 15] [--gradcam-repeats 5] [--side-by-side-repeats 31]
    /usr/bin/python3 benchmarks/run.py --render-only   # results.md, chart.png again from results.json
"""
import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
BUILD = os.path.join(ROOT, "build")
RESULTS = os.path.join(HERE, "results")
PYTHON = "/usr/bin/python3"

# Targets (reference model, 1 thread).
MAX_OVER_FLOOR = 1.05
MAX_LOAD_PEAK_OVER_SETTLED_MB = 10.0
MAX_COLD_START_MS = 1000.0
MIN_SPEEDUP = 15.0
MAX_PEAK_CPP_MB = 330.0
MAX_PEAK_PYTHON_MB = 360.0
MIN_AGREEMENT = 0.99
# The reference network imported from Keras against the torchvision export.
MAX_KERAS_OVER_REFERENCE = 1.05

# key → (label, command before "MODEL PHOTO", Grad-CAM?)
PROGRAMS = {
    "dermal_cpp": ("dermal, C++", [os.path.join(BUILD, "benchmarks", "dermal_stages")], True),
    "dermal_python": ("dermal, Python package", [PYTHON, os.path.join(HERE, "python_dermal.py")], True),
    "torch_gradcam": ("Python torch, full-graph Grad-CAM",
                      [PYTHON, os.path.join(HERE, "python_torch_gradcam.py")], True),
    "torch_optimized": ("Python torch, frozen + optimized, no Grad-CAM",
                        [PYTHON, os.path.join(HERE, "python_torch_optimized.py")], False),
    "bare_forward": ("LibTorch bare forward (floor)", [os.path.join(BUILD, "benchmarks", "bare_forward")], False),
}
REDUCED_PROGRAMS = ["dermal_cpp", "dermal_python", "bare_forward"]
KERAS_PROGRAMS = ["dermal_cpp", "bare_forward"]
# dermal's end-to-end Grad-CAM and the bare forward alternated in one process.
SIDE_BY_SIDE = [os.path.join(BUILD, "benchmarks", "side_by_side")]
# The cold start's split, in this order: (key prefix, label); cold_start.py's
# medians are "<prefix>_ms" and "<prefix>_page_faults".
COLD_START_PARTS = [
    ("spawn_to_main", "spawn → main (exec, linking LibTorch, static initialisers)"),
    ("load.read", "reading the file (torch::jit::load)"),
    ("load.freeze", "freezing (pieces)"),
    ("load.optimise", "optimising (pieces)"),
    ("load.compose", "composing (one graph per run)"),
    ("load.check", "check forward (first run of the graphs)"),
    ("first_request", "first end-to-end Grad-CAM request"),
    ("spawn_to_first_result", "**spawn → first result, from outside**"),
]


def run_one(program, model, photo, threads, repeats, warmup):
    """Runs one program (a command before "MODEL PHOTO") in a fresh process;
    returns its JSON report plus cold_start_ms, the time from spawning it to
    its "first-result" line (None if it prints none)."""
    env = dict(os.environ, DERMAL_LIBRARY=os.path.join(BUILD, "capi", "libdermal_c.so"),
               OMP_NUM_THREADS=str(threads))
    command = program + [model, photo, "--threads", str(threads),
                         "--repeats", str(repeats), "--warmup", str(warmup)]
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    cold_start_ms = None
    lines = []
    for line in process.stdout:
        if line.strip() == "first-result" and cold_start_ms is None:
            cold_start_ms = (time.perf_counter() - started) * 1e3
        else:
            lines.append(line)
    stderr = process.stderr.read()
    if process.wait() != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({process.returncode}):\n{stderr[-2000:]}")
    report = json.loads(lines[-1])
    report["cold_start_ms"] = cold_start_ms
    return report


def stage(report, name):
    return report.get("stages", {}).get(name, {})


def summarize(program, report):
    """The figures every configuration shares (None where they do not apply)."""
    stages = report.get("stages", {})
    if program == "bare_forward":
        predict = report["forward_median_ms"]
    else:
        predict = stage(report, "end_to_end_predict").get("median_ms")
    request_peaks = [s["peak_mb"] for s in stages.values()]
    if "first_request_peak_mb" in report:
        request_peaks.append(report["first_request_peak_mb"])
    return {
        "load_ms": report["load_ms"],
        "cold_start_ms": report["cold_start_ms"],
        "predict_ms": predict,
        "gradcam_ms": stage(report, "end_to_end_gradcam").get("median_ms"),
        "load_peak_mb": report["load_peak_mb"],
        "rss_after_load_mb": report.get("rss_after_load_mb"),
        "rss_anon_after_load_mb": report.get("rss_anon_after_load_mb"),
        "rss_file_after_load_mb": report.get("rss_file_after_load_mb"),
        "request_peak_mb": max(request_peaks) if request_peaks else None,
        "process_peak_mb": report["process_peak_mb"],
    }


def agreement(reduced):
    """The top-1 agreement with float32 that python3 -m dermal.convert torchvision measured
    and recorded in the reduced-precision file's description."""
    import bench_common
    recorded = bench_common.description_of(reduced).get("precision", {}).get("top1_agreement")
    if recorded is None:
        raise SystemExit(f"{reduced} records no top-1 agreement; export it again with python3 -m dermal.convert torchvision")
    return dict(recorded, agreement=recorded["agreeing"] / recorded["images"])


def fmt(value, digits=0, scale=1.0):
    return "–" if value is None else f"{value * scale:,.{digits}f}"


def targets(results, side_by_side, cold_start):
    """[(description, figure, met)] for the reference model (at 1 thread, and side by side at 2 too)."""
    def get(program):
        return results.get(f"reference/{program}/1", {}).get("summary")
    cpp, python, full = get("dermal_cpp"), get("dermal_python"), get("torch_gradcam")
    out = []
    for threads in (1, 2):
        paired = side_by_side.get(f"reference/{threads}")
        if not paired:
            continue
        bare, cam = paired["bare_forward"], paired["predict_gradcam"]
        ratio = cam["ratio_to_bare_forward"]
        out.append((f"dermal Grad-CAM ≤ {MAX_OVER_FLOOR} × bare optimized forward, {threads} thread(s)",
                    f"side by side in one process {cam['median_ms']:.0f} / {bare['median_ms']:.0f} ms = "
                    f"{ratio:.2f}× (CPU per request {cam['median_cpu_ms']:.0f} / {bare['median_cpu_ms']:.0f} ms)",
                    ratio <= MAX_OVER_FLOOR))
    if cpp and full:
        speedup = full["gradcam_ms"] / cpp["gradcam_ms"]
        out.append((f"dermal ≥ {MIN_SPEEDUP:.0f}× faster than Python full-graph Grad-CAM (end to end)",
                    f"{full['gradcam_ms']:.0f} / {cpp['gradcam_ms']:.0f} ms = {speedup:.1f}×", speedup >= MIN_SPEEDUP))
    if cpp:
        out.append((f"peak RSS, dermal Grad-CAM in C++ ≤ {MAX_PEAK_CPP_MB:.0f} MB (whole process, load included)",
                    f"{cpp['process_peak_mb']:.0f} MB (load {cpp['load_peak_mb']:.0f}, "
                    f"requests {cpp['request_peak_mb']:.0f})", cpp["process_peak_mb"] <= MAX_PEAK_CPP_MB))
        settled = cpp.get("rss_after_load_mb")
        if settled is not None:
            over = cpp["load_peak_mb"] - settled
            out.append((f"load peak ≤ {MAX_LOAD_PEAK_OVER_SETTLED_MB:.0f} MB above the settled resident set after "
                        f"load (C++)", f"{cpp['load_peak_mb']:.1f} − {settled:.1f} = {over:.1f} MB",
                        over <= MAX_LOAD_PEAK_OVER_SETTLED_MB))
    if cold_start:
        total = cold_start["spawn_to_first_result_ms"]
        out.append((f"cold start ≤ {MAX_COLD_START_MS / 1e3:.0f} s (spawn → first Grad-CAM result, from outside)",
                    f"median of {cold_start['runs']}: {total / 1e3:.2f} s (load average "
                    f"{cold_start['loadavg_1min_after']} after)", total <= MAX_COLD_START_MS))
    keras = results.get("keras-effnetv2s/dermal_cpp/1", {}).get("summary")
    if cpp and keras:
        for what, key, unit in (("latency", "gradcam_ms", "ms"), ("peak RSS", "process_peak_mb", "MB")):
            ratio = keras[key] / cpp[key]
            out.append((f"EfficientNetV2-S imported from Keras within {MAX_KERAS_OVER_REFERENCE - 1:.0%} of the "
                        f"torchvision export's {what} (dermal Grad-CAM in C++, separate processes)",
                        f"{keras[key]:.0f} / {cpp[key]:.0f} {unit} = {ratio:.2f}×",
                        ratio <= MAX_KERAS_OVER_REFERENCE))
    if python:
        out.append((f"peak RSS, dermal Grad-CAM through Python ≤ {MAX_PEAK_PYTHON_MB:.0f} MB (whole process)",
                    f"{python['process_peak_mb']:.0f} MB (load {python['load_peak_mb']:.0f}, "
                    f"requests {python['request_peak_mb']:.0f})", python["process_peak_mb"] <= MAX_PEAK_PYTHON_MB))
    return out


def markdown(meta, results, side_by_side, reduced, cold_start, target_lines):
    lines = ["# dermal benchmarks", "",
             f"{meta['date']}, {meta['cpu']} (native bfloat16: {meta.get('native_bfloat16') or 'none'}), "
             f"{meta['cores']} cores, LibTorch/torch {meta['torch']}. "
             f"Photo: {meta['photo']} ({meta['photo_bytes']:,} bytes, 1024×768 JPEG). Each row is one fresh "
             f"process; latencies are medians of {meta['repeats']} runs after warm-up "
             f"({meta['gradcam_repeats']} for the full-graph Python Grad-CAM); peaks are VmHWM.", "",
             "*predict*: JPEG bytes in → probabilities (bare forward: preprocessed tensor in). "
             "*Grad-CAM*: JPEG bytes in → probabilities + JPEG overlay out. *cold start*: process start → "
             "first result (Grad-CAM where the configuration does it), timed from outside. "
             "*request peak*: highest VmHWM while serving requests; *process peak*: whole run, load included. "
             "*anon* and *file*: RssAnon and RssFile once loaded (the settled resident set a container's "
             "memory limit counts: heap and weights; mapped libraries).", "",
             "| model | configuration | threads | load (s) | cold start (s) | predict (ms) | Grad-CAM (ms) "
             "| load peak (MB) | anon (MB) | file (MB) | request peak (MB) | process peak (MB) |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for key, entry in results.items():
        s = entry["summary"]
        lines.append(f"| {entry['model']} | {PROGRAMS[entry['program']][0]} | {entry['threads']} "
                     f"| {fmt(s['load_ms'], 2, 1e-3)} | {fmt(s['cold_start_ms'], 2, 1e-3)} | {fmt(s['predict_ms'])} "
                     f"| {fmt(s['gradcam_ms'])} | {fmt(s['load_peak_mb'])} | {fmt(s.get('rss_anon_after_load_mb'))} "
                     f"| {fmt(s.get('rss_file_after_load_mb'))} | {fmt(s['request_peak_mb'])} "
                     f"| {fmt(s['process_peak_mb'])} |")
    lines += ["", "## dermal in C++, stage by stage", "",
              "Median ms (peak MB while the stage ran). *predict* and *predict + Grad-CAM* start from the "
              "decoded photo and include preprocessing; *overlay* is colouring, blending and JPEG encoding.", "",
              "| model | threads | decode + preprocess | predict | predict + Grad-CAM | overlay | end to end |",
              "|---|---:|---:|---:|---:|---:|---:|"]
    for entry in results.values():
        if entry["program"] != "dermal_cpp":
            continue
        cells = [f"{fmt(stage(entry['report'], n).get('median_ms'))} ({fmt(stage(entry['report'], n).get('peak_mb'))})"
                 for n in ("decode_preprocess", "predict", "predict_gradcam", "overlay_render_encode",
                           "end_to_end_gradcam")]
        lines.append(f"| {entry['model']} | {entry['threads']} | " + " | ".join(cells) + " |")
    lines += ["", "## dermal against the floor, side by side", "",
              f"One process per row holds dermal and the bare optimised forward and runs the three below in a "
              f"rotating order for {meta['side_by_side_repeats']} rounds (warm-up first), so that machine noise "
              "hits all alike. *predict + Grad-CAM*: decoded photo in → probabilities + map; *end to end*: JPEG "
              "bytes in → probabilities + JPEG overlay out; bare forward: preprocessed tensor in → logits. Median "
              "ms, the ratio to the bare forward, and the process's CPU time per request (all threads) in ms.", "",
              "| model | threads | bare forward | predict + Grad-CAM | ratio | end to end | ratio "
              "| CPU per request: bare / Grad-CAM / end to end |",
              "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for key, entry in side_by_side.items():
        bare, cam, whole = entry["bare_forward"], entry["predict_gradcam"], entry["end_to_end_gradcam"]
        lines.append(f"| {entry['model']} | {entry['threads']} | {fmt(bare['median_ms'])} | {fmt(cam['median_ms'])} "
                     f"| {cam['ratio_to_bare_forward']:.2f}× | {fmt(whole['median_ms'])} "
                     f"| {whole['ratio_to_bare_forward']:.2f}× | {fmt(bare['median_cpu_ms'])} / "
                     f"{fmt(cam['median_cpu_ms'])} / {fmt(whole['median_cpu_ms'])} |")
    if cold_start:
        lines += ["", "## Cold start, split", "",
                  f"Reference model, 1 thread, `benchmarks/cold_start.py`: medians of {cold_start['runs']} fresh "
                  f"processes (load average {cold_start['loadavg_1min_after']} after). The parts of the load are "
                  "timed inside it; the total from outside. Page faults: the process's minor faults in each "
                  "part (first touches of fresh memory).", "", "| part | ms | page faults |", "|---|---:|---:|"]
        lines += [f"| {label} | {fmt(cold_start.get(key + '_ms'))} | {fmt(cold_start.get(key + '_page_faults'))} |"
                  for key, label in COLD_START_PARTS]
    if reduced:
        lines += ["", "## Reduced precision", "",
                  f"Top-1 agreement with the float32 export on generated lesion photos; kept if ≥ "
                  f"{MIN_AGREEMENT:.0%}.", "",
                  "| model | file (MB) | threads | dermal Grad-CAM (ms) | bare forward (ms) | dermal process peak (MB) "
                  "| dermal request peak (MB) | top-1 agreement | kept |", "|---|---:|---:|---:|---:|---:|---:|---:|---|"]
        for row in reduced:
            lines.append(f"| {row['model']} | {row['file_mb']:.1f} | {row['threads']} | {fmt(row['gradcam_ms'])} "
                         f"| {fmt(row['forward_ms'])} | {fmt(row['process_peak_mb'])} | {fmt(row['request_peak_mb'])} "
                         f"| {row['agreement']} | {row['kept']} |")
    lines += ["", "## Targets (reference model, 1 thread)", ""]
    lines += [f"- {'met' if met else '**NOT met**'}: {text} — {figure}" for text, figure, met in target_lines]
    return "\n".join(lines) + "\n"


def chart(results, path):
    """Latency and peak RSS of each configuration at 1 thread, per model."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    rows = [e for e in results.values() if e["threads"] == 1]
    labels = [f"{e['model']}: {PROGRAMS[e['program']][0]}" for e in rows]
    latency = [e["summary"]["gradcam_ms"] or e["summary"]["predict_ms"] for e in rows]
    colours = ["tab:red" if e["summary"]["gradcam_ms"] else "tab:blue" for e in rows]
    figure, (left, right) = plt.subplots(1, 2, figsize=(13, 0.45 * len(rows) + 1.6), sharey=True)
    y = list(range(len(rows)))[::-1]
    left.barh(y, latency, color=colours)
    left.set_xscale("log")
    left.set_xlabel("median latency, ms (log): red = Grad-CAM end to end, blue = prediction only")
    left.set_yticks(y, labels, fontsize=8)
    right.barh(y, [e["summary"]["process_peak_mb"] for e in rows], color="tab:gray", label="process peak")
    right.barh(y, [e["summary"]["request_peak_mb"] or 0 for e in rows], color="tab:green", height=0.4,
               label="request peak (not measured for the bare forward)")
    right.axvline(512, color="black", linestyle=":", label="512 MB host")
    right.set_xlabel("peak RSS, MB")
    right.legend(fontsize=8, loc="lower right")
    figure.suptitle("dermal benchmarks, 1 thread (one fresh process per bar)")
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--render-only", action="store_true",
                        help="rewrite results.md and chart.png from results.json, measuring nothing")
    parser.add_argument("--photo")
    parser.add_argument("--reference")
    parser.add_argument("--bf16")
    parser.add_argument("--keras", help="the reference network imported from Keras (python3 -m dermal.convert keras)")
    parser.add_argument("--demo")
    parser.add_argument("--threads", default=f"1,{os.cpu_count()}")
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--gradcam-repeats", type=int, default=5)
    parser.add_argument("--side-by-side-repeats", type=int, default=31)
    args = parser.parse_args()
    if args.render_only:
        with open(os.path.join(RESULTS, "results.json")) as f:
            saved = json.load(f)
        write_outputs(saved["meta"], saved["results"], saved["side_by_side"], saved["reduced_precision"],
                      saved.get("cold_start"))
        return
    if not (args.photo and args.reference):
        parser.error("--photo and --reference are required")
    thread_counts = sorted({int(t) for t in args.threads.split(",")})

    models = [("reference", args.reference, list(PROGRAMS))]
    if args.bf16:
        models.append(("reference-bf16", args.bf16, REDUCED_PROGRAMS))
    if args.keras:
        models.append(("keras-effnetv2s", args.keras, KERAS_PROGRAMS))
    if args.demo:
        models.append(("demo", args.demo, list(PROGRAMS)))
    results, side_by_side = {}, {}
    for threads in thread_counts:
        for model_name, path, programs in models:
            for program in programs:
                slow = program == "torch_gradcam" and model_name == "reference"
                repeats = args.gradcam_repeats if slow else args.repeats
                print(f"== {model_name}, {PROGRAMS[program][0]}, {threads} thread(s)", file=sys.stderr, flush=True)
                report = run_one(PROGRAMS[program][1], path, args.photo, threads, repeats, 1 if slow else 3)
                results[f"{model_name}/{program}/{threads}"] = {
                    "model": model_name, "program": program, "threads": threads, "path": path,
                    "report": report, "summary": summarize(program, report)}
            print(f"== {model_name}, dermal and the bare forward side by side, {threads} thread(s)",
                  file=sys.stderr, flush=True)
            side_by_side[f"{model_name}/{threads}"] = dict(
                run_one(SIDE_BY_SIDE, path, args.photo, threads, args.side_by_side_repeats, 3), model=model_name)

    print("== reference, cold start split (cold_start.py)", file=sys.stderr, flush=True)
    import cold_start
    cold = cold_start.measure(args.reference, args.photo, runs=7, threads=1)

    reduced = []
    if args.bf16:
        agreed = agreement(args.bf16)
        kept = agreed["agreement"] >= MIN_AGREEMENT
        for model_name, path in (("reference", args.reference), ("reference-bf16", args.bf16)):
            for threads in thread_counts:
                cpp = results[f"{model_name}/dermal_cpp/{threads}"]["summary"]
                reduced.append({
                    "model": model_name, "file_mb": os.path.getsize(path) / 1e6, "threads": threads,
                    "gradcam_ms": cpp["gradcam_ms"],
                    "forward_ms": results[f"{model_name}/bare_forward/{threads}"]["summary"]["predict_ms"],
                    "process_peak_mb": cpp["process_peak_mb"], "request_peak_mb": cpp["request_peak_mb"],
                    "agreement": "(itself)" if model_name == "reference" else
                    f"{agreed['agreeing']}/{agreed['images']} = {agreed['agreement']:.1%}",
                    "kept": "–" if model_name == "reference" else ("yes" if kept else "no")})

    import torch
    meta = {"date": datetime.datetime.now().isoformat(timespec="seconds"), "cpu": cpu_name(),
            "cores": os.cpu_count(), "torch": torch.__version__, "photo": os.path.relpath(args.photo, ROOT),
            "photo_bytes": os.path.getsize(args.photo), "repeats": args.repeats,
            "gradcam_repeats": args.gradcam_repeats, "side_by_side_repeats": args.side_by_side_repeats,
            "machine": platform.machine(), "native_bfloat16": native_bfloat16()}
    write_outputs(meta, results, side_by_side, reduced, cold)


def write_outputs(meta, results, side_by_side, reduced, cold_start):
    """Writes results.json, results.md and chart.png; prints the markdown."""
    target_lines = targets(results, side_by_side, cold_start)
    os.makedirs(RESULTS, exist_ok=True)
    with open(os.path.join(RESULTS, "results.json"), "w") as f:
        json.dump({"meta": meta, "results": results, "side_by_side": side_by_side, "reduced_precision": reduced,
                   "cold_start": cold_start,
                   "targets": [{"target": t, "figure": v, "met": m} for t, v, m in target_lines]}, f, indent=1)
    text = markdown(meta, results, side_by_side, reduced, cold_start, target_lines)
    with open(os.path.join(RESULTS, "results.md"), "w") as f:
        f.write(text)
    chart(results, os.path.join(RESULTS, "chart.png"))
    print(text)
    print("wrote benchmarks/results/results.md, results.json, chart.png")


def native_bfloat16():
    import bench_common  # noqa: F401 (puts capi/python on the path)
    from dermal.convert import modelfile  # (loads the C library named by DERMAL_LIBRARY)
    return modelfile.native_bfloat16()


def cpu_name():
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor()


if __name__ == "__main__":
    main()
