"""Evaluate candidates on the shared supernet (Single Path One-Shot, Guo et al. 2020, Sec. 3.3).

A candidate runs on the supernet's sliced weights (fixed-choice mode). The BatchNorm statistics
the supernet accumulated while it trained many paths do not fit any one of them, so, as SPOS
does, each candidate first gets its statistics reset and recomputed over a few training batches
(the same batches for every candidate, so that candidates are compared on equal terms); then its
top-1 accuracy is measured on the validation set. Results are cached by architecture string.

Example:
    >>> evaluate = SupernetEvaluator(net, data, bn_batches=20)           # doctest: +SKIP
    >>> evaluate(space.parse("k3e3 k5e6 | skip k3e3"))                    # doctest: +SKIP
    0.8472
"""

from __future__ import annotations

from typing import Callable

import torch
from torch.utils.data import DataLoader, TensorDataset

from spnas.space.arch import Architecture
from spnas.supernet.builder import Supernet, recalibrate_bn
from spnas.data.split import DataSplit
from spnas.core.errors import SpnasError

#: anything that maps a candidate to its accuracy (the driver's view of an evaluator; tests use
#: synthetic objectives with a known optimum)
Evaluate = Callable[[Architecture], float]


class SupernetEvaluator:
    """Validation accuracy of candidates on a supernet's shared weights, after BN recalibration."""

    def __init__(self, net: Supernet, data: DataSplit, *, bn_batches: int = 20, batch_size: int = 64,
                 seed: int = 0, device: torch.device | str = "cpu", val_batch_size: int = 256):
        if bn_batches < 1:
            raise SpnasError(f"--bn-batches {bn_batches} is not allowed; use >= 1")
        self.net = net.to(device)
        self.device = torch.device(device)
        gen = torch.Generator().manual_seed(seed + 7)
        loader = DataLoader(data.train, batch_size=batch_size, shuffle=True, generator=gen)
        self.bn_batches = [x for (x, _), _ in zip(loader, range(bn_batches))]
        loader = DataLoader(data.val, batch_size=val_batch_size)
        # a validation set held in memory is batched once; one read from files (or resized on
        # access, e.g. CIFAR-10 at 224x224) is streamed batch by batch for every candidate
        self.val = list(loader) if isinstance(data.val, TensorDataset) else loader
        if len(data.val) == 0:
            raise SpnasError("the validation set is empty; raise --val-fraction")
        self.cache: dict[str, float] = {}

    @torch.no_grad()
    def __call__(self, arch: Architecture) -> float:
        key = str(arch)
        if key not in self.cache:
            recalibrate_bn(self.net, [(x,) for x in self.bn_batches], arch=arch, device=self.device)
            self.net.eval()
            correct = total = 0
            for x, y in self.val:
                logits = self.net(x.to(self.device), arch=arch)
                correct += int((logits.argmax(1) == y.to(self.device)).sum())
                total += len(y)
            self.cache[key] = correct / total
        return self.cache[key]
