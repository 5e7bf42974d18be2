"""Imports a Keras image classifier (.keras or legacy .h5) as a dermal model file.

    python3 -m dermal.convert keras model.keras \
        (--labels a,b,c | --labels-file labels.txt) --out model.pt \
        [--size 300 | --width W --height H] [--cam-layer top_conv]
        [--resample lanczos] [--resize stretch|center_crop|fit]
        [--scale 0.00784313725490196 --offset -1 | --mean R,G,B --std R,G,B] [--bgr]

Reads the file with h5py and zipfile only (no TensorFlow, no Keras, no stored
Python code is ever run): the Keras 3 `.keras` archive, the `.keras` archive of
TensorFlow 2.13-2.15, and legacy `.h5` files written by Keras 2 or Keras 3.
The layer graph is converted layer by layer into PyTorch with Keras's numerics
(TensorFlow "same" padding, channels-last flattening) and cut into stages at
every point where exactly one tensor is live; each stage is named after the
Keras layer whose output it returns, so any such layer name works as a
Grad-CAM layer. A final softmax or sigmoid is removed and recorded as the
description's "output", so that Grad-CAM differentiates the logit.

Preprocessing layers inside the model (Rescaling, Normalization) stay in the
model; options describe only what the app did outside it, which the library
then repeats: resize to the model's input size with --resample and --resize,
then (pixel * scale + offset), or (pixel / 255 - mean) / std with --mean/--std,
with the channels reversed first for --bgr.
The default feeds raw 0-255 pixel values, as keras.applications models expect.

Refusals (a layer the importer cannot convert exactly, missing or mis-shaped
weights, a model that is not an image classifier, bad options) exit with
status 2 and a message naming the layer; nothing is written.

The modules, by concern: `files` reads the file, `graph` flattens the layer
graph, `layers` gives each layer's semantics, `stages` cuts the network into
stages; this one is the command line. The model file is written by
dermal.convert.modelfile, as the torchvision exporter's.
"""
import argparse
import os
import sys
import time

import torch
from torch import nn

from .. import Refusal, modelfile
from .files import read_keras_file
from .stages import ReverseChannels, convert, trace_stages

RESAMPLE_FILTERS = ("nearest", "bilinear", "bicubic", "lanczos", "box", "hamming")
RESIZE_MODES = ("stretch", "center_crop", "fit")


def read_labels(args):
    if args.labels_file:
        try:
            with open(args.labels_file, encoding="utf-8") as f:
                labels = [line.strip() for line in f.read().splitlines()]
        except OSError as e:
            raise Refusal(f"cannot read --labels-file {args.labels_file}: {e.strerror}") from None
        labels = [label for label in labels if label]
    else:
        labels = [label.strip() for label in args.labels.split(",")]
    return labels


def _three(text, option):
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        raise Refusal(f"{option} must be three comma-separated numbers, not {text!r}") from None
    if len(values) == 1:
        values *= 3
    if len(values) != 3:
        raise Refusal(f"{option} must be three comma-separated numbers (R,G,B), not {text!r}")
    return values


def preprocessing(args):
    """(scale, mean, std) of the description: input = (pixel * scale - mean) / std."""
    if (args.mean or args.std) and (args.scale is not None or args.offset is not None):
        raise Refusal("give either --scale/--offset or --mean/--std, not both")
    if args.mean or args.std:
        mean = _three(args.mean or "0", "--mean")
        std = _three(args.std or "1", "--std")
        if any(s <= 0 for s in std):
            raise Refusal("--std values must be positive")
        return 1.0 / 255.0, mean, std
    scale = 1.0 if args.scale is None else args.scale
    offset = _three(args.offset or "0", "--offset")
    return scale, [0.0 - o for o in offset], [1.0] * 3  # 0.0 - o: no -0.0


def import_model(args):
    """Writes the model file described by `args`; returns a summary for the user."""
    started = time.monotonic()
    labels = read_labels(args)
    scale, mean, std = preprocessing(args)
    size = None
    if args.size:
        size = (args.size, args.size)
    elif args.width or args.height:
        if not (args.width and args.height):
            raise Refusal("give both --width and --height (or --size)")
        size = (args.height, args.width)
    keras_file = read_keras_file(args.model)
    network, names, keras_names, output, (height, width), ranks = convert(keras_file, size)
    with torch.no_grad():
        probe = modelfile.run_stages(network, names, torch.rand(1, 3, height, width) * 255.0)
        classes = probe.shape[1]
    if len(labels) != classes:
        raise Refusal(f"{len(labels)} labels given, the model has {classes} outputs")
    spatial = [name for name, rank in zip(names, ranks) if rank == 4]
    if not spatial:
        raise Refusal("the model has no stage with a spatial (H, W, C) output for Grad-CAM: "
                      "not a convolutional image classifier")
    cam_layer = spatial[-1]
    if args.cam_layer:
        by_keras = dict(zip(keras_names, names))
        cam_layer = by_keras.get(args.cam_layer, args.cam_layer)
        if cam_layer not in spatial:
            raise Refusal(f"--cam-layer {args.cam_layer!r} is not a layer where the graph can be cut "
                          f"with a spatial output; valid: {', '.join(spatial)}")
    try:
        description = modelfile.make_description(
            args.name or os.path.splitext(os.path.basename(args.model))[0], labels, width, height,
            names, cam_layer, resize=args.resize, mean=mean, std=std, scale=scale,
            output=output or "softmax", resample=args.resample)
    except ValueError as e:
        raise Refusal(str(e)) from None
    if args.bgr:  # the app reverses the channels (caffe mode); the library feeds RGB
        first = getattr(network, names[0])
        setattr(network, names[0], nn.Sequential(ReverseChannels(), first))
    traced = trace_stages(network, names, height, width)
    modelfile.save(traced, description, args.out)
    renamed = [f"{k} -> {n}" for k, n in zip(keras_names, names) if k != n]
    lines = [f"wrote {args.out}: {os.path.getsize(args.out) / 1e6:.1f} MB, "
             f"{sum(p.numel() for p in traced.parameters()):,} parameters, {len(names)} stages, "
             f"input {width}x{height}, cam_layer {cam_layer}, output {output or 'softmax'}"
             + ("" if output else " (the last layer has no softmax/sigmoid: its outputs are taken as logits)")
             + f", {time.monotonic() - started:.1f} s"]
    if renamed:
        lines.append("stage names changed for TorchScript: " + ", ".join(renamed))
    return "\n".join(lines)


PROG = "python3 -m dermal.convert keras"


def parse_args(argv):
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help="the Keras file (.keras or .h5)")
    labels = parser.add_mutually_exclusive_group(required=True)
    labels.add_argument("--labels", help="comma-separated class names, in the order of the outputs")
    labels.add_argument("--labels-file", help="a text file with one class name per line "
                        "(names may contain spaces and commas)")
    parser.add_argument("--out", required=True)
    parser.add_argument("--name", help="model name in the description (default: the file's name)")
    parser.add_argument("--size", type=int, help="input width and height in pixels "
                        "(default: the model's input shape)")
    parser.add_argument("--width", type=int)
    parser.add_argument("--height", type=int)
    parser.add_argument("--cam-layer", help="Keras layer whose output Grad-CAM explains "
                        "(default: the last layer with a spatial output)")
    parser.add_argument("--resample", default="bilinear", choices=RESAMPLE_FILTERS,
                        help="the app's PIL resize filter (default bilinear)")
    parser.add_argument("--resize", default="stretch", choices=RESIZE_MODES,
                        help="stretch to the input size, shorter side then centre crop, "
                             "or ImageOps.fit (default stretch)")
    parser.add_argument("--scale", type=float, help="the app feeds pixel * scale + offset "
                        "(default: raw 0-255 values, scale 1, offset 0)")
    parser.add_argument("--offset", help="a number, or R,G,B")
    parser.add_argument("--mean", help="the app feeds (pixel / 255 - mean) / std: R,G,B")
    parser.add_argument("--std", help="R,G,B (with --mean)")
    parser.add_argument("--bgr", action="store_true",
                        help="the app feeds the channels in BGR order (the caffe-mode preprocess_input "
                             "of ResNet50 and VGG: --bgr --offset=-123.68,-116.779,-103.939); "
                             "--offset, --mean and --std stay in RGB order")
    args = parser.parse_args(argv)
    for option in ("size", "width", "height"):
        value = getattr(args, option)
        if value is not None and value < 8:
            parser.error(f"--{option} must be at least 8")
    return args


def main(argv=None):
    args = parse_args(argv)
    try:
        print(import_model(args))
    except Refusal as e:
        print(f"{PROG}: error: {e}; nothing written", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
