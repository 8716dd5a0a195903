"""The spnas plugin: Optuna's TPE and NSGA-II samplers as ``optuna-tpe`` and ``optuna-nsga2``.

Found through the ``spnas`` entry-point group (``optuna = "spnas_optuna.plugin"``); both
strategies run on spnas's sampling driver like the built-in ``random``, ``evolution`` and
``rl`` (shared supernet, budget, hard latency constraint, deduplication, checkpoints):

* ``optuna-tpe``: single objective, maximise the supernet accuracy, with a ``TPESampler``
  seeded by the search seed; the latency enters only as the hard constraint.
* ``optuna-nsga2``: two objectives, maximise the accuracy and minimise the latency, with an
  ``NSGAIISampler``; the result's Pareto front is the driver's, and ``result.yaml`` also gives the
  size of the study's own front (``study_best_trials``).

How a study is stored, shared between processes and resumed: :mod:`spnas_optuna.study`.
"""

from __future__ import annotations

from dataclasses import dataclass

import optuna

from spnas.core.hookspecs import hookimpl
from spnas.searching.strategy import check_options, option
from spnas_optuna.study import OptunaOptions, OptunaStrategy, constraint_violation


@dataclass
class TPEOptions(OptunaOptions):
    startup_trials: int = option(10, "random candidates before TPE takes over (TPE's n_startup_trials)")
    multivariate: bool = option(True, "multivariate TPE: model the layers' choices jointly, not one by one")
    constant_liar: bool = option(False, "count trials still running in other processes as bad ones, so that "
                                        "processes sharing a --storage spread out")

    def __post_init__(self) -> None:
        super().__post_init__()
        check_options("optuna-tpe", [("startup_trials", self.startup_trials >= 1, ">= 1")], self)


class OptunaTPE(OptunaStrategy):
    """``--strategy optuna-tpe``: Optuna's TPE, maximising the supernet accuracy inside the constraint."""

    name = "optuna-tpe"
    Options = TPEOptions
    default_evaluations = 100
    directions = ("maximize",)

    def make_sampler(self, seed: int) -> optuna.samplers.BaseSampler:
        o: TPEOptions = self.options
        return optuna.samplers.TPESampler(n_startup_trials=o.startup_trials, multivariate=o.multivariate,
                                          constant_liar=o.constant_liar, seed=seed,
                                          constraints_func=constraint_violation)


@dataclass
class NSGA2Options(OptunaOptions):
    population: int = option(20, "candidates per generation (NSGA-II's population_size), >= 2")
    mutation_prob: float | None = option(None, "probability that a child redraws a layer's choice "
                                               "(default: 1 / the number of searchable layers)", metavar="P")
    crossover_prob: float = option(0.9, "probability that a child is a crossover of two parents", metavar="P")

    def __post_init__(self) -> None:
        super().__post_init__()
        check_options("optuna-nsga2", [
            ("population", self.population >= 2, ">= 2"),
            ("mutation_prob", self.mutation_prob is None or 0 <= self.mutation_prob <= 1, "in [0, 1]"),
            ("crossover_prob", 0 <= self.crossover_prob <= 1, "in [0, 1]"),
        ], self)


class OptunaNSGA2(OptunaStrategy):
    """``--strategy optuna-nsga2``: Optuna's NSGA-II on (accuracy up, latency down), inside the constraint."""

    name = "optuna-nsga2"
    Options = NSGA2Options
    default_evaluations = 100
    directions = ("maximize", "minimize")
    metric_names = ("accuracy", "latency")

    def make_sampler(self, seed: int) -> optuna.samplers.BaseSampler:
        o: NSGA2Options = self.options
        return optuna.samplers.NSGAIISampler(population_size=o.population, mutation_prob=o.mutation_prob,
                                             crossover_prob=o.crossover_prob, seed=seed,
                                             constraints_func=constraint_violation)

    def objectives(self, accuracy: float, latency: float) -> list[float]:
        return [accuracy, latency]


@hookimpl
def spnas_register_strategies(register):
    register(OptunaTPE.name, OptunaTPE)
    register(OptunaNSGA2.name, OptunaNSGA2)
