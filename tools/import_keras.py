#!/usr/bin/python3
"""Imports a Keras image classifier (.keras or legacy .h5) as a dermal model file.

    /usr/bin/python3 tools/import_keras.py model.keras \
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
"""
import argparse
import io
import json
import keyword
import math
import os
import re
import sys
import tempfile
import time
import zipfile
import zlib

import h5py
import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

import dermal_model

RESAMPLE_FILTERS = ("nearest", "bilinear", "bicubic", "lanczos", "box", "hamming")
RESIZE_MODES = ("stretch", "center_crop", "fit")


class Refusal(Exception):
    """An input the importer refuses; the message is shown to the user as is."""


# ---------------------------------------------------------------- reading files

class KerasFile:
    """What the importer needs from a Keras file: the model config (a dict with
    "class_name" and "config"), the Keras major version that wrote it, and
    `weights(path, layer)`: the arrays of the primitive layer reached through the
    nested model names `path`, as {name: array} or, for positional formats,
    {index: array}."""

    def __init__(self, config, keras_major, weights_reader):
        self.config = config
        self.keras_major = keras_major
        self.weights = weights_reader


def _decode(value):
    return value.decode("utf8") if isinstance(value, bytes) else value


def _major(version, default):
    """The major number of a Keras version string such as "2.4.0"."""
    try:
        return int(str(version).split(".")[0])
    except ValueError:
        return default


def read_keras_file(path):
    """Opens `path` as a .keras archive or a legacy .h5 file; raises Refusal."""
    try:
        with open(path, "rb") as f:
            magic = f.read(8)
    except OSError as e:
        raise Refusal(f"cannot read {path}: {e.strerror}") from None
    if magic.startswith(b"PK"):
        return _read_archive(path)
    if magic == b"\x89HDF\r\n\x1a\n":
        return _read_legacy_h5(path)
    raise Refusal(f"{path} is neither a .keras archive (zip) nor a legacy Keras .h5 file (HDF5)")


def _read_archive(path):
    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
            for needed in ("config.json", "model.weights.h5"):
                if needed not in names:
                    raise Refusal(f"{path}: the .keras archive has no {needed}")
            config = json.loads(archive.read("config.json"))
            metadata = json.loads(archive.read("metadata.json")) if "metadata.json" in names else {}
            weights_bytes = archive.read("model.weights.h5")
    except (zipfile.BadZipFile, EOFError, zlib.error) as e:
        raise Refusal(f"{path} is a truncated or corrupt .keras archive ({e})") from None
    except json.JSONDecodeError as e:
        raise Refusal(f"{path}: config.json or metadata.json is not valid JSON ({e})") from None
    try:
        store = h5py.File(io.BytesIO(weights_bytes), "r")
    except OSError as e:
        raise Refusal(f"{path}: model.weights.h5 is not a readable HDF5 file ({e})") from None

    def weights(nesting, layer):
        group = store
        for name in list(nesting) + [layer]:
            for container in ("layers", "_layer_checkpoint_dependencies"):
                if container in group and name in group[container]:
                    group = group[container][name]
                    break
            else:
                return {}
        if "vars" not in group:
            return {}
        return {int(k): np.asarray(v) for k, v in group["vars"].items()}

    return KerasFile(config, _major(metadata.get("keras_version"), 3), weights)


def _read_legacy_h5(path):
    try:
        store = h5py.File(path, "r")
        config = store.attrs.get("model_config")
    except OSError as e:
        raise Refusal(f"{path} is a truncated or unreadable HDF5 file ({e})") from None
    if config is None:
        raise Refusal(f"{path} holds weights only (no model_config): save the whole model "
                      "with model.save(), not model.save_weights()")
    config = json.loads(_decode(config))
    if "model_weights" not in store:
        raise Refusal(f"{path} has a model config but no model_weights group")
    root = store["model_weights"]
    version = _decode(store.attrs.get("keras_version", root.attrs.get("keras_version", "2")))

    def datasets(group, prefix=()):
        for key, item in group.items():
            if isinstance(item, h5py.Dataset):
                yield prefix + (key,), item
            else:
                yield from datasets(item, prefix + (key,))

    def weights(nesting, layer):
        top = (list(nesting) + [layer])[0]
        if top not in root:
            return {}
        found = {}
        layer_parts = tuple(layer.split("/"))  # "conv1/conv" (DenseNet) is a path of groups in HDF5
        for parts, dataset in datasets(root[top]):
            # ".../<layer>/<weight>:0" (Keras 2) or ".../<layer>/<weight>" (Keras 3)
            if len(parts) > len(layer_parts) and parts[-1 - len(layer_parts):-1] == layer_parts:
                found.setdefault(parts[-1].split(":")[0], []).append((parts, dataset))
        chosen = {}
        for name, candidates in found.items():
            if len(candidates) > 1:  # the same layer name in two nested models, or "bn" beside "conv1/bn"
                exact = [c for c in candidates if c[0][:-1] in (layer_parts, tuple(nesting[1:]) + layer_parts)]
                candidates = exact or [c for c in candidates if all(n in c[0] for n in nesting[1:])]
            if len(candidates) != 1:
                raise Refusal(f"layer {layer!r}: weight {name!r} is stored "
                              f"{len(candidates) or 'no'} times under model_weights/{top}")
            chosen[name] = np.asarray(candidates[0][1])
        return chosen

    return KerasFile(config, _major(version, 2), weights)


# ---------------------------------------------------------------- the layer graph

class Layer:
    """One primitive Keras layer in the flattened graph."""

    def __init__(self, class_name, config, nesting, inputs):
        self.class_name = class_name
        self.config = config
        self.name = config.get("name")
        self.nesting = nesting      # names of the nested models around it
        self.inputs = inputs        # names (keys) of the layers whose outputs it takes
        self.key = "/".join(list(nesting) + [self.name])


def _config_of(entry):
    return entry.get("config", {})


def _class_of(entry):
    return entry.get("class_name")


def _input_shape_of(config):
    for key in ("batch_shape", "batch_input_shape"):
        if config.get(key):
            return list(config[key])
    return None


def _history_refs(args):
    """The [layer, node, tensor] references in a Keras 3 inbound node's args."""
    refs = []
    if isinstance(args, dict):
        if args.get("class_name") == "__keras_tensor__":
            refs.append(args["config"]["keras_history"])
        else:
            for value in args.values():
                refs += _history_refs(value)
    elif isinstance(args, (list, tuple)):
        for value in args:
            refs += _history_refs(value)
    return refs


def _constants(args):
    """The non-tensor values among a Keras 3 node's args (e.g. the 3.0 of x + 3.0)."""
    if isinstance(args, dict):
        return [] if args.get("class_name") == "__keras_tensor__" else [args]
    if isinstance(args, (list, tuple)):
        return [c for value in args for c in _constants(value)]
    return [] if args is None else [args]


# Arithmetic between a tensor and a number, as Keras 3 records an operator on a
# tensor (keras.src.ops.numpy.Add for x + 3.0) and Keras 2 a TFOpLambda
# (tf.__operators__.add with y=3.0): keras.applications' MobileNetV3 builds its
# hard sigmoid so.
KERAS3_SCALAR_OPS = {"Add": "add", "Subtract": "subtract", "Multiply": "multiply",
                     "Divide": "divide", "TrueDivide": "divide"}
TF_SCALAR_OPS = {"__operators__.add": "add", "math.add": "add", "math.subtract": "subtract",
                 "math.multiply": "multiply", "math.truediv": "divide", "math.divide": "divide"}


def _is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _scalar_op(entry, name):
    """(op, constant, tensor_first) if `entry` is tensor-and-number arithmetic
    recorded outside a layer; None if it is a layer; Refusal for other operations."""
    module = entry.get("module") or ""
    node = (entry.get("inbound_nodes") or [None])[0]
    if module.startswith(("keras.src.ops", "keras.ops")):
        op = KERAS3_SCALAR_OPS.get(_class_of(entry))
        args = node.get("args", []) if isinstance(node, dict) else []
        numbers = [a for a in args if _is_number(a)]
        if op is None or len(args) != 2 or len(numbers) != 1:
            raise Refusal(f"layer {name!r}: {_class_of(entry)} from {module} is an operation applied "
                          "to a tensor outside any layer; only arithmetic between one tensor and "
                          "one number is supported")
        return op, float(numbers[0]), _is_number(args[1])
    if _class_of(entry) == "TFOpLambda":
        function = _config_of(entry).get("function")
        kwargs = node[0][3] if node and len(node) == 1 and len(node[0]) > 3 else {}
        constant = kwargs.get("y") if isinstance(kwargs, dict) else None
        if function not in TF_SCALAR_OPS or not _is_number(constant):
            raise Refusal(f"layer {name!r} (TFOpLambda): the TensorFlow operation {function!r} "
                          "is not supported (only tensor-and-number add, subtract, multiply, divide)")
        return TF_SCALAR_OPS[function], float(constant), True
    return None


def _inbound_layer_names(entry):
    name = entry.get("name") or _config_of(entry).get("name")
    nodes = entry.get("inbound_nodes") or []
    if len(nodes) > 1:
        raise Refusal(f"layer {name!r} is called {len(nodes)} times (a shared layer); "
                      "the importer converts each layer once")
    if not nodes:
        return []
    node = nodes[0]
    if isinstance(node, dict):  # Keras 3
        constants = _constants(node.get("args", []))
        if constants and _scalar_op(entry, name) is None:
            raise Refusal(f"layer {name!r} is called with the constant argument(s) {constants[:3]}; "
                          "only tensors are supported")
        return [ref[0] for ref in _history_refs(node.get("args", []))]
    return [ref[0] for ref in node]  # Keras 2: [[name, node, tensor, kwargs], ...]


class GraphBuilder:
    """Flattens nested Sequential/Functional models into one list of primitive
    layers in topological order, each knowing the keys of its inputs."""

    MODEL_CLASSES = ("Sequential", "Functional", "Model")

    def __init__(self):
        self.layers = []
        self.input_shape = None
        self.input_key = None

    def build(self, entry):
        """(layers, key of the graph input, key of the output); the top-level
        model's own name is not part of weight paths."""
        if _class_of(entry) == "Sequential":
            output = self._sequential(_config_of(entry), (), None)
        else:
            output = self._functional(_config_of(entry), (), None)
        return self.layers, self.input_key, output

    def _graph_input(self, shape):
        """The key of the graph's input tensor, the first time with its shape."""
        if self.input_key is None:
            self.input_shape = shape
            self.input_key = "<input>"
        return self.input_key

    def _sequential(self, config, nesting, input_key):
        """Chains the layers; without `input_key` the input shape comes from
        an InputLayer, the first layer's batch shape, build_input_shape, or
        else the first layer when it is a model with an input of its own."""
        current = input_key
        layers = config.get("layers", [])
        if current is None:
            shape = None
            if layers:
                shape = _input_shape_of(_config_of(layers[0]))
            shape = shape or config.get("build_input_shape")
            first_is_model = bool(layers) and _class_of(layers[0]) in self.MODEL_CLASSES
            if shape is not None or not first_is_model:
                current = self._graph_input(shape)
        for entry in layers:
            if _class_of(entry) == "InputLayer":
                continue
            current = self._add(entry, nesting, [current])
        return current

    def _functional(self, config, nesting, input_key):
        inputs = config.get("input_layers") or []
        if inputs and isinstance(inputs[0], str):  # a single input as [name, 0, 0]
            inputs = [inputs]
        outputs = config.get("output_layers") or []
        if outputs and isinstance(outputs[0], str):
            outputs = [outputs]
        model_name = config.get("name")
        if len(inputs) != 1 or len(outputs) != 1:
            raise Refusal(f"model {model_name!r} has {len(inputs)} inputs and {len(outputs)} outputs; "
                          "an image classifier has one of each")
        keys = {}
        for entry in config.get("layers", []):
            name = entry.get("name") or _config_of(entry).get("name")
            if _class_of(entry) == "InputLayer":
                keys[name] = input_key if input_key is not None else self._graph_input(
                    _input_shape_of(_config_of(entry)))
                continue
            sources = _inbound_layer_names(entry)
            missing = [s for s in sources if s not in keys]
            if missing or not sources:
                raise Refusal(f"layer {name!r} in model {model_name!r} takes "
                              f"{missing or 'no'} input(s) the importer cannot place")
            scalar = _scalar_op(entry, name)
            if scalar:
                op, constant, tensor_first = scalar
                entry = {"class_name": "ScalarOperation", "name": name,
                         "config": {"name": name, "op": op, "constant": constant, "tensor_first": tensor_first}}
            keys[name] = self._add(entry, nesting, [keys[s] for s in sources])
        return keys[outputs[0][0]]

    def _add(self, entry, nesting, inputs):
        kind = _class_of(entry)
        if kind in self.MODEL_CLASSES:
            if len(inputs) != 1:
                raise Refusal(f"nested model {_config_of(entry).get('name')!r} takes {len(inputs)} inputs")
            return self._nested(entry, nesting, inputs[0])
        layer = Layer(kind, _config_of(entry), nesting, inputs)
        if layer.name is None:
            layer.name = entry.get("name")
            layer.key = "/".join(list(nesting) + [layer.name])
        self.layers.append(layer)
        return layer.key

    def _nested(self, entry, nesting, input_key):
        config = _config_of(entry)
        inner = nesting + (config.get("name") or entry.get("name"),)
        if _class_of(entry) == "Sequential":
            return self._sequential(config, inner, input_key)
        return self._functional(config, inner, input_key)


# ---------------------------------------------------------------- layer semantics
# Tensors inside the converted network are NCHW when 4-D (Keras: NHWC) and as
# in Keras otherwise. Each converter takes (layer, input shapes in Keras's
# order without batch, weights) and returns (nn.Module, output shape).

def _tf_same_padding(size, kernel, stride, dilation):
    """(before, after) padding of TensorFlow's "same" along one axis."""
    effective = (kernel - 1) * dilation + 1
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + effective - size, 0)
    return total // 2, total - total // 2


def _pair(value):
    if isinstance(value, (list, tuple)):
        return tuple(int(v) for v in value)
    return (int(value), int(value))


def _padding_of(layer, shape, kernel, strides, dilation=(1, 1)):
    """(pad_left, pad_right, pad_top, pad_bottom) and the output height and width."""
    padding = layer.config.get("padding", "valid").lower()
    h, w = shape[0], shape[1]
    if padding == "same":
        top, bottom = _tf_same_padding(h, kernel[0], strides[0], dilation[0])
        left, right = _tf_same_padding(w, kernel[1], strides[1], dilation[1])
    elif padding == "valid":
        top = bottom = left = right = 0
    else:
        raise Refusal(f"layer {layer.name!r}: padding {padding!r} is not supported (valid, same)")
    eff_h = (kernel[0] - 1) * dilation[0] + 1
    eff_w = (kernel[1] - 1) * dilation[1] + 1
    out_h = (h + top + bottom - eff_h) // strides[0] + 1
    out_w = (w + left + right - eff_w) // strides[1] + 1
    if out_h < 1 or out_w < 1:
        raise Refusal(f"layer {layer.name!r}: its {h}x{w} input is too small for a "
                      f"{kernel[0]}x{kernel[1]} window; use a larger --size")
    return (left, right, top, bottom), (out_h, out_w)


class Pad(nn.Module):
    def __init__(self, pads, value=0.0):
        super().__init__()
        self.pads = list(pads)
        self.value = value

    def forward(self, x):
        return F.pad(x, self.pads, value=self.value)


class ChannelsLastApply(nn.Module):
    """Applies `module` to an NCHW tensor as if it were NHWC (last-axis ops)."""

    def __init__(self, module):
        super().__init__()
        self.module = module

    def forward(self, x):
        return self.module(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class Activation(nn.Module):
    """Keras's activation `kind`. With `inplace` set (the importer does where
    nothing else reads the input) relu, sigmoid and swish overwrite their input
    instead of allocating an output, as torchvision's own networks do."""

    def __init__(self, kind, channel_dim=1, inplace=False):
        super().__init__()
        self.kind = kind
        self.channel_dim = channel_dim
        self.inplace = inplace

    def forward(self, x):
        kind = self.kind
        if kind == "relu":
            return F.relu(x, inplace=self.inplace)
        if kind == "relu6":
            return F.relu6(x)
        if kind == "sigmoid":
            return x.sigmoid_() if self.inplace else torch.sigmoid(x)
        if kind == "tanh":
            return torch.tanh(x)
        if kind == "swish":
            return F.silu(x, inplace=self.inplace)
        if kind == "elu":
            return F.elu(x)
        if kind == "selu":
            return F.selu(x)
        if kind == "gelu":
            return F.gelu(x)
        if kind == "softplus":
            return F.softplus(x)
        if kind == "softsign":
            return F.softsign(x)
        if kind == "exponential":
            return torch.exp(x)
        if kind == "leaky_relu":
            return F.leaky_relu(x, 0.2)
        if kind == "mish":
            return F.mish(x)
        if kind == "hard_sigmoid_keras2":
            return torch.clamp(0.2 * x + 0.5, 0.0, 1.0)
        if kind == "hard_sigmoid":
            return F.relu6(x + 3.0) / 6.0
        if kind == "hard_swish":
            return x * (F.relu6(x + 3.0) / 6.0)
        if kind == "softmax":
            return torch.softmax(x, self.channel_dim)
        return x  # linear


ACTIVATION_NAMES = {
    "linear": "linear", "relu": "relu", "relu6": "relu6", "sigmoid": "sigmoid", "tanh": "tanh",
    "swish": "swish", "silu": "swish", "elu": "elu", "selu": "selu", "gelu": "gelu",
    "softplus": "softplus", "softsign": "softsign", "exponential": "exponential",
    "leaky_relu": "leaky_relu", "mish": "mish", "hard_sigmoid": "hard_sigmoid",
    "hard_swish": "hard_swish", "hard_silu": "hard_swish", "softmax": "softmax",
}


def _activation_name(layer, value, keras_major):
    """The activation's canonical name, resolved for the Keras version."""
    if value is None:
        return "linear"
    if isinstance(value, dict):  # {"class_name": "function", "config": "relu", ...}
        if value.get("class_name") in ("function", "builtins.function") and isinstance(value.get("config"), str):
            value = value["config"]
        else:
            raise Refusal(f"layer {layer.name!r}: activation {value.get('class_name')!r} is a "
                          "custom object; only Keras's built-in activations are supported")
    name = ACTIVATION_NAMES.get(str(value).lower())
    if name is None:
        raise Refusal(f"layer {layer.name!r}: unknown activation {value!r}")
    if name == "hard_sigmoid" and keras_major < 3:
        return "hard_sigmoid_keras2"  # Keras 2: clip(0.2 x + 0.5, 0, 1)
    return name


def _weights_for(layer, stored, names, shapes):
    """The arrays for `names` (Keras's variable order) with the expected
    `shapes`; stored by name or by position. Raises Refusal naming what is wrong."""
    arrays = []
    for index, (name, shape) in enumerate(zip(names, shapes)):
        value = stored.get(name, stored.get(index))
        if value is None:
            where = "/".join(list(layer.nesting) + [layer.name])
            raise Refusal(f"layer {layer.name!r} ({layer.class_name}): weight {name!r} is missing "
                          f"from the file (looked for {where})")
        if tuple(value.shape) != tuple(shape):
            raise Refusal(f"layer {layer.name!r} ({layer.class_name}): weight {name!r} has shape "
                          f"{tuple(value.shape)}, the config implies {tuple(shape)}")
        arrays.append(torch.from_numpy(np.ascontiguousarray(value, dtype=np.float32)))
    return arrays


def _tensor4(layer, shape):
    if len(shape) != 3:
        raise Refusal(f"layer {layer.name!r} ({layer.class_name}) needs an image-shaped (H, W, C) "
                      f"input, gets {tuple(shape)}")


def _check_channels_last(layer):
    if layer.config.get("data_format", "channels_last") not in (None, "channels_last"):
        raise Refusal(f"layer {layer.name!r}: data_format {layer.config['data_format']!r} "
                      "is not supported (channels_last)")


class Convolution(nn.Module):
    """Explicit (possibly asymmetric) padding, then a torch convolution."""

    def __init__(self, conv, pads):
        super().__init__()
        self.pads = list(pads)
        self.asymmetric = pads[0] != pads[1] or pads[2] != pads[3]
        self.conv = conv
        if not self.asymmetric:
            conv.padding = (pads[2], pads[0])

    def forward(self, x):
        if self.asymmetric:
            x = F.pad(x, self.pads)
        return self.conv(x)


def _with_activation(module, layer, keras_major, channel_dim=1):
    kind = _activation_name(layer, layer.config.get("activation"), keras_major)
    if kind == "linear":
        return module
    return nn.Sequential(module, Activation(kind, channel_dim, inplace=True))  # the layer's own output


def convert_conv2d(layer, shapes, stored, keras_major):
    shape = shapes[0]
    _tensor4(layer, shape)
    _check_channels_last(layer)
    kernel = _pair(layer.config["kernel_size"])
    strides = _pair(layer.config.get("strides", 1))
    dilation = _pair(layer.config.get("dilation_rate", 1))
    groups = int(layer.config.get("groups", 1) or 1)
    filters = int(layer.config["filters"])
    channels = shape[2]
    if channels % groups or filters % groups:
        raise Refusal(f"layer {layer.name!r}: groups={groups} does not divide {channels} input "
                      f"channels and {filters} filters")
    use_bias = layer.config.get("use_bias", True)
    names = ["kernel"] + (["bias"] if use_bias else [])
    wshapes = [(kernel[0], kernel[1], channels // groups, filters)] + ([(filters,)] if use_bias else [])
    weights = _weights_for(layer, stored, names, wshapes)
    pads, (oh, ow) = _padding_of(layer, shape, kernel, strides, dilation)
    conv = nn.Conv2d(channels, filters, kernel, strides, 0, dilation, groups, bias=use_bias)
    conv.weight.data = weights[0].permute(3, 2, 0, 1).contiguous()
    if use_bias:
        conv.bias.data = weights[1]
    return _with_activation(Convolution(conv, pads), layer, keras_major), [oh, ow, filters]


def _depthwise(layer, shape, stored_kernel, multiplier, pads, strides, dilation, bias):
    channels = shape[2]
    kernel = stored_kernel.shape[:2]
    conv = nn.Conv2d(channels, channels * multiplier, tuple(kernel), strides, 0, dilation,
                     groups=channels, bias=bias is not None)
    # Keras's output channel c * multiplier + m is input channel c times kernel[..., c, m]
    conv.weight.data = stored_kernel.permute(2, 3, 0, 1).reshape(
        channels * multiplier, 1, kernel[0], kernel[1]).contiguous()
    if bias is not None:
        conv.bias.data = bias
    return Convolution(conv, pads)


def convert_depthwise_conv2d(layer, shapes, stored, keras_major):
    shape = shapes[0]
    _tensor4(layer, shape)
    _check_channels_last(layer)
    kernel = _pair(layer.config["kernel_size"])
    strides = _pair(layer.config.get("strides", 1))
    dilation = _pair(layer.config.get("dilation_rate", 1))
    multiplier = int(layer.config.get("depth_multiplier", 1))
    channels = shape[2]
    use_bias = layer.config.get("use_bias", True)
    names = ["depthwise_kernel"] + (["bias"] if use_bias else [])
    wshapes = [(kernel[0], kernel[1], channels, multiplier)] + ([(channels * multiplier,)] if use_bias else [])
    weights = _weights_for(layer, stored, names, wshapes)
    pads, (oh, ow) = _padding_of(layer, shape, kernel, strides, dilation)
    module = _depthwise(layer, shape, weights[0], multiplier, pads, strides, dilation,
                        weights[1] if use_bias else None)
    return _with_activation(module, layer, keras_major), [oh, ow, channels * multiplier]


def convert_separable_conv2d(layer, shapes, stored, keras_major):
    shape = shapes[0]
    _tensor4(layer, shape)
    _check_channels_last(layer)
    kernel = _pair(layer.config["kernel_size"])
    strides = _pair(layer.config.get("strides", 1))
    dilation = _pair(layer.config.get("dilation_rate", 1))
    multiplier = int(layer.config.get("depth_multiplier", 1))
    filters = int(layer.config["filters"])
    channels = shape[2]
    use_bias = layer.config.get("use_bias", True)
    names = ["depthwise_kernel", "pointwise_kernel"] + (["bias"] if use_bias else [])
    wshapes = [(kernel[0], kernel[1], channels, multiplier), (1, 1, channels * multiplier, filters)]
    wshapes += [(filters,)] if use_bias else []
    weights = _weights_for(layer, stored, names, wshapes)
    pads, (oh, ow) = _padding_of(layer, shape, kernel, strides, dilation)
    depthwise = _depthwise(layer, shape, weights[0], multiplier, pads, strides, dilation, None)
    pointwise = nn.Conv2d(channels * multiplier, filters, 1, bias=use_bias)
    pointwise.weight.data = weights[1].permute(3, 2, 0, 1).contiguous()
    if use_bias:
        pointwise.bias.data = weights[2]
    return _with_activation(nn.Sequential(depthwise, pointwise), layer, keras_major), [oh, ow, filters]


def _last_axis(layer, shape, key="axis"):
    axis = layer.config.get(key, -1)
    if isinstance(axis, list):
        if len(axis) != 1:
            raise Refusal(f"layer {layer.name!r}: {key}={axis} is not supported (the channel axis)")
        axis = axis[0]
    if axis not in (-1, len(shape)):
        raise Refusal(f"layer {layer.name!r}: {key}={axis} is not supported (the channel axis, -1)")


def convert_batch_normalization(layer, shapes, stored, keras_major):
    shape = shapes[0]
    _last_axis(layer, shape)
    channels = shape[-1]
    center = layer.config.get("center", True)
    scale = layer.config.get("scale", True)
    names = (["gamma"] if scale else []) + (["beta"] if center else []) + ["moving_mean", "moving_variance"]
    weights = dict(zip(names, _weights_for(layer, stored, names, [(channels,)] * len(names))))
    norm = (nn.BatchNorm2d if len(shape) == 3 else nn.BatchNorm1d)(channels, eps=float(layer.config.get("epsilon", 1e-3)))
    norm.weight.data = weights.get("gamma", torch.ones(channels))
    norm.bias.data = weights.get("beta", torch.zeros(channels))
    norm.running_mean.data = weights["moving_mean"]
    norm.running_var.data = weights["moving_variance"]
    if len(shape) not in (1, 3):
        raise Refusal(f"layer {layer.name!r}: BatchNormalization of a rank-{len(shape) + 1} tensor")
    return norm, list(shape)


def convert_dense(layer, shapes, stored, keras_major):
    shape = shapes[0]
    units = int(layer.config["units"])
    use_bias = layer.config.get("use_bias", True)
    names = ["kernel"] + (["bias"] if use_bias else [])
    wshapes = [(shape[-1], units)] + ([(units,)] if use_bias else [])
    weights = _weights_for(layer, stored, names, wshapes)
    linear = nn.Linear(shape[-1], units, bias=use_bias)
    linear.weight.data = weights[0].t().contiguous()
    if use_bias:
        linear.bias.data = weights[1]
    module = ChannelsLastApply(linear) if len(shape) == 3 else linear
    channel_dim = 1 if len(shape) in (1, 3) else len(shape)
    return _with_activation(module, layer, keras_major, channel_dim), list(shape[:-1]) + [units]


def convert_activation(layer, shapes, stored, keras_major):
    channel_dim = 1 if len(shapes[0]) in (1, 3) else len(shapes[0])
    kind = _activation_name(layer, layer.config.get("activation"), keras_major)
    return Activation(kind, channel_dim), list(shapes[0])


class ReLU(nn.Module):
    """Keras's ReLU layer: max_value, negative_slope and threshold."""

    def __init__(self, max_value, negative_slope, threshold):
        super().__init__()
        self.max_value = max_value
        self.negative_slope = negative_slope
        self.threshold = threshold

    def forward(self, x):
        if self.negative_slope == 0.0 and self.threshold == 0.0:
            y = F.relu(x)
        else:
            y = torch.where(x >= self.threshold, x, self.negative_slope * (x - self.threshold))
        if self.max_value >= 0.0:
            y = torch.clamp(y, max=self.max_value)
        return y


def convert_relu(layer, shapes, stored, keras_major):
    max_value = layer.config.get("max_value")
    negative_slope = float(layer.config.get("negative_slope", 0.0) or 0.0)
    threshold = float(layer.config.get("threshold", 0.0) or 0.0)
    if max_value == 6 and negative_slope == 0 and threshold == 0:
        return nn.ReLU6(), list(shapes[0])
    return ReLU(-1.0 if max_value is None else float(max_value), negative_slope, threshold), list(shapes[0])


def convert_softmax_layer(layer, shapes, stored, keras_major):
    _last_axis(layer, shapes[0])
    return Activation("softmax", 1 if len(shapes[0]) in (1, 3) else len(shapes[0])), list(shapes[0])


def convert_leaky_relu(layer, shapes, stored, keras_major):
    slope = layer.config.get("negative_slope", layer.config.get("alpha", 0.3))
    return nn.LeakyReLU(float(slope)), list(shapes[0])


def convert_zero_padding(layer, shapes, stored, keras_major):
    shape = shapes[0]
    _tensor4(layer, shape)
    _check_channels_last(layer)
    padding = layer.config.get("padding", 1)
    if isinstance(padding, int):
        (top, bottom), (left, right) = (padding, padding), (padding, padding)
    elif all(isinstance(p, int) for p in padding):
        (top, bottom), (left, right) = (padding[0], padding[0]), (padding[1], padding[1])
    else:
        (top, bottom), (left, right) = padding
    return Pad([left, right, top, bottom]), [shape[0] + top + bottom, shape[1] + left + right, shape[2]]


class AveragePool(nn.Module):
    """TensorFlow's average pooling: padded positions are not counted."""

    def __init__(self, kernel, strides, pads, divisor):
        super().__init__()
        self.kernel = list(kernel)
        self.strides = list(strides)
        self.pads = list(pads)
        self.register_buffer("divisor", divisor)

    def forward(self, x):
        pooled = F.avg_pool2d(F.pad(x, self.pads), self.kernel, self.strides, divisor_override=1)
        return pooled / self.divisor


def convert_pooling(layer, shapes, stored, keras_major):
    shape = shapes[0]
    _tensor4(layer, shape)
    _check_channels_last(layer)
    kernel = _pair(layer.config.get("pool_size", 2))
    strides = _pair(layer.config.get("strides") or kernel)
    pads, (oh, ow) = _padding_of(layer, shape, kernel, strides)
    if layer.class_name == "MaxPooling2D":
        module = nn.Sequential(Pad(pads, float("-inf")), nn.MaxPool2d(kernel, strides)) \
            if any(pads) else nn.MaxPool2d(kernel, strides)
    else:
        ones = F.pad(torch.ones(1, 1, shape[0], shape[1]), pads)
        divisor = F.avg_pool2d(ones, kernel, strides, divisor_override=1)
        module = AveragePool(kernel, strides, pads, divisor)
    return module, [oh, ow, shape[2]]


class GlobalPool(nn.Module):
    def __init__(self, use_max, keepdims):
        super().__init__()
        self.use_max = use_max
        self.keepdims = keepdims

    def forward(self, x):
        if self.use_max:
            return torch.amax(x, dim=(2, 3), keepdim=self.keepdims)
        return torch.mean(x, dim=(2, 3), keepdim=self.keepdims)


def convert_global_pooling(layer, shapes, stored, keras_major):
    shape = shapes[0]
    _tensor4(layer, shape)
    _check_channels_last(layer)
    keepdims = bool(layer.config.get("keepdims", False))
    module = GlobalPool(layer.class_name == "GlobalMaxPooling2D", keepdims)
    return module, ([1, 1, shape[2]] if keepdims else [shape[2]])


class Merge(nn.Module):
    """Keras's merge layers. With `inplace` set (the importer does where
    nothing else reads the first input and it has the output's shape) an Add
    accumulates into its first input instead of allocating an output."""

    def __init__(self, kind, dim=1, inplace=False):
        super().__init__()
        self.kind = kind
        self.dim = dim
        self.inplace = inplace

    def forward(self, xs: list[torch.Tensor]):
        if self.kind == "concatenate":
            return torch.cat(xs, self.dim)
        y = xs[0]
        if self.kind == "add" and self.inplace:
            for x in xs[1:]:
                y = y.add_(x)
            return y
        for x in xs[1:]:
            if self.kind == "multiply":
                y = y * x
            elif self.kind == "subtract":
                y = y - x
            elif self.kind == "maximum":
                y = torch.maximum(y, x)
            elif self.kind == "minimum":
                y = torch.minimum(y, x)
            else:
                y = y + x
        if self.kind == "average":
            y = y / len(xs)
        return y


def _broadcast(layer, shapes):
    rank = max(len(s) for s in shapes)
    if any(len(s) != rank for s in shapes):
        raise Refusal(f"layer {layer.name!r}: inputs of different ranks {shapes}")
    out = []
    for sizes in zip(*shapes):
        big = max(sizes)
        if any(s not in (1, big) for s in sizes):
            raise Refusal(f"layer {layer.name!r}: input shapes {shapes} do not broadcast")
        out.append(big)
    return out


def convert_merge(layer, shapes, stored, keras_major):
    kind = layer.class_name.lower()
    if len(shapes) < 2:
        raise Refusal(f"layer {layer.name!r}: {layer.class_name} takes at least two inputs, "
                      f"gets {len(shapes)}")
    if kind == "subtract" and len(shapes) != 2:
        raise Refusal(f"layer {layer.name!r}: Subtract takes two inputs")
    return Merge(kind), _broadcast(layer, shapes)


def convert_concatenate(layer, shapes, stored, keras_major):
    if len(shapes) < 2:
        raise Refusal(f"layer {layer.name!r}: Concatenate takes at least two inputs, gets {len(shapes)}")
    rank = len(shapes[0])
    axis = int(layer.config.get("axis", -1))
    axis = axis + rank if axis < 0 else axis - 1  # Keras axis without batch
    others = [[s[i] for i in range(rank) if i != axis] for s in shapes]
    if any(o != others[0] for o in others) or any(len(s) != rank for s in shapes):
        raise Refusal(f"layer {layer.name!r}: cannot concatenate shapes {shapes} on axis {axis + 1}")
    out = list(shapes[0])
    out[axis] = sum(s[axis] for s in shapes)
    if rank == 3:  # NHWC axis -> NCHW dim
        dim = {0: 2, 1: 3, 2: 1}[axis]
    else:
        dim = axis + 1
    return Merge("concatenate", dim), out


class Reshape(nn.Module):
    """Reshapes as Keras does (channels-last element order)."""

    def __init__(self, target, in_rank):
        super().__init__()
        self.target = list(target)
        self.in_rank = in_rank

    def forward(self, x):
        if self.in_rank == 2 and len(self.target) == 3 and self.target[0] == self.target[1] == 1:
            return x.reshape([x.shape[0], self.target[2], 1, 1])  # (C,) -> (1, 1, C): no element moves
        if self.in_rank == 4:
            x = x.permute(0, 2, 3, 1)
        y = x.reshape([x.shape[0]] + self.target)
        if len(self.target) == 3:
            y = y.permute(0, 3, 1, 2)
        return y


def convert_reshape(layer, shapes, stored, keras_major):
    shape = shapes[0]
    target = list(layer.config["target_shape"])
    total = int(np.prod(shape))
    if target.count(-1) == 1:
        known = int(np.prod([t for t in target if t != -1]))
        target[target.index(-1)] = total // known if known else 0
    if int(np.prod(target)) != total:
        raise Refusal(f"layer {layer.name!r}: cannot reshape {tuple(shape)} to {tuple(layer.config['target_shape'])}")
    return Reshape(target, len(shape) + 1), target


def convert_flatten(layer, shapes, stored, keras_major):
    shape = shapes[0]
    return Reshape([int(np.prod(shape))], len(shape) + 1), [int(np.prod(shape))]


class Affine(nn.Module):
    """x * scale + offset per channel (Rescaling, Normalization)."""

    def __init__(self, scale, offset, rank):
        super().__init__()
        shape = [1, -1, 1, 1] if rank == 4 else [1] * (rank - 1) + [-1]
        self.register_buffer("scale", torch.as_tensor(scale, dtype=torch.float32).reshape(shape))
        self.register_buffer("offset", torch.as_tensor(offset, dtype=torch.float32).reshape(shape))

    def forward(self, x):
        return x * self.scale + self.offset


def _per_channel(layer, value, channels, what):
    array = np.asarray(value, dtype=np.float64).reshape(-1)
    if array.size == 1:
        array = np.repeat(array, channels)
    if array.size != channels:
        raise Refusal(f"layer {layer.name!r}: {what} has {array.size} values for {channels} channels")
    return array


def convert_rescaling(layer, shapes, stored, keras_major):
    channels = shapes[0][-1]
    scale = _per_channel(layer, layer.config.get("scale", 1.0), channels, "scale")
    offset = _per_channel(layer, layer.config.get("offset", 0.0), channels, "offset")
    return Affine(scale, offset, len(shapes[0]) + 1), list(shapes[0])


KERAS_EPSILON = 1e-7  # keras.backend.epsilon()


def convert_normalization(layer, shapes, stored, keras_major):
    shape = shapes[0]
    _last_axis(layer, shape)
    if layer.config.get("invert"):
        raise Refusal(f"layer {layer.name!r}: Normalization with invert=True is not supported")
    channels = shape[-1]
    mean, variance = layer.config.get("mean"), layer.config.get("variance")
    if mean is None or variance is None:
        mean, variance = (w.double().numpy() for w in _weights_for(layer, stored, ["mean", "variance"],
                                                                    [(channels,), (channels,)]))
    mean = _per_channel(layer, mean, channels, "mean")
    variance = _per_channel(layer, variance, channels, "variance")
    divisor = np.maximum(np.sqrt(variance), KERAS_EPSILON)
    return Affine(1.0 / divisor, -mean / divisor, len(shape) + 1), list(shape)


class ScalarOperation(nn.Module):
    """x + c, x - c, c - x, x * c, x / c or c / x."""

    def __init__(self, op, constant, tensor_first):
        super().__init__()
        self.op = op
        self.constant = constant
        self.tensor_first = tensor_first

    def forward(self, x):
        c = self.constant
        if self.op == "add":
            return x + c
        if self.op == "multiply":
            return x * c
        if self.op == "subtract":
            return x - c if self.tensor_first else c - x
        return x / c if self.tensor_first else c / x


def convert_scalar_operation(layer, shapes, stored, keras_major):
    config = layer.config
    return ScalarOperation(config["op"], config["constant"], config["tensor_first"]), list(shapes[0])


class Identity(nn.Module):
    def forward(self, x):
        return x


def convert_identity(layer, shapes, stored, keras_major):
    return Identity(), list(shapes[0])


INERT_AT_INFERENCE = {
    "Dropout", "SpatialDropout1D", "SpatialDropout2D", "SpatialDropout3D", "GaussianNoise",
    "GaussianDropout", "AlphaDropout", "ActivityRegularization", "RandomFlip", "RandomRotation",
    "RandomZoom", "RandomTranslation", "RandomContrast", "RandomBrightness", "Identity",
}

CONVERTERS = {
    "Conv2D": convert_conv2d, "Convolution2D": convert_conv2d,
    "DepthwiseConv2D": convert_depthwise_conv2d,
    "SeparableConv2D": convert_separable_conv2d, "SeparableConvolution2D": convert_separable_conv2d,
    "BatchNormalization": convert_batch_normalization,
    "Dense": convert_dense,
    "Activation": convert_activation, "ReLU": convert_relu, "Softmax": convert_softmax_layer,
    "LeakyReLU": convert_leaky_relu,
    "ZeroPadding2D": convert_zero_padding,
    "MaxPooling2D": convert_pooling, "AveragePooling2D": convert_pooling,
    "MaxPool2D": convert_pooling, "AvgPool2D": convert_pooling,
    "GlobalAveragePooling2D": convert_global_pooling, "GlobalMaxPooling2D": convert_global_pooling,
    "GlobalAvgPool2D": convert_global_pooling, "GlobalMaxPool2D": convert_global_pooling,
    "Add": convert_merge, "Multiply": convert_merge, "Subtract": convert_merge,
    "Average": convert_merge, "Maximum": convert_merge, "Minimum": convert_merge,
    "Concatenate": convert_concatenate,
    "Reshape": convert_reshape, "Flatten": convert_flatten,
    "Rescaling": convert_rescaling, "Normalization": convert_normalization,
    "ScalarOperation": convert_scalar_operation,
}
for _name in INERT_AT_INFERENCE:
    CONVERTERS[_name] = convert_identity
ALIASES = {"MaxPool2D": "MaxPooling2D", "AvgPool2D": "AveragePooling2D",
           "GlobalAvgPool2D": "GlobalAveragePooling2D", "GlobalMaxPool2D": "GlobalMaxPooling2D",
           "Convolution2D": "Conv2D", "SeparableConvolution2D": "SeparableConv2D"}

REFUSED_WHY = {
    "Lambda": "a Lambda layer holds Python bytecode, which the importer never runs; "
              "rebuild the model with built-in layers",
    "SlicingOpLambda": "a TensorFlow slicing operation recorded as a layer is not supported",
    "KerasLayer": "a TensorFlow Hub KerasLayer wraps a SavedModel the importer cannot read",
}


def convert_layer(layer, shapes, stored, keras_major):
    if layer.class_name in REFUSED_WHY:
        raise Refusal(f"layer {layer.name!r} ({layer.class_name}): {REFUSED_WHY[layer.class_name]}")
    converter = CONVERTERS.get(layer.class_name)
    if converter is None:
        raise Refusal(f"layer {layer.name!r}: class {layer.class_name!r} is a custom or unsupported "
                      "layer; the importer converts Keras's built-in image layers only")
    layer.class_name = ALIASES.get(layer.class_name, layer.class_name)
    return converter(layer, shapes, stored, keras_major)


# ---------------------------------------------------------------- stages

class Stage(nn.Module):
    """A piece of the graph with one input and one output tensor: runs its
    layers in order, each taking the outputs named by `sources` (index 0 is
    the stage's input, i + 1 the output of the i-th layer)."""

    def __init__(self, modules, sources):
        super().__init__()
        self.layers = nn.ModuleList(modules)
        self.sources = sources

    def forward(self, x):
        values = [x]
        for module, sources in zip(self.layers, self.sources):
            inputs = [values[s] for s in sources]
            values.append(module(inputs) if isinstance(module, Merge) else module(inputs[0]))
        return values[-1]


def stage_attribute(name, taken):
    """`name` as a TorchScript attribute name: characters other than letters,
    digits and _ become _, a leading digit or a name nn.Module already uses
    gets a trailing _; unique among `taken`."""
    clean = re.sub(r"\W", "_", name, flags=re.ASCII)
    if not clean or clean[0].isdigit():
        clean = "_" + clean
    if keyword.iskeyword(clean) or hasattr(nn.Module, clean) or clean in ("layers", "sources"):
        clean += "_"
    base, count = clean, 1
    while clean in taken:
        count += 1
        clean = f"{base}_{count}"
    return clean


def cut_points(layers, input_key):
    """Indices i after which exactly one tensor (layer i's output) is live."""
    last_use = {}
    for index, layer in enumerate(layers):
        for source in layer.inputs:
            last_use[source] = index
    cuts = []
    live = {input_key}
    for index, layer in enumerate(layers):
        live.add(layer.key)
        live = {k for k in live if last_use.get(k, -1) > index or k == layers[-1].key}
        if live == {layer.key}:
            cuts.append(index)
    return cuts


# Layers whose output is a view of their input (the same memory).
VIEWS = {"Identity", "Reshape", "Flatten"} | INERT_AT_INFERENCE
# Layers whose gradient does not need their output (when they apply no activation).
OUTPUT_NOT_SAVED = {"Conv2D", "DepthwiseConv2D", "SeparableConv2D", "Dense", "BatchNormalization", "Add"}


def _allow_inplace(layers, cuts, modules, shapes):
    """Lets an activation or Add overwrite its (first) input where that is a
    tensor made in the same stage, by a layer whose gradient does not need
    it, that no other layer reads: never a stage's input, which may be the
    Grad-CAM activation or another stage's output."""
    stage_of, stage = {}, 0
    for index, layer in enumerate(layers):
        stage_of[layer.key] = stage
        if index in cuts:
            stage += 1
    readers = {}
    for layer in layers:
        for source in layer.inputs:
            readers[source] = readers.get(source, 0) + 1
    by_key = {layer.key: layer for layer in layers}
    owned = {}  # key -> the tensor is made in its stage and only the one reader reads it (or its views)
    for layer in layers:
        first = layer.inputs[0] if layer.inputs else None
        first_owned = (first in by_key and stage_of[first] == stage_of[layer.key]
                       and readers[first] == 1 and owned[first])
        module = modules[layer.key]
        if isinstance(module, Activation) and first_owned:
            module.inplace = True
        if isinstance(module, Merge) and module.kind == "add" and first_owned \
                and shapes[first] == shapes[layer.key]:
            module.inplace = True
        # a view shares its input's memory: owned only if that input was
        is_view = layer.class_name in VIEWS or (isinstance(module, Activation) and module.kind == "linear")
        linear = layer.config.get("activation", "linear") in ("linear", None)
        owned[layer.key] = first_owned if is_view else (layer.class_name in OUTPUT_NOT_SAVED and linear)


# ---------------------------------------------------------------- import

def _topological(layers, input_key):
    done, ordered, pending = {input_key}, [], list(layers)
    while pending:
        ready = [layer for layer in pending if all(s in done for s in layer.inputs)]
        if not ready:
            raise Refusal("the layer graph has a cycle or an unreachable input")
        for layer in ready:
            done.add(layer.key)
            ordered.append(layer)
        pending = [layer for layer in pending if layer.key not in done]
    return ordered


def _final_activation(layer, keras_major):
    """'softmax', 'sigmoid' or None: the activation a classifier's last layer applies."""
    if layer.class_name in ("Dense", "Activation"):
        kind = _activation_name(layer, layer.config.get("activation"), keras_major)
        return kind if kind in ("softmax", "sigmoid") else None
    if layer.class_name == "Softmax":
        return "softmax"
    return None


def convert(keras_file, size=None):
    """(nn.Sequential of Stage modules, stage names, Keras layer names of the
    stages, output activation, (height, width), stage output ranks)."""
    if not isinstance(keras_file.config, dict) or "class_name" not in keras_file.config:
        raise Refusal("the model config has no class_name: not a Keras model file")
    top = keras_file.config
    if _class_of(top) not in GraphBuilder.MODEL_CLASSES:
        raise Refusal(f"the file holds a {_class_of(top)!r}, not a Sequential or Functional model "
                      "(a subclassed model cannot be converted without its Python code)")
    builder = GraphBuilder()
    try:
        layers, input_key, output_key = builder.build(top)
    except (KeyError, TypeError, AttributeError, IndexError) as e:
        raise Refusal(f"the model config is malformed ({type(e).__name__}: {e})") from None
    layers = _topological(layers, input_key)
    if not layers or layers[-1].key != output_key:
        layers = [layer for layer in layers if layer.key != output_key] + \
                 [layer for layer in layers if layer.key == output_key]
    shape = builder.input_shape
    if shape is None or len(shape) != 4:
        raise Refusal(f"the model's input has shape {shape}; an image classifier takes (batch, height, width, 3)")
    if shape[3] != 3:
        raise Refusal(f"the model's input has {shape[3]} channels; dermal feeds RGB images (3 channels)")
    height, width = shape[1], shape[2]
    if size is not None:
        height, width = size
    if height is None or width is None:
        raise Refusal("the model's input size is not fixed: give --size (or --width and --height)")

    output_activation = _final_activation(layers[-1], keras_file.keras_major)
    shapes = {input_key: [height, width, 3]}
    modules = {}
    for index, layer in enumerate(layers):
        stored = keras_file.weights(layer.nesting, layer.name)
        if index == len(layers) - 1 and output_activation:
            if layer.class_name in ("Activation", "Softmax"):
                layer = Layer("Identity", layer.config, layer.nesting, layer.inputs)
                layers[index] = layer
            else:
                layer.config = dict(layer.config, activation="linear")
        try:
            module, out_shape = convert_layer(layer, [shapes[s] for s in layer.inputs], stored,
                                              keras_file.keras_major)
        except (KeyError, TypeError, ValueError, IndexError) as e:
            raise Refusal(f"layer {layer.name!r} ({layer.class_name}): its config is malformed "
                          f"({type(e).__name__}: {e})") from None
        modules[layer.key] = module
        shapes[layer.key] = out_shape
    out_shape = shapes[layers[-1].key]
    if len(out_shape) != 1:
        raise Refusal(f"the model outputs shape {tuple(out_shape)} per image (last layer "
                      f"{layers[-1].name!r}); an image classifier outputs one score per class")

    cuts = cut_points(layers, input_key)
    _allow_inplace(layers, cuts, modules, shapes)
    stages, names, keras_names, ranks = [], [], [], []
    start = 0
    taken = set()
    for cut in cuts:
        members = layers[start:cut + 1]
        position = {layers[start - 1].key if start else input_key: 0}
        sources = []
        for i, layer in enumerate(members):
            sources.append([position[s] for s in layer.inputs])
            position[layer.key] = i + 1
        stages.append(Stage([modules[layer.key] for layer in members], sources))
        attribute = stage_attribute(layers[cut].name, taken)
        taken.add(attribute)
        names.append(attribute)
        keras_names.append(layers[cut].name)
        ranks.append(len(shapes[layers[cut].key]) + 1)
        start = cut + 1
    network = nn.Sequential()
    for name, stage in zip(names, stages):
        network.add_module(name, stage)
    return network.eval(), names, keras_names, output_activation, (height, width), ranks


class ReverseChannels(nn.Module):
    def forward(self, x):
        return x.flip(1)


def trace_stages(network, names, height, width):
    """The network with every stage replaced by its torch.jit.trace (a Stage's
    list-driven forward is not scriptable; its trace is the plain op graph)."""
    traced = nn.Sequential()
    x = torch.rand(1, 3, height, width) * 255.0
    with torch.no_grad():
        for name in names:
            stage = getattr(network, name)
            for p in stage.parameters():
                p.requires_grad_(False)
            module = torch.jit.trace(stage, x, check_trace=False)
            x = stage(x)
            traced.add_module(name, module)
    return traced


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
        probe = dermal_model.run_stages(network, names, torch.rand(1, 3, height, width) * 255.0)
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
        description = dermal_model.make_description(
            args.name or os.path.splitext(os.path.basename(args.model))[0], labels, width, height,
            names, cam_layer, resize=args.resize, mean=mean, std=std, scale=scale,
            output=output or "softmax", resample=args.resample)
    except ValueError as e:
        raise Refusal(str(e)) from None
    if args.bgr:  # the app reverses the channels (caffe mode); the library feeds RGB
        first = getattr(network, names[0])
        setattr(network, names[0], nn.Sequential(ReverseChannels(), first))
    traced = trace_stages(network, names, height, width)
    directory = os.path.dirname(os.path.abspath(args.out))
    handle, temporary = tempfile.mkstemp(prefix=".import_keras-", suffix=".pt", dir=directory)
    os.close(handle)
    try:
        dermal_model.save(traced, description, temporary)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temporary, 0o666 & ~umask)  # as an ordinary new file, not mkstemp's 0600
        os.replace(temporary, args.out)
    except BaseException:
        os.unlink(temporary)
        raise
    renamed = [f"{k} -> {n}" for k, n in zip(keras_names, names) if k != n]
    lines = [f"wrote {args.out}: {os.path.getsize(args.out) / 1e6:.1f} MB, "
             f"{sum(p.numel() for p in traced.parameters()):,} parameters, {len(names)} stages, "
             f"input {width}x{height}, cam_layer {cam_layer}, output {output or 'softmax'}"
             + ("" if output else " (the last layer has no softmax/sigmoid: its outputs are taken as logits)")
             + f", {time.monotonic() - started:.1f} s"]
    if renamed:
        lines.append("stage names changed for TorchScript: " + ", ".join(renamed))
    return "\n".join(lines)


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
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
        print(f"import_keras: error: {e}; nothing written", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
