#!/usr/bin/python3
"""Faithfulness figures (docs/cam-methods.md) of every CAM method on the bundled
samples with the demo model, top class, as a Markdown table, beside the same
figures for two maps that know nothing of the photo: a random map (the mean
over RANDOM_MAPS seeded uniform maps at the CAM layer's resolution, stretched
as the real ones are) and a constant map; then each method's mean over the
samples.

    DERMAL_LIBRARY=build/capi/libdermal_c.so /usr/bin/python3 benchmarks/cam_faithfulness.py

The baselines are computed here in Python torch and SciPy as the library
computes its figures (a check first recomputes every real map's figures that
way and reports the largest difference from the library's). Each photo is
decoded by PIL and handed to the library as pixels, so both sides start from
the same ones. The figures are changes of the model's probability, not a
diagnosis.
"""
import glob
import json
import os
import sys
import zipfile

import numpy as np
import scipy.sparse
import scipy.sparse.linalg
import torch
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.append(os.path.join(ROOT, "capi", "python"))
import dermal  # noqa: E402

MODEL = os.path.join(ROOT, "examples", "data", "demo-model.pt")
METHODS = ["gradcam", "gradcam++", "xgradcam", "hirescam", "layercam", "eigencam", "gradcamelementwise",
           "eigengradcam", "finercam", "fem", "kpcacam", "ablationcam", "scorecam"]
PERCENTS = (10, 20, 50, 80)
RANDOM_MAPS = 5  # seeds 0..4
# ROAD's imputation (src/model/faithfulness.cpp): a removed pixel is the weighted mean of its neighbours.
NEIGHBOURS = [((1, 1), 1 / 12), ((0, 1), 1 / 6), ((-1, 1), 1 / 12), ((1, -1), 1 / 12),
              ((0, -1), 1 / 6), ((-1, -1), 1 / 12), ((1, 0), 1 / 6), ((-1, 0), 1 / 6)]


class Reference:
    """The demo model in Python torch, with the figures computed as the library does."""

    def __init__(self):
        torch.set_num_threads(1)
        with zipfile.ZipFile(MODEL) as archive:
            name = next(n for n in archive.namelist() if n.endswith("extra/dermal.json"))
            self.description = json.loads(archive.read(name))
        self.network = torch.jit.load(MODEL).eval()

    def input(self, rgb):
        """The normalised input tensor (3xHxW) the library builds from an upright RGB picture
        (stretch, PIL's bilinear: the demo model's description)."""
        d = self.description["input"]
        assert d["resize"] == "stretch" and d["resample"] == "bilinear", d
        pixels = np.asarray(Image.fromarray(rgb).resize((d["width"], d["height"]), Image.BILINEAR), np.float32)
        x = torch.from_numpy(pixels * d["scale"]).permute(2, 0, 1)
        return (x - torch.tensor(d["mean"])[:, None, None]) / torch.tensor(d["std"])[:, None, None]

    def probability(self, x, c):
        with torch.no_grad():
            return float(torch.softmax(self.network(x[None]), 1)[0, c])

    def figures(self, x, cam, c):
        """[CAM x image, ROAD 10/20/50/80 %] for a map at any resolution (HxW float32)."""
        m = torch.nn.functional.interpolate(torch.as_tensor(cam, dtype=torch.float32)[None, None],
                                            size=x.shape[1:], mode="bilinear", align_corners=False)[0, 0]
        lo, hi = float(m.min()), float(m.max())
        m = (m - lo) / (hi - lo) if hi > lo else torch.zeros_like(m)
        before = self.probability(x, c)
        return [self.probability(x * m, c) - before] + \
            [self.probability(road_remove(x, m.numpy(), p), c) - before for p in PERCENTS]


def road_remove(x, m, percent):
    """x (3xHxW) with the pixels where m >= its (100 - percent)-th percentile imputed from
    their neighbours: one sparse system per channel, solved directly; all removed: zeros."""
    removed = ~(m < np.float32(np.percentile(m, 100 - percent)))
    if removed.all():
        return torch.zeros_like(x)
    H, W = m.shape
    cells = np.argwhere(removed)
    index = -np.ones((H, W), np.int64)
    index[removed] = np.arange(len(cells))
    rows, cols, values = [], [], []
    rhs = np.zeros((len(cells), x.shape[0]))
    pixels = x.double().numpy()
    for i, (y, xx) in enumerate(cells):
        diagonal = 0.0
        for (dy, dx), weight in NEIGHBOURS:
            ny, nx = y + dy, xx + dx
            if not (0 <= ny < H and 0 <= nx < W):
                continue
            diagonal += weight
            if removed[ny, nx]:
                rows.append(i), cols.append(index[ny, nx]), values.append(-weight)
            else:
                rhs[i] += weight * pixels[:, ny, nx]
        rows.append(i), cols.append(i), values.append(diagonal)
    system = scipy.sparse.csc_matrix((values, (rows, cols)), shape=(len(cells), len(cells)))
    solution = scipy.sparse.linalg.splu(system).solve(rhs)
    out = x.clone()
    out[:, cells[:, 0], cells[:, 1]] = torch.from_numpy(solution.T).float()
    return out


def main():
    photos = sorted(glob.glob(os.path.join(ROOT, "examples", "data", "samples", "*.jpg")))
    reference = Reference()
    rows = {m: [] for m in METHODS + ["random map", "constant map"]}
    largest_difference = 0.0
    lines = ["| photo | top class (p) | map | CAM x image | ROAD 10 % | 20 % | 50 % | 80 % |",
             "|---|---|---|---:|---:|---:|---:|---:|"]
    with dermal.Model(MODEL) as model:
        for photo in photos:
            rgb = np.asarray(Image.open(photo).convert("RGB"))
            x = reference.input(rgb)
            name = os.path.basename(photo)
            for method in METHODS:
                result = model.predict(rgb, cam_method=method, overlay=False, faithfulness=True)
                top = result.top[0]
                [e] = result.explanations
                head = f"| {name} | {top.label} ({top.probability:.3f}) |"
                if e.faithfulness is None:
                    lines.append(f"{head} {method} | flat map | | | | |")
                    continue
                row = [e.faithfulness.cam_mult_image_change] + [e.faithfulness.road[p] for p in PERCENTS]
                again = reference.figures(x, e.heatmap, top.index)
                largest_difference = max(largest_difference, *(abs(a - b) for a, b in zip(row, again)))
                rows[method].append(row)
                lines.append(f"{head} {method} | " + " | ".join(f"{v:+.3f}" for v in row) + " |")
            shape = e.heatmap.shape
            random_rows = [reference.figures(x, np.random.default_rng(seed).random(shape, np.float32), top.index)
                           for seed in range(RANDOM_MAPS)]
            random_row = list(np.mean(random_rows, axis=0))
            constant_row = reference.figures(x, np.ones(shape, np.float32), top.index)
            for label, row in (("random map", random_row), ("constant map", constant_row)):
                rows[label].append(row)
                lines.append(f"{head} *{label}* | " + " | ".join(f"{v:+.3f}" for v in row) + " |")
    print(f"Check: the real maps' figures recomputed in Python torch + SciPy differ from the library's "
          f"by at most {largest_difference:.1e}.\n")
    print("\n".join(lines))
    print("\n| map | maps | mean CAM x image | mean ROAD 10 % | 20 % | 50 % | 80 % |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for method, figures in rows.items():
        if figures:
            means = np.mean(figures, axis=0)
            label = method if method in METHODS else f"*{method}*"
            print(f"| {label} | {len(figures)} | " + " | ".join(f"{v:+.3f}" for v in means) + " |")
    print(f"\n*random map*: the mean over {RANDOM_MAPS} uniform maps (seeds 0..{RANDOM_MAPS - 1}) at the CAM "
          "layer's resolution, stretched as the real ones; *constant map*: every pixel equal.")


if __name__ == "__main__":
    main()
