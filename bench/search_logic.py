"""Sampling strategies against a known optimum (no training noise), written to bench/results.

The "accuracy" of a candidate is ``spnas.testing.synthetic_objective``: 1 at a secret architecture
of spnas-cifar (3.1e13 candidates), falling linearly with the per-layer distance between choices.
Each strategy runs through the same driver with the flops device, without and with a latency
bound (<= 1.02 x the secret's), for three seeds. Writes ``bench/results/search_logic.json`` and
prints a Markdown table (the one in docs/strategies.md).

    python bench/search_logic.py
"""

from __future__ import annotations

import json
from pathlib import Path

from spnas.latency.device import resolve_table
from spnas.space.graph import SpaceGraph
from spnas.core.registry import get_registry
from spnas.latency.runtime import RuntimeModel
from spnas.searching.sampling import Constraint, Driver
from spnas.testing import synthetic_objective

CASES = [("random", {"evaluations": 300}), ("evolution", {"evaluations": 300}), ("evolution", {}), ("rl", {})]
SEEDS = (0, 1, 2)


def main() -> None:
    space = SpaceGraph.load("spnas-cifar")
    runtime = RuntimeModel(space, resolve_table("flops", space))
    secret, objective = synthetic_objective(space)
    bound = Constraint(0.0, 1.02 * runtime.predict(secret))
    rows = []
    for name, options in CASES:
        strategy_cls = get_registry().get("strategy", name)
        row = {"strategy": name, "options": options}
        for label, constraint in (("none", Constraint()), ("bounded", bound)):
            best = []
            for seed in SEEDS:
                strategy = strategy_cls.from_options(options)
                driver = Driver(strategy, space, runtime, objective, constraint, seed=seed)
                best.append(round(driver.result(driver.run()).accuracy, 4))
            row[label] = best
        row["evaluations"] = strategy.evaluations
        rows.append(row)
    out = Path(__file__).parent / "results" / "search_logic.json"
    out.write_text(json.dumps({"space": space.name, "secret": str(secret), "seeds": list(SEEDS),
                               "bound": bound.hi, "rows": rows}, indent=2) + "\n")
    print("| strategy | evaluations | no constraint | latency <= 1.02 x the secret's |")
    print("|---|---|---|---|")
    for r in rows:
        print(f"| {r['strategy']} {r['options'] or '(defaults)'} | {r['evaluations']} | "
              f"{', '.join(map(str, r['none']))} | {', '.join(map(str, r['bounded']))} |")


if __name__ == "__main__":
    main()
