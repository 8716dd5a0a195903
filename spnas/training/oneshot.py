"""The shared supernet of the sampling strategies: uniform single-path training and its file.

Single Path One-Shot (Guo et al. 2020, Sec. 3.2) trains the supernet by sampling one path per
step, each layer's choice uniformly at random, so that every candidate inherits weights trained
about as much as any other (with SGD, as SPOS; see :class:`UniformTraining` for why not Adam). spnas trains the same :class:`~spnas.supernet.builder.Supernet` (the
SuperMBConv superkernels of the single-path search) this way; a candidate is then run on its
sliced weights (fixed-choice mode). The trained supernet is written as ``supernet.pt`` in the run
directory, and any strategy can reuse it with ``--supernet PATH``; a single-path search writes a
``supernet.pt`` of the same format, so its weights can be reused the same way.

Example:
    >>> net = train_uniform(space, data, UniformTraining(epochs=1), run)        # doctest: +SKIP
    >>> net = load_supernet("runs/evolution-tiny/supernet.pt", space)            # doctest: +SKIP
"""

from __future__ import annotations

import math
import random
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from spnas.supernet.builder import Supernet
from spnas.core.distributed import SINGLE, Distributed, MainRun, checksum, sync_batchnorm, train_loader, wrap
from spnas.data.split import DataSplit
from spnas.core.checkpoints import CheckpointFormat
from spnas.core.errors import SpnasError
from spnas.core.hookspecs import hookimpl
from spnas.space.graph import SpaceGraph
from spnas.core.runs import RunDir, atomic_write_bytes, load_checkpoint
from spnas.core.rng import _listify, _tuplify

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
    optimizer = torch.optim.SGD(net.weight_parameters(), lr=opts.lr, momentum=0.9, nesterov=True,
                                weight_decay=opts.weight_decay)
    loader = train_loader(data.train, opts.batch_size, seed, dist, workers=loader_workers,
                          pin_memory=device.type == "cuda")
    if len(loader) == 0:
        raise SpnasError(f"--batch-size {opts.batch_size} is larger than the training set ({len(data.train)} images)")
    # a path leaves the other choices' weights (and skipped layers) without a gradient
    model = wrap(net, dist, device, find_unused_parameters=True)
    total = opts.epochs * len(loader)
    sched = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, total) / total)))
    paths = random.Random(seed)  # the uniform path of each step (the same on every rank)
    epoch = step = 0
    if resume and run.has_checkpoint():
        ckpt = run.load_checkpoint()
        if ckpt.get("format") == TRAINING_FORMAT:
            net.load_state_dict(ckpt["model"])
            optimizer.load_state_dict(ckpt["optimizer"])
            sched.load_state_dict(ckpt["scheduler"])
            paths.setstate(_tuplify(ckpt["paths"]))
            epoch, step = ckpt["epoch"], ckpt["step"]
            run.truncate_log(step)
    from tqdm.auto import tqdm

    bar = tqdm(total=total, initial=step, desc="supernet (uniform paths)", unit="step", disable=not progress,
               dynamic_ncols=True, leave=False)
    net.train()
    try:
        for epoch in range(epoch, opts.epochs):
            loader.sampler.set_epoch(epoch)  # the data order of an epoch survives a resume
            with sync_batchnorm(net, dist):
                for x, y in loader:
                    arch = space.random(paths)
                    loss = F.cross_entropy(model(x.to(device, non_blocking=True), arch=arch),
                                           y.to(device, non_blocking=True))
                    ce = dist.mean([float(loss.detach())])[0]  # the whole batch's: every rank stops together
                    if not math.isfinite(ce):
                        raise SpnasError(f"supernet training: the loss became {ce} at step {step}; lower --lr")
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
                    sched.step()
                    step += 1
                    bar.update(1)
                    bar.set_postfix(ce=f"{ce:.3f}", refresh=False)
            run.log({"phase": "supernet", "epoch": epoch + 1, "step": step, "ce": ce})
            run.save_checkpoint({
                "format": TRAINING_FORMAT, "epoch": epoch + 1, "step": step, "model": net.state_dict(),
                "optimizer": optimizer.state_dict(), "scheduler": sched.state_dict(),
                "paths": _listify(paths.getstate()), "options": asdict(opts),
            })
    finally:
        bar.close()
    if dist.is_main:
        save_supernet(final, net, "uniform", {"epochs": opts.epochs, "seed": seed, **asdict(opts)})
    dist.check_same(checksum(net), "the supernet's weights after training")
    return net


@hookimpl
def spnas_register_checkpoint_formats(register):
    register(SUPERNET_FORMAT, CheckpointFormat("supernet", holds="supernet", bn_as_trained=False))
    register(TRAINING_FORMAT, CheckpointFormat("uniform supernet training checkpoint", holds="supernet"))

