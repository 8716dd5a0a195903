"""Evolutionary search as in Single Path One-Shot (Guo et al. 2020, Sec. 3.3 and Algorithm 1).

Generation 0 is ``population`` random candidates inside the latency constraint. Each later
generation is built from the ``parents`` best candidates evaluated so far: ``mutations``
children that redraw each layer's choice with probability ``mutation_prob``, and ``crossovers``
children that take each layer from one of two parents; a child outside the constraint or seen
before is redrawn (at most ``max_redraws`` times the number wanted, as SPOS's ``max_iters``), and
random candidates top the generation up to ``population``. Defaults are SPOS's: population 50,
20 generations, top 10 as parents, 25 mutations with probability 0.1, 25 crossovers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from spnas.space.arch import Architecture
from spnas.core.errors import SpnasError
from spnas.core.hookspecs import hookimpl
from spnas.searching.sampling import INFEASIBLE, SamplingOptions, SamplingStrategy, Trial
from spnas.searching.strategy import check_options, option


@dataclass
class EvolutionOptions(SamplingOptions):
    population: int = option(50, "candidates per generation")
    generations: int = option(20, "generations, the random first one included")
    parents: int = option(10, "best candidates so far that parent the next generation (top-k)")
    mutations: int = option(25, "mutated children per generation")
    crossovers: int = option(25, "crossover children per generation")
    mutation_prob: float = option(0.1, "probability that a mutation redraws a layer's choice")
    max_redraws: int = option(10, "tries per wanted child before giving up (SPOS: 10)")

    def __post_init__(self) -> None:
        super().__post_init__()
        check_options("evolution", [
            ("population", self.population >= 1, ">= 1"), ("generations", self.generations >= 1, ">= 1"),
            ("parents", self.parents >= 1, ">= 1"), ("mutations", self.mutations >= 0, ">= 0"),
            ("crossovers", self.crossovers >= 0, ">= 0"),
            ("mutation_prob", 0 < self.mutation_prob <= 1, "in (0, 1]"),
            ("max_redraws", self.max_redraws >= 1, ">= 1"),
        ], self)
        if self.mutations + self.crossovers > self.population:
            raise SpnasError(f"evolution: --mutations {self.mutations} + --crossovers {self.crossovers} exceed "
                             f"--population {self.population}")


class Evolution(SamplingStrategy):
    """``--strategy evolution``: SPOS's evolutionary search, one generation at a time."""

    name = "evolution"
    Options = EvolutionOptions

    #: generations that a fixed budget must leave (the random first one included): with fewer,
    #: evolution has barely started to select
    MIN_GENERATIONS = 3

    @classmethod
    def budget_options(cls, evaluations: int) -> dict[str, int]:
        """SPOS's shape (half the children mutated, half crossed, a fifth of the population as
        parents) at a population that leaves at least :attr:`MIN_GENERATIONS` generations."""
        default = EvolutionOptions()
        if evaluations >= cls.MIN_GENERATIONS * default.population:
            return {}
        population = max(2, evaluations // cls.MIN_GENERATIONS)
        mutations = population // 2
        return {"population": population, "generations": -(-evaluations // population),
                "parents": max(1, population // 5), "mutations": mutations, "crossovers": population - mutations}

    @property
    def evaluations(self) -> int:
        o: EvolutionOptions = self.options
        return o.evaluations or o.population * o.generations

    def setup(self, space, runtime, constraint, seed) -> None:
        super().setup(space, runtime, constraint, seed)
        self.queue: list[Architecture] = []
        self.visited: set[str] = set()
        self.scores: dict[str, tuple[float, float, Architecture]] = {}
        self.generation = 0

    def ask(self) -> Architecture | None:
        if not self.queue:
            if self.generation >= self.options.generations:
                return None
            self.queue = self._next_generation()
            self.generation += 1
            if not self.queue:
                return None
        return self.queue.pop(0)

    def ask_ahead(self) -> bool:
        """Within a generation only: the next generation is bred from every result of this one."""
        return bool(self.queue)

    def tell(self, trial: Trial) -> None:
        if trial.status != INFEASIBLE and trial.accuracy is not None:
            self.scores[trial.key] = (trial.accuracy, trial.latency, trial.arch)

    # --- one generation ------------------------------------------------------------------------
    def _next_generation(self) -> list[Architecture]:
        o: EvolutionOptions = self.options
        children: list[Architecture] = []
        if self.scores:
            ranked = sorted(self.scores.values(), key=lambda s: (-s[0], s[1]))
            parents = [arch for _, _, arch in ranked[: o.parents]]
            children += self._breed(o.mutations, lambda: self._mutate(self.rng.choice(parents)))
            children += self._breed(o.crossovers, lambda: self._cross(self.rng.choice(parents), self.rng.choice(parents)))
        children += self._breed(o.population - len(children), lambda: self.sample_feasible())
        return children

    def _breed(self, wanted: int, make: Callable[[], Architecture]) -> list[Architecture]:
        """Up to ``wanted`` new feasible children, in at most ``wanted * max_redraws`` tries."""
        out: list[Architecture] = []
        for _ in range(wanted * self.options.max_redraws):
            if len(out) >= wanted:
                break
            child = make()
            key = str(child)
            if key not in self.visited and self.feasible(child):
                self.visited.add(key)
                out.append(child)
        return out

    def _mutate(self, parent: Architecture) -> Architecture:
        p = self.options.mutation_prob
        return self.space.arch(self.rng.choice(layer.ops) if self.rng.random() < p else op
                               for layer, op in zip(self.space.searchable, parent.ops))

    def _cross(self, a: Architecture, b: Architecture) -> Architecture:
        return self.space.arch(self.rng.choice((x, y)) for x, y in zip(a.ops, b.ops))


@hookimpl
def spnas_register_strategies(register):
    register(Evolution.name, Evolution)
