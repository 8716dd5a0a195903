"""Device ``onnxruntime``: latency measured on this machine with ONNX Runtime (CPU).

The same contract as ``tflite`` (:class:`spnas.profiling.MeasuredDevice`): each layer choice is
the PyTorch module spnas builds for it (:mod:`spnas.builder`), alone, exported with
``torch.onnx.export`` and timed in an ``onnxruntime.InferenceSession`` with all graph
optimisations (BatchNorm folded into the convolutions) and ``threads`` intra-op threads (1 by
default); a whole network is its :class:`~spnas.builder.ChildNet`. The export uses the
TorchScript-based exporter (``dynamo=False``): it needs no extra package and works offline; torch
warns that it is deprecated, and those warnings are silenced here.
"""

from __future__ import annotations

import io
import warnings
from typing import Any, ClassVar

import numpy as np
import torch

from spnas.arch import Architecture, Op
from spnas.errors import SpnasError
from spnas.graph import LayerNode, SpaceGraph
from spnas.hookspecs import hookimpl
from spnas.profiling import MeasuredDevice, Runner

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
    from spnas.builder import _fixed_module, _init_weights
    from spnas.superkernel import MBConv

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

    def session(self, content: bytes) -> Runner:
        ort = import_ort()
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = self.settings["threads"]
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.log_severity_level = 3
        sess = ort.InferenceSession(content, sess_options=opts, providers=["CPUExecutionProvider"])
        rng = np.random.default_rng(0)
        feed = {i.name: rng.standard_normal([d if isinstance(d, int) else 1 for d in i.shape]).astype(np.float32)
                for i in sess.get_inputs()}
        return lambda: sess.run(None, feed)

    def layer_runner(self, space: SpaceGraph, layer: LayerNode, op: Op | None) -> Runner:
        x = torch.randn(1, layer.in_chs, layer.in_res, layer.in_res)
        return self.session(torch_to_onnx(layer_module(space, layer, op), x))

    def network_runner(self, space: SpaceGraph, arch: Architecture) -> Runner:
        from spnas.builder import ChildNet

        spec = space.spec
        x = torch.randn(1, spec.in_chs, spec.resolution, spec.resolution)
        return self.session(torch_to_onnx(ChildNet(space, arch), x))

    def empty_runner(self) -> Runner:
        return self.session(torch_to_onnx(torch.nn.ReLU(), torch.randn(1, 1, 1, 1)))

    def versions(self) -> dict[str, Any]:
        return {"onnxruntime": import_ort().__version__, "torch": torch.__version__.split("+")[0]}


@hookimpl
def spnas_register_devices(register):
    register(OnnxRuntimeDevice.name, OnnxRuntimeDevice)
