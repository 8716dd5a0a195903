"""Device ``tflite``: latency measured on this machine with TFLite (LiteRT).

Each layer choice is built as an isolated Keras 3 model with the layer's input shape
(:mod:`spnas.exporting.keras_model`), converted with ``tf.lite.TFLiteConverter.from_keras_model`` (never
through a ``tf.function`` wrapper, which leaves BatchNorm unfused), and timed with
``ai_edge_litert``'s interpreter: one thread by default, as the paper's Pixel 1 measurements,
XNNPACK on by default (``xnnpack=False`` uses TFLite's built-in kernels). Timing, overhead and
caching are :class:`spnas.latency.profiling.MeasuredDevice`'s. Options: ``threads``, ``xnnpack``,
``runs``, ``warmup``, ``min_time``, ``rounds``, ``cache``.
"""

from __future__ import annotations

from typing import Any, ClassVar

from spnas.space.arch import Architecture, Op
from spnas.core.errors import SpnasError
from spnas.space.graph import LayerNode, SpaceGraph
from spnas.core.hookspecs import hookimpl
from spnas.latency.profiling import MeasuredDevice, quiet_fds


def keras_to_tflite(model: Any) -> bytes:
    """:func:`spnas.exporting.exporter.keras_to_tflite`, with the converter's C++ log lines silenced too (it
    runs once per profiled layer)."""
    from spnas.exporting.exporter import keras_to_tflite as convert

    with quiet_fds():
        return convert(model)


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
    option_names: ClassVar[tuple[str, ...]] = MeasuredDevice.option_names + ("xnnpack",)
    defaults: ClassVar[dict[str, Any]] = {**MeasuredDevice.defaults, "xnnpack": True}

    def __init__(self, **options: Any):
        super().__init__(**options)
        import_litert()  # a clear error now rather than in the timing process
        if not isinstance(self.settings["xnnpack"], bool):
            raise SpnasError(f"device tflite: option xnnpack={self.settings['xnnpack']!r} is not allowed; use true or false")

    def layer_bytes(self, space: SpaceGraph, layer: LayerNode, op: Op | None) -> bytes:
        from spnas.exporting.keras_model import layer_model

        return keras_to_tflite(layer_model(space, layer, op))

    def network_bytes(self, space: SpaceGraph, arch: Architecture) -> bytes:
        from spnas.exporting.keras_model import child_model

        return keras_to_tflite(child_model(space, arch))

    def empty_bytes(self) -> bytes:
        """A 1x1 convolution with ReLU on a 1x1x8 input: next to nothing to compute, but delegated
        to XNNPACK as the layers are, so it carries the per-subgraph invocation cost too."""
        from spnas.exporting.keras_model import import_keras

        keras = import_keras()
        x = keras.Input((1, 1, 8), batch_size=1)
        y = keras.layers.ReLU()(keras.layers.Conv2D(8, 1, use_bias=False)(x))
        return keras_to_tflite(keras.Model(x, y))

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
