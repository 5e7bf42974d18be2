"""The committed demo model: its description and its accuracy on held-out images."""
import os

import numpy as np
import pytest
import torch
from PIL import Image

from dermal.convert import modelfile
import lesions

MODEL = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..",
                     "examples", "data", "demo-model.pt")
STAGES = ["features.0", "features.1", "features.2", "features.3", "features.4", "head"]


@pytest.fixture(scope="module")
def model():
    torch.set_num_threads(2)
    return torch.jit.load(MODEL).eval()


def test_description():
    d = modelfile.load_description(MODEL)
    assert d["labels"] == lesions.CLASSES == ["melanoma", "nevus", "vascular"]
    assert d["stages"] == STAGES
    assert d["cam_layer"] == "features.4"
    assert d["output"] == "softmax"
    spec = d["input"]
    assert (spec["width"], spec["height"], spec["resize"]) == (128, 128, "stretch")
    assert spec["mean"] == modelfile.IMAGENET_MEAN
    assert spec["std"] == modelfile.IMAGENET_STD
    assert os.path.getsize(MODEL) < 5 * 1024 * 1024


def _input(image):
    """The library's preprocessing: bilinear stretch, /255, ImageNet mean/std."""
    x = np.asarray(image.resize((128, 128), Image.BILINEAR), np.float32) / 255.0
    x = (x - np.array(modelfile.IMAGENET_MEAN, np.float32)) / np.array(
        modelfile.IMAGENET_STD, np.float32)
    return torch.from_numpy(x).permute(2, 0, 1)


def test_stages_compose_to_forward_and_cam_layer_has_stride_8(model):
    x = torch.rand(2, 3, 128, 128)
    with torch.no_grad():
        assert torch.allclose(model(x), modelfile.run_stages(model, STAGES, x),
                              atol=1e-5)
        assert model.features(x).shape[2:] == (16, 16)


def test_heldout_accuracy(model):
    xs, ys = [], []
    for _, name, image, _ in lesions.generate(424242, 200):
        xs.append(_input(image))
        ys.append(lesions.CLASSES.index(name))
    with torch.no_grad():
        predicted = model(torch.stack(xs)).argmax(1)
    accuracy = float((predicted == torch.tensor(ys)).float().mean())
    assert accuracy >= 0.95
