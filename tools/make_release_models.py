#!/usr/bin/python3
"""Exports model files with this Debian release's torch and records what dermal
(the build in $DERMAL_BUILD_DIR) predicts with them on the bundled sample
photos, so that the other release can check it loads the same files and
predicts the same (tests/cross_release; tools/debian13.sh runs both ways).

    DERMAL_BUILD_DIR=build /usr/bin/python3 tools/make_release_models.py OUT_DIR

The files come from seeded weights whose residual branches are damped
(damped_checkpoint): plain seeded ResNet-50 and EfficientNetV2-S are chaotic,
so rounding alone moves their outputs beyond what the check allows, on one
release as between releases.

OUT_DIR receives the model files and predictions.json:
    {"torch": "2.6.0", "python": "3.13.5", "models": {"FILE": {"exported_by": ...,
     "predictions": {"PHOTO": {"probabilities": [...], "cam_label": ..., "heatmap": [[...]]}}}}}
"""
import glob
import json
import os
import platform
import shutil
import subprocess
import sys

import torch
from torchvision.models.efficientnet import FusedMBConv, MBConv
from torchvision.models.mobilenetv3 import InvertedResidual
from torchvision.models.resnet import Bottleneck


ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
PACKAGE_DIR = os.path.join(ROOT, "capi", "python")
SAMPLES = sorted(glob.glob(os.path.join(ROOT, "examples", "data", "samples", "*.jpg")))
LABELS = "akiec,bcc,bkl,df,mel,nv,vasc"
SIZE = "64"

# file → (architecture, further exporter arguments); one file per architecture the exporter knows.
EXPORTS = {
    "efficientnet_v2_s.pt": ("efficientnet_v2_s", []),
    "mobilenet_v3_large.pt": ("mobilenet_v3_large", ["--cam-layer", "features.12"]),
    "resnet50.pt": ("resnet50", ["--cam-layer", "layer3", "--resize", "center_crop"]),
    "densenet121.pt": ("densenet121", []),
}
# The scale of each residual branch's last BatchNorm. With torchvision's seeded
# weights (scale 1) the branches add up: on torch 1.13, running the
# optimised or the frozen-only graph (rounding only) moved ResNet-50's
# normalised 4x4 Grad-CAM map by up to 0.094 and 1e-6 of input noise moved
# EfficientNetV2-S's logits by 7.8; at 0.2 both paths agree within 1.3e-5
# (maps) and 5e-7 (probabilities), and the scores still differ by photo.
RESIDUAL_SCALE = 0.2
# The bundled demo model is one file for both releases (exported by torch 1.13).
BUNDLED = {"demo-model.pt": os.path.join(ROOT, "examples", "data", "demo-model.pt")}


def dermal_package():
    build = os.environ.get("DERMAL_BUILD_DIR")
    if not build:
        sys.exit("make_release_models: set DERMAL_BUILD_DIR to the CMake build directory")
    os.environ["DERMAL_LIBRARY"] = os.path.join(build, "capi", "libdermal_c.so")
    sys.path.insert(0, PACKAGE_DIR)
    import dermal
    import dermal.convert.torchvision  # noqa: F401  (dermal.convert.torchvision below)
    return dermal


def damped_checkpoint(dermal, arch, path):
    """Writes the state_dict of `arch` (7 classes) from seed 0 with each residual
    branch's last BatchNorm scale multiplied by RESIDUAL_SCALE."""
    torch.manual_seed(0)
    net = dermal.convert.torchvision.build_torchvision(arch, len(LABELS.split(",")))
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, Bottleneck):
                module.bn3.weight.mul_(RESIDUAL_SCALE)
            elif isinstance(module, (MBConv, FusedMBConv, InvertedResidual)) and module.use_res_connect:
                norms = [m for m in module.block.modules() if isinstance(m, torch.nn.BatchNorm2d)]
                norms[-1].weight.mul_(RESIDUAL_SCALE)
    torch.save(net.state_dict(), path)


def predictions(dermal, path):
    """photo name → dermal's probabilities (model's label order) and Grad-CAM map
    (at the CAM layer's resolution, normalised) of the top class."""
    out = {}
    with dermal.Model(path) as model:
        for photo in SAMPLES:
            with open(photo, "rb") as f:
                result = model.predict(f.read(), top_k=len(model.labels))
            out[os.path.basename(photo)] = {
                "probabilities": [result.probabilities[label] for label in model.labels],
                "cam_label": result.explanations[0].label,
                "heatmap": result.explanations[0].heatmap.tolist(),
            }
    return out


def main(out):
    dermal = dermal_package()
    os.makedirs(out, exist_ok=True)
    for name, (arch, arguments) in EXPORTS.items():
        checkpoint = os.path.join(out, arch + ".pth")
        damped_checkpoint(dermal, arch, checkpoint)
        subprocess.run([sys.executable, "-m", "dermal.convert", "torchvision", "--arch", arch, *arguments,
                        "--labels", LABELS, "--size", SIZE, "--checkpoint", checkpoint,
                        "--calibrate-bn", str(dermal.convert.torchvision.DEFAULT_CALIBRATION_BATCHES),
                        "--out", os.path.join(out, name)], check=True, env=dict(os.environ, PYTHONPATH=PACKAGE_DIR))
        os.remove(checkpoint)
    for name, source in BUNDLED.items():
        shutil.copyfile(source, os.path.join(out, name))
    manifest = {"torch": torch.__version__, "python": platform.python_version(), "models": {}}
    for name in [*EXPORTS, *BUNDLED]:
        manifest["models"][name] = {
            "exported_by": "this release's python3 -m dermal.convert torchvision" if name in EXPORTS else "torch 1.13 (bundled file)",
            "predictions": predictions(dermal, os.path.join(out, name)),
        }
    with open(os.path.join(out, "predictions.json"), "w") as f:
        json.dump(manifest, f)
    print(f"wrote {len(manifest['models'])} models and predictions.json to {out} (torch {torch.__version__})")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
