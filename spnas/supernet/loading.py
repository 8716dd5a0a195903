"""A child network out of a checkpoint file or a run directory, whatever wrote it.

:func:`read_child` is what ``spnas export``, ``spnas eval``, :func:`spnas.export` and
:meth:`spnas.api.SearchOutcome.child` use. The file's ``format`` field names a
:class:`~spnas.core.checkpoints.CheckpointFormat` registered by the plugin that wrote it, so a
third-party strategy's checkpoints load like the built-in ones.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from spnas.core.checkpoints import CheckpointFormat
from spnas.core.errors import SpnasError
from spnas.core.runs import load_checkpoint
from spnas.space.arch import Architecture
from spnas.space.graph import SpaceGraph
from spnas.supernet.builder import ChildNet, Supernet

#: the seed of a fresh initialization, so that exporting the same architecture twice gives one file
INIT_SEED = 0


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
