#!/usr/bin/python3
"""dermal through its Python package, in one fresh process: a JPEG photo in,
top classes and a JPEG Grad-CAM overlay out, as a Python web app calls it.

    DERMAL_LIBRARY=build/capi/libdermal_c.so \
        /usr/bin/python3 benchmarks/python_dermal.py MODEL PHOTO [--threads N] [--repeats N]

The package is imported from capi/python unless it is installed.
"""
import os
import sys
import time

import bench_common as common


def main():
    args = common.parse_args(__doc__.split("\n\n")[0], dermal_options=True)
    sys.path.append(os.path.join(common.ROOT, "capi", "python"))
    import dermal
    baseline = common.memory()[0]
    jpeg = open(args.photo, "rb").read()

    started = time.perf_counter()
    # tune_allocator: the configuration the README's figures describe (as dermal_stages.cpp).
    model = dermal.Model(args.model, threads=args.threads, explain=True, tune_allocator=True,
                         release_memory_after_predict=bool(args.release_memory_after_predict))
    load_ms = (time.perf_counter() - started) * 1e3
    load_peak = common.memory()[1]
    settled = common.after_load()

    first = common.Stage()
    result = first.run(lambda: model.predict(jpeg, explain=True, cam_method="gradcam"))
    common.first_result()
    for _ in range(args.warmup):
        model.predict(jpeg, explain=False)
        model.predict(jpeg, explain=True)
    stages = {"predict": common.Stage(), "end_to_end_gradcam": common.Stage()}
    for _ in range(args.repeats):
        stages["predict"].run(lambda: model.predict(jpeg, explain=False))
        stages["end_to_end_gradcam"].run(lambda: model.predict(jpeg, explain=True, cam_method="gradcam"))
    common.report({
        "baseline_rss_mb": baseline, "load_ms": load_ms, "load_peak_mb": load_peak, **settled,
        "first_request_ms": first.milliseconds[0], "first_request_peak_mb": first.peak,
        "stages": {name: stage.json() for name, stage in stages.items()},
        "process_peak_mb": common.process_peak(), "rss_end_mb": common.memory()[0],
        "threads": args.threads, "release_memory_after_predict": bool(args.release_memory_after_predict),
        "top1": result.top[0].label, "overlay_bytes": len(result.explanations[0].overlay),
    })


if __name__ == "__main__":
    main()
