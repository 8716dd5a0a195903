"""Device ``tflite``: latency measured on this machine with TFLite (LiteRT).

Each layer choice is built as an isolated Keras 3 model with the layer's input shape
(:mod:`spnas.keras_model`), converted with ``tf.lite.TFLiteConverter.from_keras_model`` (never
through a ``tf.function`` wrapper, which leaves BatchNorm unfused), and timed with
``ai_edge_litert``'s interpreter: one thread by default, as the paper's Pixel 1 measurements,
XNNPACK on by default (``xnnpack=False`` uses TFLite's built-in kernels). Timing, overhead and
caching are :class:`spnas.profiling.MeasuredDevice`'s. Options: ``threads``, ``xnnpack``,
``runs``, ``warmup``, ``min_time``, ``rounds``, ``cache``.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from spnas.arch import Architecture, Op
from spnas.errors import SpnasError
from spnas.graph import LayerNode, SpaceGraph
from spnas.hookspecs import hookimpl
from spnas.profiling import MeasuredDevice, Runner, quiet_fds


def keras_to_tflite(model: Any) -> bytes:
    """:func:`spnas.export.keras_to_tflite`, with the converter's C++ log lines silenced too (it
    runs once per profiled layer)."""
    from spnas.export import keras_to_tflite as convert

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
    option_names: ClassVar[tuple[str, ...]] = MeasuredDevice.option_names + ("xnnpack",)
    defaults: ClassVar[dict[str, Any]] = {**MeasuredDevice.defaults, "xnnpack": True}

    def interpreter(self, content: bytes):
        """An interpreter of ``content`` with its inputs filled, ready to invoke."""
        litert = import_litert()
        kind = (litert.OpResolverType.AUTO if self.settings["xnnpack"]
                else litert.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
        it = litert.Interpreter(model_content=content, num_threads=self.settings["threads"],
                                experimental_op_resolver_type=kind)
        it.allocate_tensors()
        rng = np.random.default_rng(0)
        for d in it.get_input_details():
            it.set_tensor(d["index"], rng.standard_normal(d["shape"]).astype(d["dtype"]))
        return it

    def layer_runner(self, space: SpaceGraph, layer: LayerNode, op: Op | None) -> Runner:
        from spnas.keras_model import layer_model

        return self.interpreter(keras_to_tflite(layer_model(space, layer, op))).invoke

    def network_runner(self, space: SpaceGraph, arch: Architecture) -> Runner:
        from spnas.keras_model import child_model

        return self.interpreter(keras_to_tflite(child_model(space, arch))).invoke

    def empty_runner(self) -> Runner:
        from spnas.keras_model import import_keras

        keras = import_keras()
        x = keras.Input((1, 1, 1), batch_size=1)
        return self.interpreter(keras_to_tflite(keras.Model(x, keras.layers.ReLU()(x)))).invoke

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
