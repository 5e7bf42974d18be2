#!/usr/bin/python3
"""The Python package's own cost per prediction: the time of model.predict()
minus the time spent inside the C call it makes, per call, so that the
inference itself (and the machine's noise in it) cancels out.

    DERMAL_LIBRARY=build/capi/libdermal_c.so \
        /usr/bin/python3 benchmarks/python_binding_overhead.py MODEL PHOTO [--repeats N]

Prints the medians (microseconds) for an encoded photo as bytes, as a path
and as a decoded numpy array, each with the overlay only (the defaults) and
with the photo-sized float map too (full_heatmap=True).
"""
import os
import statistics
import sys
import time

import bench_common as common


def main():
    args = common.parse_args(__doc__.split("\n\n")[0])
    sys.path.append(os.path.join(common.ROOT, "capi", "python"))
    import dermal
    import numpy
    from PIL import Image

    with open(args.photo, "rb") as file:
        jpeg = file.read()
    pixels = numpy.asarray(Image.open(args.photo).convert("RGB"))
    inside = []

    def timed(function):
        def call(*arguments):
            started = time.perf_counter()
            try:
                return function(*arguments)
            finally:
                inside.append(time.perf_counter() - started)
        return call

    for name in ("dermal_model_predict", "dermal_model_predict_rgb"):
        setattr(dermal.lib, name, timed(getattr(dermal.lib, name)))
    model = dermal.Model(args.model, threads=args.threads)
    report = {}
    for kind, image in (("bytes", jpeg), ("path", args.photo), ("numpy", pixels)):
        for full_heatmap in (False, True):
            for _ in range(args.warmup):
                model.predict(image, full_heatmap=full_heatmap)
            inside.clear()
            outside = []
            for _ in range(args.repeats):
                started = time.perf_counter()
                model.predict(image, full_heatmap=full_heatmap)
                outside.append(time.perf_counter() - started)
            overhead = [(total - c_call) * 1e6 for total, c_call in zip(outside, inside)]
            report[f"{kind}{', full_heatmap' if full_heatmap else ''}"] = {
                "predict_median_ms": statistics.median(outside) * 1e3,
                "c_call_median_ms": statistics.median(inside) * 1e3,
                "overhead_median_us": statistics.median(overhead),
                "runs": args.repeats,
            }
    width, height = pixels.shape[1], pixels.shape[0]
    print(f"dermal {dermal.__version__} (library {dermal.library_version()}), {os.path.basename(args.model)}, "
          f"{width}x{height} photo, {args.repeats} calls each")
    for name, values in report.items():
        print(f"  {name:<24} predict {values['predict_median_ms']:7.2f} ms   C call {values['c_call_median_ms']:7.2f} ms"
              f"   overhead {values['overhead_median_us']:7.0f} us")
    common.report(report)


if __name__ == "__main__":
    main()
