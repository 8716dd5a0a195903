"""Train a derived network from scratch, and evaluate it.

After a search, the found architecture's standalone network (:class:`~spnas.supernet.builder.ChildNet`)
is trained from a fresh initialization, as the paper does with its ImageNet result (Sec. 4). A
run directory holds the resolved recipe, one log record per epoch, an atomic checkpoint per
epoch (``--resume`` continues from it and ends with the same weights as an uninterrupted run),
the final network as ``model.pt`` (format ``spnas-child-v1``, which ``spnas export`` and
``spnas eval`` read) and ``result.yaml``. Training runs on the common loop
(:mod:`spnas.training.loop`); what is this module's own is the step (augmentation, cross-entropy
with label smoothing), the per-epoch validation record, and the checkpoint's space, architecture
and recipe (``spnas-train-v1``).

Two recipes (:data:`RECIPES`); explicit values override a recipe's:

* ``default``: SGD with Nesterov momentum 0.9, lr 0.1 for batch 64 (scaled linearly with the
  batch size), weight decay 4e-5, label smoothing 0.1, a linear warm-up over the first epoch, then
  a cosine decay to 0, with random crops (and flips where the data set allows them). It trains the
  small spaces in a few CPU minutes.
* ``authors``: the MnasNet/Single-Path NAS ImageNet recipe (the authors' ``main.py``): RMSProp
  (decay 0.9, momentum 0.9, epsilon 1e-3), lr 0.016 per 256 images, weight decay 1e-5, label
  smoothing 0.1, 5 warm-up epochs, then lr x 0.97 every 2.4 epochs.

Example:
    >>> result = train(space, arch, data, TrainRecipe(epochs=10), RunDir("runs/train-x"))   # doctest: +SKIP
    >>> result["top1"]                                                                   # doctest: +SKIP
    0.9611
"""

from __future__ import annotations

import functools
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from spnas.space.arch import Architecture
from spnas.supernet.builder import ChildNet
from spnas.data.split import DataSplit, augment_batch
from spnas.core.checkpoints import CheckpointFormat
from spnas.core.errors import SpnasError
from spnas.core.hookspecs import hookimpl
from spnas.space.graph import SpaceGraph
from spnas.core.runs import RunDir, atomic_write_bytes
from spnas.training.loop import Checkpoint, EpochEnd, Loop, Optim, ParamGroup, Step

TRAIN_FORMAT = "spnas-train-v1"
CHILD_FORMAT = "spnas-child-v1"  # model.pt: one child network's weights, its space and architecture
MODEL_FILE = "model.pt"
OPTIMIZERS = ("sgd", "rmsprop", "adamw")
SCHEDULES = ("cosine", "exponential", "constant")


@dataclass(frozen=True)
class TrainRecipe:
    """How a child network is trained (see the module docstring for the two presets).

    ``lr`` is for a batch of ``lr_batch`` images; the learning rate used is ``lr * batch_size /
    lr_batch`` (the linear scaling rule), so changing the batch size keeps the recipe.
    """

    epochs: int = 30
    batch_size: int = 64
    optimizer: str = "sgd"
    lr: float = 0.1
    lr_batch: int = 64
    momentum: float = 0.9
    weight_decay: float = 4e-5
    label_smoothing: float = 0.1
    warmup_epochs: float = 1.0
    schedule: str = "cosine"
    decay_rate: float = 0.97  # exponential schedule: lr x decay_rate every decay_epochs
    decay_epochs: float = 2.4
    augment: bool = True

    def __post_init__(self) -> None:
        def bad(name: str, allowed: str) -> SpnasError:
            return SpnasError(f"--{name.replace('_', '-')} {getattr(self, name)!r} is not allowed; use {allowed}")

        for name in ("epochs", "batch_size", "lr_batch"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise bad(name, "an integer >= 1")
        for name in ("lr", "decay_epochs"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
                raise bad(name, "a number > 0")
        for name in ("momentum", "weight_decay", "warmup_epochs"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise bad(name, "a number >= 0")
        if not 0 <= self.label_smoothing < 1:
            raise bad("label_smoothing", "a number in [0, 1)")
        if not 0 < self.decay_rate <= 1:
            raise bad("decay_rate", "a number in (0, 1]")
        if self.optimizer not in OPTIMIZERS:
            raise bad("optimizer", " or ".join(OPTIMIZERS))
        if self.schedule not in SCHEDULES:
            raise bad("schedule", " or ".join(SCHEDULES))

    @property
    def scaled_lr(self) -> float:
        return self.lr * self.batch_size / self.lr_batch


RECIPES: dict[str, dict[str, Any]] = {
    "default": {},
    "authors": {"optimizer": "rmsprop", "lr": 0.016, "lr_batch": 256, "momentum": 0.9, "weight_decay": 1e-5,
                "label_smoothing": 0.1, "warmup_epochs": 5.0, "schedule": "exponential", "decay_rate": 0.97,
                "decay_epochs": 2.4},
}


def recipe(name: str = "default", **overrides: Any) -> TrainRecipe:
    """A preset with explicit values on top (``None`` values are ignored)."""
    if name not in RECIPES:
        raise SpnasError(f"--recipe {name!r} is not known; allowed: {', '.join(RECIPES)}")
    return TrainRecipe(**{**RECIPES[name], **{k: v for k, v in overrides.items() if v is not None}})


def param_groups(model: nn.Module, weight_decay: float) -> list[ParamGroup]:
    """Weight decay on weights only: BatchNorm parameters and biases are not decayed."""
    decay = [p for n, p in model.named_parameters() if p.ndim > 1]
    no_decay = [p for n, p in model.named_parameters() if p.ndim <= 1]
    return [ParamGroup(decay, weight_decay), ParamGroup(no_decay, 0.0)]


def optim(r: TrainRecipe) -> Optim:
    """The recipe's optimizer (at the linearly scaled rate) and schedule (:func:`lr_factor`)."""
    return Optim(r.optimizer, r.scaled_lr, r.momentum, schedule=functools.partial(lr_factor, r))


def make_optimizer(model: nn.Module, r: TrainRecipe) -> torch.optim.Optimizer:
    """The optimizer :func:`train` uses for ``model``."""
    return optim(r).build(param_groups(model, r.weight_decay))


def lr_factor(r: TrainRecipe, step: int, steps_per_epoch: int) -> float:
    """The learning-rate multiplier at ``step``: linear warm-up, then the schedule."""
    epoch = step / steps_per_epoch
    if r.warmup_epochs > 0 and epoch < r.warmup_epochs:
        return (step + 1) / (r.warmup_epochs * steps_per_epoch)
    if r.schedule == "constant":
        return 1.0
    if r.schedule == "exponential":
        return r.decay_rate ** math.floor((epoch - r.warmup_epochs) / r.decay_epochs)
    total = r.epochs - r.warmup_epochs
    progress = min(max((epoch - r.warmup_epochs) / total, 0.0), 1.0) if total > 0 else 1.0
    return 0.5 * (1 + math.cos(math.pi * progress))


@torch.no_grad()
def topk_accuracy(model: nn.Module, batches: Iterable, device: torch.device | str = "cpu",
                  ks: tuple[int, ...] = (1, 5)) -> dict[int, float]:
    """Top-k accuracy of ``model`` (in eval mode) for each k (capped at the class count)."""
    was_training = model.training
    model.eval()
    correct = {k: 0 for k in ks}
    total = 0
    for x, y in batches:
        logits = model(x.to(device))
        y = y.to(device)
        ranked = logits.topk(min(max(ks), logits.shape[1]), dim=1).indices
        for k in ks:
            correct[k] += int((ranked[:, :k] == y[:, None]).any(dim=1).sum())
        total += len(y)
    model.train(was_training)
    if total == 0:
        raise SpnasError("the evaluation set is empty; raise --val-fraction")
    return {k: correct[k] / total for k in ks}


def save_child(path: str | Path, model: ChildNet, info: dict | None = None) -> Path:
    """Write a trained child network (``spnas-child-v1``; read by ``spnas eval`` and ``spnas export``)."""
    import io

    buf = io.BytesIO()
    torch.save({"format": CHILD_FORMAT, "space": model.space.name, "arch": str(model.arch),
                "num_classes": model.space.spec.num_classes, "info": dict(info or {}),
                "model": {k: v.detach().cpu() for k, v in model.state_dict().items()}}, buf)
    atomic_write_bytes(Path(path), buf.getvalue())
    return Path(path)


def _loader(ds: Dataset, batch_size: int) -> DataLoader:
    """Evaluation batches, in order."""
    return DataLoader(ds, batch_size=batch_size)


def train(space: SpaceGraph, arch: Architecture, data: DataSplit, r: TrainRecipe, run: RunDir, *, seed: int = 0,
          device: torch.device | str = "cpu", resume: bool = False, progress: bool = True,
          eval_batch_size: int = 256) -> dict[str, Any]:
    """Train ``arch``'s child network from scratch; returns the content of ``result.yaml``.

    Writes ``checkpoint.pt`` after every epoch and ``model.pt`` at the end. With ``resume=True``
    training continues from the checkpoint (which must hold the same architecture and space).
    """
    device = torch.device(device)
    arch = space.validate(arch)
    torch.manual_seed(seed)
    model = ChildNet(space, arch).to(device)
    loop = Loop(model, data.train, optim(r), param_groups(model, r.weight_decay), epochs=r.epochs,
                batch_size=r.batch_size, run=run, seed=seed, device=device, progress=progress,
                name=f"training {space.name}")
    val = _loader(data.val, eval_batch_size)
    aug = torch.Generator()

    def step(loop: Loop, batch) -> Step:
        x, y = batch
        if r.augment:
            x = augment_batch(x, hflip=data.hflip, generator=aug)
        return Step(F.cross_entropy(loop.module(x.to(device)), y.to(device), label_smoothing=r.label_smoothing))

    def epoch_start(loop: Loop) -> None:
        aug.manual_seed(seed * 1000 + loop.state.epoch + 500)  # the augmentation survives a resume

    def epoch_end(loop: Loop, end: EpochEnd) -> None:
        acc = topk_accuracy(model, val, device)
        loop.run.log({"epoch": end.epoch, "step": end.step, "train_loss": end.loss,
                      "lr": loop.optimizer.param_groups[0]["lr"], "val_top1": acc[1], "val_top5": acc[5]})

    def same_run(ckpt: dict) -> None:
        if ckpt.get("arch") != str(arch) or ckpt.get("space_signature") != space.signature():
            raise SpnasError(f"{run.checkpoint_path}: trains {ckpt.get('arch')!r} on space {ckpt.get('space')!r}, "
                             f"not {str(arch)!r} on {space.name!r}; resume with the same architecture and space")

    entries = {"space": space.name, "space_signature": space.signature(), "arch": str(arch),
               "num_classes": space.spec.num_classes, "recipe": asdict(r)}
    state = loop.fit(step, Checkpoint(TRAIN_FORMAT, lambda loop: entries, restore=same_run),
                     on_epoch_start=epoch_start, on_epoch_end=epoch_end, resume=resume)
    params = sum(p.numel() for p in model.parameters())
    result: dict[str, Any] = {"kind": "train", "space": space.name, "arch": str(arch), "data": data.name,
                              "epochs": r.epochs, "steps": state.step, "train_seconds": round(state.seconds, 3),
                              "params": params, "macs": space.cost(arch)[1]}
    acc = topk_accuracy(model, val, device)
    result.update(top1=acc[1], top5=acc[5])
    if data.test is not None:
        test = topk_accuracy(model, _loader(data.test, eval_batch_size), device)
        result.update(test_top1=test[1], test_top5=test[5])
    save_child(run.path / MODEL_FILE, model.cpu(), {"recipe": asdict(r), "seed": seed, "data": data.name,
                                                     "top1": result["top1"]})
    model.to(device)
    return result


def evaluate_child(model: nn.Module, data: DataSplit, device: torch.device | str = "cpu",
                   batch_size: int = 256) -> dict[str, float]:
    """Top-1 and top-5 of a trained network on the validation set (and the test set, if any)."""
    out = {}
    acc = topk_accuracy(model, _loader(data.val, batch_size), device)
    out.update(val_top1=acc[1], val_top5=acc[5])
    if data.test is not None:
        acc = topk_accuracy(model, _loader(data.test, batch_size), device)
        out.update(test_top1=acc[1], test_top5=acc[5])
    return out


@hookimpl
def spnas_register_checkpoint_formats(register):
    register(CHILD_FORMAT, CheckpointFormat("child network", holds="child"))
    register(TRAIN_FORMAT, CheckpointFormat("child network training checkpoint", holds="child"))

