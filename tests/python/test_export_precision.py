"""tools/export_model.py --precision bf16: the file reloads with the same
description and stages, computes the stages before the CAM layer in bfloat16
and the rest in float32, its stages still compose to forward, dermal loads it,
and it ranks generated lesion photos as the float32 export does."""
import os
import subprocess
import sys

import pytest
import torch
from torchvision.transforms import functional as TF

import dermal_model
import lesions

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
EXPORT = os.path.join(ROOT, "tools", "export_model.py")
CLASSIFY = os.path.join(os.environ.get("DERMAL_BUILD_DIR", os.path.join(ROOT, "build")), "examples", "dermal-classify")
LABELS = "akiec,bcc,bkl,df,mel,nv,vasc"
SIZE = 160
CAM_LAYER = "features.7"


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    """{"fp32": path, "bf16": path}: the same seeded network in both precisions."""
    out = tmp_path_factory.mktemp("precision")
    paths = {}
    for precision in ("fp32", "bf16"):
        paths[precision] = str(out / f"{precision}.pt")
        result = subprocess.run(
            [sys.executable, EXPORT, "--arch", "efficientnet_v2_s", "--seed", "0", "--labels", LABELS,
             "--size", str(SIZE), "--threads", "1", "--precision", precision, "--out", paths[precision]],
            capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr
    return paths


def test_bf16_file_keeps_description_and_stages(exports):
    assert dermal_model.load_description(exports["bf16"]) == dermal_model.load_description(exports["fp32"])
    assert os.path.getsize(exports["bf16"]) < 0.6 * os.path.getsize(exports["fp32"])


def test_bf16_only_before_the_cam_layer_and_stages_compose(exports):
    description = dermal_model.load_description(exports["bf16"])
    model = torch.jit.load(exports["bf16"])
    stages = description["stages"]
    split = stages.index(CAM_LAYER)
    for i, name in enumerate(stages):
        dtypes = {p.dtype for p in dermal_model.submodule(model, name).parameters()}
        assert dtypes == ({torch.bfloat16} if i < split else {torch.float32}), name
    x = torch.rand(2, 3, SIZE, SIZE)
    with torch.no_grad():
        activation = dermal_model.run_stages(model, stages[:split + 1], x)
        assert activation.dtype == torch.float32
        assert torch.equal(model(x), dermal_model.run_stages(model, stages, x))


def test_bf16_agrees_with_fp32_on_lesion_photos(exports):
    images = torch.stack([TF.to_tensor(image) for _, _, image, _ in lesions.generate(11, 12, SIZE, SIZE)])
    mean = torch.tensor(dermal_model.IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(dermal_model.IMAGENET_STD).view(1, 3, 1, 1)
    x = (images - mean) / std
    with torch.no_grad():
        top = {p: torch.jit.load(path)(x).argmax(1) for p, path in exports.items()}
    assert (top["bf16"] == top["fp32"]).float().mean() >= 11 / 12


@pytest.mark.skipif(not os.path.exists(CLASSIFY), reason="build/examples/dermal-classify is not built")
def test_dermal_loads_bf16_and_explains(exports, tmp_path):
    photo, overlay = tmp_path / "photo.jpg", tmp_path / "overlay.jpg"
    next(iter(lesions.generate(5, 1, 200, 150)))[2].save(photo, quality=90)
    result = subprocess.run([CLASSIFY, "--model", exports["bf16"], "--heatmap", str(overlay), str(photo)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert overlay.stat().st_size > 0
