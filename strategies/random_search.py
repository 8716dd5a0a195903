"""Random search: uniform candidates inside the latency constraint (rejection sampling).

The Single-Path NAS paper's baseline (Sec. 4.2) draws random architectures with a Pixel 1
latency of 75-80 ms; ``spnas search --strategy random --latency-window 75 80 --device pixel1``
does the same on the shared supernet. Every candidate gets the same evaluation as in the other
sampling strategies.
"""

from __future__ import annotations

from dataclasses import dataclass

from spnas.space.arch import Architecture
from spnas.core.hookspecs import hookimpl
from spnas.searching.sampling import SamplingOptions, SamplingStrategy, Trial
from spnas.searching.strategy import check_options, option


@dataclass
class RandomOptions(SamplingOptions):
    max_draws: int = option(10_000, "random draws per candidate before the window is declared unreachable")

    def __post_init__(self) -> None:
        super().__post_init__()
        check_options("random", [("max_draws", self.max_draws >= 1, ">= 1")], self)


class RandomSearch(SamplingStrategy):
    """``--strategy random``: each candidate uniformly at random among those inside the constraint."""

    name = "random"
    Options = RandomOptions
    default_evaluations = 100

    def ask(self) -> Architecture:
        return self.sample_feasible(self.options.max_draws)

    def tell(self, trial: Trial) -> None:
        """Random search learns nothing."""


@hookimpl
def spnas_register_strategies(register):
    register(RandomSearch.name, RandomSearch)
