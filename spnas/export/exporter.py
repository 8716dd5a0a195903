"""Export a child network with its weights: ONNX (from PyTorch) and TFLite (through Keras).

The child network of an architecture is the standalone :class:`~spnas.supernet.builder.ChildNet`; its
weights come from a checkpoint (:func:`load_child`) or a fresh initialization. Both formats hold
the network in inference form: BatchNorm uses the running statistics (and is folded into the
preceding convolution by both converters), dropout is the identity.

* ONNX: ``torch.onnx.export`` of the ChildNet in eval mode. Input ``input``, float32, NCHW
  (``1 x C x H x W``; the batch dimension is symbolic with ``dynamic_batch=True``); output
  ``logits`` (``N x num_classes``). The TorchScript exporter (``dynamo=False``) is used: the
  torch.export-based one needs the ``onnxscript`` package, which spnas does not depend on, and on
  this network (Conv, BatchNorm, ReLU, Add, mean, Linear: a static graph without control flow)
  tracing is exact. Opset 17 (:data:`ONNX_OPSET`) runs on onnxruntime >= 1.12 and most
  converters.
* TFLite: the same network built in Keras (:func:`spnas.export.keras_model.child_model`), its weights
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
import dataclasses
import io
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from spnas.space.arch import Architecture
from spnas.supernet.builder import ChildNet, ConvBnAct, Supernet
from spnas.core.errors import SpnasError
from spnas.space.graph import SpaceGraph
from spnas.export.keras_model import child_model, import_keras, prefix
from spnas.core.checkpoints import CheckpointFormat
from spnas.core.runs import atomic_write_bytes, load_checkpoint
from spnas.supernet.superkernel import MBConv

ONNX_OPSET = 17
FORMATS = ("onnx", "tflite")
#: a trained standalone child network: {"format", "space", "arch", "model": ChildNet state_dict}
#: (optional "num_classes"; otherwise read from the classifier's weight)

#: the seed of a fresh initialization, so that exporting the same architecture twice gives one file
INIT_SEED = 0


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
    (the names of :mod:`spnas.export.keras_model`)."""
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


def keras_to_tflite(model: Any) -> bytes:
    """A Keras model as a float32 TFLite flatbuffer (``TFLiteConverter.from_keras_model``, which
    folds inference BatchNorm into the convolutions; no quantization). Keras's export printout is
    kept off stdout."""
    import_keras()
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    with contextlib.redirect_stdout(io.StringIO()):
        return bytes(converter.convert())


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


def onnx_bytes(child: ChildNet, opset: int = ONNX_OPSET, dynamic_batch: bool = False) -> bytes:
    """``child`` as an ONNX model (eval mode; see the module docstring for inputs and outputs)."""
    import inspect

    x = torch.zeros(input_shape(child, "onnx"))
    kwargs: dict[str, Any] = dict(input_names=["input"], output_names=["logits"], opset_version=opset,
                                  do_constant_folding=True)
    if dynamic_batch:
        kwargs["dynamic_axes"] = {"input": {0: "batch"}, "logits": {0: "batch"}}
    if "dynamo" in inspect.signature(torch.onnx.export).parameters:
        kwargs["dynamo"] = False  # the TorchScript exporter; see the module docstring
    buf = io.BytesIO()
    with _eval_mode(child), warnings.catch_warnings():
        # torch >= 2.9 warns on every use of the TorchScript exporter that it is deprecated
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export.*")
        torch.onnx.export(child, (x,), buf, **kwargs)
    return buf.getvalue()


def tflite_bytes(child: ChildNet) -> bytes:
    """``child`` as a TFLite model (NHWC input, batch 1)."""
    return keras_to_tflite(keras_from_child(child))


def export_onnx(child: ChildNet, path: str | Path, opset: int = ONNX_OPSET, dynamic_batch: bool = False) -> Path:
    """Write ``child`` as ONNX to ``path`` (atomically). Input NCHW ``1 x C x H x W`` (batch
    symbolic with ``dynamic_batch``), named ``input``; output ``logits``."""
    path = Path(path)
    atomic_write_bytes(path, onnx_bytes(child, opset, dynamic_batch))
    return path


def export_tflite(child: ChildNet, path: str | Path) -> Path:
    """Write ``child`` as TFLite to ``path`` (atomically). Input NHWC ``1 x H x W x C``
    (TFLite's layout, unlike the PyTorch and ONNX models); output ``1 x num_classes``."""
    path = Path(path)
    atomic_write_bytes(path, tflite_bytes(child))
    return path


def export_child(child: ChildNet, path: str | Path, fmt: str, **options: Any) -> Path:
    """:func:`export_onnx` or :func:`export_tflite` by ``fmt``."""
    if fmt == "onnx":
        return export_onnx(child, path, **options)
    if fmt == "tflite":
        if options.get("dynamic_batch"):
            raise SpnasError("--dynamic-batch: the TFLite model has batch 1; use it with --format onnx")
        return export_tflite(child, path)
    raise SpnasError(f"--format {fmt!r} is not known; allowed: {', '.join(FORMATS)}")


# --- weights: checkpoints -------------------------------------------------------------------------

@dataclass
class LoadedChild:
    """A child network and where its weights came from."""

    child: ChildNet
    source: str  # one line, e.g. "supernet runs/x/supernet.pt (spnas-supernet-v1, trained by uniform)"
    checkpoint_classes: int | None = None  # the classes the checkpoint was trained with (None: no checkpoint)
    #: the weights were sliced from a supernet, whose BatchNorm statistics do not fit one path
    #: (``spnas eval`` recalibrates them)
    from_supernet: bool = False


def with_classes(space: SpaceGraph, num_classes: int | None) -> SpaceGraph:
    """``space`` with ``num_classes`` outputs (``space`` itself when it already has them)."""
    if num_classes is None or num_classes == space.spec.num_classes:
        return space
    if num_classes < 1:
        raise SpnasError(f"--num-classes {num_classes} is not allowed; use a count >= 1")
    return SpaceGraph(dataclasses.replace(space.spec, num_classes=num_classes))


def _checkpoint_file(path: Path) -> Path:
    """``path``, or the ``model.pt`` / ``supernet.pt`` / ``checkpoint.pt`` of a run directory."""
    if not path.is_dir():
        return path
    for name in ("model.pt", "supernet.pt", "checkpoint.pt"):
        if (path / name).is_file():
            return path / name
    raise SpnasError(f"--checkpoint {path}: a directory without model.pt, supernet.pt or checkpoint.pt")


def _classes_of(state: dict, space: SpaceGraph, path: Path) -> int:
    """The classifier's output count in a state dict of a Supernet or ChildNet of ``space``."""
    key = f"layers.{len(space.layers) - 1}.fc.weight"
    weight = state.get(key) if isinstance(state, dict) else None
    if not isinstance(weight, torch.Tensor) or weight.dim() != 2:
        raise SpnasError(f"--checkpoint {path}: its weights do not fit space {space.name!r} (no classifier {key})")
    return int(weight.shape[0])


def _space_of(state: dict, space: SpaceGraph | None, path: Path) -> SpaceGraph:
    """``space``, checked against the space the checkpoint names; or that space when ``space`` is None."""
    named = state.get("space")
    if space is None:
        if not isinstance(named, str):
            raise SpnasError(f"--checkpoint {path}: names no search space; pass --space")
        try:
            return SpaceGraph.load(named)
        except SpnasError as exc:
            raise SpnasError(f"--checkpoint {path}: trained on space {named!r}, which cannot be loaded "
                             f"({exc}); pass --space NAME_OR_FILE") from None
    if isinstance(named, str) and named != space.name:
        raise SpnasError(f"--checkpoint {path}: holds a network of space {named!r}, not {space.name!r}; "
                         f"pass --space {named}")
    return space


def _load_state(net: nn.Module, state: Any, path: Path, what: str) -> None:
    try:
        net.load_state_dict(state)
    except (RuntimeError, TypeError, AttributeError, KeyError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SpnasError(f"--checkpoint {path}: its weights do not fit {what} ({first[:160]})") from None


def _formats() -> dict[str, CheckpointFormat]:
    """Every checkpoint format a plugin (built-in or not) registered, by its ``format`` field."""
    from spnas.core.registry import get_registry

    registry = get_registry()
    return {name: registry.get("checkpoint", name) for name in registry.names("checkpoint")}


def read_child(space: SpaceGraph | str | None, arch: Architecture | str | None,
               checkpoint: str | Path | None = None, num_classes: int | None = None) -> LoadedChild:
    """The child network of ``arch`` with its weights (in eval mode), and where they came from.

    Without ``checkpoint``: a fresh initialization (seeded, untrained) with ``num_classes``
    classes (default: the space's). With ``checkpoint`` (loaded with ``weights_only=True``; a run
    directory stands for its ``supernet.pt``, else its ``checkpoint.pt``):

    The file's ``format`` field names a :class:`~spnas.core.checkpoints.CheckpointFormat`, registered
    by the plugin that writes it (the checkpoint-format hook; ``spnas plugins`` lists them):

    * ``holds="supernet"`` (``supernet.pt``, the ``checkpoint.pt`` of a single-path search or of a
      uniform supernet training, a plugin's): :meth:`ChildNet.from_supernet` of ``arch``; a file
      with ``space_signature`` and ``num_classes`` (``supernet.pt``) must fit ``space`` exactly;
    * ``holds="child"`` (``model.pt`` of ``spnas train``, its ``checkpoint.pt``): a ChildNet state
      dict; ``arch`` may be None (the checkpoint's), else it must be the checkpoint's.

    The checkpoint's class count wins over ``num_classes``. ``space`` None means the space the
    checkpoint names.

    Raises:
        SpnasError: one line naming the file and what it holds, when it is not one of these or
            does not fit ``space`` / ``arch``.
    """
    if isinstance(space, str):
        space = SpaceGraph.load(space)
    if checkpoint is None:
        if space is None:
            raise SpnasError("no search space: pass --space (or a --checkpoint that names one)")
        if arch is None:
            raise SpnasError("no architecture: pass one (e.g. 'k3e6 skip | k5e3 k3e6'), "
                             "or a child-network --checkpoint")
        space = with_classes(space, num_classes)
        arch = space.parse(arch) if isinstance(arch, str) else space.validate(arch)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(INIT_SEED)
            child = ChildNet(space, arch)
        return LoadedChild(child.eval(), f"fresh initialization (seed {INIT_SEED}; untrained: no --checkpoint)")

    path = _checkpoint_file(Path(checkpoint))
    try:
        state = load_checkpoint(path)
    except SpnasError as exc:
        raise SpnasError(f"--checkpoint {exc}") from None
    fmt = state.get("format")
    formats = _formats()
    spec = formats.get(fmt)
    if spec is None:
        raise SpnasError(f"--checkpoint {path}: holds {fmt!r}, which has no child network; accepted: "
                         + ", ".join(f"{f} ({s.description})" for f, s in formats.items()))
    space = _space_of(state, space, path)
    model = spec.weights(state)
    if not isinstance(model, dict):
        raise SpnasError(f"--checkpoint {path}: a {fmt} file without weights (no 'model' state dict)")

    if spec.holds == "child":
        classes = state.get("num_classes") or _classes_of(model, space, path)
        space = with_classes(space, classes)
        try:
            saved = space.parse(str(state.get("arch")))
        except SpnasError as exc:
            raise SpnasError(f"--checkpoint {path}: its architecture does not fit space {space.name!r} "
                             f"({exc})") from None
        if arch is not None:
            wanted = space.parse(arch) if isinstance(arch, str) else space.validate(arch)
            if wanted != saved:
                raise SpnasError(f"--checkpoint {path}: holds the child network of {saved}, not of {wanted}; "
                                 f"leave out the architecture to export the checkpoint's")
        child = ChildNet(space, saved)
        _load_state(child, model, path, f"the child network of {saved} on space {space.name!r}")
        return LoadedChild(child.eval(), f"child network {path} ({fmt})", classes)

    if arch is None:
        raise SpnasError(f"--checkpoint {path}: a {spec.description} holds every architecture; pass the one to export")
    if "space_signature" in state:  # a supernet file says exactly which space and classes it fits
        classes = state.get("num_classes")
        if not isinstance(classes, int):
            raise SpnasError(f"--checkpoint {path}: a supernet file without 'num_classes'")
        space = with_classes(space, classes)
        if state.get("space_signature") != space.signature():
            raise SpnasError(f"--checkpoint {path}: a supernet of space {state.get('space')!r} (signature "
                             f"{state.get('space_signature')}), which does not fit {space.name!r} with {classes} "
                             f"classes (signature {space.signature()})")
    else:
        classes = _classes_of(model, space, path)
        space = with_classes(space, classes)
    supernet = Supernet(space)
    _load_state(supernet, model, path, f"the supernet of space {space.name!r}")
    if spec.bn_as_trained:
        source = f"{spec.description} {path} ({fmt}; BatchNorm statistics as in training)"
    else:
        how = f"trained by {state.get('trained_by')}" if state.get("trained_by") else fmt
        source = f"{spec.description} {path} ({fmt}, {how})"
    arch = space.parse(arch) if isinstance(arch, str) else space.validate(arch)
    return LoadedChild(ChildNet.from_supernet(supernet, arch).eval(), source, classes, from_supernet=True)


def load_child(space: SpaceGraph | str | None, arch: Architecture | str | None,
               checkpoint: str | Path | None = None, num_classes: int | None = None) -> ChildNet:
    """The child network of ``arch`` with the weights of ``checkpoint`` (see :func:`read_child`)."""
    return read_child(space, arch, checkpoint, num_classes).child
