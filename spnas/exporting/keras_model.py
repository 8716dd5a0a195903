"""Keras 3 models of spnas layers and child networks (for TFLite: latency tables and export).

The graph holds specs; this builder makes Keras layers from them, as :mod:`spnas.supernet.builder` makes
PyTorch modules, with the same structure, so that weights carry over one to one
(:mod:`spnas.exporting.exporter`) and a layer timed alone is the layer that runs inside the network:

* conv (stem, head): Conv2D (no bias), BatchNormalization, ReLU/ReLU6;
* MBConv: [1x1 Conv2D, BN, act] (absent at expansion 1), DepthwiseConv2D, BN, act, 1x1 Conv2D,
  BN, and the residual Add when the stride is 1 and the shapes match;
* classifier: GlobalAveragePooling2D, Dense (dropout is the identity at inference).

Layout is NHWC (TFLite's). PyTorch pads ``k // 2`` on every side; Keras's ``"same"`` equals it at
stride 1 but pads one less on the top and left at stride 2 on even sizes, so strided convs get an
explicit ZeroPadding2D and ``"valid"`` (as timm's TF-ported models do). BatchNorm epsilon is
PyTorch's 1e-5. Layers are named ``<layer name with _ for .>_<part>`` (``blocks_1_0_conv_dw``).

Keras and TensorFlow are imported on first use (``pip install 'spnas[tflite]'``).
"""

from __future__ import annotations

from typing import Any

from spnas.space.arch import Architecture, Op
from spnas.core.errors import SpnasError
from spnas.space.graph import LayerNode, SpaceGraph

BN_EPS = 1e-5  # PyTorch's BatchNorm2d default


def import_keras():
    """Keras 3 (with the TensorFlow backend), or a one-line error saying what to install."""
    import os

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # no C++ info lines on every conversion
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    from spnas.latency.profiling import quiet_fds

    try:
        with quiet_fds():  # absl and oneDNN print their start-up lines from C++
            import keras
    except ImportError:
        raise SpnasError("TensorFlow/Keras is not installed; pip install 'spnas[tflite]' "
                         "(tensorflow-cpu and ai-edge-litert), or use --device flops") from None
    return keras


def prefix(layer: LayerNode) -> str:
    return layer.name.replace(".", "_")


def _act(keras, act: str, name: str):
    return keras.layers.ReLU(max_value=6.0 if act == "relu6" else None, name=name)


def _padded(keras, x, kernel: int, stride: int, name: str):
    """``x`` padded as PyTorch pads (``kernel // 2`` each side) where "same" would not."""
    if stride == 1 or kernel == 1:
        return x, "same"
    return keras.layers.ZeroPadding2D(kernel // 2, name=f"{name}_pad")(x), "valid"


def conv_bn_act(keras, x, layer: LayerNode, act: str):
    p = prefix(layer)
    y, padding = _padded(keras, x, layer.kernel, layer.stride, f"{p}_conv")
    y = keras.layers.Conv2D(layer.out_chs, layer.kernel, layer.stride, padding=padding, use_bias=False,
                            name=f"{p}_conv")(y)
    y = keras.layers.BatchNormalization(epsilon=BN_EPS, name=f"{p}_bn")(y)
    return _act(keras, act, f"{p}_act")(y)


def mbconv(keras, x, layer: LayerNode, op: Op, act: str):
    """One MBConv of ``op`` (not skip) on ``x``, laid out as :class:`spnas.supernet.superkernel.MBConv`."""
    p = prefix(layer)
    mid = layer.in_chs * op.expansion
    y = x
    if op.expansion != 1:
        y = keras.layers.Conv2D(mid, 1, use_bias=False, name=f"{p}_conv_pw")(y)
        y = keras.layers.BatchNormalization(epsilon=BN_EPS, name=f"{p}_bn1")(y)
        y = _act(keras, act, f"{p}_act1")(y)
    y, padding = _padded(keras, y, op.kernel, layer.stride, f"{p}_conv_dw")
    y = keras.layers.DepthwiseConv2D(op.kernel, layer.stride, padding=padding, use_bias=False,
                                     name=f"{p}_conv_dw")(y)
    y = keras.layers.BatchNormalization(epsilon=BN_EPS, name=f"{p}_bn2")(y)
    y = _act(keras, act, f"{p}_act2")(y)
    y = keras.layers.Conv2D(layer.out_chs, 1, use_bias=False, name=f"{p}_conv_pwl")(y)
    y = keras.layers.BatchNormalization(epsilon=BN_EPS, name=f"{p}_bn3")(y)
    if layer.residual:
        y = keras.layers.Add(name=f"{p}_add")([x, y])
    return y


def classifier(keras, x, layer: LayerNode):
    p = prefix(layer)
    y = keras.layers.GlobalAveragePooling2D(name=f"{p}_pool")(x)
    return keras.layers.Dense(layer.out_chs, name=f"{p}_fc")(y)


def apply_layer(keras, x, layer: LayerNode, op: Op | None, act: str):
    """``layer`` with ``op`` on ``x`` (``op`` None for a fixed layer; skip returns ``x``)."""
    if layer.kind == "conv":
        return conv_bn_act(keras, x, layer, act)
    if layer.kind == "classifier":
        return classifier(keras, x, layer)
    op = layer.fixed_op if op is None else op
    return x if op.is_skip else mbconv(keras, x, layer, op, act)


def layer_model(space: SpaceGraph, layer: LayerNode, op: Op | None = None, batch: int = 1) -> Any:
    """A Keras model of one layer alone, with that layer's input shape (for timing it)."""
    keras = import_keras()
    x = keras.Input((layer.in_res, layer.in_res, layer.in_chs), batch_size=batch, name="input")
    y = apply_layer(keras, x, layer, op, space.spec.activation)
    return keras.Model(x, y, name=f"{prefix(layer)}_{op or 'fixed'}")


def child_model(space: SpaceGraph, arch: Architecture, batch: int = 1) -> Any:
    """The Keras model of ``arch``'s child network (random weights; see :mod:`spnas.exporting.exporter`)."""
    keras = import_keras()
    arch = space.validate(arch)
    spec = space.spec
    x = inputs = keras.Input((spec.resolution, spec.resolution, spec.in_chs), batch_size=batch, name="input")
    for layer in space.layers:
        op = arch.ops[layer.search_index] if layer.searchable else None
        x = apply_layer(keras, x, layer, op, spec.activation)
    return keras.Model(inputs, x, name=f"{space.name}_child")
