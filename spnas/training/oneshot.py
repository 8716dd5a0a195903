"""The shared supernet of the sampling strategies: uniform single-path training and its file.

Single Path One-Shot (Guo et al. 2020, Sec. 3.2) trains the supernet by sampling one path per
step, each layer's choice uniformly at random, so that every candidate inherits weights trained
about as much as any other (with SGD, as SPOS; see :class:`UniformTraining` for why not Adam). spnas trains the same :class:`~spnas.supernet.builder.Supernet` (the
SuperMBConv superkernels of the single-path search) this way; a candidate is then run on its
sliced weights (fixed-choice mode). The trained supernet is written as ``supernet.pt`` in the run
directory, and any strategy can reuse it with ``--supernet PATH``; a single-path search writes a
``supernet.pt`` of the same format, so its weights can be reused the same way. Training runs on the
common loop (:mod:`spnas.training.loop`); its own parts are the step on one uniform path and the
state of the path generator in the checkpoint (``spnas-uniform-training-v1``).

Example:
    >>> net = train_uniform(space, data, UniformTraining(epochs=1), run)        # doctest: +SKIP
    >>> net = load_supernet("runs/evolution-tiny/supernet.pt", space)            # doctest: +SKIP
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from spnas.supernet.builder import Supernet
from spnas.core.distributed import SINGLE, Distributed, MainRun
from spnas.data.split import DataSplit
from spnas.core.checkpoints import CheckpointFormat
from spnas.core.errors import SpnasError
from spnas.core.hookspecs import hookimpl
from spnas.space.graph import SpaceGraph
from spnas.core.runs import RunDir, atomic_write_bytes, load_checkpoint
from spnas.core.rng import _listify, _tuplify
from spnas.training.loop import Checkpoint, EpochEnd, Loop, Optim, ParamGroup, Step, cosine

SUPERNET_FORMAT = "spnas-supernet-v1"
TRAINING_FORMAT = "spnas-uniform-training-v1"
SUPERNET_FILE = "supernet.pt"


@dataclass(frozen=True)
class UniformTraining:
    """How the shared supernet is trained: one uniform path per step, SGD with Nesterov momentum
    0.9 and a cosine schedule, as SPOS (weight decay 4e-5 as theirs; lr 0.1 for batch 64).

    Not Adam. Measured on spnas-cifar with digits, 8 epochs: Adam (lr 1e-2 or 3e-3) left the
    cross-entropy at 2.3-2.7 and candidates at 10-25 % accuracy; SGD reached a cross-entropy of
    0.41 and candidates at 78-90 %. (A likely cause, not verified further: a weight slice off the
    sampled path gets a zero gradient, yet Adam's normalised momentum keeps moving it.)
    """

    epochs: int = 8
    batch_size: int = 64
    lr: float = 0.1
    weight_decay: float = 4e-5


def save_supernet(path: str | Path, net: Supernet, trained_by: str, info: dict | None = None) -> Path:
    """Write ``net``'s weights with what they fit: the space's name, signature and classes."""
    import io

    buf = io.BytesIO()
    torch.save({
        "format": SUPERNET_FORMAT, "space": net.space.name, "space_signature": net.space.signature(),
        "num_classes": net.space.spec.num_classes, "trained_by": trained_by, "info": dict(info or {}),
        "model": {k: v.detach().cpu() for k, v in net.state_dict().items()},
    }, buf)
    atomic_write_bytes(Path(path), buf.getvalue())
    return Path(path)


def load_supernet(path: str | Path, space: SpaceGraph, device: torch.device | str = "cpu") -> Supernet:
    """A supernet of ``space`` with the weights in ``path`` (loaded with ``weights_only=True``)."""
    path = Path(path)
    if not path.is_file():
        raise SpnasError(f"--supernet {path}: no such file (use the supernet.pt of a finished run)")
    state = load_checkpoint(path)
    if state.get("format") != SUPERNET_FORMAT:
        raise SpnasError(f"--supernet {path}: a {state.get('format')!r} file, not a supernet "
                         f"({SUPERNET_FORMAT}); use the supernet.pt of a finished run")
    if state.get("space_signature") != space.signature() or state.get("num_classes") != space.spec.num_classes:
        raise SpnasError(
            f"--supernet {path}: trained on space {state.get('space')!r} with {state.get('num_classes')} classes "
            f"(signature {state.get('space_signature')}); this search is on {space.name!r} with "
            f"{space.spec.num_classes} classes (signature {space.signature()})")
    net = Supernet(space)
    try:
        net.load_state_dict(state["model"])
    except (RuntimeError, KeyError) as exc:
        raise SpnasError(f"--supernet {path}: weights do not fit space {space.name!r} ({str(exc)[:160]})") from None
    return net.to(device)


def train_uniform(space: SpaceGraph, data: DataSplit, opts: UniformTraining, run: RunDir | MainRun, *, seed: int = 0,
                  device: torch.device | str = "cpu", resume: bool = False, progress: bool = True,
                  dist: Distributed = SINGLE, loader_workers: int = 0) -> Supernet:
    """Train a supernet with one uniformly sampled path per step; returns it and writes ``supernet.pt``.

    A checkpoint is written to the run directory after every epoch; with ``resume=True`` training
    continues from it (or is skipped when ``supernet.pt`` is already there). Under ``torchrun``
    (``dist``) the supernet is trained with DistributedDataParallel, each rank on its shard of
    every batch, every rank on the same path; rank 0 writes the files.
    """
    device = torch.device(device)
    run = run if isinstance(run, MainRun) else MainRun(run, dist)
    final = run.path / SUPERNET_FILE
    if resume and dist.from_main(final.is_file):
        net = Supernet(space)
        net.load_state_dict(dist.from_main(lambda: load_supernet(final, space).state_dict()))
        return net.to(device)
    torch.manual_seed(seed)
    net = Supernet(space).to(device)
    # a path leaves the other choices' weights (and skipped layers) without a gradient
    loop = Loop(net, data.train, Optim("sgd", opts.lr, momentum=0.9, schedule=cosine(opts.epochs)),
                [ParamGroup(net.weight_parameters(), opts.weight_decay)], epochs=opts.epochs,
                batch_size=opts.batch_size, run=run, seed=seed, device=device, dist=dist,
                find_unused_parameters=True, loader_workers=loader_workers, progress=progress,
                name="supernet (uniform paths)")
    paths = random.Random(seed)  # the uniform path of each step (the same on every rank)

    def step(loop: Loop, batch) -> Step:
        x, y = batch
        arch = space.random(paths)
        return Step(F.cross_entropy(loop.module(x.to(device, non_blocking=True), arch=arch),
                                    y.to(device, non_blocking=True)))

    def epoch_end(loop: Loop, end: EpochEnd) -> None:
        loop.run.log({"phase": "supernet", "epoch": end.epoch, "step": end.step, "ce": end.last.loss})

    def restore(ckpt: dict) -> None:
        paths.setstate(_tuplify(ckpt["paths"]))

    # another format in checkpoint.pt (the sampling driver's, written once training is done): start afresh
    checkpoint = Checkpoint(TRAINING_FORMAT, lambda loop: {"paths": _listify(paths.getstate()),
                                                           "options": asdict(opts)},
                            restore=restore, other_formats="ignore")
    loop.fit(step, checkpoint, on_epoch_end=epoch_end, resume=resume)
    if dist.is_main:
        save_supernet(final, net, "uniform", {"epochs": opts.epochs, "seed": seed, **asdict(opts)})
    return net


@hookimpl
def spnas_register_checkpoint_formats(register):
    register(SUPERNET_FORMAT, CheckpointFormat("supernet", holds="supernet", bn_as_trained=False))
    register(TRAINING_FORMAT, CheckpointFormat("uniform supernet training checkpoint", holds="supernet"))

