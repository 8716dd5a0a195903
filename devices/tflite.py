"""Device ``tflite``: latency measured on this machine with TFLite (LiteRT).

Each layer choice is built as an isolated Keras 3 model with the layer's input shape
(:mod:`spnas.exporting.keras_model`), converted with ``tf.lite.TFLiteConverter.from_keras_model`` (never
through a ``tf.function`` wrapper, which leaves BatchNorm unfused), and timed with
``ai_edge_litert``'s interpreter: one thread by default, as the paper's Pixel 1 measurements,
XNNPACK on by default (``xnnpack=False`` uses TFLite's built-in kernels). ``quantize=int8``
measures what phones run: every layer model, the calibration networks and every whole network
measured are converted with full-integer int8 quantization, the same way
(:func:`spnas.exporting.exporter.keras_to_tflite`; activation ranges calibrated on random
inputs, which do not change the time). Timing, overhead and caching are
:class:`spnas.latency.profiling.MeasuredDevice`'s; the cache and the table header keep the
setting. Options: ``threads``, ``xnnpack``, ``quantize``, ``runs``, ``warmup``, ``min_time``,
``rounds``, ``cache``.
"""

from __future__ import annotations

from typing import Any, ClassVar

from spnas.space.arch import Architecture, Op
from spnas.core.errors import SpnasError
from spnas.space.graph import LayerNode, SpaceGraph
from spnas.core.hookspecs import hookimpl
from spnas.latency.profiling import MeasuredDevice, quiet_fds


def keras_to_tflite(model: Any, quantize: str = "float32") -> bytes:
    """:func:`spnas.exporting.exporter.keras_to_tflite`, with the converter's C++ log lines silenced too (it
    runs once per profiled layer)."""
    from spnas.exporting.exporter import keras_to_tflite as convert

    with quiet_fds():
        return convert(model, quantize)


def import_litert():
    try:
        from ai_edge_litert import interpreter
    except ImportError:
        raise SpnasError("ai-edge-litert is not installed; pip install 'spnas[tflite]', or use --device flops") from None
    return interpreter


class TFLiteDevice(MeasuredDevice):
    """TFLite (LiteRT) on this machine's CPU, isolated layers timed."""

    name = "tflite"
    runtime = "tflite (ai_edge_litert)"
    worker_runtime = "tflite"
    option_names: ClassVar[tuple[str, ...]] = MeasuredDevice.option_names + ("xnnpack", "quantize")
    defaults: ClassVar[dict[str, Any]] = {**MeasuredDevice.defaults, "xnnpack": True, "quantize": "float32"}

    def __init__(self, **options: Any):
        super().__init__(**options)
        import_litert()  # a clear error now rather than in the timing process
        if not isinstance(self.settings["xnnpack"], bool):
            raise SpnasError(f"device tflite: option xnnpack={self.settings['xnnpack']!r} is not allowed; use true or false")
        from spnas.exporting.exporter import QUANTIZE

        if self.settings["quantize"] not in QUANTIZE:
            raise SpnasError(f"device tflite: option quantize={self.settings['quantize']!r} is not allowed; "
                             f"use {' or '.join(QUANTIZE)}")

    @property
    def quantize(self) -> str:
        return self.settings["quantize"]

    def layer_bytes(self, space: SpaceGraph, layer: LayerNode, op: Op | None) -> bytes:
        from spnas.exporting.keras_model import layer_model

        return keras_to_tflite(layer_model(space, layer, op), self.quantize)

    def network_bytes(self, space: SpaceGraph, arch: Architecture) -> bytes:
        from spnas.exporting.keras_model import child_model

        return keras_to_tflite(child_model(space, arch), self.quantize)

    def empty_bytes(self) -> bytes:
        """A 1x1 convolution with ReLU on a 1x1x8 input: next to nothing to compute, but delegated
        to XNNPACK as the layers are, so it carries the per-subgraph invocation cost too."""
        from spnas.exporting.keras_model import import_keras

        keras = import_keras()
        x = keras.Input((1, 1, 8), batch_size=1)
        y = keras.layers.ReLU()(keras.layers.Conv2D(8, 1, use_bias=False)(x))
        return keras_to_tflite(keras.Model(x, y), self.quantize)

    def header(self):
        from dataclasses import replace

        header = super().header()
        return replace(header, runtime=f"{header.runtime}, {self.quantize}")

    def versions(self) -> dict[str, str]:
        from importlib import metadata

        out = {}
        for dist in ("ai-edge-litert", "tensorflow-cpu", "tensorflow", "keras"):
            try:
                out[dist] = metadata.version(dist)
            except metadata.PackageNotFoundError:
                continue
        return out


@hookimpl
def spnas_register_devices(register):
    register(TFLiteDevice.name, TFLiteDevice)
