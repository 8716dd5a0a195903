"""Device ``onnxruntime``: latency measured on this machine with ONNX Runtime (CPU).

The same contract as ``tflite`` (:class:`spnas.latency.profiling.MeasuredDevice`): each layer choice is
the PyTorch module spnas builds for it (:mod:`spnas.supernet.builder`), alone, exported with
``torch.onnx.export`` and timed in an ``onnxruntime.InferenceSession`` with all graph
optimisations (BatchNorm folded into the convolutions) and ``threads`` intra-op threads (1 by
default); a whole network is its :class:`~spnas.supernet.builder.ChildNet`. The export uses the
TorchScript-based exporter (``dynamo=False``): it needs no extra package and works offline; torch
warns that it is deprecated, and those warnings are silenced here.
"""

from __future__ import annotations

import io
import warnings
from typing import Any, ClassVar

import torch

from spnas.space.arch import Architecture, Op
from spnas.core.errors import SpnasError
from spnas.space.graph import LayerNode, SpaceGraph
from spnas.core.hookspecs import hookimpl
from spnas.latency.profiling import MeasuredDevice

OPSET = 17


def import_ort():
    try:
        import onnxruntime
    except ImportError:
        raise SpnasError("onnxruntime is not installed; pip install 'spnas[onnx]', or use --device flops") from None
    return onnxruntime


def torch_to_onnx(module: torch.nn.Module, example: torch.Tensor) -> bytes:
    """ONNX bytes of ``module`` in eval mode for inputs shaped like ``example`` (NCHW)."""
    buf = io.BytesIO()
    module = module.eval()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notices
        torch.onnx.export(module, (example,), buf, dynamo=False, opset_version=OPSET,
                          input_names=["input"], output_names=["output"])
    return buf.getvalue()


def layer_module(space: SpaceGraph, layer: LayerNode, op: Op | None) -> torch.nn.Module:
    """The PyTorch module spnas builds for ``layer`` with ``op`` (its only op when fixed)."""
    from spnas.supernet.builder import _fixed_module, _init_weights
    from spnas.supernet.superkernel import MBConv

    if layer.searchable:
        module = MBConv(layer.in_chs, layer.out_chs, layer.stride, op, space.spec.activation)
    else:
        module = _fixed_module(layer, space)
    _init_weights(module)
    return module


class OnnxRuntimeDevice(MeasuredDevice):
    """ONNX Runtime on this machine's CPU, isolated layers timed."""

    name = "onnxruntime"
    runtime = "onnxruntime (CPUExecutionProvider)"
    worker_runtime = "onnxruntime"

    def __init__(self, **options: Any):
        super().__init__(**options)
        import_ort()  # a clear error now rather than in the timing process

    def layer_bytes(self, space: SpaceGraph, layer: LayerNode, op: Op | None) -> bytes:
        x = torch.randn(1, layer.in_chs, layer.in_res, layer.in_res)
        return torch_to_onnx(layer_module(space, layer, op), x)

    def network_bytes(self, space: SpaceGraph, arch: Architecture) -> bytes:
        from spnas.supernet.builder import ChildNet

        spec = space.spec
        return torch_to_onnx(ChildNet(space, arch), torch.randn(1, spec.in_chs, spec.resolution, spec.resolution))

    def empty_bytes(self) -> bytes:
        return torch_to_onnx(torch.nn.ReLU(), torch.randn(1, 1, 1, 1))

    def versions(self) -> dict[str, Any]:
        return {"onnxruntime": import_ort().__version__, "torch": torch.__version__.split("+")[0]}


@hookimpl
def spnas_register_devices(register):
    register(OnnxRuntimeDevice.name, OnnxRuntimeDevice)
