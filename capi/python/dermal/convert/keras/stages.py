"""Stages: the converted graph cut wherever exactly one tensor is live, each
piece a module named after the Keras layer whose output it returns."""
import keyword
import re

import torch
from torch import nn

from .. import Refusal
from .graph import GraphBuilder, Layer, class_of, topological
from .layers import INERT_AT_INFERENCE, Activation, Merge, convert_layer, final_activation

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




def convert(keras_file, size=None):
    """(nn.Sequential of Stage modules, stage names, Keras layer names of the
    stages, output activation, (height, width), stage output ranks)."""
    if not isinstance(keras_file.config, dict) or "class_name" not in keras_file.config:
        raise Refusal("the model config has no class_name: not a Keras model file")
    top = keras_file.config
    if class_of(top) not in GraphBuilder.MODEL_CLASSES:
        raise Refusal(f"the file holds a {class_of(top)!r}, not a Sequential or Functional model "
                      "(a subclassed model cannot be converted without its Python code)")
    builder = GraphBuilder()
    try:
        layers, input_key, output_key = builder.build(top)
    except (KeyError, TypeError, AttributeError, IndexError) as e:
        raise Refusal(f"the model config is malformed ({type(e).__name__}: {e})") from None
    layers = topological(layers, input_key)
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

    output_activation = final_activation(layers[-1], keras_file.keras_major)
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


