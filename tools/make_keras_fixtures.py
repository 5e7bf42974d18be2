#!/usr/bin/python3
"""Writes Keras model files, without Keras, and the same models for TensorFlow.js.

    /usr/bin/python3 tools/make_keras_fixtures.py OUT_DIR [--families a,b] [--size N]

Each family is described once, abstractly (layer classes, Keras configs,
seeded numpy weights, nesting); from that description this script writes the
files as Keras writes them in each layout:

    keras3.keras   Keras 3 archive: config.json, metadata.json, model.weights.h5
                   with positional layers/<name>/vars/<i>, nested under parents
    tf213.keras    the archive of TensorFlow 2.13-2.15 (Keras 2 configs,
                   _layer_checkpoint_dependencies/<name>/vars/<i>)
    keras2.h5      legacy HDF5 of Keras 2 (model_config, model_weights/<layer>/
                   <weight path>:0; nested models store trainable weights first)
    keras3.h5      legacy HDF5 of Keras 3 (no :0, top_level_model_weights,
                   optimizer_weights)

and tfjs/<family>-<size>/model.json + weights.bin: a Keras-2-style topology
flattened into one Functional model, which tests/keras/run_tfjs.js runs with
tfjs-layers, an implementation of Keras's layers independent of the importer.
Weights are seeded and scaled so that activations stay finite and non-trivial.
"""
import argparse
import copy
import io
import json
import os
import sys
import zipfile

import h5py
import numpy as np

LAYOUTS = ("keras3.keras", "tf213.keras", "keras2.h5", "keras3.h5")


class Model:
    """A Sequential or Functional model being described: `entries` are
    primitive layers (dicts) or nested Models, each with its input names."""

    def __init__(self, name, kind, input_shape=None):
        self.name = name
        self.kind = kind
        self.input_shape = input_shape  # (H, W, C) for a model fed by the graph input
        self.entries = []
        self.input_name = None
        if input_shape is not None and kind == "Functional":
            self.input_name = self.layer("InputLayer", name + "_input" if name != "model" else "input_1", {}, [])
        self.last = self.input_name

    def layer(self, class_name, name, config, inputs, weights=()):
        """Adds a primitive layer; `weights` in Keras's variable order as
        (name, array, trainable). Returns its name."""
        if isinstance(inputs, str):
            inputs = [inputs]
        if inputs is None:
            inputs = [self.last] if self.last else []
        self.entries.append({"class_name": class_name, "name": name, "config": dict(config, name=name),
                             "inputs": list(inputs), "weights": list(weights)})
        self.last = name
        return name

    def nest(self, model, inputs=None):
        if isinstance(inputs, str):
            inputs = [inputs]
        if inputs is None:
            inputs = [self.last] if self.last else []
        self.entries.append({"model": model, "name": model.name, "inputs": list(inputs)})
        self.last = model.name
        return model.name


# ---------------------------------------------------------------- weights and layers

class Maker:
    """Seeded layer factory with Keras's weight shapes and variable order."""

    def __init__(self, seed):
        self.rng = np.random.default_rng(seed)

    def normal(self, shape, std):
        return (self.rng.standard_normal(shape) * std).astype(np.float32)

    def uniform(self, shape, low, high):
        return self.rng.uniform(low, high, shape).astype(np.float32)

    def conv(self, m, name, filters, kernel, channels, strides=1, padding="same", use_bias=True,
             activation="linear", inputs=None, gain=1.0, dilation=1, groups=1):
        k = (kernel, kernel) if isinstance(kernel, int) else tuple(kernel)
        fan_in = k[0] * k[1] * channels // groups
        weights = [("kernel", self.normal((k[0], k[1], channels // groups, filters), gain / np.sqrt(fan_in)), True)]
        if use_bias:
            weights.append(("bias", self.normal((filters,), 0.1), True))
        config = {"trainable": True, "dtype": "float32", "filters": filters, "kernel_size": list(k),
                  "strides": [strides, strides], "padding": padding, "data_format": "channels_last",
                  "dilation_rate": [dilation, dilation], "groups": groups, "activation": activation,
                  "use_bias": use_bias,
                  "kernel_initializer": {"class_name": "GlorotUniform", "config": {"seed": None}},
                  "bias_initializer": {"class_name": "Zeros", "config": {}},
                  "kernel_regularizer": None, "bias_regularizer": None, "activity_regularizer": None,
                  "kernel_constraint": None, "bias_constraint": None}
        return m.layer("Conv2D", name, config, inputs, weights)

    def depthwise(self, m, name, kernel, channels, strides=1, padding="same", multiplier=1,
                  use_bias=False, inputs=None, gain=1.0):
        weights = [("depthwise_kernel", self.normal((kernel, kernel, channels, multiplier), gain / kernel), True)]
        if use_bias:
            weights.append(("bias", self.normal((channels * multiplier,), 0.1), True))
        config = {"trainable": True, "dtype": "float32", "kernel_size": [kernel, kernel],
                  "strides": [strides, strides], "padding": padding, "data_format": "channels_last",
                  "dilation_rate": [1, 1], "groups": 1, "activation": "linear", "use_bias": use_bias,
                  "depth_multiplier": multiplier,
                  "depthwise_initializer": {"class_name": "GlorotUniform", "config": {"seed": None}},
                  "bias_initializer": {"class_name": "Zeros", "config": {}}}
        return m.layer("DepthwiseConv2D", name, config, inputs, weights)

    def separable(self, m, name, filters, kernel, channels, strides=1, padding="same", multiplier=1,
                  inputs=None, use_bias=True):
        weights = [("depthwise_kernel", self.normal((kernel, kernel, channels, multiplier), 1.0 / kernel), True),
                   ("pointwise_kernel", self.normal((1, 1, channels * multiplier, filters),
                                                    1.0 / np.sqrt(channels * multiplier)), True)]
        if use_bias:
            weights.append(("bias", self.normal((filters,), 0.1), True))
        config = {"trainable": True, "dtype": "float32", "filters": filters, "kernel_size": [kernel, kernel],
                  "strides": [strides, strides], "padding": padding, "data_format": "channels_last",
                  "dilation_rate": [1, 1], "depth_multiplier": multiplier, "activation": "linear",
                  "use_bias": use_bias}
        return m.layer("SeparableConv2D", name, config, inputs, weights)

    def bn(self, m, name, channels, epsilon=1e-3, momentum=0.99, inputs=None, gamma=(0.5, 1.5)):
        weights = [("gamma", self.uniform((channels,), *gamma), True),
                   ("beta", self.normal((channels,), 0.1), True),
                   ("moving_mean", self.normal((channels,), 0.1), False),
                   ("moving_variance", self.uniform((channels,), 0.5, 1.5), False)]
        config = {"trainable": True, "dtype": "float32", "axis": -1, "momentum": momentum,
                  "epsilon": epsilon, "center": True, "scale": True}
        return m.layer("BatchNormalization", name, config, inputs, weights)

    def dense(self, m, name, units, features, activation="linear", use_bias=True, inputs=None, gain=1.0):
        weights = [("kernel", self.normal((features, units), gain / np.sqrt(features)), True)]
        if use_bias:
            weights.append(("bias", self.normal((units,), 0.1), True))
        config = {"trainable": True, "dtype": "float32", "units": units, "activation": activation,
                  "use_bias": use_bias}
        return m.layer("Dense", name, config, inputs, weights)

    @staticmethod
    def simple(m, class_name, name, inputs=None, **config):
        return m.layer(class_name, name, dict({"trainable": True, "dtype": "float32"}, **config), inputs)


# ---------------------------------------------------------------- families

def custom_cnn(size, seed=1):
    """A small Sequential CNN fed raw 0-255 pixels (RandomFlip inert at inference)."""
    k = Maker(seed)
    m = Model("sequential", "Sequential", (size, size, 3))
    k.simple(m, "RandomFlip", "random_flip", mode="horizontal", seed=None)
    k.conv(m, "conv2d", 16, 3, 3, activation="relu", gain=1.0 / 128.0)
    k.bn(m, "batch_normalization", 16)
    k.simple(m, "MaxPooling2D", "max_pooling2d", pool_size=[2, 2], strides=[2, 2], padding="valid",
             data_format="channels_last")
    k.conv(m, "conv2d_1", 32, 3, 16, padding="valid", activation="relu")
    k.bn(m, "batch_normalization_1", 32)
    k.simple(m, "MaxPooling2D", "max_pooling2d_1", pool_size=[2, 2], strides=[2, 2], padding="same",
             data_format="channels_last")
    k.conv(m, "conv2d_2", 32, 3, 32, strides=2, activation="relu")
    side = -(-(-(-(size // 2 - 2) // 2)) // 2)
    k.simple(m, "Flatten", "flatten", data_format="channels_last")
    k.dense(m, "dense", 64, side * side * 32, activation="relu")
    k.simple(m, "Dropout", "dropout", rate=0.5, noise_shape=None, seed=None)
    k.dense(m, "dense_1", 7, 64, activation="softmax")
    return m


def _make_divisible(v, divisor=8, min_value=None):
    min_value = min_value or divisor
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:
        new_v += divisor
    return new_v


def mobilenet_v2(k, size, alpha, name):
    """keras.applications.MobileNetV2(include_top=False) as a Functional model."""
    m = Model(name, "Functional", (size, size, 3))
    eps, momentum = 1e-3, 0.999
    first = _make_divisible(32 * alpha, 8)
    k.conv(m, "Conv1", first, 3, 3, strides=2, use_bias=False)
    k.bn(m, "bn_Conv1", first, eps, momentum)
    k.simple(m, "ReLU", "Conv1_relu", max_value=6.0, negative_slope=0.0, threshold=0.0)
    channels, side = first, -(-size // 2)
    blocks = [(16, 1, 1), (24, 2, 6), (24, 1, 6), (32, 2, 6), (32, 1, 6), (32, 1, 6),
              (64, 2, 6), (64, 1, 6), (64, 1, 6), (64, 1, 6), (96, 1, 6), (96, 1, 6), (96, 1, 6),
              (160, 2, 6), (160, 1, 6), (160, 1, 6), (320, 1, 6)]
    for block_id, (filters, stride, expansion) in enumerate(blocks):
        pointwise = _make_divisible(int(filters * alpha), 8)
        block_input = m.last
        prefix = f"block_{block_id}_" if block_id else "expanded_conv_"
        width = channels
        if block_id:
            width = expansion * channels
            k.conv(m, prefix + "expand", width, 1, channels, use_bias=False)
            k.bn(m, prefix + "expand_BN", width, eps, momentum)
            k.simple(m, "ReLU", prefix + "expand_relu", max_value=6.0, negative_slope=0.0, threshold=0.0)
        if stride == 2:
            adjust = 1 - side % 2
            k.simple(m, "ZeroPadding2D", prefix + "pad", padding=[[1 - adjust, 1], [1 - adjust, 1]],
                     data_format="channels_last")
        k.depthwise(m, prefix + "depthwise", 3, width, strides=stride,
                    padding="same" if stride == 1 else "valid")
        k.bn(m, prefix + "depthwise_BN", width, eps, momentum)
        k.simple(m, "ReLU", prefix + "depthwise_relu", max_value=6.0, negative_slope=0.0, threshold=0.0)
        k.conv(m, prefix + "project", pointwise, 1, width, use_bias=False)
        k.bn(m, prefix + "project_BN", pointwise, eps, momentum, gamma=(0.2, 0.5))
        if channels == pointwise and stride == 1:
            k.simple(m, "Add", prefix + "add", inputs=[block_input, prefix + "project_BN"])
        channels, side = pointwise, -(-side // stride)
    last = _make_divisible(1280 * alpha, 8) if alpha > 1.0 else 1280
    k.conv(m, "Conv_1", last, 1, channels, use_bias=False)
    k.bn(m, "Conv_1_bn", last, eps, momentum)
    k.simple(m, "ReLU", "out_relu", max_value=6.0, negative_slope=0.0, threshold=0.0)
    m.output_channels = last
    return m


def teachable_machine(size, seed=2):
    """Teachable Machine's image export: Sequential(Sequential(MobileNetV2 0.35,
    GAP), Sequential(Dense(100, relu), Dense(2, softmax, no bias)))."""
    k = Maker(seed)
    outer = Model("sequential_4", "Sequential")  # no input of its own: the nested model's
    base = Model("sequential_1", "Sequential", (size, size, 3))
    backbone = mobilenet_v2(k, size, 0.35, "model1")
    base.nest(backbone)
    k.simple(base, "GlobalAveragePooling2D", "global_average_pooling2d_GlobalAveragePooling2D1",
             data_format="channels_last", keepdims=False)
    head = Model("sequential_3", "Sequential")
    k.dense(head, "dense_Dense1", 100, 1280, activation="relu")
    k.dense(head, "dense_Dense2", 2, 100, activation="softmax", use_bias=False)
    outer.nest(base)
    outer.nest(head)
    return outer


def _squeeze_excite_project(k, m, name, channels, width, out, se_ratio, eps, momentum):
    """An MBConv block after its depthwise convolution, as keras.applications'
    EfficientNets write it: BN, swish, squeeze-excitation, 1x1 projection, BN."""
    k.bn(m, name + "bn", width, eps, momentum)
    activated = k.simple(m, "Activation", name + "activation", activation="swish")
    squeezed = max(1, int(channels * se_ratio))
    k.simple(m, "GlobalAveragePooling2D", name + "se_squeeze", data_format="channels_last", keepdims=False)
    k.simple(m, "Reshape", name + "se_reshape", target_shape=[1, 1, width])
    k.conv(m, name + "se_reduce", squeezed, 1, width, activation="swish")
    k.conv(m, name + "se_expand", width, 1, squeezed, activation="sigmoid")
    k.simple(m, "Multiply", name + "se_excite", inputs=[activated, name + "se_expand"])
    k.conv(m, name + "project_conv", out, 1, width, use_bias=False)
    k.bn(m, name + "project_bn", out, eps, momentum, gamma=(0.2, 0.5))


def _residual(k, m, name, block_input, drop_rate):
    """The block's stochastic-depth Dropout (inert at inference) and its skip connection."""
    k.simple(m, "Dropout", name + "drop", rate=drop_rate, noise_shape=[None, 1, 1, 1], seed=None)
    k.simple(m, "Add", name + "add", inputs=[name + "drop", block_input])


# EfficientNetV2-S: (kernel, repeats, in, out, expansion, stride, se ratio, fused)
EFFICIENTNETV2_S_BLOCKS = [
    (3, 2, 24, 24, 1, 1, 0.0, True), (3, 4, 24, 48, 4, 2, 0.0, True),
    (3, 4, 48, 64, 4, 2, 0.0, True), (3, 6, 64, 128, 4, 2, 0.25, False),
    (3, 9, 128, 160, 6, 1, 0.25, False), (3, 15, 160, 256, 6, 2, 0.25, False),
]


def efficientnet_v2_s_backbone(k, size):
    """keras.applications.EfficientNetV2S(include_top=False, include_preprocessing=True)."""
    m = Model("efficientnetv2-s", "Functional", (size, size, 3))
    eps, momentum = 1e-3, 0.9
    k.simple(m, "Rescaling", "rescaling", scale=1.0 / 128.0, offset=-1.0)
    k.conv(m, "stem_conv", 24, 3, 3, strides=2, use_bias=False)
    k.bn(m, "stem_bn", 24, eps, momentum)
    k.simple(m, "Activation", "stem_activation", activation="swish")
    channels = 24
    for i, (kernel, repeats, _, out, expansion, stride, se_ratio, fused) in enumerate(EFFICIENTNETV2_S_BLOCKS):
        for j in range(repeats):
            name = f"block{i + 1}{chr(j + 97)}_"
            stride_j = stride if j == 0 else 1
            block_input = m.last
            width = channels * expansion
            if fused:
                if expansion != 1:
                    k.conv(m, name + "expand_conv", width, kernel, channels, strides=stride_j, use_bias=False)
                    k.bn(m, name + "expand_bn", width, eps, momentum)
                    k.simple(m, "Activation", name + "expand_activation", activation="swish")
                k.conv(m, name + "project_conv", out, 1 if expansion != 1 else kernel, width,
                       strides=1 if expansion != 1 else stride_j, use_bias=False)
                k.bn(m, name + "project_bn", out, eps, momentum, gamma=(0.2, 0.5))
                if expansion == 1:
                    k.simple(m, "Activation", name + "project_activation", activation="swish")
            else:
                if expansion != 1:
                    k.conv(m, name + "expand_conv", width, 1, channels, use_bias=False)
                    k.bn(m, name + "expand_bn", width, eps, momentum)
                    k.simple(m, "Activation", name + "expand_activation", activation="swish")
                k.depthwise(m, name + "dwconv2", kernel, width, strides=stride_j)
                _squeeze_excite_project(k, m, name, channels, width, out, se_ratio, eps, momentum)
            if stride_j == 1 and channels == out:
                _residual(k, m, name, block_input, 0.005)
            channels = out
    k.conv(m, "top_conv", 1280, 1, channels, use_bias=False)
    k.bn(m, "top_bn", 1280, eps, momentum)
    k.simple(m, "Activation", "top_activation", activation="swish")
    return m


def efficientnet_v2_s(size, seed=3):
    """The skin-lesion app's model: EfficientNetV2-S backbone, GAP, Dropout, Dense(7, softmax)."""
    k = Maker(seed)
    m = Model("model", "Functional", (size, size, 3))
    m.nest(efficientnet_v2_s_backbone(k, size))
    k.simple(m, "GlobalAveragePooling2D", "global_average_pooling2d", data_format="channels_last",
             keepdims=False)
    k.simple(m, "Dropout", "dropout", rate=0.3, noise_shape=None, seed=None)
    k.dense(m, "dense", 7, 1280, activation="softmax", gain=4.0)
    return m


def resnet50_backbone(k, size):
    """keras.applications.ResNet50(include_top=False) as a Functional model."""
    m = Model("resnet50", "Functional", (size, size, 3))
    eps = 1.001e-5
    k.simple(m, "ZeroPadding2D", "conv1_pad", padding=[[3, 3], [3, 3]], data_format="channels_last")
    k.conv(m, "conv1_conv", 64, 7, 3, strides=2, padding="valid", gain=1.0 / 128.0)
    k.bn(m, "conv1_bn", 64, eps)
    k.simple(m, "Activation", "conv1_relu", activation="relu")
    k.simple(m, "ZeroPadding2D", "pool1_pad", padding=[[1, 1], [1, 1]], data_format="channels_last")
    k.simple(m, "MaxPooling2D", "pool1_pool", pool_size=[3, 3], strides=[2, 2], padding="valid",
             data_format="channels_last")
    channels = 64
    for stack, (filters, blocks, stride) in enumerate([(64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)]):
        for block in range(blocks):
            name = f"conv{stack + 2}_block{block + 1}_"
            block_input = m.last
            s_ = stride if block == 0 else 1
            if block == 0:
                shortcut = k.conv(m, name + "0_conv", 4 * filters, 1, channels, strides=s_, padding="valid",
                                  inputs=block_input)
                shortcut = k.bn(m, name + "0_bn", 4 * filters, eps)
            else:
                shortcut = block_input
            k.conv(m, name + "1_conv", filters, 1, channels, strides=s_, padding="valid", inputs=block_input)
            k.bn(m, name + "1_bn", filters, eps)
            k.simple(m, "Activation", name + "1_relu", activation="relu")
            k.conv(m, name + "2_conv", filters, 3, filters, padding="same")
            k.bn(m, name + "2_bn", filters, eps)
            k.simple(m, "Activation", name + "2_relu", activation="relu")
            k.conv(m, name + "3_conv", 4 * filters, 1, filters, padding="valid")
            k.bn(m, name + "3_bn", 4 * filters, eps, gamma=(0.2, 0.5))
            k.simple(m, "Add", name + "add", inputs=[shortcut, name + "3_bn"])
            k.simple(m, "Activation", name + "out", activation="relu")
            channels = 4 * filters
    return m


def resnet50(size, seed=5):
    """ResNet50 backbone (caffe preprocessing done by the app), GAP, Dense(7, softmax)."""
    k = Maker(seed)
    m = Model("model", "Functional", (size, size, 3))
    m.nest(resnet50_backbone(k, size))
    k.simple(m, "GlobalAveragePooling2D", "avg_pool", data_format="channels_last", keepdims=False)
    k.dense(m, "predictions", 7, 2048, activation="softmax", gain=2.0)
    return m


def coverage(size, seed=4):
    """Layers no other family uses: SeparableConv2D, Concatenate, depth
    multiplier 2, dilation, AveragePooling2D and MaxPooling2D with asymmetric
    "same" padding, GlobalMaxPooling2D(keepdims), Normalization, ReLU(max_value),
    Multiply, Maximum, Average, elu, tanh, relu6 and a sigmoid output."""
    k = Maker(seed)
    m = Model("model", "Functional", (size, size, 3))
    k.simple(m, "Normalization", "normalization", axis=-1, mean=[120.0, 110.0, 100.0],
             variance=[3600.0, 3000.0, 2500.0], invert=False)
    stem = k.conv(m, "stem", 8, 3, 3, strides=2, activation="elu")
    a = k.separable(m, "sep", 8, 3, 8, strides=2, multiplier=2)
    b = k.depthwise(m, "dw", 5, 8, strides=2, multiplier=2, use_bias=True, inputs=stem)
    c = k.conv(m, "dilated", 16, 3, 16, dilation=2, activation="tanh", inputs=b)
    k.simple(m, "Concatenate", "concat", inputs=[a, c], axis=-1)
    k.simple(m, "ReLU", "relu4", max_value=4.0, negative_slope=0.0, threshold=0.0)
    avg = k.simple(m, "AveragePooling2D", "avg", pool_size=[3, 3], strides=[2, 2], padding="same",
                   data_format="channels_last")
    mx = k.simple(m, "MaxPooling2D", "max", pool_size=[3, 3], strides=[2, 2], padding="same",
                  data_format="channels_last", inputs="relu4")
    sub = k.simple(m, "Maximum", "maximum", inputs=[avg, mx])
    ave = k.simple(m, "Average", "ave", inputs=[avg, mx])
    both = k.simple(m, "Concatenate", "concat2", inputs=[sub, ave], axis=3)
    gate = k.simple(m, "GlobalMaxPooling2D", "gmax", data_format="channels_last", keepdims=True)
    m.entries[-1]["keepdims_channels"] = 48
    gate = k.simple(m, "Activation", "gate", activation="sigmoid")
    k.simple(m, "Multiply", "gated", inputs=[both, gate])
    k.conv(m, "last_conv", 12, 1, 48, activation="relu6")
    k.simple(m, "ZeroPadding2D", "pad", padding=[[0, 1], [1, 2]], data_format="channels_last")
    k.simple(m, "GlobalAveragePooling2D", "gap", data_format="channels_last", keepdims=False)
    k.dense(m, "scores", 3, 12, activation="sigmoid", gain=3.0)
    return m


def _classifier(backbone, channels, seed_maker, dropout=0.0):
    """The usual fine-tuning head on a nested backbone: GAP, [Dropout], Dense(7, softmax)."""
    m = Model("model", "Functional", backbone.input_shape)
    m.nest(backbone)
    seed_maker.simple(m, "GlobalAveragePooling2D", "avg_pool", data_format="channels_last", keepdims=False)
    if dropout:
        seed_maker.simple(m, "Dropout", "top_dropout", rate=dropout, noise_shape=None, seed=None)
    seed_maker.dense(m, "predictions", 7, channels, activation="softmax", gain=2.0)
    return m


def vgg16(size, seed=6):
    """Sequential(VGG16(include_top=False), Flatten, Dense(7, softmax)): a
    Functional backbone inside a Sequential, and Flatten in channels-last order."""
    k = Maker(seed)
    backbone = Model("vgg16", "Functional", (size, size, 3))
    channels = 3
    for block, (filters, convs) in enumerate([(64, 2), (128, 2), (256, 3), (512, 3), (512, 3)]):
        for conv in range(convs):
            k.conv(backbone, f"block{block + 1}_conv{conv + 1}", filters, 3, channels, activation="relu",
                   gain=(1.0 / 128.0 if channels == 3 else 1.4))
            channels = filters
        k.simple(backbone, "MaxPooling2D", f"block{block + 1}_pool", pool_size=[2, 2], strides=[2, 2],
                 padding="valid", data_format="channels_last")
    side = size // 32
    m = Model("sequential", "Sequential")
    m.nest(backbone)
    k.simple(m, "Flatten", "flatten", data_format="channels_last")
    k.dense(m, "dense", 7, side * side * 512, activation="softmax", gain=2.0)
    return m


def densenet121(size, seed=7):
    """keras.applications.DenseNet121(include_top=False) (names with '/'),
    GAP, Dense(7, softmax)."""
    k = Maker(seed)
    m = Model("densenet121", "Functional", (size, size, 3))
    eps = 1.001e-5
    k.simple(m, "ZeroPadding2D", "zero_padding2d", padding=[[3, 3], [3, 3]], data_format="channels_last")
    k.conv(m, "conv1/conv", 64, 7, 3, strides=2, padding="valid", use_bias=False)
    k.bn(m, "conv1/bn", 64, eps)
    k.simple(m, "Activation", "conv1/relu", activation="relu")
    k.simple(m, "ZeroPadding2D", "zero_padding2d_1", padding=[[1, 1], [1, 1]], data_format="channels_last")
    k.simple(m, "MaxPooling2D", "pool1", pool_size=[3, 3], strides=[2, 2], padding="valid",
             data_format="channels_last")
    channels = 64
    for stage, blocks in enumerate([6, 12, 24, 16]):
        for block in range(blocks):
            name = f"conv{stage + 2}_block{block + 1}"
            block_input = m.last
            k.bn(m, name + "_0_bn", channels, eps)
            k.simple(m, "Activation", name + "_0_relu", activation="relu")
            k.conv(m, name + "_1_conv", 128, 1, channels, use_bias=False)
            k.bn(m, name + "_1_bn", 128, eps)
            k.simple(m, "Activation", name + "_1_relu", activation="relu")
            k.conv(m, name + "_2_conv", 32, 3, 128, use_bias=False)
            k.simple(m, "Concatenate", name + "_concat", inputs=[block_input, name + "_2_conv"], axis=3)
            channels += 32
        if stage < 3:
            name = f"pool{stage + 2}"
            k.bn(m, name + "_bn", channels, eps)
            k.simple(m, "Activation", name + "_relu", activation="relu")
            channels //= 2
            k.conv(m, name + "_conv", channels, 1, 2 * channels, use_bias=False)
            k.simple(m, "AveragePooling2D", name + "_pool", pool_size=[2, 2], strides=[2, 2], padding="valid",
                     data_format="channels_last")
    k.bn(m, "bn", channels, eps)
    k.simple(m, "Activation", "relu", activation="relu")
    return _classifier(m, channels, k)


def xception(size, seed=8):
    """keras.applications.Xception(include_top=False): SeparableConv2D without
    bias, strided 1x1 shortcuts; GAP, Dense(7, softmax)."""
    k = Maker(seed)
    m = Model("xception", "Functional", (size, size, 3))
    k.conv(m, "block1_conv1", 32, 3, 3, strides=2, padding="valid", use_bias=False)
    k.bn(m, "block1_conv1_bn", 32)
    k.simple(m, "Activation", "block1_conv1_act", activation="relu")
    k.conv(m, "block1_conv2", 64, 3, 32, padding="valid", use_bias=False)
    k.bn(m, "block1_conv2_bn", 64)
    k.simple(m, "Activation", "block1_conv2_act", activation="relu")
    channels, shortcut_index, add_index = 64, 0, 0

    def suffix(index):
        return f"_{index}" if index else ""

    def entry_block(block, filters, first_act, out_filters=None):
        nonlocal channels, shortcut_index, add_index
        out_filters = out_filters or filters
        block_input = m.last
        shortcut = k.conv(m, "conv2d" + suffix(shortcut_index), out_filters, 1, channels, strides=2,
                          use_bias=False, inputs=block_input)
        shortcut = k.bn(m, "batch_normalization" + suffix(shortcut_index), out_filters)
        shortcut_index += 1
        x = block_input
        if first_act:
            x = k.simple(m, "Activation", f"block{block}_sepconv1_act", activation="relu", inputs=x)
        k.separable(m, f"block{block}_sepconv1", filters, 3, channels, use_bias=False, inputs=x)
        k.bn(m, f"block{block}_sepconv1_bn", filters)
        k.simple(m, "Activation", f"block{block}_sepconv2_act", activation="relu")
        k.separable(m, f"block{block}_sepconv2", out_filters, 3, filters, use_bias=False)
        k.bn(m, f"block{block}_sepconv2_bn", out_filters, gamma=(0.2, 0.5))
        k.simple(m, "MaxPooling2D", f"block{block}_pool", pool_size=[3, 3], strides=[2, 2], padding="same",
                 data_format="channels_last")
        k.simple(m, "Add", "add" + suffix(add_index), inputs=[f"block{block}_pool", shortcut])
        add_index += 1
        channels = out_filters

    entry_block(2, 128, first_act=False)
    entry_block(3, 256, first_act=True)
    entry_block(4, 728, first_act=True)
    for block in range(5, 13):
        block_input = m.last
        for conv in range(1, 4):
            k.simple(m, "Activation", f"block{block}_sepconv{conv}_act", activation="relu")
            k.separable(m, f"block{block}_sepconv{conv}", 728, 3, 728, use_bias=False)
            k.bn(m, f"block{block}_sepconv{conv}_bn", 728, gamma=(0.2, 0.5))
        k.simple(m, "Add", "add" + suffix(add_index), inputs=[f"block{block}_sepconv3_bn", block_input])
        add_index += 1
    entry_block(13, 728, first_act=True, out_filters=1024)
    k.separable(m, "block14_sepconv1", 1536, 3, 1024, use_bias=False)
    k.bn(m, "block14_sepconv1_bn", 1536)
    k.simple(m, "Activation", "block14_sepconv1_act", activation="relu")
    k.separable(m, "block14_sepconv2", 2048, 3, 1536, use_bias=False)
    k.bn(m, "block14_sepconv2_bn", 2048)
    k.simple(m, "Activation", "block14_sepconv2_act", activation="relu")
    return _classifier(m, 2048, k)


# EfficientNet-B0: (kernel, repeats, in, out, expansion, stride)
EFFICIENTNET_B0_BLOCKS = [(3, 1, 32, 16, 1, 1), (3, 2, 16, 24, 6, 2), (5, 2, 24, 40, 6, 2), (3, 3, 40, 80, 6, 2),
                          (5, 3, 80, 112, 6, 1), (5, 4, 112, 192, 6, 2), (3, 1, 192, 320, 6, 1)]


def efficientnet_b0(size, seed=9):
    """keras.applications.EfficientNetB0(include_top=False): Rescaling and
    Normalization inside, explicit "correct_pad" ZeroPadding2D before strided
    depthwise convolutions, squeeze-excitation; GAP, Dropout, Dense(7, softmax)."""
    k = Maker(seed)
    m = Model("efficientnetb0", "Functional", (size, size, 3))
    eps, momentum = 1e-3, 0.99
    k.simple(m, "Rescaling", "rescaling", scale=1.0 / 255.0, offset=0.0)
    k.simple(m, "Normalization", "normalization", axis=-1, mean=[0.485, 0.456, 0.406],
             variance=[0.229 ** 2, 0.224 ** 2, 0.225 ** 2], invert=False)

    def correct_pad(side, kernel):
        adjust = 1 - side % 2
        return [[kernel // 2 - adjust, kernel // 2], [kernel // 2 - adjust, kernel // 2]]

    side = size
    k.simple(m, "ZeroPadding2D", "stem_conv_pad", padding=correct_pad(side, 3), data_format="channels_last")
    k.conv(m, "stem_conv", 32, 3, 3, strides=2, padding="valid", use_bias=False)
    side = (side + 1) // 2
    k.bn(m, "stem_bn", 32, eps, momentum)
    k.simple(m, "Activation", "stem_activation", activation="swish")
    channels = 32
    for i, (kernel, repeats, _, out, expansion, stride) in enumerate(EFFICIENTNET_B0_BLOCKS):
        for j in range(repeats):
            name = f"block{i + 1}{chr(j + 97)}_"
            stride_j = stride if j == 0 else 1
            block_input = m.last
            width = channels * expansion
            if expansion != 1:
                k.conv(m, name + "expand_conv", width, 1, channels, use_bias=False)
                k.bn(m, name + "expand_bn", width, eps, momentum)
                k.simple(m, "Activation", name + "expand_activation", activation="swish")
            if stride_j == 2:
                k.simple(m, "ZeroPadding2D", name + "dwconv_pad", padding=correct_pad(side, kernel),
                         data_format="channels_last")
                side = (side + 1) // 2
            k.depthwise(m, name + "dwconv", kernel, width, strides=stride_j,
                        padding="valid" if stride_j == 2 else "same")
            _squeeze_excite_project(k, m, name, channels, width, out, 0.25, eps, momentum)
            if stride_j == 1 and channels == out:
                _residual(k, m, name, block_input, 0.02)
            channels = out
    k.conv(m, "top_conv", 1280, 1, channels, use_bias=False)
    k.bn(m, "top_bn", 1280, eps, momentum)
    k.simple(m, "Activation", "top_activation", activation="swish")
    return _classifier(m, 1280, k, dropout=0.2)


# MobileNetV3Small: (expansion, filters, kernel, stride, squeeze-excitation, hard swish)
MOBILENET_V3_SMALL_BLOCKS = [
    (1, 16, 3, 2, True, False), (72 / 16, 24, 3, 2, False, False), (88 / 24, 24, 3, 1, False, False),
    (4, 40, 5, 2, True, True), (6, 40, 5, 1, True, True), (6, 40, 5, 1, True, True),
    (3, 48, 5, 1, True, True), (3, 48, 5, 1, True, True), (6, 96, 5, 2, True, True),
    (6, 96, 5, 1, True, True), (6, 96, 5, 1, True, True)]


def mobilenet_v3_small(size, seed=10):
    """keras.applications.MobileNetV3Small(include_top=False) as Keras 3 writes
    it: Rescaling inside, Activation("hard_swish") layers, the hard sigmoid of
    the squeeze-excitation as ReLU(6) between the operations x + 3.0 and
    x * (1 / 6) (keras.src.ops.numpy Add and Multiply with a constant, outside
    any layer), GlobalAveragePooling2D(keepdims=True), strided depthwise
    convolutions after a "correct_pad" ZeroPadding2D; GAP, Dropout, Dense(7, softmax)."""
    k = Maker(seed)
    m = Model("MobilenetV3small", "Functional", (size, size, 3))
    eps, momentum = 1e-3, 0.999
    counts = {}

    def auto_name(base):  # Keras's names for unnamed layers: relu, relu_1, ...
        counts[base] = counts.get(base, -1) + 1
        return base if counts[base] == 0 else f"{base}_{counts[base]}"

    def activation(hard_swish):
        if hard_swish:
            return k.simple(m, "Activation", auto_name("activation"), activation="hard_swish")
        return k.simple(m, "ReLU", auto_name("re_lu"), max_value=None, negative_slope=0.0, threshold=0.0)

    def number_op(op, constant):  # tensor-and-number arithmetic as Keras 3 records it
        name = m.layer(op, auto_name(op.lower()), {}, None)
        m.entries[-1].update(module="keras.src.ops.numpy", constant_args=[constant])
        return name

    k.simple(m, "Rescaling", "rescaling", scale=1.0 / 127.5, offset=-1.0)
    k.conv(m, "conv", 16, 3, 3, strides=2, use_bias=False)
    k.bn(m, "conv_bn", 16, eps, momentum)
    activation(True)
    channels, side = 16, -(-size // 2)
    for block_id, (expansion, filters, kernel, stride, squeeze, hard_swish) in enumerate(MOBILENET_V3_SMALL_BLOCKS):
        prefix = f"expanded_conv_{block_id}_" if block_id else "expanded_conv_"
        shortcut = m.last
        width = channels
        if block_id:
            width = _make_divisible(channels * expansion)
            k.conv(m, prefix + "expand", width, 1, channels, use_bias=False)
            k.bn(m, prefix + "expand_bn", width, eps, momentum)
            activation(hard_swish)
        if stride == 2:
            adjust = 1 - side % 2
            pad = [[kernel // 2 - adjust, kernel // 2], [kernel // 2 - adjust, kernel // 2]]
            k.simple(m, "ZeroPadding2D", prefix + "depthwise_pad", padding=pad, data_format="channels_last")
        k.depthwise(m, prefix + "depthwise", kernel, width, strides=stride,
                    padding="same" if stride == 1 else "valid")
        k.bn(m, prefix + "depthwise_bn", width, eps, momentum)
        activated = activation(hard_swish)
        if squeeze:
            squeezed = _make_divisible(width * 0.25)
            k.simple(m, "GlobalAveragePooling2D", prefix + "squeeze_excite_avg_pool",
                     data_format="channels_last", keepdims=True)
            m.entries[-1]["keepdims_channels"] = width
            k.conv(m, prefix + "squeeze_excite_conv", squeezed, 1, width)
            k.simple(m, "ReLU", prefix + "squeeze_excite_relu", max_value=None, negative_slope=0.0, threshold=0.0)
            k.conv(m, prefix + "squeeze_excite_conv_1", width, 1, squeezed)
            number_op("Add", 3.0)
            k.simple(m, "ReLU", auto_name("re_lu"), max_value=6.0, negative_slope=0.0, threshold=0.0)
            number_op("Multiply", 1.0 / 6.0)
            k.simple(m, "Multiply", prefix + "squeeze_excite_mul", inputs=[activated, m.last])
        k.conv(m, prefix + "project", filters, 1, width, use_bias=False)
        k.bn(m, prefix + "project_bn", filters, eps, momentum, gamma=(0.2, 0.5))
        if stride == 1 and channels == filters:
            k.simple(m, "Add", prefix + "add", inputs=[shortcut, prefix + "project_bn"])
        channels, side = filters, -(-side // stride)
    last = _make_divisible(channels * 6)
    k.conv(m, "conv_1", last, 1, channels, use_bias=False)
    k.bn(m, "conv_1_bn", last, eps, momentum)
    activation(True)
    return _classifier(m, last, k, dropout=0.2)


DEMO_MODEL = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                          "examples", "data", "demo-model.pt")


def trained_demo(size):
    """The trained demo model (examples/data/demo-model.pt, tools/train_demo.py's
    DemoNet) as a Keras user would write the same network: Rescaling and
    Normalization inside, ZeroPadding2D(1) before each strided "valid"
    convolution (PyTorch's symmetric padding), Conv2D-BatchNormalization-ReLU
    blocks, GAP, Dense(3, softmax), with the demo's trained weights: a
    trained Keras file for measurements that random weights cannot give."""
    import torch
    from torch import nn

    import train_demo
    network = train_demo.DemoNet()
    network.load_state_dict(torch.jit.load(DEMO_MODEL).state_dict())
    k = Maker(0)  # configs only: every weight below is replaced by the trained one

    def trained(m, arrays):
        """Puts `arrays` (torch tensors, Keras's order and layout) in place of the last layer's weights."""
        entry = m.entries[-1]
        entry["weights"] = [(name, array.detach().numpy().astype(np.float32), trainable)
                            for (name, _, trainable), array in zip(entry["weights"], arrays)]

    m = Model("sequential", "Sequential", (size, size, 3))
    k.simple(m, "Rescaling", "rescaling", scale=1.0 / 255.0, offset=0.0)
    k.simple(m, "Normalization", "normalization", axis=-1, mean=[0.485, 0.456, 0.406],
             variance=[0.229 ** 2, 0.224 ** 2, 0.225 ** 2], invert=False)
    for i, stage in enumerate(network.features):
        convolutions = [layer for layer in stage if isinstance(layer, nn.Conv2d)]
        norms = [layer for layer in stage if isinstance(layer, nn.BatchNorm2d)]
        for j, (conv, norm) in enumerate(zip(convolutions, norms)):
            prefix = f"block{i + 1}_{j + 1}_"
            strided = conv.stride[0] == 2
            if strided:
                k.simple(m, "ZeroPadding2D", prefix + "pad", padding=[[1, 1], [1, 1]],
                         data_format="channels_last")
            k.conv(m, prefix + "conv", conv.out_channels, 3, conv.in_channels, strides=conv.stride[0],
                   padding="valid" if strided else "same", use_bias=False)
            trained(m, [conv.weight.permute(2, 3, 1, 0)])
            k.bn(m, prefix + "bn", norm.num_features, epsilon=norm.eps, momentum=0.9)
            trained(m, [norm.weight, norm.bias, norm.running_mean, norm.running_var])
            k.simple(m, "ReLU", prefix + "relu", max_value=None, negative_slope=0.0, threshold=0.0)
    k.simple(m, "GlobalAveragePooling2D", "global_average_pooling2d", data_format="channels_last",
             keepdims=False)
    linear = network.head[2]
    k.dense(m, "dense", linear.out_features, linear.in_features, activation="softmax")
    trained(m, [linear.weight.t(), linear.bias])
    return m


FAMILIES = {
    "custom_cnn": (custom_cnn, ("keras3.keras", "tf213.keras", "keras2.h5", "keras3.h5")),
    "teachable_machine": (teachable_machine, ("keras2.h5", "keras3.keras")),
    "efficientnet_v2_s": (efficientnet_v2_s, ("keras3.keras", "keras2.h5")),
    "coverage": (coverage, ("keras3.keras", "tf213.keras", "keras2.h5", "keras3.h5")),
    "resnet50": (resnet50, ("keras3.keras", "keras2.h5")),
    "vgg16": (vgg16, ("keras3.keras",)),
    "densenet121": (densenet121, ("keras3.keras", "keras2.h5")),
    "xception": (xception, ("keras3.h5",)),
    "efficientnet_b0": (efficientnet_b0, ("keras3.keras", "tf213.keras")),
    "mobilenet_v3_small": (mobilenet_v3_small, ("keras3.keras",)),
    "trained_demo": (trained_demo, ("keras3.keras", "keras2.h5")),
}


# ---------------------------------------------------------------- Keras configs

def _activation_v3_saving(value):
    """Keras 2.13's saving v3 form of a built-in activation."""
    return {"module": "keras.activations", "class_name": "function", "config": value,
            "registered_name": "function"}


def _layer_config(entry, style):
    config = copy.deepcopy(entry["config"])
    if style == "keras3":
        config["dtype"] = {"module": "keras", "class_name": "DTypePolicy",
                           "config": {"name": "float32"}, "registered_name": None}
    if style == "tf213" and "activation" in config:
        config["activation"] = _activation_v3_saving(config["activation"])
    return config


def _input_entry(name, shape, style):
    batch = [None] + list(shape)
    if style == "keras3":
        return {"module": "keras.layers", "class_name": "InputLayer",
                "config": {"batch_shape": batch, "dtype": "float32", "sparse": False, "name": name},
                "registered_name": None, "name": name, "inbound_nodes": []}
    entry = {"class_name": "InputLayer", "config": {"batch_input_shape": batch, "dtype": "float32",
                                                     "sparse": False, "ragged": False, "name": name},
             "name": name, "inbound_nodes": []}
    if style == "tf213":
        entry.update(module="keras.layers", registered_name=None)
    return entry


def _tensor_v3(name):
    return {"class_name": "__keras_tensor__",
            "config": {"shape": None, "dtype": "float32", "keras_history": [name, 0, 0]}}


def model_config(model, style, nested=False):
    """The model's config as Keras `style` ('keras3', 'tf213', 'keras2') writes it."""
    layers = []
    is_nested_model = {e["name"]: "model" in e for e in model.entries}
    for entry in model.entries:
        if "model" in entry:
            item = model_config(entry["model"], style, nested=True)
        elif entry["class_name"] == "InputLayer":
            if model.kind == "Sequential":
                continue
            layers.append(_input_entry(entry["name"], model.input_shape, style))
            continue
        else:
            item = {"class_name": entry["class_name"], "config": _layer_config(entry, style)}
            if style in ("keras3", "tf213"):
                item.update(module=entry.get("module", "keras.layers"), registered_name=None)
        item["name"] = entry["name"]
        if model.kind == "Functional":
            if style == "keras3":
                tensors = [_tensor_v3(n) for n in entry["inputs"]]
                args = ([tensors] if len(tensors) > 1 else tensors) + entry.get("constant_args", [])
                item["inbound_nodes"] = [{"args": args, "kwargs": {}}]
            else:
                item["inbound_nodes"] = [[[n, 1 if is_nested_model.get(n) else 0, 0, entry.get("call_kwargs", {})]
                                          for n in entry["inputs"]]]
        layers.append(item)
    if model.kind == "Sequential":
        if model.input_shape is not None:
            layers.insert(0, _input_entry(model.name + "_input", model.input_shape, style))
        config = {"name": model.name, "layers": layers}
        if style == "keras3":
            config.update(trainable=True, dtype=None)
    else:
        config = {"name": model.name, "trainable": True, "layers": layers,
                  "input_layers": [[model.input_name, 0, 0]], "output_layers": [[model.last, 0, 0]]}
    kind = model.kind if style != "keras2" or model.kind == "Sequential" else "Functional"
    result = {"class_name": kind, "config": config}
    if style in ("keras3", "tf213"):
        result.update(module="keras" if model.kind == "Sequential" else "keras.src.models.functional",
                      registered_name=None if style == "tf213" else kind)
    return result


# ---------------------------------------------------------------- weights

def _primitives(model, nesting=()):
    """(nesting names, entry) of every primitive layer, depth first."""
    for entry in model.entries:
        if "model" in entry:
            yield from _primitives(entry["model"], nesting + (entry["name"],))
        else:
            yield nesting, entry


def _write_positional(group, model, container):
    group.create_group("vars")
    layers = group.create_group(container)
    for entry in model.entries:
        if "model" in entry:
            _write_positional(layers.create_group(entry["name"]), entry["model"], container)
        else:
            layer = layers.create_group(entry["name"])
            variables = layer.create_group("vars")
            for index, (_, array, _) in enumerate(entry["weights"]):
                variables.create_dataset(str(index), data=array)


def write_archive(model, path, style):
    """A .keras zip: Keras 3 ('keras3') or TensorFlow 2.13-2.15 ('tf213')."""
    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as f:
        container = "layers" if style == "keras3" else "_layer_checkpoint_dependencies"
        _write_positional(f, model, container)
        if style == "keras3":
            f.create_group("optimizer").create_group("vars")
    metadata = {"keras_version": "3.3.3" if style == "keras3" else "2.15.0",
                "date_saved": "2026-11-29@12:00:00"}
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("metadata.json", json.dumps(metadata))
        archive.writestr("config.json", json.dumps(model_config(model, style)))
        archive.writestr("model.weights.h5", buffer.getvalue())


def write_legacy_h5(model, path, keras_major):
    """A legacy HDF5 model file as Keras 2 (keras_major 2) or Keras 3 writes it."""
    suffix = ":0" if keras_major == 2 else ""
    with h5py.File(path, "w") as f:
        f.attrs["keras_version"] = "2.4.0" if keras_major == 2 else "3.3.3"
        f.attrs["backend"] = "tensorflow"
        f.attrs["model_config"] = json.dumps(model_config(model, "keras2"))
        f.attrs["training_config"] = json.dumps({"loss": "categorical_crossentropy"})
        root = f.create_group("model_weights")
        top = [e for e in model.entries if not (model.kind == "Sequential" and e.get("class_name") == "InputLayer")]
        root.attrs["layer_names"] = [e["name"].encode() for e in top]
        root.attrs["backend"] = b"tensorflow"
        root.attrs["keras_version"] = f.attrs["keras_version"].encode()
        for entry in sorted(top, key=lambda e: e["name"]):
            group = root.create_group(entry["name"])
            if "model" in entry:
                inner = list(_primitives(entry["model"], (entry["name"],)))
            else:
                inner = [((), entry)]
            names, arrays = [], []
            for trainable in (True, False):  # a model's weights: trainable ones first
                for nesting, layer in inner:
                    for weight, array, is_trainable in layer["weights"]:
                        if is_trainable == trainable:
                            prefix = "/".join(nesting[1:] + (layer["name"],)) if keras_major == 3 else layer["name"]
                            names.append(f"{prefix}/{weight}{suffix}")
                            arrays.append(array)
            group.attrs["weight_names"] = [n.encode() for n in names]
            for name, array in zip(names, arrays):
                group.create_dataset(name, data=array)
        if keras_major == 3:
            root.create_group("top_level_model_weights").attrs["weight_names"] = []
            optimizer = f.create_group("optimizer_weights")
            optimizer.attrs["weight_names"] = [b"adam/iteration", b"adam/learning_rate"]
            optimizer.create_dataset("adam/iteration", data=np.int64(120))
            optimizer.create_dataset("adam/learning_rate", data=np.float32(1e-3))


# ---------------------------------------------------------------- TensorFlow.js

TFJS_DROPPED = {"RandomFlip", "RandomRotation", "RandomZoom", "RandomContrast", "RandomTranslation"}


def flatten(model, source=None, prefix_inputs=None):
    """(primitive entries with global inputs, output name): nested models replaced by their layers."""
    entries, renamed = [], {}
    if model.input_name is not None and source is not None:
        renamed[model.input_name] = source
    previous = source
    for entry in model.entries:
        if model.kind == "Sequential":
            inputs = [previous] if previous else []
        else:
            inputs = [renamed.get(n, n) for n in entry["inputs"]]
        if "model" in entry:
            inner, output = flatten(entry["model"], inputs[0])
            entries += inner
            renamed[entry["name"]] = output
            previous = output
        elif entry["class_name"] == "InputLayer" and source is not None:
            continue
        elif entry["class_name"] in TFJS_DROPPED:  # identity at inference
            renamed[entry["name"]] = inputs[0]
            previous = inputs[0]
        else:
            entries.append(dict(entry, inputs=inputs))
            previous = entry["name"]
    return entries, previous


def write_tfjs(model, directory, size):
    """model.json (Keras-2-style topology + weights manifest) and weights.bin."""
    input_name = "tfjs_input"
    entries, output = flatten(model, input_name)
    layers = [{"class_name": "InputLayer", "name": input_name, "inbound_nodes": [],
               "config": {"batch_input_shape": [None, size, size, 3], "dtype": "float32",
                          "sparse": False, "name": input_name}}]
    specs, blobs = [], []
    for entry in entries:
        class_name, config = entry["class_name"], dict(entry["config"])
        for unused in ("groups", "trainable"):
            config.pop(unused, None)
        weights = entry["weights"]
        if class_name == "Normalization":  # tfjs has none: the same affine map as a BatchNormalization
            mean, variance = (np.asarray(config[k], np.float32) for k in ("mean", "variance"))
            class_name = "BatchNormalization"
            config = {"name": entry["name"], "axis": -1, "epsilon": 0.0, "center": True, "scale": True}
            weights = [("gamma", np.ones_like(mean), True), ("beta", np.zeros_like(mean), True),
                       ("moving_mean", mean, False), ("moving_variance", variance, False)]
        if entry.get("module") == "keras.src.ops.numpy":  # x + c or x * c: tfjs's Rescaling, x * scale + offset
            constant = float(entry["constant_args"][0])
            scale, offset = {"Add": (1.0, constant), "Multiply": (constant, 0.0)}[class_name]
            class_name, config = "Rescaling", {"name": entry["name"], "scale": scale, "offset": offset}
        if class_name == "Activation" and config["activation"] == "hard_swish":
            class_name = "KerasHardSwish"  # tfjs has no hard_swish: tests/keras/run_tfjs.js defines this layer
            config = {"name": entry["name"]}
        if class_name == "ReLU":  # tfjs-layers knows max_value only (the others are 0 here)
            assert not config.pop("negative_slope", 0) and not config.pop("threshold", 0)
        keep_channels = entry.get("keepdims_channels")
        if keep_channels:  # tfjs-layers has no keepdims: pool, then reshape to (1, 1, C)
            config["keepdims"] = False
            pooled = entry["name"] + "_tfjs_pool"
            layers.append({"class_name": class_name, "name": pooled, "config": dict(config, name=pooled),
                           "inbound_nodes": [[[n, 0, 0, {}] for n in entry["inputs"]]]})
            class_name, config = "Reshape", {"name": entry["name"], "target_shape": [1, 1, keep_channels]}
            entry = dict(entry, inputs=[pooled])
        layers.append({"class_name": class_name, "name": entry["name"], "config": config,
                       "inbound_nodes": [[[n, 0, 0, {}] for n in entry["inputs"]]]})
        for weight, array, _ in weights:
            specs.append({"name": f"{entry['name']}/{weight}", "shape": list(array.shape), "dtype": "float32"})
            blobs.append(np.ascontiguousarray(array, dtype="<f4").tobytes())
    topology = {"class_name": "Model", "keras_version": "2.4.0", "backend": "tensorflow",
                "config": {"name": "flat", "layers": layers, "input_layers": [[input_name, 0, 0]],
                           "output_layers": [[output, 0, 0]]}}
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, "weights.bin"), "wb") as f:
        f.write(b"".join(blobs))
    with open(os.path.join(directory, "model.json"), "w") as f:
        json.dump({"format": "layers-model", "modelTopology": topology,
                   "weightsManifest": [{"paths": ["weights.bin"], "weights": specs}],
                   "layer_order": [layer["name"] for layer in layers]}, f)


def write_family(family, size, out_dir, layouts=None):
    """Writes every layout of `family` at `size`; returns {layout: path} and the tfjs directory."""
    build, default_layouts = FAMILIES[family]
    model = build(size)
    paths = {}
    for layout in layouts or default_layouts:
        path = os.path.join(out_dir, f"{family}-{size}.{layout}")
        if layout == "keras3.keras":
            write_archive(model, path, "keras3")
        elif layout == "tf213.keras":
            write_archive(model, path, "tf213")
        elif layout == "keras2.h5":
            write_legacy_h5(model, path, 2)
        elif layout == "keras3.h5":
            write_legacy_h5(model, path, 3)
        paths[layout] = path
    tfjs_dir = os.path.join(out_dir, f"tfjs-{family}-{size}")
    write_tfjs(model, tfjs_dir, size)
    return paths, tfjs_dir


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir")
    parser.add_argument("--families", default=",".join(FAMILIES))
    parser.add_argument("--size", type=int, default=64)
    args = parser.parse_args(argv)
    os.makedirs(args.out_dir, exist_ok=True)
    for family in args.families.split(","):
        if family not in FAMILIES:
            parser.error(f"unknown family {family!r}; known: {', '.join(FAMILIES)}")
        paths, tfjs_dir = write_family(family, args.size, args.out_dir)
        print(family, *sorted(paths.values()), tfjs_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
