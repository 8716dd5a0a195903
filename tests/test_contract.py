"""Every built-in strategy passes the contract that plugins run too (spnas.testing)."""

from __future__ import annotations

import pytest

from spnas.testing import DeviceContract, SamplingStrategyContract, StrategyContract


@pytest.mark.slow
class TestSinglePath(StrategyContract):
    strategy = "single-path"
    options = {"epochs": 2, "warmup_epochs": 1, "bn_batches": 2}
    # 512 training images at batch 64: records 1-8 are epoch 1's steps, 9 its end, 10-17 epoch 2's
    # steps; the run is cut at record 14, mid second epoch: the first epoch's checkpoint is there
    interrupt_after = 13


class TestRandom(SamplingStrategyContract):
    strategy = "random"


class TestEvolution(SamplingStrategyContract):
    strategy = "evolution"
    options = {"population": 4, "parents": 2, "mutations": 2, "crossovers": 1}


class TestRL(SamplingStrategyContract):
    strategy = "rl"


class TestFlopsDevice(DeviceContract):
    device = "flops"
