"""The one training loop of spnas: epochs of steps, checkpoints, resume, progress, data parallelism.

Three trainers run on it, each giving only what is its own (as timm's ``train_one_epoch`` serves
every model): :func:`spnas.training.train.train` (a child network from scratch),
:func:`spnas.training.oneshot.train_uniform` (the uniform single-path supernet of the sampling
strategies) and the single-path search (``spnas.strategies.single_path``: weights and thresholds,
warm-up, runtime term). What is their own is what one step computes (a step function returning a
:class:`Step`), what they log or evaluate after a step or an epoch (callbacks), and what their
checkpoint holds beyond the common part (:class:`Checkpoint`). The loop owns the rest:

* the optimizer and its learning-rate schedule, built from an :class:`Optim` recipe and
  :class:`ParamGroup` s (a ``LambdaLR`` with one factor per group);
* the training batches (:func:`spnas.core.distributed.train_loader`): the order of epoch ``e``
  is the permutation seeded with ``seed * 1000 + e``, each rank loading its shard of every batch;
* one step, in this order: the step function; the loss and :attr:`Step.means` averaged over the
  ranks (one all-reduce), a non-finite loss stopping the run with a one-line
  :class:`~spnas.core.errors.SpnasError` on every rank; ``zero_grad``, ``backward``,
  ``optimizer.step()``; the ``on_step`` callback (which sees the learning rate the step used);
  ``scheduler.step()``;
* an epoch: the data order set, ``on_epoch_start``, the steps (BatchNorm over the batch of every
  rank, :func:`~spnas.core.distributed.sync_batchnorm`), ``on_epoch_end``, then an atomic
  checkpoint through the run directory (rank 0 alone writes; :class:`~spnas.core.distributed.MainRun`);
* resume: the checkpoint's weights, optimizer, schedule, epoch, step and every global random
  number generator (:func:`spnas.core.rng.rng_state`) come back, and the log lines written after
  it are dropped (``RunDir.truncate_log``, which also makes TensorBoard drop those steps), so that
  a resumed run ends bit for bit where an uninterrupted one does;
* a tqdm progress bar, DistributedDataParallel around the module a step calls
  (:func:`~spnas.core.distributed.wrap`), and a check that every rank ends with the same weights.

A checkpoint holds ``format``, ``epoch``, ``step``, ``seconds``, ``model``, ``optimizer``,
``scheduler`` and ``rng``, and the trainer's own entries next to them.

Example (a plain model; ``run`` is a :class:`~spnas.core.runs.RunDir`)::

    >>> loop = Loop(model, dataset, Optim("sgd", lr=0.1, schedule=cosine(3)),     # doctest: +SKIP
    ...             [ParamGroup(model.parameters(), weight_decay=4e-5)], epochs=3, batch_size=64, run=run)
    >>> def step(loop, batch):                                                     # doctest: +SKIP
    ...     x, y = batch
    ...     return Step(F.cross_entropy(loop.module(x), y))
    >>> loop.fit(step, Checkpoint("my-training-v1"), resume=False)                 # doctest: +SKIP
    LoopState(epoch=3, step=..., seconds=...)
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, Sequence

import torch
from torch import nn
from torch.utils.data import Dataset

from spnas.core.distributed import SINGLE, Distributed, MainRun, checksum, sync_batchnorm, train_loader, wrap
from spnas.core.errors import SpnasError
from spnas.core.rng import rng_state, set_rng_state
from spnas.core.runs import RunDir

#: ``schedule(step, steps_per_epoch)``: the learning-rate factor at a (0-based) step
Schedule = Callable[[int, int], float]
OPTIMIZERS = ("sgd", "rmsprop", "adam", "adamw")


def constant(step: int, steps_per_epoch: int) -> float:
    """The base rate throughout."""
    return 1.0


def cosine(epochs: int) -> Schedule:
    """From the base rate to 0 over ``epochs`` epochs, step by step: ``0.5 (1 + cos(pi s / S))``
    with S the steps of the run (SPOS's schedule; the authors' search code)."""

    def factor(step: int, steps_per_epoch: int) -> float:
        total = epochs * steps_per_epoch
        return 0.5 * (1 + math.cos(math.pi * min(step, total) / total))

    return factor


@dataclass(frozen=True)
class ParamGroup:
    """One group of parameters of the optimizer.

    Attributes:
        params: the parameters.
        weight_decay: their L2 weight decay (the optimizer's own: decoupled for ``adamw``).
        lr: their base rate; None: the recipe's.
        schedule: their rate's factor per step; None: the recipe's.
        options: further settings of the group, e.g. ``{"betas": (0.0, 0.999)}`` for ``adam``.
    """

    params: Iterable[nn.Parameter]
    weight_decay: float = 0.0
    lr: float | None = None
    schedule: Schedule | None = None
    options: Mapping[str, Any] = field(default_factory=dict)

    def torch_group(self) -> dict[str, Any]:
        group: dict[str, Any] = {"params": list(self.params), "weight_decay": self.weight_decay}
        if self.lr is not None:
            group["lr"] = self.lr
        return {**group, **self.options}


@dataclass(frozen=True)
class Optim:
    """An optimizer recipe: the algorithm, its base rate and momentum, and the rate's schedule.

    ``sgd`` is SGD with Nesterov momentum (plain SGD with ``momentum=0``); ``rmsprop`` is
    TensorFlow's RMSProp as MnasNet and the Single-Path NAS authors use it (decay 0.9, epsilon 1e-3
    added outside the root); ``adam`` and ``adamw`` are PyTorch's with their default betas (a
    group may set its own) and ignore ``momentum``.
    """

    name: str = "sgd"
    lr: float = 0.1
    momentum: float = 0.9
    schedule: Schedule = constant

    def __post_init__(self) -> None:
        if self.name not in OPTIMIZERS:
            raise SpnasError(f"optimizer {self.name!r} is not known; allowed: {', '.join(OPTIMIZERS)}")

    def build(self, groups: Sequence[ParamGroup]) -> torch.optim.Optimizer:
        params = [g.torch_group() for g in groups]
        if self.name == "sgd":
            return torch.optim.SGD(params, lr=self.lr, momentum=self.momentum, nesterov=self.momentum > 0)
        if self.name == "rmsprop":
            return torch.optim.RMSprop(params, lr=self.lr, alpha=0.9, eps=1e-3, momentum=self.momentum)
        if self.name == "adam":
            return torch.optim.Adam(params, lr=self.lr)
        return torch.optim.AdamW(params, lr=self.lr)

    def scheduler(self, optimizer: torch.optim.Optimizer, groups: Sequence[ParamGroup],
                  steps_per_epoch: int) -> torch.optim.lr_scheduler.LambdaLR:
        def at(schedule: Schedule) -> Callable[[int], float]:
            return lambda step: schedule(step, steps_per_epoch)

        return torch.optim.lr_scheduler.LambdaLR(optimizer, [at(g.schedule or self.schedule) for g in groups])


@dataclass(frozen=True)
class Step:
    """What a step function returns.

    Attributes:
        loss: the loss ``backward()`` runs on (this rank's part of the batch).
        means: numbers averaged over the ranks in the same all-reduce as the loss (floats or
            one-element tensors, e.g. the cross-entropy); shown on the progress bar.
        info: anything else the ``on_step`` callback needs (this rank's, as returned).
    """

    loss: torch.Tensor
    means: Mapping[str, float | torch.Tensor] = field(default_factory=dict)
    info: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class StepEnd:
    """A finished step, as the ``on_step`` callback sees it."""

    step: int  #: steps done, this one included
    epoch: int  #: the (0-based) epoch it belongs to
    loss: float  #: the loss, averaged over the ranks
    means: Mapping[str, float]  #: :attr:`Step.means`, averaged over the ranks
    lr: float  #: the rate this step used (the first group's)
    info: Mapping[str, Any]  #: :attr:`Step.info`


@dataclass(frozen=True)
class EpochEnd:
    """A finished epoch, as the ``on_epoch_end`` callback sees it (before its checkpoint)."""

    epoch: int  #: epochs done, this one included
    step: int  #: steps done
    loss: float  #: the mean of the epoch's step losses (each averaged over the ranks)
    last: StepEnd  #: the epoch's last step


@dataclass
class LoopState:
    """How far a run is: finished epochs and steps, and the seconds its epochs took."""

    epoch: int = 0
    step: int = 0
    seconds: float = 0.0


def _no_entries(loop: "Loop") -> dict[str, Any]:
    return {}


def _nothing(checkpoint: dict) -> None:
    return None


@dataclass(frozen=True)
class Checkpoint:
    """A trainer's checkpoint: its ``format`` and what it holds beyond the loop's part.

    Attributes:
        format: the file's ``format`` field (registered with the checkpoint-format hook).
        entries: ``entries(loop)``: the trainer's own entries (written next to the common ones).
        restore: ``restore(checkpoint)``, before anything is loaded on resume: raise a
            :class:`~spnas.core.errors.SpnasError` if the checkpoint is not this run's (another
            architecture, another space), and read back the trainer's own entries. It may fill in
            common entries of a checkpoint written by an older layout.
        other_formats: a ``checkpoint.pt`` of another format on resume: ``"refuse"`` it (one-line
            error) or ``"ignore"`` it and train from the start.
    """

    format: str
    entries: Callable[["Loop"], Mapping[str, Any]] = _no_entries
    restore: Callable[[dict], None] = _nothing
    other_formats: str = "refuse"

    def __post_init__(self) -> None:
        if self.other_formats not in ("refuse", "ignore"):
            raise ValueError(f"Checkpoint.other_formats {self.other_formats!r}: use 'refuse' or 'ignore'")


StepFn = Callable[["Loop", Any], Step]


class Loop:
    """Trains ``model`` on ``data`` for ``epochs`` epochs (see the module docstring).

    Args:
        model: the network whose state is checkpointed (its BatchNorm synchronised over the ranks).
        data: the training set.
        optim: the optimizer recipe; ``groups``: its parameter groups (default: one group of
            every parameter of ``model``, no weight decay).
        epochs, batch_size: the run's length and global batch (``batch_size / world_size`` per rank).
        run: the run directory (:class:`~spnas.core.runs.RunDir`, or a
            :class:`~spnas.core.distributed.MainRun` under ``torchrun``); rank 0 writes it.
        seed: seeds the data order.
        device: where the step runs (batches are pinned for CUDA).
        dist: this process's place in a ``torchrun`` job.
        forward: the module a step calls, as :attr:`module` (default ``model``); it must hold
            ``model``'s parameters. Under ``torchrun`` it is wrapped in DistributedDataParallel.
        find_unused_parameters: a step uses only part of the parameters (one path of a
            supernet), as DistributedDataParallel needs to know.
        loader_workers: data-loader worker processes.
        progress: show a progress bar.
        name: names the run on the progress bar and in errors (``"training tiny"``).

    Attributes a step or callback uses: :attr:`module` (what a step calls), :attr:`model`,
    :attr:`optimizer`, :attr:`scheduler`, :attr:`run` (rank 0 writes), :attr:`state`
    (:class:`LoopState`: the current 0-based epoch while it runs) and :attr:`steps_per_epoch`.
    """

    def __init__(self, model: nn.Module, data: Dataset, optim: Optim, groups: Sequence[ParamGroup] | None = None,
                 *, epochs: int, batch_size: int, run: RunDir | MainRun, seed: int = 0,
                 device: torch.device | str = "cpu", dist: Distributed = SINGLE, forward: nn.Module | None = None,
                 find_unused_parameters: bool = False, loader_workers: int = 0, progress: bool = True,
                 name: str = "training"):
        self.model, self.epochs, self.dist, self.name, self.progress = model, epochs, dist, name, progress
        self.device = torch.device(device)
        self.run = run if isinstance(run, MainRun) else MainRun(run, dist)
        groups = list(groups) if groups is not None else [ParamGroup(list(model.parameters()))]
        self.optimizer = optim.build(groups)
        self.module = wrap(forward if forward is not None else model, dist, self.device,
                           find_unused_parameters=find_unused_parameters)
        self.loader = train_loader(data, batch_size, seed, dist, workers=loader_workers,
                                   pin_memory=self.device.type == "cuda")
        if len(self.loader) == 0:
            raise SpnasError(f"--batch-size {batch_size} is larger than the training set ({len(data)} images)")
        self.steps_per_epoch = len(self.loader)
        self.scheduler = optim.scheduler(self.optimizer, groups, self.steps_per_epoch)
        self.state = LoopState()

    def fit(self, step: StepFn, checkpoint: Checkpoint, *, on_step: Callable[["Loop", StepEnd], None] | None = None,
            on_epoch_start: Callable[["Loop"], None] | None = None,
            on_epoch_end: Callable[["Loop", EpochEnd], None] | None = None, resume: bool = False) -> LoopState:
        """Train until ``epochs`` epochs are done (continuing from the run's checkpoint with ``resume``).

        ``step(loop, batch)`` computes one step's :class:`Step`; the callbacks see each finished
        step and each epoch's start and end; ``checkpoint`` says what an epoch's checkpoint holds.
        """
        if resume:
            self.restore(checkpoint)
        from tqdm.auto import tqdm

        bar = tqdm(total=self.epochs * self.steps_per_epoch, initial=self.state.step, desc=self.name, unit="step",
                   disable=not self.progress, dynamic_ncols=True, leave=False)
        self.model.train()
        try:
            while self.state.epoch < self.epochs:
                self._epoch(step, checkpoint, bar, on_step, on_epoch_start, on_epoch_end)
        finally:
            bar.close()
        if self.dist.enabled:
            self.dist.check_same(checksum(self.model), f"the weights after {self.name}")
        return self.state

    def _epoch(self, step: StepFn, checkpoint: Checkpoint, bar: Any, on_step, on_epoch_start, on_epoch_end) -> None:
        start = time.perf_counter()
        self.loader.sampler.set_epoch(self.state.epoch)  # the data order of an epoch survives a resume
        if on_epoch_start is not None:
            on_epoch_start(self)
        total, end = 0.0, None
        with sync_batchnorm(self.model, self.dist):  # under torchrun: BatchNorm over the batch of all ranks
            for batch in self.loader:
                end = self._step(step, batch, on_step)
                total += end.loss
                bar.update(1)
                bar.set_postfix({k: f"{v:.4g}" for k, v in (end.means or {"loss": end.loss}).items()}, refresh=False)
        assert end is not None  # the loader is never empty
        if on_epoch_end is not None:
            on_epoch_end(self, EpochEnd(self.state.epoch + 1, self.state.step, total / self.steps_per_epoch, end))
        self.state.epoch += 1
        self.state.seconds += time.perf_counter() - start
        self.save(checkpoint)

    def _step(self, step: StepFn, batch: Any, on_step) -> StepEnd:
        out = step(self, batch)
        values = [float(v.detach()) if isinstance(v, torch.Tensor) else float(v) for v in out.means.values()]
        # the whole batch's numbers (each rank holds its own part's): every rank stops together
        loss, *means = self.dist.mean([float(out.loss.detach()), *values])
        if not math.isfinite(loss):
            done = self.state.epoch
            kept = f"the checkpoint of epoch {done} is kept in {self.run.path}" if done else "no epoch was saved"
            raise SpnasError(f"{self.name}: the loss became {loss} at step {self.state.step} (epoch {done + 1}); "
                             f"{kept}; lower --lr")
        self.optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        self.optimizer.step()
        self.state.step += 1
        end = StepEnd(self.state.step, self.state.epoch, loss, dict(zip(out.means, means)),
                      self.optimizer.param_groups[0]["lr"], out.info)
        if on_step is not None:
            on_step(self, end)
        self.scheduler.step()
        return end

    def save(self, checkpoint: Checkpoint) -> None:
        """Write the checkpoint of where the run is (rank 0; atomic replace)."""
        if not self.dist.is_main:
            return
        self.run.save_checkpoint({
            "format": checkpoint.format, "epoch": self.state.epoch, "step": self.state.step,
            "seconds": self.state.seconds, "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(), "rng": rng_state(), **checkpoint.entries(self),
        })

    def restore(self, checkpoint: Checkpoint) -> bool:
        """Continue from the run's checkpoint; False if there is none (or one of another format that
        ``checkpoint`` ignores). Rank 0 reads it and every rank loads it."""
        if not self.run.has_checkpoint():
            return False
        state = self.run.load_checkpoint()
        if state.get("format") != checkpoint.format:
            if checkpoint.other_formats == "ignore":
                return False
            raise SpnasError(f"{self.run.checkpoint_path}: a {state.get('format')!r} checkpoint, not "
                             f"{checkpoint.format!r}; resume it with the command that wrote it, or use another --out")
        checkpoint.restore(state)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if "rng" in state:  # checkpoints of child and uniform training written before the loop had none
            set_rng_state(state["rng"])
        self.state = LoopState(state["epoch"], state["step"], float(state.get("seconds", 0.0)))
        self.run.truncate_log(self.state.step)
        return True


__all__ = ["Checkpoint", "EpochEnd", "Loop", "LoopState", "OPTIMIZERS", "Optim", "ParamGroup", "Schedule", "Step",
           "StepEnd", "constant", "cosine"]
