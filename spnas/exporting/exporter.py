"""Export a child network with its weights: ONNX (from PyTorch) and TFLite (through Keras).

The child network of an architecture is the standalone :class:`~spnas.supernet.builder.ChildNet`; its
weights come from a checkpoint (:func:`spnas.supernet.loading.load_child`) or a fresh initialization. Both formats hold
the network in inference form: BatchNorm uses the running statistics (and is folded into the
preceding convolution by both converters), dropout is the identity.

* ONNX: ``torch.onnx.export(..., dynamo=True)``, torch's current exporter (``torch.export`` then
  onnxscript; the ``onnx`` extra installs onnxscript), of the ChildNet in eval mode, with its graph
  optimisation (BatchNorm folded into the convolutions: the file holds Conv, Relu, Add,
  ReduceMean and Gemm). Input ``input``, float32, NCHW (``1 x C x H x W``; the batch dimension is
  the symbolic ``batch`` with ``dynamic_batch=True``); output ``logits`` (``N x num_classes``).
  Opset 18 (:data:`ONNX_OPSET`, the exporter's own) runs on onnxruntime >= 1.14. No warning is
  silenced: what torch prints while exporting is torch's.
* TFLite: the same network built in Keras (:func:`spnas.exporting.keras_model.child_model`), its weights
  copied from PyTorch (:func:`keras_from_child`), converted with
  ``tf.lite.TFLiteConverter.from_keras_model`` (:func:`keras_to_tflite`; float32, no
  quantization). Input ``float32 1 x H x W x C``, **NHWC** (TFLite's layout): feed images as
  ``x.permute(0, 2, 3, 1)`` of the PyTorch input. Output ``1 x num_classes``.

In eval mode the exported outputs equal the PyTorch ChildNet's within float rounding
(``tests/test_export.py`` checks 1e-4 relative on random weights and BatchNorm statistics).

Example:
    >>> child = load_child(SpaceGraph.load("tiny"), "k3e6 skip | k5e3 k3e6")       # doctest: +SKIP
    >>> export_onnx(child, "tiny.onnx"); export_tflite(child, "tiny.tflite")         # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import torch
from torch import nn

from spnas.supernet.builder import ChildNet, ConvBnAct
from spnas.core.errors import SpnasError
from spnas.exporting.keras_model import child_model, import_keras, prefix
from spnas.core.runs import atomic_write_bytes
from spnas.supernet.superkernel import MBConv

ONNX_OPSET = 18
FORMATS = ("onnx", "tflite")


# --- PyTorch -> Keras weights ------------------------------------------------------------------

def _conv_kernel(conv: nn.Conv2d) -> Any:
    """PyTorch conv weight -> Keras kernel: OIHW -> HWIO; depthwise (C, 1, k, k) -> (k, k, C, 1)."""
    w = conv.weight.detach().cpu().numpy()
    if conv.groups == 1:
        return w.transpose(2, 3, 1, 0)
    assert conv.groups == conv.in_channels == conv.out_channels, "only plain and depthwise convs"
    return w.transpose(2, 3, 0, 1)


def _bn_weights(bn: nn.BatchNorm2d) -> list:
    """PyTorch BatchNorm2d -> Keras BatchNormalization's [gamma, beta, moving_mean, moving_variance]."""
    assert bn.affine and bn.track_running_stats
    return [t.detach().cpu().numpy() for t in (bn.weight, bn.bias, bn.running_mean, bn.running_var)]


def torch_weights_by_keras_name(child: ChildNet) -> dict[str, list]:
    """Every weight of ``child`` in Keras form, keyed by the Keras layer that takes it
    (the names of :mod:`spnas.exporting.keras_model`)."""
    out: dict[str, list] = {}
    for layer, module in zip(child.space.layers, child.layers):
        p = prefix(layer)
        if layer.kind == "conv":
            assert isinstance(module, ConvBnAct)
            conv, bn = module[0], module[1]
            out[f"{p}_conv"] = [_conv_kernel(conv)]
            out[f"{p}_bn"] = _bn_weights(bn)
        elif layer.kind == "classifier":
            fc = module.fc
            out[f"{p}_fc"] = [fc.weight.detach().cpu().numpy().T, fc.bias.detach().cpu().numpy()]
        elif isinstance(module, MBConv):
            if module.has_pw:
                out[f"{p}_conv_pw"] = [_conv_kernel(module.conv_pw)]
                out[f"{p}_bn1"] = _bn_weights(module.bn1)
            out[f"{p}_conv_dw"] = [_conv_kernel(module.conv_dw)]
            out[f"{p}_bn2"] = _bn_weights(module.bn2)
            out[f"{p}_conv_pwl"] = [_conv_kernel(module.conv_pwl)]
            out[f"{p}_bn3"] = _bn_weights(module.bn3)
        else:  # a skipped layer: nothing to carry
            assert isinstance(module, nn.Identity), f"{layer.name}: unexpected module {type(module).__name__}"
    return out


def keras_from_child(child: ChildNet, batch: int = 1) -> Any:
    """The Keras model of ``child``'s architecture (NHWC) carrying ``child``'s weights and
    BatchNorm statistics; in inference it computes what ``child.eval()`` computes."""
    model = child_model(child.space, child.arch, batch=batch)
    weights = torch_weights_by_keras_name(child)
    for layer in model.layers:
        if not layer.weights:
            continue
        # internal invariants: the two builders make the same layers with the same shapes
        assert layer.name in weights, f"Keras layer {layer.name} has no PyTorch counterpart"
        values = weights.pop(layer.name)
        assert [tuple(w.shape) for w in layer.weights] == [v.shape for v in values], \
            f"{layer.name}: Keras shapes {[tuple(w.shape) for w in layer.weights]} != {[v.shape for v in values]}"
        layer.set_weights(values)
    assert not weights, f"PyTorch weights without a Keras layer: {sorted(weights)}"
    return model


#: TFLite number formats: float32, or full-integer int8 (weights and activations, int8 input and
#: output; post-training quantization calibrated on a representative set)
QUANTIZE = ("float32", "int8")


def check_quantize(quantize: str | None) -> str:
    value = "float32" if quantize in (None, "none", "float", "float32") else quantize
    if value not in QUANTIZE:
        raise SpnasError(f"--quantize {quantize!r} is not allowed; use one of {', '.join(QUANTIZE)}")
    return value


def random_representative(shape: Sequence[int], n: int = 16, seed: int = 0) -> list[np.ndarray]:
    """``n`` standard-normal float32 inputs of ``shape``: the calibration set of a layer model
    (the latency of an int8 model does not depend on its quantization ranges)."""
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(tuple(shape)).astype(np.float32) for _ in range(n)]


def keras_to_tflite(model: Any, quantize: str | None = None,
                    representative: Iterable[np.ndarray] | None = None) -> bytes:
    """A Keras model as a TFLite flatbuffer (``TFLiteConverter.from_keras_model``, which folds
    inference BatchNorm into the convolutions). Keras's export printout is kept off stdout.

    ``quantize="int8"``: full-integer post-training quantization: int8 weights and activations,
    int8 input and output (their scale and zero point are in the model's tensor details), every
    op an int8 builtin; the activation ranges are calibrated on ``representative`` (NHWC float32
    arrays of the model's input shape; default: :func:`random_representative`).
    """
    import_keras()
    import tensorflow as tf

    quantize = check_quantize(quantize)
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if quantize == "int8":
        samples = list(representative) if representative is not None else random_representative(
            [1 if d is None else int(d) for d in model.inputs[0].shape])
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: ([s] for s in samples)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
    with contextlib.redirect_stdout(io.StringIO()):
        return bytes(converter.convert())


def representative_images(data: Any, n: int = 128, seed: int = 0) -> list[np.ndarray]:
    """``n`` training images of a :class:`~spnas.data.split.DataSplit`, as the NHWC float32
    batches of one that a TFLite model takes: the calibration set of an int8 export."""
    gen = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(data.train), generator=gen)[:n].tolist()
    return [data.train[i][0].permute(1, 2, 0).unsqueeze(0).numpy().astype(np.float32) for i in order]


# --- running a TFLite model -------------------------------------------------------------------------

def _tflite_topk(content: bytes, dataset: Any, limit: int | None = None) -> tuple[float, float]:
    """Top-1 and top-5 of a TFLite classifier (batch 1, NHWC; float32 or int8 input and output:
    images are quantized with the input's scale and zero point) over ``dataset``'s ``(CHW, label)``."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        raise SpnasError("evaluating a .tflite model needs ai-edge-litert; pip install 'spnas[tflite]'") from None
    it = Interpreter(model_content=content, num_threads=1)
    it.allocate_tensors()
    inp, out = it.get_input_details()[0], it.get_output_details()[0]
    shape = tuple(int(d) for d in inp["shape"])
    n = len(dataset) if limit is None else min(limit, len(dataset))
    top1 = top5 = 0
    for i in range(n):
        x, y = dataset[i]
        image = x.permute(1, 2, 0).unsqueeze(0).numpy()
        if image.shape != shape:
            raise SpnasError(f"the TFLite model takes {'x'.join(map(str, shape))} inputs; the data gives "
                             f"{'x'.join(map(str, image.shape))} (NHWC): use the data and space it was exported for")
        if inp["dtype"] == np.int8:
            scale, zero = inp["quantization"]
            image = np.clip(np.round(image / scale + zero), -128, 127).astype(np.int8)
        it.set_tensor(inp["index"], image.astype(inp["dtype"]))
        it.invoke()
        logits = it.get_tensor(out["index"])[0].astype(np.float32)  # int8 logits keep their order
        ranked = np.argsort(-logits, kind="stable")
        top1 += int(ranked[0] == int(y))
        top5 += int(int(y) in ranked[:5])
    return top1 / max(n, 1), top5 / max(n, 1)


def evaluate_tflite(content: bytes, data: Any, limit: int | None = None) -> dict[str, float]:
    """``val_top1``/``val_top5`` of a TFLite model on ``data`` (a DataSplit), and ``test_top1``/
    ``test_top5`` when the data has a test part; ``limit``: at most that many images of each."""
    out: dict[str, float] = {}
    out["val_top1"], out["val_top5"] = _tflite_topk(content, data.val, limit)
    if data.test is not None:
        out["test_top1"], out["test_top5"] = _tflite_topk(content, data.test, limit)
    return out


def tflite_info(content: bytes) -> dict[str, Any]:
    """The input shape (NHWC), the input type and the class count of a TFLite classifier."""
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_content=content)
    inp, out = it.get_input_details()[0], it.get_output_details()[0]
    return {"input_shape": tuple(int(d) for d in inp["shape"]), "input_type": np.dtype(inp["dtype"]).name,
            "num_classes": int(out["shape"][-1])}


# --- export -------------------------------------------------------------------------------------

@contextlib.contextmanager
def _eval_mode(model: nn.Module):
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def input_shape(child: ChildNet, fmt: str, batch: int = 1) -> tuple[int, int, int, int]:
    """The exported model's input shape: NCHW for ONNX, NHWC for TFLite."""
    spec = child.space.spec
    if fmt == "tflite":
        return (batch, spec.resolution, spec.resolution, spec.in_chs)
    return (batch, spec.in_chs, spec.resolution, spec.resolution)


def import_onnxscript() -> Any:
    """onnxscript, which torch's ONNX exporter needs; a one-line error naming the extra without it."""
    try:
        import onnxscript
    except ImportError:
        raise SpnasError("ONNX export needs onnxscript (torch's exporter); pip install 'spnas[onnx]'") from None
    return onnxscript


def onnx_bytes(child: ChildNet, opset: int = ONNX_OPSET, dynamic_batch: bool = False) -> bytes:
    """``child`` as an ONNX model (eval mode; see the module docstring for inputs and outputs)."""
    import_onnxscript()
    x = torch.zeros(input_shape(child, "onnx"))
    kwargs: dict[str, Any] = dict(input_names=["input"], output_names=["logits"], opset_version=opset,
                                  dynamo=True, optimize=True, verbose=False)
    if dynamic_batch:
        kwargs["dynamic_shapes"] = ({0: torch.export.Dim("batch")},)
    with _eval_mode(child), torch.no_grad():
        program = torch.onnx.export(child, (x,), **kwargs)
    return program.model_proto.SerializeToString()


def tflite_bytes(child: ChildNet, quantize: str | None = None,
                 representative: Iterable[np.ndarray] | None = None) -> bytes:
    """``child`` as a TFLite model (NHWC input, batch 1); ``quantize="int8"`` see :func:`keras_to_tflite`."""
    return keras_to_tflite(keras_from_child(child), quantize, representative)


def export_onnx(child: ChildNet, path: str | Path, opset: int = ONNX_OPSET, dynamic_batch: bool = False) -> Path:
    """Write ``child`` as ONNX to ``path`` (atomically). Input NCHW ``1 x C x H x W`` (batch
    symbolic with ``dynamic_batch``), named ``input``; output ``logits``."""
    path = Path(path)
    atomic_write_bytes(path, onnx_bytes(child, opset, dynamic_batch))
    return path


def export_tflite(child: ChildNet, path: str | Path, quantize: str | None = None,
                  representative: Iterable[np.ndarray] | None = None) -> Path:
    """Write ``child`` as TFLite to ``path`` (atomically). Input NHWC ``1 x H x W x C``
    (TFLite's layout, unlike the PyTorch and ONNX models); output ``1 x num_classes``; float32, or
    int8 with ``quantize="int8"`` (calibrated on ``representative``, see :func:`keras_to_tflite`)."""
    path = Path(path)
    atomic_write_bytes(path, tflite_bytes(child, quantize, representative))
    return path


def export_child(child: ChildNet, path: str | Path, fmt: str, **options: Any) -> Path:
    """:func:`export_onnx` or :func:`export_tflite` by ``fmt``."""
    if fmt == "onnx":
        return export_onnx(child, path, **options)
    if fmt == "tflite":
        if options.get("dynamic_batch"):
            raise SpnasError("--dynamic-batch: the TFLite model has batch 1; use it with --format onnx")
        return export_tflite(child, path, options.get("quantize"), options.get("representative"))
    raise SpnasError(f"--format {fmt!r} is not known; allowed: {', '.join(FORMATS)}")
