"""Every built-in strategy passes the contract that plugins run too (spnas.testing)."""

from __future__ import annotations

from spnas.testing import DeviceContract, SamplingStrategyContract, StrategyContract


class TestSinglePath(StrategyContract):
    strategy = "single-path"
    options = {"epochs": 2, "warmup_epochs": 1, "bn_batches": 2}
    interrupt_after = 30  # mid second epoch: the first epoch's checkpoint is there


class TestRandom(SamplingStrategyContract):
    strategy = "random"


class TestEvolution(SamplingStrategyContract):
    strategy = "evolution"
    options = {"population": 4, "parents": 2, "mutations": 2, "crossovers": 1}


class TestRL(SamplingStrategyContract):
    strategy = "rl"


class TestFlopsDevice(DeviceContract):
    device = "flops"
