"""Writes small dermal model files, good and broken, with expected outputs
computed by Python torch, for the C++ model tests.

  /usr/bin/python3 tools/make_model_fixtures.py OUT_DIR
"""
import json
import os
import sys
import zipfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "capi", "python"))
from dermal.convert import modelfile, probe  # noqa: E402  (imports the package: set DERMAL_LIBRARY)
from dermal.convert.torchvision import to_bfloat16_before  # noqa: E402
import make_cam_fixtures  # noqa: E402  (each CAM variant written from its paper)

LABELS = ["akiec", "bcc", "mel", "nv", "vasc"]
WIDTH, HEIGHT = 40, 32
STAGES = ["features.0", "features.1", "features.2", "head"]


class Tiny(nn.Module):
    """conv backbone -> global average pool -> linear, like the real models."""

    def __init__(self, outputs=len(LABELS), head=None):
        super().__init__()
        self.features = nn.Sequential(
            nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU()),
            nn.Sequential(nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.BatchNorm2d(16), nn.ReLU()),
            nn.Sequential(nn.Conv2d(16, 16, 3, padding=1), nn.ReLU()),
        )
        self.head = head or nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, outputs))

    def forward(self, x):
        return self.head(self.features(x))


class NaNHead(nn.Module):
    def forward(self, x):
        return x.mean((2, 3))[:, :5] * float("nan")


class MaskedStem(nn.Module):
    """A stage whose forward wants a second input: not a plain image classifier."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)

    def forward(self, x, mask):
        return torch.relu(self.conv(x * mask))


class TwoInputs(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = MaskedStem()
        self.rest = nn.Sequential(nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU())
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, len(LABELS)))

    def forward(self, x, mask):
        return self.head(self.rest(self.stem(x, mask)))


class Many(nn.Module):
    """Twelve conv stages and a three-layer head: a network cut into many stages."""

    def __init__(self):
        super().__init__()
        widths = [3] + [8] * 6 + [16] * 6
        self.features = nn.Sequential(*(
            nn.Sequential(nn.Conv2d(widths[i], widths[i + 1], 3, stride=2 if i == 6 else 1, padding=1),
                          nn.BatchNorm2d(widths[i + 1]), nn.ReLU())
            for i in range(12)))
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, len(LABELS)))

    def forward(self, x):
        return self.head(self.features(x))


MANY_STAGES = [f"features.{i}" for i in range(12)] + ["head.0", "head.1", "head.2"]


def many_stages_input():
    """A fixed input the C++ test builds the same way."""
    return (torch.arange(3 * HEIGHT * WIDTH, dtype=torch.float32).reshape(1, 3, HEIGHT, WIDTH) % 17) / 8 - 1


def write_many_stages(out):
    """many_stages.pt (no frozen_only stage), many_stages_frozen_only.pt (features.4
    marked frozen_only, as the exporter marks a stage oneDNN gets wrong) and the
    logits Python torch gives for many_stages_input()."""
    torch.manual_seed(5)
    model = Many().train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.rand(4, 3, HEIGHT, WIDTH) * 4 - 2)
    model.eval()
    many = description(stages=MANY_STAGES, cam_layer="features.9")
    modelfile.save(model, many, out / "many_stages.pt")
    save_unchecked(model, dict(many, frozen_only=["features.4"]), out / "many_stages_frozen_only.pt")
    with torch.no_grad():
        logits = model(many_stages_input())[0]
    (out / "many_stages_logits.txt").write_text(" ".join(f"{v:.8g}" for v in logits.tolist()) + "\n")


def tiny_model(seed=0, **kwargs):
    torch.manual_seed(seed)
    model = Tiny(**kwargs)
    model.train()
    with torch.no_grad():  # give BatchNorm non-trivial running statistics
        for _ in range(3):
            model(torch.rand(4, 3, HEIGHT, WIDTH) * 4 - 2)
    return model.eval()


def description(**overrides):
    d = modelfile.make_description(name="tiny", labels=LABELS, width=WIDTH, height=HEIGHT,
                                      stages=STAGES, cam_layer="features.2")
    d.update(overrides)
    return d


def save_unchecked(model, desc, path):
    """Writes a model file as given, without the exporter's checks (for broken fixtures)."""
    extra = {} if desc is None else {modelfile.DESCRIPTION_FILE: json.dumps(desc)}
    torch.jit.save(torch.jit.script(model.eval()), str(path), _extra_files=extra)


def save_with_wrong_probe(model, desc, path, logits_offset=0.0, cam_offset=0.0):
    """Writes a model file whose probe (dermal.convert.probe) is made wrong: the
    offset is added to its median logit and to the median value of its CAM
    map (so that their ranges stay)."""
    files = probe.make_probe(model, desc)
    expected = json.loads(files[probe.PROBE_FILE])
    for values, offset in ((expected["logits"], logits_offset), (expected["cam"]["values"], cam_offset)):
        values[sorted(range(len(values)), key=values.__getitem__)[len(values) // 2]] += offset
    files[probe.PROBE_FILE] = json.dumps(expected)
    files[modelfile.DESCRIPTION_FILE] = json.dumps(desc)
    torch.jit.save(torch.jit.script(model.eval()), str(path), _extra_files=files)


def write_probes(out):
    """probe.pt (its probe holds, as in every file the writer makes),
    probe_wrong_logits.pt and probe_wrong_cam.pt (the expectation perturbed
    by a fifth of its range), probe_bf16.pt (the stages before the CAM layer
    in bfloat16) and probe_center_crop.pt (the probe picture larger than the
    input)."""
    model = tiny_model(seed=3)
    desc = description()
    modelfile.save(model, desc, out / "probe.pt")
    expected = json.loads(probe.make_probe(model, desc)[probe.PROBE_FILE])
    logits_range = max(expected["logits"]) - min(expected["logits"])
    cam_range = max(expected["cam"]["values"]) - min(expected["cam"]["values"])
    save_with_wrong_probe(model, desc, out / "probe_wrong_logits.pt", logits_offset=0.2 * logits_range)
    save_with_wrong_probe(model, desc, out / "probe_wrong_cam.pt", cam_offset=0.2 * cam_range)
    crop = description()
    crop["input"].update(resize="center_crop", resize_shorter_to=48)
    modelfile.save(model, crop, out / "probe_center_crop.pt")
    reduced = tiny_model(seed=3)
    to_bfloat16_before(reduced, STAGES, "features.2")
    modelfile.save(reduced, dict(desc, precision={"reduced": "bfloat16", "before": "features.2"}),
                   out / "probe_bf16.pt")


def model_input(image_path):
    """The tensor the library builds from a photo already at the input size."""
    pixels = np.asarray(Image.open(image_path).convert("RGB"), dtype=np.float32) / 255.0
    x = torch.from_numpy(pixels).permute(2, 0, 1)[None]
    mean = torch.tensor(modelfile.IMAGENET_MEAN)[:, None, None]
    std = torch.tensor(modelfile.IMAGENET_STD)[:, None, None]
    return (x - mean) / std


def expected_outputs(model, image_path, out_path):
    """Probabilities and the Grad-CAM oracle ReLU(sum_k w_ck A^k), min-max normalised,
    for the top class, computed from the same input tensor the library builds."""
    x = model_input(image_path)
    with torch.no_grad():
        activation = model.features(x)[0]
        logits = model.head(activation[None])
        probabilities = torch.softmax(logits, 1)[0]
        top = int(probabilities.argmax())
        weights = model.head[2].weight[top]
        cam = torch.relu((weights[:, None, None] * activation).sum(0))
        cam = (cam - cam.min()) / (cam.max() - cam.min())
    with open(out_path, "w") as f:
        f.write(" ".join(f"{p:.8g}" for p in probabilities.tolist()) + "\n")
        f.write(f"{top} {cam.shape[1]} {cam.shape[0]}\n")
        f.write(" ".join(f"{v:.8g}" for v in cam.flatten().tolist()) + "\n")


# Methods checked with aug_smooth too (their maps at the input's size).
AUG_SMOOTH_METHODS = ["gradcam", "layercam", "eigencam", "ablationcam", "scorecam"]
AUG_FACTORS = (0.9, 1.0, 1.1)  # pytorch-grad-cam's test-time augmentations, each with and without a flip
SCORECAM_EPS = 1e-8            # kScoreCamEpsilon


def method_map(model, x, c, method):
    """The method's map before ReLU (float64, at the CAM layer) for class c and input x (1x3xHxW)."""
    activation = model.features(x).detach().requires_grad_(True)
    if method == "ablationcam":
        return ablation_cam(model, activation[0].detach(), c)
    if method == "scorecam":
        return score_cam(model, x, activation[0].detach(), c)
    logits = model.head(activation)
    score = make_cam_fixtures.finer_score(logits[0], c) if method == "finercam" else logits[0, c]
    gradient, = torch.autograd.grad(score, activation)
    return make_cam_fixtures.CAMS[method](activation[0].detach().double(), gradient[0].double())


def expected_cams(model, image_path, out_path):
    """Each CAM variant for the top class, from eager autograd on the same input; then
    "<method>+aug_smooth" lines, whose values are the map at the input's size."""
    x = model_input(image_path)
    with torch.no_grad():
        top = int(model(x).argmax())
    with open(out_path, "w") as f:
        for method in [*make_cam_fixtures.CAMS, "ablationcam", "scorecam"]:
            expected, flat = make_cam_fixtures.normalize(method_map(model, x, top, method))
            f.write(f"{method} {int(flat)} " + " ".join(f"{v:.8g}" for v in expected.flatten().tolist()) + "\n")
        for method in AUG_SMOOTH_METHODS:
            expected, flat = make_cam_fixtures.normalize(aug_smoothed(model, x, top, method))
            f.write(f"{method}+aug_smooth {int(flat)} " + " ".join(f"{v:.8g}" for v in expected.flatten().tolist())
                    + "\n")


def scaled(m):
    """(m - min) / (max - min); zeros when flat (as make_cam_fixtures.normalize)."""
    return make_cam_fixtures.normalize(m - m.min())[0]


def aug_smoothed(model, x, c, method):
    """pytorch-grad-cam's aug_smooth at the input's size: for each copy of x (flipped
    left-right or not, times 0.9, 1 or 1.1), ReLU of the method's map, scaled to [0, 1],
    stretched bilinearly (half-pixel centres) to the input's size, scaled to [0, 1] again,
    flipped back; the mean of the six."""
    H, W = x.shape[2:]
    maps = []
    for flip in (False, True):
        for factor in AUG_FACTORS:
            copy = x * factor
            if flip:
                copy = copy.flip(3)
            m = scaled(torch.relu(method_map(model, copy, c, method)))
            m = scaled(torch.nn.functional.interpolate(m[None, None], size=(H, W), mode="bilinear",
                                                       align_corners=False)[0, 0])
            maps.append(m.flip(1) if flip else m)
    return sum(maps) / len(maps)


def score_cam(model, x, A, c):
    """Wang et al. (Score-CAM) as pytorch-grad-cam's ScoreCAM: each channel of A stretched to
    the input's size (bilinear, align_corners=True, torch's UpsamplingBilinear2d), scaled by
    (M - min) / (max - min + 1e-8) and multiplied with the input; w = softmax over the
    channels of the class's logit for those inputs; map = sum_k w_k A_k (float64)."""
    H, W = x.shape[2:]
    with torch.no_grad():
        logits = []
        for k in range(A.shape[0]):
            m = torch.nn.functional.interpolate(A[k][None, None], size=(H, W), mode="bilinear",
                                                align_corners=True)[0, 0]
            m = (m - m.min()) / (m.max() - m.min() + SCORECAM_EPS)
            logits.append(float(model(x * m)[0, c]))
        w = torch.softmax(torch.tensor(logits, dtype=torch.float64), 0)
    return sum(w[k] * A[k].double() for k in range(A.shape[0]))


def ablation_cam(model, A, c):
    """Desai & Ramaswamy (Ablation-CAM): w_k = (y_c - y_c with channel k ablated) / y_c, the
    channel set to 0 when min(A) is 0, else to min(A) - 1e7 (pytorch-grad-cam's AblationLayer);
    map = sum_k w_k A_k, in float64 from float32 head outputs."""
    with torch.no_grad():
        logit = float(model.head(A[None])[0, c])
        value = 0.0 if float(A.min()) == 0 else float(A.min()) - 1e7
        weights = []
        for k in range(A.shape[0]):
            ablated = A.clone()
            ablated[k] = value
            weights.append((logit - float(model.head(ablated[None])[0, c])) / logit)
    return sum(weights[k] * A[k].double() for k in range(A.shape[0]))


ROAD_PERCENTS = (10, 20, 50, 80)
# ROAD's imputation: a removed pixel is the weighted mean of its in-picture neighbours.
ROAD_NEIGHBOURS = [((1, 1), 1 / 12), ((0, 1), 1 / 6), ((-1, 1), 1 / 12), ((1, -1), 1 / 12),
                   ((0, -1), 1 / 6), ((-1, -1), 1 / 12), ((1, 0), 1 / 6), ((-1, 0), 1 / 6)]
FAITHFULNESS_METHODS = ["gradcam", "hirescam", "layercam", "fem", "kpcacam"]


def map_at_input(cam, height, width):
    """The map stretched bilinearly (half-pixel centres) and min-max scaled again (float32)."""
    m = torch.nn.functional.interpolate(cam.float()[None, None], size=(height, width), mode="bilinear",
                                        align_corners=False)[0, 0]
    lo, hi = float(m.min()), float(m.max())
    return (m - lo) / (hi - lo) if hi > lo else torch.zeros_like(m)


def road_remove(x, m, percent):
    """Rong, Leemann et al.'s ROAD without noise: pixels with m >= the (100 - percent)-th
    percentile removed; each removed pixel = weighted mean of its neighbours, a dense
    linear system per channel solved in float64."""
    threshold = np.percentile(m.numpy(), 100 - percent)
    removed = ~(m.numpy() < threshold)
    H, W = removed.shape
    if removed.all():
        return torch.zeros_like(x)
    # A pixel within 2e-6 of the threshold could fall on the other side in float32 C++.
    margin = np.abs(m.numpy() - threshold)
    assert margin[margin > 0].min() > 2e-6, ("ROAD threshold too close to a pixel", percent, margin[margin > 0].min(), (margin == 0).sum())
    index = -np.ones((H, W), dtype=np.int64)
    cells = np.argwhere(removed)
    index[removed] = np.arange(len(cells))
    n = len(cells)
    system = torch.zeros(n, n, dtype=torch.float64)
    rhs = torch.zeros(n, x.shape[0], dtype=torch.float64)
    for i, (y, xx) in enumerate(cells):
        for (dy, dx), weight in ROAD_NEIGHBOURS:
            ny, nx = y + dy, xx + dx
            if not (0 <= ny < H and 0 <= nx < W):
                continue
            system[i, i] += weight
            if removed[ny, nx]:
                system[i, index[ny, nx]] -= weight
            else:
                rhs[i] += weight * x[:, ny, nx].double()
    solution = torch.linalg.solve(system, rhs)
    out = x.clone()
    for i, (y, xx) in enumerate(cells):
        out[:, y, xx] = solution[i].float()
    return out


def expected_faithfulness(model, image_path, out_path):
    """Per method (top class): p(x * M) - p(x), then ROAD at 10/20/50/80 % removed."""
    x = model_input(image_path)
    activation = model.features(x).detach().requires_grad_(True)
    logits = model.head(activation)
    top = int(logits.argmax())
    gradient, = torch.autograd.grad(logits[0, top], activation)

    def probability(image):
        with torch.no_grad():
            return float(torch.softmax(model(image[None]), 1)[0, top])

    before = probability(x[0])
    with open(out_path, "w") as f:
        for method in FAITHFULNESS_METHODS:
            cam, flat = make_cam_fixtures.normalize(
                make_cam_fixtures.CAMS[method](activation[0].detach().double(), gradient[0].double()))
            assert not flat, method
            m = map_at_input(cam, HEIGHT, WIDTH)
            figures = [probability(x[0] * m) - before]
            figures += [probability(road_remove(x[0], m, percent)) - before for percent in ROAD_PERCENTS]
            f.write(method + " " + " ".join(f"{v:.8g}" for v in figures) + "\n")


def main(out):
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(11)
    y, x = np.mgrid[0:HEIGHT, 0:WIDTH]
    blob = np.exp(-((x - 28) ** 2 + (y - 10) ** 2) / 40.0)[..., None] * np.array([-120.0, -60.0, 40.0])
    pixels = np.clip(150 + blob + rng.normal(0, 25, (HEIGHT, WIDTH, 3)), 0, 255).astype(np.uint8)
    Image.fromarray(pixels).save(out / "tiny_input.png")

    model = tiny_model()
    modelfile.save(model, description(), out / "tiny.pt")
    expected_outputs(model, out / "tiny_input.png", out / "tiny_expected.txt")
    expected_cams(model, out / "tiny_input.png", out / "tiny_cams.txt")
    expected_faithfulness(model, out / "tiny_input.png", out / "tiny_faithfulness.txt")

    save_unchecked(model, None, out / "no_description.pt")
    save_unchecked(model, description(labels=["a", "b", "c"]), out / "wrong_labels.pt")
    save_unchecked(model, description(stages=["features.0", "features.9", "head"], cam_layer="features.0"),
                   out / "wrong_stage.pt")
    fixed = tiny_model(head=nn.Sequential(nn.Flatten(), nn.Linear(16 * 16 * 20, len(LABELS))))
    wrong_size = description()
    wrong_size["input"].update(width=64, height=64)
    save_unchecked(fixed, wrong_size, out / "wrong_size.pt")
    with zipfile.ZipFile(out / "bad_json.pt", "w") as archive:  # a zip, but no TorchScript
        archive.writestr("tiny/extra/dermal.json", "{")
    whole = (out / "tiny.pt").read_bytes()
    (out / "truncated.pt").write_bytes(whole[: len(whole) // 2])
    (out / "not_a_model.pt").write_text("this is a text file, not a model\n")
    save_unchecked(tiny_model(head=NaNHead()), description(), out / "nan_output.pt")
    # A valid archive whose description is not valid JSON.
    torch.jit.save(torch.jit.script(model), str(out / "malformed_json.pt"),
                   _extra_files={modelfile.DESCRIPTION_FILE: "{\"dermal_format\": 1,"})
    # Networks that are not image classifiers: a 1x5x16x20 map out, a second input wanted.
    save_unchecked(tiny_model(head=nn.Conv2d(16, len(LABELS), 1)), description(), out / "four_d_output.pt")
    save_unchecked(TwoInputs(), description(stages=["stem", "rest", "head"], cam_layer="rest"), out / "two_inputs.pt")
    # The tiny network at 512x512: one request's memory is large enough to measure.
    large = description()
    large["input"].update(width=512, height=512)
    modelfile.save(model, large, out / "tiny_512.pt")
    write_many_stages(out)
    write_probes(out)
    print(f"model fixtures written to {out}")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
