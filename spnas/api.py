"""The Python API: every ``spnas`` command is one function here, and the command line calls it.

    import spnas

    found = spnas.search(space="tiny", strategy="single-path", device="flops", data="digits",
                         target="50%", epochs=2)
    found.arch, found.latency, found.accuracy     # the network, its predicted cost, its accuracy
    net = found.child()                            # an nn.Module with the inherited weights
    trained = spnas.train(found, epochs=5)         # from scratch, one recipe
    spnas.export(trained, "net.onnx")

Every function takes names where the command line takes text (``space="spnas-cifar"``,
``data="idx:DIR"``, ``device="tflite"``) and also the objects themselves (a
:class:`~spnas.space.graph.SpaceGraph`, a :class:`~spnas.data.split.DataSplit`, a
:class:`~spnas.latency.table.LatencyTable` as ``table``). ``out=None`` writes the run into a
temporary directory that lives as long as the returned object. A bad argument raises
:class:`~spnas.core.errors.SpnasError` with the command line's one-line message. See docs/api.md.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

from spnas.data.split import DataSplit
from spnas.latency.table import LatencyTable
from spnas.pipeline.compare import CompareOptions, CompareOutcome, run_compare
from spnas.pipeline.search import SearchOutcome, run_search
from spnas.pipeline.sweep import FrontTrainOutcome, SweepOutcome, is_sweep, run_sweep, run_train_front
from spnas.pipeline.tools import ExportOutcome, ProfileOutcome, run_export, run_profile
from spnas.pipeline.train import EvaluateOutcome, TrainOutcome, run_evaluate, run_train
from spnas.space.graph import SpaceGraph
from spnas.training.train import TrainRecipe

Space = SpaceGraph | str | Path
Data = DataSplit | str


def search(space: Space = "spnas-cifar", strategy: str = "single-path", device: str = "tflite",
           data: Data = "digits", target: float | str | None = None, out: str | Path | None = None, *,
           seed: int = 0, val_fraction: float = 0.2, table: LatencyTable | str | Path | None = None,
           device_options: Mapping[str, Any] | None = None, accelerator: str | None = None,
           loader_workers: int = 0, resume: bool = False, progress: bool = False, report: bool = True,
           options: Mapping[str, Any] | None = None, targets: str | Sequence[Any] | None = None,
           **more_options: Any) -> SearchOutcome | SweepOutcome:
    """Search an architecture: ``spnas search`` as a function.

    Args:
        space: a registered space (``spnas-cifar``, ``spnas-imagenet``, ``tiny``), a YAML path or a SpaceGraph.
        strategy: a registered strategy (``single-path``, ``random``, ``evolution``, ``rl``, a plugin's).
        device: the latency device (``tflite``, ``onnxruntime``, ``flops``, ``pixel1``, ...).
        data: a data set name (``digits``, ``idx:DIR``, ``cifar10:DIR``, ``npz:FILE``,
            ``imagefolder:DIR``) or a DataSplit.
        target: the latency target T in the device's units, or ``"40%"`` of the space's range on the
            device; the found network costs between 0.95 T and T.
        out: the run directory (None: a temporary one, kept as long as the result).
        seed, val_fraction, accelerator, loader_workers, resume: as the command line's flags.
        table: a latency table (object or file) to use instead of the device's own.
        device_options: the device's options (``{"threads": 1}``).
        progress: show a progress bar. report: write report.md and plots/.
        targets: several targets (``["30%", "50%", "70%"]`` or ``"30%,50%,70%"``) instead of
            ``target``: a front, one search per target sharing one warm-up (single-path); returns a
            :class:`~spnas.pipeline.sweep.SweepOutcome` (``.points``, ``.child(i)``, ``.run_dir``).
        options, **more_options: the strategy's options by field name (``epochs=4``,
            ``lambda_=0.02``, ``evaluations=50``), as a mapping or as keywords;
            ``spnas search --strategy NAME --help`` lists them.

    Returns:
        A :class:`~spnas.pipeline.search.SearchOutcome`: ``.arch``, ``.latency``, ``.units``,
        ``.accuracy``, ``.child()``, ``.run_dir``, ``.record`` (result.yaml).
    """
    options = {**dict(options or {}), **more_options}
    if targets is not None:
        if target is not None:
            from spnas.core.errors import SpnasError

            raise SpnasError("--target and --targets: give one (--targets runs one search per target)")
        if loader_workers:
            from spnas.core.errors import SpnasError

            raise SpnasError("--targets loads data in the training process; leave out --loader-workers")
        return run_sweep(space, targets, strategy, device=device, data=data, out=out, options=options, seed=seed,
                         val_fraction=val_fraction, table=table, device_options=device_options,
                         accelerator=accelerator, resume=resume, progress=progress, report=report)
    return run_search(space, strategy, device=device, data=data, out=out, options=options, target=target, seed=seed,
                      val_fraction=val_fraction, table=table, device_options=device_options,
                      accelerator=accelerator, loader_workers=loader_workers, resume=resume, progress=progress,
                      report=report)


def train(arch: Any, space: Space | None = None, data: Data = "digits", out: str | Path | None = None, *,
          recipe: TrainRecipe | str | None = None, seed: int = 0, val_fraction: float = 0.2,
          accelerator: str | None = None, resume: bool = False, progress: bool = False, report: bool = True,
          **recipe_options: Any) -> TrainOutcome | FrontTrainOutcome:
    """Train a network from scratch: ``spnas train`` as a function.

    ``arch`` is an architecture string (on ``space``, default ``spnas-cifar``), an Architecture, the
    outcome of :func:`search`, or a search's run directory / result.yaml (its space is then the
    search's). ``recipe`` is a preset (``default``, ``authors``) or a TrainRecipe;
    ``**recipe_options`` override its fields (``epochs=30``, ``batch_size=64``, ``lr=0.1``, ...).

    A sweep (the outcome of ``search(targets=...)``, or its directory) trains every point of its
    front, one run per target in ``out``, and returns a
    :class:`~spnas.pipeline.sweep.FrontTrainOutcome` (``.points`` with each trained top-1).

    Returns:
        A :class:`~spnas.pipeline.train.TrainOutcome`: ``.top1``, ``.top5``, ``.model()``, ``.run_dir``.
    """
    if is_sweep(arch):
        if space is not None:
            from spnas.core.errors import SpnasError

            raise SpnasError("a front is trained on the space it was searched on; leave out --space")
        return run_train_front(arch, data=data, out=out, recipe=recipe, seed=seed, val_fraction=val_fraction,
                               accelerator=accelerator, resume=resume, progress=progress, report=report,
                               **recipe_options)
    return run_train(arch, space, data=data, out=out, recipe=recipe, seed=seed, val_fraction=val_fraction,
                     accelerator=accelerator, resume=resume, progress=progress, report=report, **recipe_options)


def evaluate(model: Any, arch: Any = None, *, space: Space | None = None, data: Data = "digits",
             val_fraction: float = 0.2, bn_batches: int = 20, batch_size: int = 256) -> EvaluateOutcome:
    """Top-1 and top-5 of a network: ``spnas eval`` as a function.

    ``model`` is a ChildNet (e.g. ``outcome.child()``) or a checkpoint: ``model.pt``, a training run
    directory, or a ``supernet.pt`` / search checkpoint with ``arch`` (whose BatchNorm statistics
    are then recalibrated on ``bn_batches`` training batches), or a ``.tflite`` file (float32 or
    int8, run with LiteRT at its own input size).
    """
    return run_evaluate(model, arch, space=space, data=data, val_fraction=val_fraction, bn_batches=bn_batches,
                        batch_size=batch_size)


def profile(space: Space = "spnas-cifar", device: str = "tflite", out: str | Path | None = None, *,
            progress: bool = False, **device_options: Any) -> ProfileOutcome:
    """A device's latency table for a space: ``spnas profile`` as a function (measured tables are
    cached; ``out`` writes a copy). ``**device_options``: ``threads=1``, ``runs=30``, ..."""
    return run_profile(space, device, out, progress=progress, device_options=device_options)


def export(model: Any = None, out: str | Path | None = None, *, format: str = "onnx", arch: Any = None,
           space: Space | None = None, checkpoint: str | Path | None = None, num_classes: int | None = None,
           opset: int | None = None, dynamic_batch: bool = False, quantize: str | None = None,
           data: Data = "digits", val_fraction: float = 0.2, calibration_images: int = 128) -> ExportOutcome:
    """Write a network as ONNX or TFLite: ``spnas export`` as a function.

    ``model`` is the outcome of :func:`search` (its child, inherited weights) or of :func:`train`, a
    ChildNet, or an architecture with the weights of ``checkpoint`` (none: a fresh, seeded
    initialization). ``out`` defaults to ``<space>-<hash>.<format>`` in the current directory.
    ``quantize="int8"`` (TFLite): full-integer quantization calibrated on ``calibration_images``
    training images of ``data``; the result then carries ``float_top1`` and ``int8_top1``, the
    validation top-1 before and after.
    """
    return run_export(model, out, format=format, arch=arch, space=space, checkpoint=checkpoint,
                      num_classes=num_classes, opset=opset, dynamic_batch=dynamic_batch, quantize=quantize,
                      data=data, val_fraction=val_fraction, calibration_images=calibration_images)


def compare(strategies: Sequence[str] | str = CompareOptions.strategies, space: Space = "spnas-cifar",
            device: str = "tflite", data: Data = "digits", target: float | str | None = None,
            out: str | Path | None = None, *, seeds: Sequence[int] | int = (0,), supernet_epochs: int = 8,
            evaluations: int = 100, random_archs: int = 3, measure: bool = True,
            recipe: TrainRecipe | str | None = None, table: LatencyTable | str | Path | None = None,
            device_options: Mapping[str, Any] | None = None, val_fraction: float = 0.2,
            accelerator: str | None = None, resume: bool = False, progress: bool = False,
            targets: Sequence[Any] | str | None = None, **recipe_options: Any) -> CompareOutcome:
    """Several strategies on one supernet and one latency table, every found network trained from
    scratch: ``spnas compare`` as a function. ``seeds`` is a count or a list; ``**recipe_options``
    set the training recipe (``epochs=5`` is ``--train-epochs 5``). ``targets`` (instead of
    ``target``) compares at each target, sharing each seed's supernet and single-path's warm-up
    across targets; ``.aggregate`` then has one entry per target and strategy (``target_spec``).

    Returns:
        A :class:`~spnas.pipeline.compare.CompareOutcome`: ``.rows``, ``.aggregate`` (mean ± std over
        seeds per strategy), ``.report``, ``.run_dir``.
    """
    return run_compare(strategies, space, device=device, data=data, target=target, out=out, seeds=seeds,
                       supernet_epochs=supernet_epochs, evaluations=evaluations, random_archs=random_archs,
                       measure=measure, recipe=recipe, table=table, device_options=device_options,
                       val_fraction=val_fraction, accelerator=accelerator, resume=resume, progress=progress,
                       targets=targets, **recipe_options)


__all__ = ["CompareOutcome", "EvaluateOutcome", "ExportOutcome", "FrontTrainOutcome", "ProfileOutcome", "SearchOutcome",
           "SweepOutcome",
           "TrainOutcome",
           "compare", "evaluate", "export", "profile", "search", "train"]
