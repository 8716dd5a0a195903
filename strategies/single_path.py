"""Single-Path NAS search (Stamoulis et al. 2019, Sec. 3.3, Eq. 9).

One supernet, one optimizer: weights and thresholds are trained together on
``CE + lambda * log(R)``, where R is the runtime model (Eq. 10-12) evaluated on the same
indicators the forward pass used. For the first epochs of the search (5 of 8 in the authors'
code) each indicator is kept with probability 0.6 and scaled by 1/0.6, and the runtime term is
off. The architecture is read out of the final hard indicators.

The search runs on spnas's one training loop (:mod:`spnas.training.loop`: optimizer and schedule,
checkpoints, resume, progress, DDP); this module gives the step (the loss above), the per-step and
per-epoch log records, the thresholds' parameter group and schedule, and the checkpoint's space,
options and ``state`` (``spnas-single-path-v1``).
"""

from __future__ import annotations

import functools
import math
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from spnas.supernet.builder import Supernet, recalibrate_bn
from spnas.core.distributed import SINGLE, Distributed, checksum, shard
from spnas.core.errors import SpnasError
from spnas.training.loop import Checkpoint, EpochEnd, Loop, Optim, ParamGroup, Schedule, Step, StepEnd, cosine
from spnas.training.oneshot import SUPERNET_FILE, save_supernet
from spnas.core.checkpoints import CheckpointFormat
from spnas.core.hookspecs import hookimpl
from spnas.core.rng import seed_everything
from spnas.searching.strategy import DifferentiableStrategy, SearchContext, SearchResult, check_options, option
from spnas.searching.target import WINDOW, check_target, project

CHECKPOINT_FORMAT = "spnas-single-path-v1"
OPTIMIZERS = ("rmsprop", "adam", "sgd")
THRESHOLD_SCHEDULES = ("settle", "cosine", "constant")
#: option presets, named as spnas train's and spnas compare's
RECIPES = ("default", "authors")
#: old preset names, accepted with a deprecation note (spnas <= 0.1 called the default preset "cpu")
RECIPE_ALIASES = {"cpu": "default"}


class _WarmedUp(Exception):
    """Raised at the start of the first epoch after the warm-up, when only the warm-up was asked."""


@dataclass
class SinglePathOptions:
    """Options of the single-path search.

    The loss is ``CE + lambda * lambda_scale * log(R)``: the authors' code multiplies lambda (0.02)
    by 1e3 (``runtime_lambda * 1e3 * tf.log(runtime_val)`` in their ``search_main.py``), so log R
    weighs 20. Defaults suit short CPU runs; ``recipe='authors'`` fills in the authors' values
    for every option not given explicitly (see :data:`AUTHORS_RECIPE`).
    """

    epochs: int = option(8, "search epochs")
    batch_size: int = option(64, "batch size")
    optimizer: str = option("adam", "optimizer of weights and thresholds", choices=OPTIMIZERS)
    lr: float = option(1e-2, "learning rate of the weights")
    threshold_lr: float | None = option(0.05, "learning rate of the thresholds (authors: the weights' rate)")
    threshold_units: str = option("relative", "thresholds in units of each subset's initial norm, or absolute (the "
                                  "paper); see docs/superkernel.md", choices=("relative", "absolute"))
    threshold_schedule: str = option("settle", "the thresholds' rate: settle (constant through the warm-up, then "
                                     "cosine to 0 over the runtime epochs, so the architecture settles by the end), "
                                     "cosine (with the weights', as the authors) or constant",
                                     choices=THRESHOLD_SCHEDULES)
    weight_decay: float = option(1e-5, "weight decay of the weights")
    threshold_weight_decay: float = option(0.0, "weight decay of the thresholds (authors: 1e-5)")
    label_smoothing: float = option(0.0, "label smoothing (authors: 0.1)")
    lambda_: float = option(0.001, "runtime-loss weight lambda (the paper's 0.02 removes every optional layer on "
                            "small data sets; see docs/quality.md)")
    lambda_scale: float = option(1e3, "multiplies lambda, as the authors' 1e3")
    target_weight: float = option(20.0, "target mode: the weight of the target penalty, in place of lambda * "
                                  "lambda_scale (20: the authors' 0.02 x 1e3)")
    target_scale: float = option(0.5, "target mode: the log-distance |log(R / T*)| at which the squared target "
                                 "penalty weighs --target-weight (smaller: held closer to T*)")
    keep_prob: float = option(0.9, "indicator keep probability in the warm-up (authors 0.6; too strong for "
                              "~20 steps an epoch)")
    warmup_epochs: int | None = option(None, "epochs of indicator dropout, runtime term off; fewer than --epochs "
                                       "(default 5/8 of --epochs, as the authors' 5 of 8, leaving at least one "
                                       "epoch with the runtime term)")
    target: float | None = option(None, "target cost T in the device's units: result <= T and within 5%% of T",
                                  metavar="T", range_fraction=True)
    log_every: int = option(1, "log every N steps", cli=False)
    bn_batches: int = option(20, "batches to recalibrate BatchNorm of the found architecture (as SPOS)")
    recipe: str = option("default", "option preset, as 'spnas train' and 'spnas compare' name theirs: default (short "
                         "CPU runs) or authors (the paper's); a preset never overrides an explicit flag",
                         choices=RECIPES, aliases=RECIPE_ALIASES)

    def __post_init__(self) -> None:
        if self.recipe in RECIPE_ALIASES:  # the old name, kept working
            object.__setattr__(self, "recipe", RECIPE_ALIASES[self.recipe])
        if self.recipe not in RECIPES:
            raise SpnasError(f"--recipe {self.recipe!r} is not known; allowed: {', '.join(RECIPES)}")
        if self.threshold_units not in ("relative", "absolute"):
            raise SpnasError(f"--threshold-units {self.threshold_units!r} is not known; allowed: relative, absolute")
        if self.threshold_schedule not in THRESHOLD_SCHEDULES:
            raise SpnasError(f"--threshold-schedule {self.threshold_schedule!r} is not known; allowed: "
                             f"{', '.join(THRESHOLD_SCHEDULES)}")
        if self.optimizer not in OPTIMIZERS:
            raise SpnasError(f"--optimizer {self.optimizer!r} is not known; allowed: {', '.join(OPTIMIZERS)}")
        check_options("single-path", [("epochs", self.epochs >= 1, ">= 1"), ("batch_size", self.batch_size >= 1, ">= 1"),
                  ("lr", self.lr > 0, "> 0"), ("keep_prob", 0 < self.keep_prob <= 1, "in (0, 1]"),
                  ("lambda_scale", self.lambda_scale > 0, "> 0"), ("lambda_", self.lambda_ >= 0, ">= 0"),
                  ("target_scale", self.target_scale > 0, "> 0"), ("target_weight", self.target_weight > 0, "> 0"),
                  ("target", self.target is None or self.target > 0, "> 0"),
                  ("warmup_epochs", self.warmup_epochs is None or self.warmup_epochs >= 0, ">= 0"),
                  ("bn_batches", self.bn_batches >= 1, ">= 1")], self)
        if self.warmup_epochs is not None and self.warmup_epochs >= self.epochs:  # a silent no-op otherwise
            raise SpnasError(f"single-path: --warmup-epochs {self.warmup_epochs} leaves no epoch of --epochs "
                             f"{self.epochs} with the runtime term, so the search would return the largest "
                             f"network; use --warmup-epochs {self.epochs - 1} or less, or more --epochs")

    @property
    def warmup(self) -> int:
        """Warm-up epochs: 5/8 of the search by default (the authors' 5 of 8), always leaving at least
        one epoch with the runtime term (``--epochs 1`` has no warm-up)."""
        if self.warmup_epochs is None:
            return min(round(self.epochs * 5 / 8), self.epochs - 1)
        return self.warmup_epochs


#: the authors' search recipe (their search_main.py and README): RMSProp (decay 0.9, momentum 0.9),
#: lr 0.016 per 256 images, label smoothing 0.1, L2 1e-5 on every weight and threshold, lambda 0.02
#: times 1e3, indicator keep probability 0.6 for the first 5/8 of the search, runtime term off meanwhile
AUTHORS_RECIPE = {"optimizer": "rmsprop", "label_smoothing": 0.1, "lambda_": 0.02, "lambda_scale": 1e3,
                  "weight_decay": 1e-5, "threshold_weight_decay": 1e-5, "keep_prob": 0.6, "threshold_lr": None,
                  "threshold_units": "absolute", "threshold_schedule": "cosine"}


def _optim(opts: SinglePathOptions) -> Optim:
    """One optimizer for weights and thresholds (TF-style RMSProp of the authors: decay 0.9, momentum
    0.9), the weights' rate on a cosine over the search."""
    return Optim(opts.optimizer, opts.lr, momentum=0.9, schedule=cosine(opts.epochs))


def _param_groups(opts: SinglePathOptions, net: Supernet) -> list[ParamGroup]:
    # thresholds without first-moment momentum under Adam: a decision should stop moving as soon as the push does
    betas = {"betas": (0.0, 0.999)} if opts.optimizer == "adam" else {}
    return [ParamGroup(net.weight_parameters(), opts.weight_decay, lr=opts.lr),
            ParamGroup(net.threshold_parameters(), opts.threshold_weight_decay, lr=opts.threshold_lr or opts.lr,
                       schedule=threshold_schedule(opts.threshold_schedule, opts.epochs, opts.warmup), options=betas)]


@torch.no_grad()
def evaluate(net: Supernet, loader: DataLoader, device: torch.device, arch=None, dist: Distributed = SINGLE) -> float:
    """Top-1 accuracy of the supernet in threshold mode (or on ``arch``'s path), eval mode; under
    ``torchrun`` each rank runs its shard of the validation set (:func:`spnas.core.distributed.shard`)
    and the counts are summed."""
    was_training = net.training
    net.eval()
    correct = total = 0
    for x, y in loader:
        x, y = x.to(device), y.to(device)
        correct += int((net(x, arch=arch).argmax(1) == y).sum())
        total += len(y)
    net.train(was_training)
    correct, total = dist.sum([correct, total])
    return correct / max(total, 1)


class ThresholdForward(torch.nn.Module):
    """One search step's forward: the decisions (indicators) from the thresholds, then the supernet
    on them. Inside one module, so that DistributedDataParallel sees the thresholds used in its
    forward; the decisions are kept in :attr:`decisions` for the runtime term."""

    def __init__(self, net: Supernet):
        super().__init__()
        self.net = net
        self.decisions: list | None = None

    def forward(self, x: torch.Tensor, keep_prob: float = 1.0) -> torch.Tensor:
        self.decisions = self.net.decide(keep_prob=keep_prob)
        return self.net(x, decisions=self.decisions)


def single_path_report(run, report) -> None:
    """A single-path search: progress (Fig. 4), architecture (Fig. 5), superkernels (Fig. 6)."""
    from spnas.report import plots
    from spnas.report.writer import (add_plot, arch_block, architecture_plot, num, pct, search_facts, seconds,
                                     superkernel_plot)

    r, opts = run.result, run.options
    search_facts(run, report)
    target = num(r.get("target", opts.get("target")))
    if target is not None:
        spec = f" (--target {r['target_spec']})" if str(r.get("target_spec", "")).endswith("%") else ""
        report.fact("target", f"T = {target:g} {run.units}{spec}, window [{(1 - WINDOW) * target:g}, {target:g}]")
        readout = num(r.get("readout_latency"))
        report.fact("read-out before projection", f"{r.get('readout_arch')} ({readout:g} {run.units}, "
                    f"{readout / target:.3f} T)" if r.get("readout_arch") and readout is not None else None)
        report.fact("layers changed by projection", r.get("layers_changed_by_projection"))
    lam, scale = num(r.get("lambda", opts.get("lambda_"))), num(r.get("lambda_scale", opts.get("lambda_scale")))
    weight = num(r.get("target_weight", opts.get("target_weight")))
    if target is not None and weight is not None:  # target mode: lambda is not used
        width = num(r.get("target_scale", opts.get("target_scale")))
        report.fact("target penalty", f"{weight:g} x (log(R / T*) / {width:g})^2, T* = {1 - WINDOW:g} T")
    elif lam is not None:
        report.fact("lambda", f"{lam:g}" + (f" x {scale:g}" if scale is not None else ""))
    epochs = [x for x in run.records if "epoch" in x and "phase" not in x]
    steps = [x for x in run.records if "ce" in x and "epoch" not in x]
    report.fact("epochs", f"{len(epochs)} of {opts.get('epochs', r.get('epochs', '?'))} logged, {len(steps)} steps")
    if epochs and num(epochs[-1].get("val_accuracy")) is not None:
        report.fact("last epoch val accuracy (threshold mode)", pct(epochs[-1]["val_accuracy"]))
    report.fact("search wall time", seconds(r.get("search_seconds")))
    arch_block(run, report)
    add_plot(run, report, "progress", "Search progress (cross-entropy and R per step)", lambda p: plots.plot_search_progress(
        run.records, p, units=run.units, target=target, title=f"{r.get('strategy', 'single-path')} on "
        f"{r.get('space') or run.config.get('space_name', '')}"))
    architecture_plot(run, report)
    superkernel_plot(run, report)


class SinglePathStrategy(DifferentiableStrategy):
    """The differentiable single-path search (``--strategy single-path``)."""

    name = "single-path"
    Options = SinglePathOptions
    report = staticmethod(single_path_report)  # progress (Fig. 4), architecture (Fig. 5), superkernels (Fig. 6)

    @classmethod
    def from_options(cls, values):
        """A recipe fills in its values for the options not given explicitly."""
        values = dict(values)
        if values.get("recipe") in RECIPE_ALIASES:
            import warnings

            new = RECIPE_ALIASES[values["recipe"]]
            warnings.warn(f"--recipe {values['recipe']} is deprecated; it is now called --recipe {new}",
                          FutureWarning, stacklevel=2)
            values["recipe"] = new
        if values.get("recipe") == "authors":
            preset = dict(AUTHORS_RECIPE, lr=0.016 * values.get("batch_size", 64) / 256)
            values = {**preset, **values}
        return super().from_options(values)

    def check(self, space, runtime) -> None:
        if self.options.target is not None:
            check_target(runtime, self.options.target)

    def fork_epoch(self) -> int | None:
        """The warm-up: indicator dropout and no runtime term, the same for every target."""
        return self.options.warmup if self.options.warmup >= 1 else None

    def warm_up(self, ctx: SearchContext) -> None:
        """The warm-up epochs alone; the checkpoint they leave continues as any target's search."""
        self._train(ctx, stop_at=self.fork_epoch())

    def search(self, ctx: SearchContext) -> SearchResult:
        return self._train(ctx)

    def _train(self, ctx: SearchContext, stop_at: int | None = None) -> SearchResult | None:
        opts: SinglePathOptions = self.options
        self.check(ctx.space, ctx.runtime)
        d = ctx.dist
        seed_everything(ctx.seed)
        net = Supernet(ctx.space)
        net.set_threshold_units(opts.threshold_units == "relative")
        net = net.to(ctx.accelerator)
        forward = ThresholdForward(net)
        # under torchrun each rank loads batch_size / world_size images of every step
        loop = Loop(net, ctx.data.train, _optim(opts), _param_groups(opts, net), epochs=opts.epochs,
                    batch_size=opts.batch_size, run=ctx.run, seed=ctx.seed, device=ctx.accelerator, dist=d,
                    forward=forward, loader_workers=ctx.loader_workers, progress=ctx.progress, name="single-path")
        val = DataLoader(shard(ctx.data.val, d), batch_size=256)
        # target mode aims at the window's lower edge: cross-entropy holds the network a little above
        # the aim, so it settles inside [0.95 T, T] (docs/quality.md)
        t_star = None if opts.target is None else opts.target * (1 - WINDOW)

        def log_step(loop: Loop, end: StepEnd) -> None:
            if end.step % opts.log_every == 0:
                loop.run.log({"step": end.step, "ce": end.means["ce"], "R": end.means["R"],
                              "lambda": end.info["lambda"], "lr": end.lr, "warmup": end.info["warmup"],
                              "indicators": end.info["indicators"]})

        def epoch_end(loop: Loop, end: EpochEnd) -> None:
            acc = evaluate(net, val, ctx.accelerator, dist=d)
            arch = net.read_arch()
            d.check_same(str(arch), f"the architecture after epoch {end.epoch}")
            loop.run.log({"epoch": end.epoch, "step": end.step, "val_accuracy": acc, "arch": str(arch),
                          "R": ctx.runtime.predict(arch)})

        checkpoint = Checkpoint(CHECKPOINT_FORMAT, functools.partial(self._checkpoint_entries, ctx),
                                restore=functools.partial(self._restore, ctx))

        def epoch_start(loop: Loop) -> None:  # a warm-up alone stops once its last epoch is saved
            if stop_at is not None and loop.state.epoch >= stop_at:
                raise _WarmedUp

        try:
            loop.fit(functools.partial(self._step, ctx, forward, t_star), checkpoint, on_step=log_step,
                     on_epoch_start=epoch_start, on_epoch_end=epoch_end, resume=ctx.resume)
        except _WarmedUp:
            return None
        if stop_at is not None:  # resumed past the warm-up: nothing was left to do
            return None
        result = self._finish(ctx, net, val)
        self.supernet = net  # the trained supernet (its BatchNorm recalibrated for the result)
        return result

    def _step(self, ctx: SearchContext, forward: ThresholdForward, t_star: float | None, loop: Loop, batch) -> Step:
        """Eq. 9 (or the target penalty) on one batch; the dropout warm-up has no runtime term."""
        opts: SinglePathOptions = self.options
        x, y = batch
        x, y = x.to(ctx.accelerator, non_blocking=True), y.to(ctx.accelerator, non_blocking=True)
        warm = loop.state.epoch < opts.warmup
        logits = loop.module(x, opts.keep_prob if warm else 1.0)
        decisions = forward.decisions
        ce = F.cross_entropy(logits, y, label_smoothing=opts.label_smoothing)
        if warm:  # runtime term off during the dropout warm-up; log the hard R of the current choice
            loss = ce
            with torch.no_grad():
                r = ctx.runtime(forward.net.decide(1.0))
        else:
            r = ctx.runtime(decisions)
            if t_star is None:  # Eq. 9
                loss = ce + opts.lambda_ * opts.lambda_scale * torch.log(r)
            else:  # target mode: a squared log-distance to T*, both sides (docs/quality.md)
                loss = ce + opts.target_weight * target_penalty(r, t_star, opts.target_scale)
        ind = [[int(v) for v in torch.cat(d).tolist()] for d in decisions] if not warm else None
        weight = 0.0 if warm else opts.lambda_ * opts.lambda_scale if t_star is None else opts.target_weight
        # R is the same on every rank (the same thresholds), so its mean is R itself
        return Step(loss, means={"ce": ce, "R": r}, info={"lambda": weight, "warmup": warm, "indicators": ind})

    def _checkpoint_entries(self, ctx: SearchContext, loop: Loop) -> dict[str, Any]:
        """What a single-path checkpoint holds beyond the loop's part (``state`` repeats the epoch and
        step, where readers of the format found them before the common loop)."""
        return {"space": ctx.space.name, "state": {"epoch": loop.state.epoch, "step": loop.state.step},
                "options": asdict(self.options)}

    def _restore(self, ctx: SearchContext, ckpt: dict) -> None:
        if ckpt.get("space") != ctx.space.name:
            raise SpnasError(f"{ctx.run.checkpoint_path}: a {ckpt.get('format')} checkpoint of space "
                             f"{ckpt.get('space')!r}; this run is {CHECKPOINT_FORMAT} on {ctx.space.name!r}")
        for key in ("epoch", "step"):  # a checkpoint written before the common loop kept them in 'state' only
            ckpt.setdefault(key, ckpt["state"][key])

    def _finish(self, ctx, net: Supernet, val) -> SearchResult:
        opts: SinglePathOptions = self.options
        readout = net.read_arch()
        arch, changed = readout, 0
        if opts.target is not None:
            arch, changed = project(ctx.runtime, net.superkernels, opts.target)
        bn_batches = [b for _, b in zip(range(opts.bn_batches), _bn_loader(ctx, opts))]
        recalibrate_bn(net, bn_batches, arch=arch, device=ctx.accelerator)
        acc = evaluate(net, val, ctx.accelerator, arch=arch, dist=ctx.dist)
        params, macs = ctx.space.cost(arch)
        # the trained supernet, reusable by the sampling strategies (--supernet PATH); rank 0 writes it
        ctx.dist.check_same(checksum(net), "the supernet's weights and thresholds after the search")
        supernet = ctx.run.path / SUPERNET_FILE
        if ctx.dist.is_main:
            save_supernet(supernet, net, "single-path", {"epochs": opts.epochs, "seed": ctx.seed})
        details: dict[str, Any] = {"epochs": opts.epochs, "seed": ctx.seed, "supernet": str(supernet),
                                   "lambda": opts.lambda_, "lambda_scale": opts.lambda_scale}
        if opts.target is not None:
            details.update(target=opts.target, target_weight=opts.target_weight, target_scale=opts.target_scale,
                           readout_arch=str(readout),
                           readout_latency=ctx.runtime.predict(readout), layers_changed_by_projection=changed)
        return SearchResult(self.name, ctx.space.name, arch, ctx.runtime.predict(arch), ctx.runtime.units,
                            acc, params, macs, ctx.run.path, details=details)


def _threshold_schedule(kind: str, total: int, warm: int):
    """The thresholds' rate factor at step ``s`` of ``total`` (``warm`` of them in the warm-up)."""
    if kind == "constant":
        return lambda s: 1.0
    start = 0 if kind == "cosine" else warm  # settle: full rate until the runtime term starts
    span = max(total - start, 1)
    return lambda s: 1.0 if s < start else 0.5 * (1 + math.cos(math.pi * min(s - start, span) / span))


def threshold_schedule(kind: str, epochs: int, warmup: int) -> Schedule:
    """:func:`_threshold_schedule` over ``epochs`` epochs (``warmup`` of them in the warm-up), as a
    schedule of the loop."""
    return lambda step, steps_per_epoch: _threshold_schedule(kind, epochs * steps_per_epoch,
                                                             warmup * steps_per_epoch)(step)


def target_penalty(r: torch.Tensor, t_star: float, scale: float) -> torch.Tensor:
    """``(log(R / T*) / scale)^2``: the runtime term of target mode.

    Two-sided, as TuNAS's absolute-value reward (Bender et al. 2020): above T* it pushes towards
    smaller ops, below it pulls back towards larger ones, so the search approaches T* from either
    side instead of overshooting it. Squared, so the push fades near T* and the thresholds settle
    where cross-entropy balances it (a few per cent above T*) rather than dithering around it.
    """
    return (torch.log(r / t_star) / scale) ** 2


def _bn_loader(ctx: SearchContext, opts: SinglePathOptions) -> DataLoader:
    gen = torch.Generator().manual_seed(ctx.seed + 7)
    return DataLoader(ctx.data.train, batch_size=opts.batch_size, shuffle=True, generator=gen)


@hookimpl
def spnas_register_strategies(register):
    register(SinglePathStrategy.name, SinglePathStrategy)


@hookimpl
def spnas_register_checkpoint_formats(register):
    # a run's checkpoint.pt: the supernet's weights and thresholds, BatchNorm statistics as trained
    register(CHECKPOINT_FORMAT, CheckpointFormat("single-path search checkpoint", holds="supernet"))
