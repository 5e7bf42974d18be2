"""Layer semantics: each Keras layer as a PyTorch module with Keras's numerics
(TensorFlow "same" padding, channels-last flattening)."""
import math

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from .. import Refusal

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




def final_activation(layer, keras_major):
    """'softmax', 'sigmoid' or None: the activation a classifier's last layer applies."""
    if layer.class_name in ("Dense", "Activation"):
        kind = _activation_name(layer, layer.config.get("activation"), keras_major)
        return kind if kind in ("softmax", "sigmoid") else None
    if layer.class_name == "Softmax":
        return "softmax"
    return None

