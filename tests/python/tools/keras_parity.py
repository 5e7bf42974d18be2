#!/usr/bin/python3
"""Parity of imported Keras models with TensorFlow.js, family by family.

    /usr/bin/python3 tests/python/keras_parity.py [--with-300] [--work DIR]

For each case (family x file layout x input size) it writes the Keras file
and the TensorFlow.js model from one description (tools/make_keras_fixtures.py),
imports the Keras file with python3 -m dermal.convert keras, and compares on seeded
photos the logits and the Grad-CAM map of the imported TorchScript file (run
stage by stage, as the library does) with those of tfjs-layers
(tests/keras/run_tfjs.js). Prints the table; tests/python/tools/test_keras_import.py
asserts on the same rows.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import torch

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
TOOLS = os.path.join(ROOT, "tools")
TFJS_DIR = os.path.join(ROOT, "tests", "keras")
sys.path.insert(0, TOOLS)
sys.path.insert(0, os.path.join(ROOT, "capi", "python"))  # and DERMAL_LIBRARY set, for `import dermal`
from dermal.convert import modelfile  # noqa: E402

import convert_command  # noqa: E402
import make_keras_fixtures  # noqa: E402

# family -> (Keras layer for Grad-CAM, pixel scale and offset the app applies)
FAMILY_SETUP = {
    "custom_cnn": ("conv2d_2", 1.0, 0.0),
    "teachable_machine": ("out_relu", 1.0 / 127.5, -1.0),
    "efficientnet_v2_s": ("top_conv", 1.0, 0.0),
    "coverage": ("pad", 1.0, 0.0),
    "resnet50": ("conv5_block3_out", 1.0, -120.0),
    "vgg16": ("block5_conv3", 1.0, -120.0),
    "densenet121": ("relu", 1.0 / 255.0, 0.0),
    "xception": ("block14_sepconv2_act", 1.0 / 127.5, -1.0),
    "efficientnet_b0": ("top_activation", 1.0, 0.0),
    "mobilenet_v3_small": ("activation_17", 1.0, 0.0),
    "trained_demo": ("block5_1_relu", 1.0, 0.0),
}
SMALL = 64
PHOTOS_SMALL = 3
PHOTOS_LARGE = 1


def cases(with_300):
    """(family, layout, size) rows of the table."""
    rows = [(family, layout, SMALL)
            for family, (_, layouts) in make_keras_fixtures.FAMILIES.items() for layout in layouts]
    if with_300:
        rows.append(("efficientnet_v2_s", "keras3.keras", 300))
    return rows


def photos(size, count, seed=7):
    """Seeded smooth 8-bit RGB photos, count x size x size x 3."""
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(0, 255, (count, 6, 6, 3))
    positions = np.linspace(0, 5, size)
    low = np.floor(positions).astype(int).clip(0, 4)
    t = (positions - low)[None, :, None, None]
    rows = coarse[:, low] * (1 - t) + coarse[:, low + 1] * t
    t = t.transpose(0, 2, 1, 3)
    image = rows[:, :, low] * (1 - t) + rows[:, :, low + 1] * t
    image += rng.normal(0, 12, image.shape)
    return image.clip(0, 255).round().astype(np.uint8)


def model_inputs(pixels, scale, offset):
    """What the app feeds the model: float32 pixel * scale + offset, NHWC."""
    return (pixels.astype(np.float32) * np.float32(scale) + np.float32(offset)).astype(np.float32)


def run_tfjs(tfjs_dir, inputs, cam_layer, work):
    """[{logits, cam, cam_shape, cam_class}] computed by tests/keras/run_tfjs.js."""
    if not os.path.isdir(os.path.join(TFJS_DIR, "node_modules", "@tensorflow", "tfjs-layers")):
        raise RuntimeError("tfjs is not installed: run `npm ci --prefix tests/keras` (from its package-lock.json)")
    data = os.path.join(work, "inputs.f32")
    out = os.path.join(work, "tfjs.json")
    inputs.astype("<f4").tofile(data)
    subprocess.run(["node", os.path.join(TFJS_DIR, "run_tfjs.js"), tfjs_dir, data, str(len(inputs)), out,
                    "--cam", cam_layer], check=True, capture_output=True, cwd=TFJS_DIR)
    with open(out) as f:
        return json.load(f)


def import_file(path, out, classes, scale, offset, extra=()):
    """Runs the importer as a user would; returns its exit status and stderr."""
    return convert_command.run("keras", path, "--labels", ",".join(f"class {i}" for i in range(classes)),
                               "--scale", repr(scale), "--offset", repr(offset), "--out", out, *extra)


def torch_logits_and_cam(model_path, inputs, cam_stage, classes):
    """Logits of the imported file run stage by stage, and the Grad-CAM recipe
    of the Keras apps at `cam_stage` (ReLU of the channels weighted by the
    spatially averaged gradient of the class logit), as HxW arrays."""
    files = {modelfile.DESCRIPTION_FILE: ""}
    module = torch.jit.load(model_path, _extra_files=files)
    stages = json.loads(files[modelfile.DESCRIPTION_FILE])["stages"]
    split = stages.index(cam_stage) + 1
    logits, cams = [], []
    for image, target in zip(inputs, classes):
        x = torch.from_numpy(image).permute(2, 0, 1).unsqueeze(0)
        with torch.no_grad():
            activation = modelfile.run_stages(module, stages[:split], x)
        activation.requires_grad_(True)
        out = modelfile.run_stages(module, stages[split:], activation)
        (gradient,) = torch.autograd.grad(out[0, target], activation)
        weights = gradient.mean(dim=(2, 3), keepdim=True)
        cams.append(torch.relu((activation * weights).sum(1))[0].detach().numpy())
        logits.append(out[0].detach().numpy())
    return np.array(logits), cams


def compare(family, layout, size, work, keep_model=False):
    """One row of the table: {max_dlogit, logit_range, top1 agreement, max_dcam, cam_max, ...}."""
    cam_layer, scale, offset = FAMILY_SETUP[family]
    fixtures = os.path.join(work, f"{family}-{size}")
    os.makedirs(fixtures, exist_ok=True)
    paths, tfjs_dir = make_keras_fixtures.write_family(family, size, fixtures, [layout])
    pixels = photos(size, PHOTOS_SMALL if size <= SMALL else PHOTOS_LARGE)
    inputs = model_inputs(pixels, scale, offset)
    expected = run_tfjs(tfjs_dir, inputs, cam_layer, fixtures)
    classes = len(expected[0]["logits"])
    model_path = os.path.join(fixtures, f"{family}-{size}-{layout}.pt")
    result = import_file(paths[layout], model_path, classes, scale, offset, ["--cam-layer", cam_layer])
    if result.returncode != 0:
        raise RuntimeError(f"import of {paths[layout]} failed: {result.stderr}")
    description = modelfile.load_description(model_path)
    logits, cams = torch_logits_and_cam(model_path, inputs, description["cam_layer"],
                                        [e["cam_class"] for e in expected])
    tfjs_logits = np.array([e["logits"] for e in expected])
    tfjs_cams = [np.array(e["cam"]).reshape(e["cam_shape"]) for e in expected]
    row = {
        "family": family, "layout": layout, "size": size, "photos": len(inputs),
        "max_dlogit": float(np.abs(logits - tfjs_logits).max()),
        "logit_range": float(tfjs_logits.max() - tfjs_logits.min()),
        "top1_agree": int((logits.argmax(1) == tfjs_logits.argmax(1)).sum()),
        "max_dcam": max(float(np.abs(a - b).max()) for a, b in zip(cams, tfjs_cams)),
        "cam_max": max(float(b.max()) for b in tfjs_cams),
        "cam_shape_equal": all(a.shape == b.shape for a, b in zip(cams, tfjs_cams)),
        "cam_layer": cam_layer, "output": description["output"],
        "pixels": pixels, "tfjs_logits": tfjs_logits, "tfjs_cams": tfjs_cams,
        "cam_classes": [e["cam_class"] for e in expected], "model_path": model_path,
    }
    if not keep_model:
        for path in list(paths.values()):
            os.unlink(path)
    return row


def table(rows):
    lines = ["| family | layout | size | photos | max abs dlogit | / logit range | top-1 agree "
             "| CAM layer | max abs dCAM | / CAM max |",
             "|---|---|---:|---:|---:|---:|---:|---|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['family']} | {r['layout']} | {r['size']} | {r['photos']} | {r['max_dlogit']:.2e} "
                     f"| {r['max_dlogit'] / r['logit_range']:.2e} | {r['top1_agree']}/{r['photos']} "
                     f"| {r['cam_layer']} | {r['max_dcam']:.2e} | {r['max_dcam'] / max(r['cam_max'], 1e-30):.2e} |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--with-300", action="store_true",
                        help="add EfficientNetV2-S at 300x300 (a few minutes: tfjs is pure JavaScript)")
    parser.add_argument("--work", help="keep the files in this directory (default: a temporary one)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as temporary:
        work = args.work or temporary
        rows = []
        for family, layout, size in cases(args.with_300):
            rows.append(compare(family, layout, size, work))
            print(f"{family} {layout} {size}: done", file=sys.stderr)
        print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
