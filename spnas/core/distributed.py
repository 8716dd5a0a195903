"""Data-parallel search under ``torchrun``: PyTorch's own process group and DistributedDataParallel.

spnas has no launcher and no communication code of its own. ``torchrun`` (or any launcher that
sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``) starts one
process per device; :func:`from_env` joins them into one ``torch.distributed`` process group
(gloo on the CPU, nccl on CUDA, one GPU per process). Then:

* the single-path search and the uniform supernet training wrap the supernet in
  ``DistributedDataParallel``: each rank draws its part of every batch from a
  ``DistributedSampler`` and DDP averages the gradients, so that weights and thresholds stay
  identical on every rank. BatchNorm statistics are computed over the whole batch of all ranks
  (:func:`sync_batchnorm`), so N ranks at batch B/N train as one process at batch B;
* sampling strategies run on rank 0 only; the candidates they ask are evaluated a batch at a time,
  one candidate per rank (:class:`ShardedEvaluation`);
* rank 0 alone writes the run directory; what it reads on ``--resume`` is broadcast to the others
  (:class:`MainRun`), so the run directory need not be shared between machines.

One process without ``torchrun`` is :data:`SINGLE`: every helper here then does the plain thing.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch
from torch import nn

from spnas.core.errors import SpnasError

#: the launcher's environment variables (as ``torchrun`` sets them)
ENV_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK")
#: how long a rank waits for the others in one collective before the process group gives up
TIMEOUT = datetime.timedelta(minutes=30)


class ReplicatedError(SpnasError):
    """An error rank 0 met and passed on to this rank (the CLI prints it once, on rank 0)."""


@dataclass(frozen=True)
class Distributed:
    """This process's place in the job: ``rank`` of ``world_size`` (``local_rank`` on its machine)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str = ""

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def __str__(self) -> str:
        return f"rank {self.rank} of {self.world_size} ({self.backend})" if self.enabled else "one process"

    # --- collectives (each a no-op, or the identity, for one process) -----------------------------
    def barrier(self) -> None:
        if self.enabled:
            torch.distributed.barrier()

    def broadcast(self, obj: Any = None) -> Any:
        """Rank 0's ``obj`` on every rank (pickled by ``broadcast_object_list``: ranks of one job trust each other)."""
        if not self.enabled:
            return obj
        box = [obj if self.is_main else None]
        torch.distributed.broadcast_object_list(box, src=0)
        return box[0]

    def gather(self, obj: Any) -> list[Any]:
        """Every rank's ``obj``, by rank, on every rank."""
        if not self.enabled:
            return [obj]
        out: list[Any] = [None] * self.world_size
        torch.distributed.all_gather_object(out, obj)
        return out

    def mean(self, values: Sequence[float]) -> list[float]:
        """The mean of each value over the ranks (one all-reduce)."""
        return [v / self.world_size for v in self.sum(values)]

    def sum(self, values: Sequence[float]) -> list[float]:
        """The sum of each value over the ranks (one all-reduce, in float64)."""
        if not self.enabled:
            return [float(v) for v in values]
        # nccl reduces GPU tensors only; gloo, CPU ones
        device = torch.device("cuda", self.local_rank) if self.backend == "nccl" else torch.device("cpu")
        t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=device)
        torch.distributed.all_reduce(t)
        return t.tolist()

    def from_main(self, fn: Callable[[], Any]) -> Any:
        """``fn()`` run on rank 0, its result broadcast to every rank; a :class:`SpnasError` it raises is
        raised on every rank (so that no rank waits for a message that will not come)."""
        if not self.enabled:
            return fn()
        if not self.is_main:
            kind, value = self.broadcast(None)
            if kind == "error":
                raise ReplicatedError(value)
            return value
        try:
            value = fn()
        except BaseException as exc:  # tell the others, then fail here as fn failed
            self.broadcast(("error", str(exc) if isinstance(exc, SpnasError) else f"{type(exc).__name__}: {exc}"))
            raise
        self.broadcast(("ok", value))
        return value

    def check_same(self, value: Any, what: str) -> None:
        """Raise on every rank if ranks hold different ``value``s (they must not: a bug or a broken setup)."""
        if not self.enabled:
            return
        values = self.gather(value)
        if any(v != values[0] for v in values):
            shown = ", ".join(f"rank {r}: {v!r}" for r, v in enumerate(values))
            raise (SpnasError if self.is_main else ReplicatedError)(f"the ranks disagree on {what} ({shown[:400]})")


SINGLE = Distributed()


def launched() -> bool:
    """Whether a launcher started this process as one of several (``WORLD_SIZE`` > 1)."""
    return _env_int("WORLD_SIZE", 1) > 1


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None:
        return default
    try:
        return int(raw)
    except ValueError:
        raise SpnasError(f"environment variable {name}={raw!r} is not an integer (set by torchrun)") from None


def from_env(accelerator: str) -> Distributed:
    """Join the launcher's process group (or :data:`SINGLE` without one).

    ``accelerator`` is ``"cpu"`` (gloo) or ``"cuda"`` (nccl; this process then uses GPU
    ``LOCAL_RANK``).
    """
    world = _env_int("WORLD_SIZE", 1)
    if world <= 1:
        return SINGLE
    missing = [v for v in (*ENV_VARS, "MASTER_ADDR", "MASTER_PORT") if v not in os.environ]
    if missing:
        raise SpnasError(f"WORLD_SIZE={world} but {', '.join(missing)} not set; launch with torchrun "
                         f"(see docs/scaling.md)")
    rank, local = _env_int("RANK", 0), _env_int("LOCAL_RANK", 0)
    if not 0 <= rank < world:
        raise SpnasError(f"RANK={rank} is outside [0, WORLD_SIZE={world})")
    if not torch.distributed.is_available():
        raise SpnasError("this PyTorch build has no torch.distributed; run one process")
    backend = "nccl" if accelerator == "cuda" else "gloo"
    if accelerator == "cuda":
        if local >= torch.cuda.device_count():
            raise SpnasError(f"LOCAL_RANK={local} but this machine has {torch.cuda.device_count()} CUDA device(s); "
                             f"give torchrun --nproc_per_node <= the number of GPUs")
        torch.cuda.set_device(local)
    if not torch.distributed.is_initialized():
        kwargs = {"device_id": torch.device("cuda", local)} if accelerator == "cuda" else {}
        torch.distributed.init_process_group(backend, timeout=TIMEOUT, **kwargs)
    return Distributed(rank, world, local, backend)


def shutdown(d: Distributed) -> None:
    """Leave the process group (every rank, at the end of its command). A barrier first, so that no
    rank tears down while a peer still has a collective in flight; an error here (a peer died) is
    not worth reporting over the error that killed the peer."""
    if not (d.enabled and torch.distributed.is_initialized()):
        return
    try:
        d.barrier()
    except Exception:
        pass
    torch.distributed.destroy_process_group()


def device_of(d: Distributed, accelerator: str) -> torch.device:
    """Where this rank trains: its own GPU under nccl, else ``accelerator``."""
    return torch.device("cuda", d.local_rank) if accelerator == "cuda" and d.enabled else torch.device(accelerator)


# --- data --------------------------------------------------------------------------------------------
def per_rank_batch(d: Distributed, batch_size: int) -> int:
    """Each rank's part of a global batch of ``batch_size`` (which must divide evenly)."""
    if batch_size % d.world_size:
        raise SpnasError(f"--batch-size {batch_size} does not divide among {d.world_size} processes; "
                         f"give a multiple of {d.world_size}")
    return batch_size // d.world_size


class EpochSampler(torch.utils.data.DistributedSampler):
    """``DistributedSampler`` with spnas's permutation of an epoch.

    The permutation is the one a one-process spnas drew before there were ranks (a shuffling
    ``DataLoader`` whose generator was seeded with ``seed * 1000 + epoch``: one 64-bit draw for the
    loader's own seed, then ``randperm``), so that seeded one-process runs still see their data in
    the same order. The ranks then split it by ``DistributedSampler``'s rule.
    """

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        torch.empty((), dtype=torch.int64).random_(generator=g)
        indices = torch.randperm(len(self.dataset), generator=g).tolist()[: self.total_size]
        return iter(indices[self.rank:self.total_size:self.num_replicas])


def train_loader(dataset, batch_size: int, seed: int, d: Distributed = SINGLE, *, workers: int = 0,
                 pin_memory: bool = False):
    """Shuffled batches of this rank's shard of ``dataset`` (last partial batch dropped).

    ``batch_size`` is the global batch; each rank loads ``batch_size / world_size`` images. Call
    ``loader.sampler.set_epoch(epoch)`` before each epoch: the order of an epoch is then the
    permutation seeded with ``seed * 1000 + epoch`` on every rank (:class:`EpochSampler`), and rank r
    takes images r, r + N, r + 2N, ... of it, so that step k of N ranks sees the images step k of
    one process sees (``DistributedSampler``'s own rule; one process is the case N = 1).
    """
    from torch.utils.data import DataLoader

    sampler = EpochSampler(dataset, num_replicas=d.world_size, rank=d.rank, shuffle=True, seed=seed * 1000,
                           drop_last=True)
    # a private generator: the loader's own seed draw must not consume the global RNG stream
    return DataLoader(dataset, batch_size=per_rank_batch(d, batch_size), sampler=sampler, drop_last=True,
                      generator=torch.Generator().manual_seed(seed), num_workers=workers,
                      persistent_workers=workers > 0, pin_memory=pin_memory)


def shard(dataset, d: Distributed):
    """Rank r's share of ``dataset`` for evaluation: items r, r + N, ... (every item exactly once)."""
    if not d.enabled:
        return dataset
    from torch.utils.data import Subset

    return Subset(dataset, range(d.rank, len(dataset), d.world_size))


# --- DDP ---------------------------------------------------------------------------------------------
def wrap(module: nn.Module, d: Distributed, device: torch.device, *, find_unused_parameters: bool = False) -> nn.Module:
    """``module`` in ``DistributedDataParallel`` (itself for one process).

    DDP copies rank 0's parameters and buffers to every rank once, here; after that every rank
    applies the same averaged gradients. Buffers are not broadcast at each step: with
    :func:`sync_batchnorm` every rank computes the same statistics.
    """
    if not d.enabled:
        return module
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(module, device_ids=ids, forward_sync_buffers=False,
                                   find_unused_parameters=find_unused_parameters)


class _AllReduceSum(torch.autograd.Function):
    """``all_reduce(SUM)`` with its gradient (the sum of every rank's upstream gradient)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        out = x.clone()
        torch.distributed.all_reduce(out)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        out = grad.contiguous().clone()
        torch.distributed.all_reduce(out)
        return out


def synced_batch_norm(x: torch.Tensor, running_mean, running_var, weight, bias, factor: float,
                      eps: float) -> torch.Tensor:
    """Training-mode batch norm over the batch of every rank (two all-reduces: the mean, then the
    variance about it, as a two-pass variance; differentiable, so the gradient is the whole batch's).

    Running statistics are updated as ``F.batch_norm`` does: ``(1 - factor) * old + factor * new``,
    with the unbiased variance.
    """
    c = x.shape[1]
    dims = [0, *range(2, x.dim())]
    count = x.new_full((1,), x.numel() / c)
    total = _AllReduceSum.apply(torch.cat([x.sum(dims), count]))
    n = total[c].detach()
    mean = total[:c] / n
    shape = (1, c) + (1,) * (x.dim() - 2)
    centred = x - mean.view(shape)
    var = _AllReduceSum.apply((centred * centred).sum(dims)) / n
    y = centred * torch.rsqrt(var + eps).view(shape)
    if weight is not None:
        y = y * weight.view(shape) + bias.view(shape)
    if running_mean is not None:
        with torch.no_grad():
            running_mean.mul_(1 - factor).add_(mean.detach(), alpha=factor)
            running_var.mul_(1 - factor).add_(var.detach() * (n / (n - 1).clamp_min(1)), alpha=factor)
    return y


class sync_batchnorm:
    """Context manager: inside it, every BatchNorm of ``module`` in training mode normalises over the
    batch of all ranks (nothing changes for one process or in eval mode).

    Only around data-parallel training: sharded evaluation runs a different candidate on each
    rank, whose statistics must stay its own.
    """

    def __init__(self, module: nn.Module, d: Distributed):
        self.bns = [m for m in module.modules() if isinstance(m, nn.BatchNorm2d)] if d.enabled else []

    def __enter__(self) -> "sync_batchnorm":
        for m in self.bns:
            m.__dict__["sync_batchnorm"] = True
        return self

    def __exit__(self, *exc) -> None:
        for m in self.bns:
            m.__dict__.pop("sync_batchnorm", None)


def checksum(module: nn.Module) -> float:
    """A float summary of every parameter and buffer (ranks that drifted apart differ in it)."""
    with torch.no_grad():
        return float(sum(t.double().abs().sum() for t in (*module.parameters(), *module.buffers())))


# --- the run directory --------------------------------------------------------------------------------
class MainRun:
    """A :class:`~spnas.core.runs.RunDir` as every rank sees it: rank 0 writes it, the others write
    nothing, and a checkpoint rank 0 reads is broadcast to all (the other machines need no copy)."""

    def __init__(self, run, d: Distributed, path=None):
        from pathlib import Path

        self.run, self.dist = run, d
        self.path = Path(path) if run is None else run.path

    @property
    def checkpoint_path(self):
        return self.path / "checkpoint.pt"

    @property
    def log_path(self):
        return self.path / "log.jsonl"

    def has_checkpoint(self) -> bool:
        return bool(self.dist.from_main(self.checkpoint_path.is_file))

    def load_checkpoint(self) -> dict:
        return self.dist.from_main(self.run.load_checkpoint if self.run is not None else lambda: None)

    def __getattr__(self, name: str):
        """Writers (log, save_checkpoint, write_config, truncate_log, close, ...) act on rank 0 only."""
        attr = getattr(self.__dict__["run"], name) if self.__dict__["run"] is not None else None
        if self.__dict__["dist"].is_main:
            return attr
        return lambda *a, **k: None


# --- sharded candidate evaluation ---------------------------------------------------------------------
class ShardedEvaluation:
    """Evaluate candidates on every rank at once: rank 0 sends a batch of architectures, rank r
    evaluates items r, r + N, ... of it with its own evaluator, and rank 0 gathers the accuracies.

    Rank 0 calls :meth:`evaluate_many` (the driver's) and finally :meth:`stop`; the other ranks
    call :meth:`serve`, which returns what rank 0 passes to :meth:`stop`.
    """

    def __init__(self, evaluate: Callable, space, d: Distributed):
        self.evaluate, self.space, self.dist = evaluate, space, d

    def _share(self, archs: Sequence[str]) -> list[tuple[int, float]]:
        mine = [(i, float(self.evaluate(self.space.parse(a)))) for i, a in enumerate(archs)
                if i % self.dist.world_size == self.dist.rank]
        return [pair for part in self.dist.gather(mine) for pair in part]

    def evaluate_many(self, archs: Sequence) -> list[float]:
        keys = [str(a) for a in archs]
        self.dist.broadcast(("evaluate", keys))
        results = dict(self._share(keys))
        return [results[i] for i in range(len(keys))]

    def stop(self, outcome: Any = None, error: str | None = None) -> None:
        self.dist.broadcast(("stop", (outcome, error)))

    def serve(self) -> Any:
        while True:
            kind, payload = self.dist.broadcast(None)
            if kind == "evaluate":
                self._share(payload)
                continue
            outcome, error = payload
            if error is not None:
                raise ReplicatedError(f"rank 0 stopped the search: {error}")
            return outcome


def run_on_main(d: Distributed, fn: Callable[[], Any], pool: ShardedEvaluation) -> Any:
    """``fn()`` on rank 0 while the other ranks serve ``pool``; its result reaches every rank, and an
    error on rank 0 stops the others (a SpnasError as such; anything else named by its type)."""
    if not d.enabled:
        return fn()
    if not d.is_main:
        return pool.serve()
    try:
        result = fn()
    except BaseException as exc:
        pool.stop(error=str(exc) if isinstance(exc, SpnasError) else f"{type(exc).__name__}: {exc}")
        raise
    pool.stop(result)
    return result


__all__ = ["Distributed", "MainRun", "ReplicatedError", "SINGLE", "ShardedEvaluation", "checksum", "device_of", "from_env", "launched",
           "per_rank_batch", "run_on_main", "shard", "shutdown", "sync_batchnorm", "synced_batch_norm",
           "train_loader", "wrap"]
