#!/usr/bin/python3
"""Exports model files with this Debian release's torch and records what dermal
(the build in $DERMAL_BUILD_DIR) predicts with them on the bundled sample
photos, so that the other release can check it loads the same files and
predicts the same (tests/cross_release; tools/debian13.sh runs both ways).

    DERMAL_BUILD_DIR=build /usr/bin/python3 tools/make_release_models.py OUT_DIR

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

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
SAMPLES = sorted(glob.glob(os.path.join(ROOT, "examples", "data", "samples", "*.jpg")))
LABELS = "akiec,bcc,bkl,df,mel,nv,vasc"
SIZE = "64"

# file → exporter arguments; one file per architecture the exporter knows.
EXPORTS = {
    "efficientnet_v2_s.pt": ["--arch", "efficientnet_v2_s"],
    "mobilenet_v3_large.pt": ["--arch", "mobilenet_v3_large", "--cam-layer", "features.12"],
    "resnet50.pt": ["--arch", "resnet50", "--cam-layer", "layer3", "--resize", "center_crop"],
    "densenet121.pt": ["--arch", "densenet121"],
}
# The bundled demo model is one file for both releases (exported by torch 1.13).
BUNDLED = {"demo-model.pt": os.path.join(ROOT, "examples", "data", "demo-model.pt")}


def dermal_package():
    build = os.environ.get("DERMAL_BUILD_DIR")
    if not build:
        sys.exit("make_release_models: set DERMAL_BUILD_DIR to the CMake build directory")
    os.environ["DERMAL_LIBRARY"] = os.path.join(build, "capi", "libdermal_c.so")
    sys.path.insert(0, os.path.join(ROOT, "capi", "python"))
    import dermal
    return dermal


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
    for name, arguments in EXPORTS.items():
        subprocess.run([sys.executable, os.path.join(ROOT, "tools", "export_model.py"), *arguments,
                        "--labels", LABELS, "--size", SIZE, "--seed", "0", "--out", os.path.join(out, name)],
                       check=True)
    for name, source in BUNDLED.items():
        shutil.copyfile(source, os.path.join(out, name))
    manifest = {"torch": torch.__version__, "python": platform.python_version(), "models": {}}
    for name in [*EXPORTS, *BUNDLED]:
        manifest["models"][name] = {
            "exported_by": "this release's tools/export_model.py" if name in EXPORTS else "torch 1.13 (bundled file)",
            "predictions": predictions(dermal, os.path.join(out, name)),
        }
    with open(os.path.join(out, "predictions.json"), "w") as f:
        json.dump(manifest, f)
    print(f"wrote {len(manifest['models'])} models and predictions.json to {out} (torch {torch.__version__})")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
