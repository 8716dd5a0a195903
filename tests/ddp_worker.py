"""Run under ``torchrun`` (or as one plain process) by tests/test_distributed.py: a few steps of the
single-path search and of uniform supernet training on a slice of digits, each rank writing what
it ended with (weights, thresholds, architecture) to OUT/<mode>-rank<r>.pt.

    python tests/ddp_worker.py OUT BATCH DTYPE [single-path|uniform ...]

DTYPE float64 makes the comparison exact up to rounding: in float32 the rounding differences of
two ways to sum a batch (one process, or two halves) are amplified by the BatchNorm of nearly
constant channels of this tiny network (1e-3 relative in some gradients after one step).
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import torch
from torch.utils.data import Subset

from spnas.data.datasets import load_data
from spnas.core.distributed import MainRun, from_env, shutdown
from spnas.space.graph import SpaceGraph
from spnas.latency.device import resolve_table
from spnas.training.oneshot import UniformTraining, train_uniform
from spnas.core.runs import RunDir
from spnas.latency.runtime import RuntimeModel
from spnas.searching.strategy import SearchContext

IMAGES = 256  # 2 epochs of 4 steps at batch 64


class Cast(torch.utils.data.Dataset):
    def __init__(self, data, dtype):
        self.data, self.dtype = data, dtype

    def __len__(self):
        return len(self.data)

    def __getitem__(self, i):
        x, y = self.data[i]
        return x.to(self.dtype), y


def main(out: Path, batch: int, dtype: torch.dtype, modes: list[str]) -> None:
    torch.set_num_threads(1)
    torch.set_default_dtype(dtype)
    d = from_env("cpu")
    space = SpaceGraph.load("tiny")
    data = load_data("digits", space.spec.resolution, space.spec.in_chs, seed=0, val_fraction=0.2)
    data = type(data)(data.name, Cast(Subset(data.train, range(IMAGES)), dtype),
                      Cast(Subset(data.val, range(100)), dtype), data.num_classes)
    try:
        for mode in modes:
            run_path = out / f"{mode}-{d.world_size}"
            if d.is_main and run_path.exists():  # left by an aborted launch that the test runs again
                shutil.rmtree(run_path)
            run = MainRun(RunDir(run_path) if d.is_main else None, d, path=run_path)
            if mode == "single-path":
                from spnas.core.registry import get_registry

                strategy = get_registry().get("strategy", "single-path").from_options(
                    {"epochs": 2, "batch_size": batch, "warmup_epochs": 1, "keep_prob": 0.7, "bn_batches": 2})
                ctx = SearchContext(space, data, RuntimeModel(space, resolve_table("flops", space)), run, seed=3, dist=d,
                                    progress=False)
                arch = str(strategy.search(ctx).arch)
                net = strategy.supernet
            else:
                net = train_uniform(space, data, UniformTraining(epochs=2, batch_size=batch), run, seed=3,
                                    progress=False, dist=d)
                arch = ""
            run.close()
            torch.save({"arch": arch, "state": net.state_dict(), "world": d.world_size},
                       out / f"{mode}-{d.world_size}-rank{d.rank}.pt")
    finally:
        shutdown(d)


if __name__ == "__main__":
    main(Path(sys.argv[1]), int(sys.argv[2]), getattr(torch, sys.argv[3]), sys.argv[4:])
