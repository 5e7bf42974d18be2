#!/usr/bin/python3
"""Faithfulness figures (docs/cam-methods.md) of every CAM method on the bundled
samples with the demo model, top class, as a Markdown table; then each
method's mean over the samples.

    DERMAL_LIBRARY=build/capi/libdermal_c.so /usr/bin/python3 benchmarks/cam_faithfulness.py

The figures are changes of the model's probability, not a diagnosis.
"""
import glob
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.append(os.path.join(ROOT, "capi", "python"))
import dermal  # noqa: E402

METHODS = ["gradcam", "gradcam++", "xgradcam", "hirescam", "layercam", "eigencam", "gradcamelementwise",
           "eigengradcam", "finercam", "fem", "kpcacam", "ablationcam"]


def main():
    photos = sorted(p for p in glob.glob(os.path.join(ROOT, "examples", "data", "samples", "*.jpg")))
    means = {m: [] for m in METHODS}
    print("| photo | top class (p) | method | CAM x image | ROAD 10 % | 20 % | 50 % | 80 % |")
    print("|---|---|---|---:|---:|---:|---:|---:|")
    with dermal.Model(os.path.join(ROOT, "examples", "data", "demo-model.pt")) as model:
        for photo in photos:
            for method in METHODS:
                result = model.predict(photo, cam_method=method, overlay=False, faithfulness=True)
                top = result.top[0]
                [e] = result.explanations
                f = e.faithfulness
                if f is None:
                    print(f"| {os.path.basename(photo)} | {top.label} ({top.probability:.3f}) | {method} | flat map | | | | |")
                    continue
                row = [f.cam_mult_image_change] + [f.road[p] for p in (10, 20, 50, 80)]
                means[method].append(row)
                print(f"| {os.path.basename(photo)} | {top.label} ({top.probability:.3f}) | {method} | "
                      + " | ".join(f"{v:+.3f}" for v in row) + " |")
    print("\n| method | maps | mean CAM x image | mean ROAD 10 % | 20 % | 50 % | 80 % |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for method, rows in means.items():
        if rows:
            cols = [sum(r[i] for r in rows) / len(rows) for i in range(5)]
            print(f"| {method} | {len(rows)} | " + " | ".join(f"{v:+.3f}" for v in cols) + " |")


if __name__ == "__main__":
    main()
