"""Training from scratch and evaluation: the pipelines under ``spnas train`` / :func:`spnas.train`,
``spnas eval`` / :func:`spnas.evaluate` and the training stages of ``spnas compare``.

Example:
    >>> outcome = run_train("k3e3 skip | k5e6 k3e3", space="tiny", data="digits", epochs=2)  # doctest: +SKIP
    >>> outcome.top1, outcome.model()                                                          # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from spnas.core.errors import SpnasError
from spnas.core.runs import RunDir, read_yaml
from spnas.data.split import DataSplit
from spnas.pipeline.search import SearchOutcome, accelerator_name, load_space, prepare_data
from spnas.space.arch import Architecture
from spnas.space.graph import SpaceGraph
from spnas.training.train import MODEL_FILE, TrainRecipe, evaluate_child, recipe, train

from spnas.space import DEFAULT_SPACE


def resolve_arch(arch: Any, space: SpaceGraph | str | Path | None) -> tuple[str, SpaceGraph | str]:
    """(architecture string, space) from an architecture (string or :class:`Architecture`), a
    :class:`SearchOutcome`, or a search's ``result.yaml`` / run directory.

    The space of a result is the one its run used (config.yaml's ``space``, which may be a YAML
    path), unless ``space`` is given; an architecture string without a space is on ``spnas-cifar``.
    """
    if isinstance(arch, SearchOutcome):
        return str(arch.arch), space if space is not None else arch.space
    if isinstance(arch, Architecture):
        return str(arch), space if space is not None else DEFAULT_SPACE
    if not isinstance(arch, (str, Path)):
        raise SpnasError(f"arch: {type(arch).__name__} is not an architecture; give a string such as "
                         f"'k3e3 skip | k5e6 k3e3', a search's run directory or result.yaml, or a search's outcome")
    text = str(arch)
    path = Path(text)
    if path.is_dir():
        path = path / "result.yaml"
        if not path.is_file():
            raise SpnasError(f"{text}: a directory without result.yaml; pass a finished search's run directory")
    if not (path.suffix in (".yaml", ".yml") and path.is_file()):
        if path.suffix in (".yaml", ".yml"):
            raise SpnasError(f"{text}: no such file")
        return text, space if space is not None else DEFAULT_SPACE
    result = read_yaml(path)
    if not isinstance(result, dict) or not isinstance(result.get("arch"), str):
        raise SpnasError(f"{path}: arch: missing; expected a search's result.yaml with an 'arch' string")
    if space is None:
        config = path.parent / "config.yaml"
        try:
            cfg = read_yaml(config) if config.is_file() else None
        except SpnasError:  # the result names its space too
            cfg = None
        space = (cfg or {}).get("space") if isinstance(cfg, dict) else None
        space = space or result.get("space")
    if not isinstance(space, (str, SpaceGraph)):
        raise SpnasError(f"{path}: names no search space; pass --space")
    return result["arch"], space


def make_recipe(r: TrainRecipe | str | None = None, **overrides: Any) -> TrainRecipe:
    """A :class:`TrainRecipe`: a preset name (``default``, ``authors``) or a recipe, with
    explicit values on top (None values are ignored)."""
    overrides = {k: v for k, v in overrides.items() if v is not None}
    if isinstance(r, TrainRecipe):
        return dataclasses.replace(r, **overrides) if overrides else r
    fields = {f.name for f in dataclasses.fields(TrainRecipe)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise SpnasError(f"unknown training option(s) {', '.join(unknown)}; allowed: {', '.join(sorted(fields))}")
    return recipe(r or "default", **overrides)


@dataclass
class TrainOutcome:
    """A network trained from scratch: ``top1``/``top5`` on the validation split (and ``test_top1``
    / ``test_top5`` when the data has a test part), ``record`` (``result.yaml``), ``run_dir``
    (a temporary one with ``out=None``, kept as long as this object). :meth:`model` loads it."""

    record: dict[str, Any]
    space: SpaceGraph
    run_dir: Path
    recipe: TrainRecipe
    report: Path | None = None
    _tmp: Any = field(default=None, repr=False)

    @property
    def arch(self) -> Architecture:
        return self.space.parse(self.record["arch"])

    @property
    def top1(self) -> float:
        return self.record["top1"]

    @property
    def top5(self) -> float:
        return self.record["top5"]

    @property
    def test_top1(self) -> float | None:
        return self.record.get("test_top1")

    def to_dict(self) -> dict[str, Any]:
        return dict(self.record)

    def model(self) -> nn.Module:
        """The trained :class:`~spnas.supernet.builder.ChildNet` (eval mode), from ``model.pt``."""
        from spnas.supernet.loading import read_child

        return read_child(self.space, None, self.run_dir / MODEL_FILE).child

    def __repr__(self) -> str:
        return f"TrainOutcome(arch='{self.record['arch']}', top1={self.top1:.4f}, run_dir='{self.run_dir}')"


def run_train(arch: Any, space: SpaceGraph | str | Path | None = None, *, data: DataSplit | str = "digits",
              out: str | Path | None = None, recipe: TrainRecipe | str | None = None, seed: int = 0,
              val_fraction: float = 0.2, accelerator: str | None = None, resume: bool = False,
              progress: bool = False, report: bool = True, config: Mapping[str, Any] | None = None,
              **recipe_options: Any) -> TrainOutcome:
    """Train ``arch``'s network from a fresh initialization; see :func:`spnas.train`."""
    from spnas.report.writer import try_write_report

    arch_text, space_arg = resolve_arch(arch, space)
    r = make_recipe(recipe, **recipe_options)
    graph = load_space(space_arg)
    parsed = graph.parse(arch_text)
    graph, data = prepare_data(graph, data, val_fraction)
    parsed = graph.parse(str(parsed))
    accel = accelerator_name(accelerator)
    tmp = tempfile.TemporaryDirectory(prefix="spnas-train-") if out is None else None
    out = Path(tmp.name if tmp else out)
    try:
        run = RunDir(out, resume=resume)
        run.write_config({"command": "train", "arch": str(parsed),
                          "space": space_arg if isinstance(space_arg, str) else graph.name, "space_name": graph.name,
                          "data": data.name, "val_fraction": val_fraction, "seed": seed, "accelerator": accel,
                          "recipe_name": recipe if isinstance(recipe, str) else None, "recipe": r,
                          **dict(config or {})})
        try:
            result = train(graph, parsed, data, r, run, seed=seed, device=accel, resume=resume, progress=progress)
        finally:
            run.close()
        run.write_result(result)
    except BaseException:
        if tmp is not None:
            tmp.cleanup()
        raise
    outcome = TrainOutcome(result, graph, out, r, _tmp=tmp)
    if report:
        outcome.report = try_write_report(out)
    return outcome


@dataclass
class EvaluateOutcome:
    """Top-1 and top-5 of a network on the validation split (and the test part, when the data has one)."""

    val_top1: float
    val_top5: float
    arch: str | None  # None for a .tflite file (it does not name its architecture)
    space: str | None
    data: str
    weights: str  # where the weights came from, one line
    checkpoint: str | None = None
    test_top1: float | None = None
    test_top5: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None or not k.startswith("test")}


def run_evaluate(model: nn.Module | str | Path, arch: Any = None, *, space: SpaceGraph | str | Path | None = None,
                 data: DataSplit | str = "digits", val_fraction: float = 0.2, bn_batches: int = 20,
                 batch_size: int = 256) -> EvaluateOutcome:
    """Evaluate a network: a :class:`~spnas.supernet.builder.ChildNet`, or a checkpoint (``model.pt``,
    a run directory, a ``supernet.pt`` or search checkpoint with ``arch``); see :func:`spnas.evaluate`."""
    from spnas.supernet.builder import ChildNet, recalibrate_bn
    from spnas.supernet.loading import read_child

    if isinstance(bn_batches, bool) or not isinstance(bn_batches, int) or bn_batches < 1:
        raise SpnasError(f"--bn-batches {bn_batches} is not allowed; use >= 1")
    path = None
    if isinstance(model, (str, Path)) and Path(model).suffix == ".tflite":
        return _evaluate_tflite(Path(model), data, val_fraction)
    if isinstance(model, ChildNet):
        child, source, from_supernet = model, "the given network", False
    elif isinstance(model, (str, Path)):
        path = Path(model)
        if not path.exists():
            raise SpnasError(f"{path}: no such file or directory; give a model.pt, a training run directory or a "
                             f"supernet.pt (with ARCH)")
        if path.is_dir() and (path / MODEL_FILE).is_file():
            path = path / MODEL_FILE
        graph = load_space(space) if space is not None else None
        if isinstance(arch, Architecture):
            arch = str(arch)
        loaded = read_child(graph, arch, path)
        child, source, from_supernet = loaded.child, loaded.source, loaded.from_supernet
    else:
        raise SpnasError(f"model: {type(model).__name__} is neither a ChildNet nor a checkpoint path")
    _, data = prepare_data(child.space, data, val_fraction)
    if data.num_classes != child.space.spec.num_classes:
        raise SpnasError(f"{path or 'model'}: the network has {child.space.spec.num_classes} outputs; data "
                         f"{data.name} has {data.num_classes} classes")
    if from_supernet:
        gen = torch.Generator().manual_seed(7)
        loader = torch.utils.data.DataLoader(data.train, batch_size=64, shuffle=True, generator=gen)
        recalibrate_bn(child, [(x,) for (x, _), _ in zip(loader, range(bn_batches))])
    numbers = evaluate_child(child, data, batch_size=batch_size)
    return EvaluateOutcome(arch=str(child.arch), space=child.space.name, data=data.name, weights=source,
                           checkpoint=str(path) if path is not None else None, **numbers)


def _evaluate_tflite(path: Path, data: DataSplit | str, val_fraction: float) -> EvaluateOutcome:
    """A ``.tflite`` file (float32 or int8) on the data, loaded at the model's own input size."""
    from spnas.data.datasets import load_data
    from spnas.exporting.exporter import evaluate_tflite, tflite_info

    if not path.is_file():
        raise SpnasError(f"{path}: no such file")
    content = path.read_bytes()
    if content[4:8] != b"TFL3":
        raise SpnasError(f"{path}: not a TFLite model (no TFL3 identifier)")
    info = tflite_info(content)
    _, height, _, channels = info["input_shape"]
    if not isinstance(val_fraction, (int, float)) or not 0 < val_fraction < 1:
        raise SpnasError(f"--val-fraction {val_fraction} is not allowed; use a value in (0, 1)")
    if isinstance(data, str):
        data = load_data(data, height, channels, seed=0, val_fraction=val_fraction)
    if data.num_classes != info["num_classes"]:
        raise SpnasError(f"{path}: the model has {info['num_classes']} outputs; data {data.name} has "
                         f"{data.num_classes} classes")
    numbers = evaluate_tflite(content, data)
    return EvaluateOutcome(arch=None, space=None, data=data.name, weights=f"TFLite {info['input_type']} model {path}",
                           checkpoint=str(path), **numbers)
