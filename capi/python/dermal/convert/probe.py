"""The probe every model file the converters write carries (modelfile.save
adds it): proof, checked at every load, that
the library's graphs compute what the exporting framework computed.

Two extra files of the TorchScript archive:
  dermal_probe.png   an 8-bit RGB picture sized so that the library's
                     preprocessing resizes nothing (the model's input size;
                     for center_crop a square of resize_shorter_to)
  dermal_probe.json  {"probe_format": 1, "logits": [...], "class": k,
                      "cam_layer": ..., "cam": {"width", "height", "values"},
                      "computed_by": ...}: the network's logits for that
                     picture and the Grad-CAM map (before ReLU) of its top
                     class at the description's CAM layer, computed in eager
                     mode with oneDNN off.
The library (src/model/network.cpp) runs the picture through its prepared
graphs at load and compares, as a fraction of the expected values' range.
"""
import io
import json

import numpy as np
import torch
from PIL import Image

PROBE_FORMAT = 1
PROBE_FILE = "dermal_probe.json"
PROBE_IMAGE_FILE = "dermal_probe.png"


def probe_size(description):
    """(width, height) of the probe picture: one the library's preprocessing
    does not resize (a centre crop at most)."""
    spec = description["input"]
    if spec["resize"] == "center_crop":
        side = spec["resize_shorter_to"]
        return side, side
    return spec["width"], spec["height"]


def probe_pixels(description, seed=0):
    """A generated lesion-like picture (uint8, height x width x 3): skin tone,
    a darker irregular blob, noise."""
    width, height = probe_size(description)
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width] / max(width, height)
    radius = 0.18 + 0.04 * np.sin(5 * np.arctan2(y - 0.5, x - 0.45))
    blob = np.clip(1.6 - np.hypot(x - 0.45, y - 0.5) / radius, 0, 1)[..., None]
    skin = np.array([205.0, 150.0, 125.0])
    lesion = np.array([95.0, 55.0, 40.0])
    pixels = skin * (1 - blob) + lesion * blob + rng.normal(0, 12, (height, width, 3))
    return np.clip(pixels, 0, 255).astype(np.uint8)


def probe_input(pixels, description):
    """The tensor the library makes of `pixels` (sized by probe_size): the
    centre crop (torchvision's rounding, half to even), then
    (value * scale - mean) / std in float32."""
    spec = description["input"]
    width, height = spec["width"], spec["height"]
    top = int(round((pixels.shape[0] - height) / 2.0))
    left = int(round((pixels.shape[1] - width) / 2.0))
    window = pixels[top:top + height, left:left + width].astype(np.float32)
    scale = np.float32(spec["scale"])
    mean = np.asarray(spec["mean"], dtype=np.float32)
    std = np.asarray(spec["std"], dtype=np.float32)
    x = (window * scale - mean) / std
    return torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))[None]


def _submodule(module, dotted_path):
    for part in dotted_path.split("."):
        module = getattr(module, part)
    return module


def make_probe(module, description, pixels=None):
    """The probe's extra files ({name: contents}) for `module` (eval mode, its
    forward equal to running the description's stages in order): its logits
    and the Grad-CAM map of its top class at the CAM layer, for `pixels`
    (probe_pixels by default), in eager mode with oneDNN off."""
    if pixels is None:
        pixels = probe_pixels(description)
    stages, cam_layer = description["stages"], description["cam_layer"]
    split = stages.index(cam_layer) + 1
    x = probe_input(pixels, description)
    with torch.backends.mkldnn.flags(enabled=False):
        with torch.no_grad():
            for name in stages[:split]:
                x = _submodule(module, name)(x)
        activation = x.detach().requires_grad_(True)
        logits = activation
        for name in stages[split:]:
            logits = _submodule(module, name)(logits)
        top = int(logits[0].argmax())
        gradient, = torch.autograd.grad(logits[0, top], activation)
    a, g = activation[0].detach(), gradient[0]
    cam = (g.mean((1, 2))[:, None, None] * a).sum(0)
    probe = {"probe_format": PROBE_FORMAT,
             "logits": [float(v) for v in logits[0].detach().tolist()],
             "class": top, "cam_layer": cam_layer,
             "cam": {"width": int(cam.shape[1]), "height": int(cam.shape[0]),
                     "values": [float(v) for v in cam.flatten().tolist()]},
             "computed_by": f"torch {torch.__version__}, eager, oneDNN off"}
    png = io.BytesIO()
    Image.fromarray(pixels, "RGB").save(png, format="PNG")
    return {PROBE_FILE: json.dumps(probe), PROBE_IMAGE_FILE: png.getvalue()}
