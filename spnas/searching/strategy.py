"""The strategy contract: what every search strategy receives and returns.

A strategy is a small class registered by name (``spnas search --strategy NAME``). It is built
from typed options (a dataclass; unknown options are refused) and run on a
:class:`SearchContext`; it returns a frozen :class:`SearchResult`. Differentiable strategies
(single-path) subclass :class:`DifferentiableStrategy`; sampling strategies (random, evolution,
rl) get their own base class.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Mapping

import torch

from spnas.space.arch import Architecture
from spnas.data.split import DataSplit
from spnas.core.distributed import SINGLE, Distributed
from spnas.core.errors import SpnasError, flag_name
from spnas.space.graph import SpaceGraph
from spnas.core.runs import RunDir
from spnas.latency.runtime import RuntimeModel


@dataclass
class SearchContext:
    """Everything a strategy needs, resolved by the caller (CLI or library)."""

    space: SpaceGraph
    data: DataSplit
    runtime: RuntimeModel
    run: RunDir
    seed: int = 0
    accelerator: torch.device = field(default_factory=lambda: torch.device("cpu"))
    resume: bool = False
    progress: bool = True
    #: this process's place in a ``torchrun`` job (one process by default; see :mod:`spnas.core.distributed`)
    dist: Distributed = SINGLE
    #: data-loader worker processes for the training data (0: load in the training process)
    loader_workers: int = 0

    def __post_init__(self) -> None:
        if self.run is None:
            raise SpnasError("SearchContext: run is None; give a spnas.core.runs.RunDir, or call "
                             "spnas.search(..., out=None), which runs in a temporary directory")


@dataclass(frozen=True)
class SearchResult:
    """The outcome of one search (keyed by the architecture string)."""

    strategy: str
    space: str
    arch: Architecture
    latency: float
    units: str
    accuracy: float
    params: int
    macs: int
    run_dir: Path | None
    history: tuple[Mapping[str, Any], ...] = ()
    details: Mapping[str, Any] = field(default_factory=dict)
    #: sampling strategies: the evaluated candidates no other candidate beats on both accuracy
    #: and latency, by increasing latency (``{"arch", "accuracy", "latency"}`` each)
    pareto_front: tuple[Mapping[str, Any], ...] = ()

    def to_dict(self) -> dict:
        """The content of ``result.yaml`` (history stays in log.jsonl)."""
        front = {"pareto_front": [dict(p) for p in self.pareto_front]} if self.pareto_front else {}
        return {
            "strategy": self.strategy,
            "space": self.space,
            "arch": str(self.arch),
            "ops": [str(op) for op in self.arch.ops],
            "predicted_latency": round(self.latency, 6),
            "units": self.units,
            "supernet_val_accuracy": round(self.accuracy, 6),
            "params": self.params,
            "macs": self.macs,
            "run_dir": str(self.run_dir) if self.run_dir else None,
            **dict(self.details),
            **front,
        }


def option(default: Any, help: str = "", *, choices: tuple | None = None, metavar: str | None = None,
           cli: bool = True, range_fraction: bool = False, aliases: Mapping[str, str] | None = None) -> Any:
    """A strategy option: a dataclass field whose metadata becomes a ``spnas search`` flag.

    The flag is the field name with dashes (``batch_size`` -> ``--batch-size``; a trailing ``_``
    is dropped, ``lambda_`` -> ``--lambda``); its type comes from the annotation. ``cli=False``
    keeps an option out of the command line (it can still be set from Python).
    ``range_fraction=True`` marks a cost in the device's units (a ``float | None`` field) that the
    command line also takes as ``P%`` of the space's range on the device; the caller resolves it
    to device units once the latency table is known (:func:`spnas.searching.target.parse_target_options`),
    so the field always holds the absolute value. ``aliases`` maps old values of a ``choices``
    option to their new names: accepted (the strategy says they are deprecated), not listed.
    """
    return field(default=default, metadata={"help": help, "choices": choices, "metavar": metavar, "cli": cli,
                                            "range_fraction": range_fraction, "aliases": dict(aliases or {})})


def check_options(strategy: str, checks: list[tuple[str, bool, str]], values: Any) -> None:
    """Raise the CLI-style error for the first failed ``(option, ok, allowed)`` check."""
    for name, ok, allowed in checks:
        if not ok:
            raise SpnasError(f"{strategy}: {flag_name(name)} {getattr(values, name)!r} is not allowed; use {allowed}")


class Strategy:
    """Base class of every strategy: a name, an options dataclass, and :meth:`search`."""

    name: ClassVar[str] = ""
    Options: ClassVar[type] = object
    #: What the report of one of this strategy's runs shows (``spnas report``, the report.md every
    #: search writes): a function ``report(run, report)`` given the run's files
    #: (:class:`spnas.report.writer.RunFiles`) that fills ``report``
    #: (:class:`spnas.report.writer.Report`: facts, plots, Markdown blocks). None: the default of
    #: the strategy's kind (sampling strategies: candidates and Pareto front; others: the common facts).
    report: ClassVar[Callable[[Any, Any], None] | None] = None

    def __init__(self, options: Any = None):
        self.options = options if options is not None else self.Options()

    @classmethod
    def from_options(cls, values: Mapping[str, Any]) -> "Strategy":
        """Build from a plain mapping (CLI flags, YAML), refusing unknown option names."""
        fields = {f.name for f in dataclasses.fields(cls.Options)}
        unknown = sorted(set(values) - fields)
        if unknown:
            raise SpnasError(
                f"strategy {cls.name}: unknown option(s) {', '.join(unknown)}; allowed: {', '.join(sorted(fields))}"
            )
        from spnas.searching.target import parse_target_options

        # costs given as text ('3.0') become floats; 'P%' needs the latency table, which the caller holds
        values, fractions = parse_target_options(cls.Options, values)
        if fractions:
            name, fraction = next(iter(fractions.items()))
            raise SpnasError(f"strategy {cls.name}: {flag_name(name)} {fraction} is a fraction of the space's range; "
                             f"resolve it first with spnas.searching.target.resolve_target(value, runtime), as 'spnas search' does")
        return cls(cls.Options(**values))

    def check(self, space: SpaceGraph, runtime: RuntimeModel) -> None:
        """Refuse impossible requests before anything is trained or written (e.g. an unreachable target)."""

    def search(self, ctx: SearchContext) -> SearchResult:  # pragma: no cover - abstract
        raise NotImplementedError


class DifferentiableStrategy(Strategy):
    """A strategy that trains the supernet's weights and architecture parameters together.

    Subclasses implement the step loss and the read-out; the base owns seeding. (Single-path
    NAS is the built-in one; a Gumbel or ProxylessNAS-style plugin would subclass this too.)

    A strategy whose first epochs do not depend on the latency target (a warm-up) can serve a
    sweep over several targets (``spnas search --targets``, :func:`spnas.pipeline.sweep.run_sweep`):
    the warm-up is trained once and every target's search continues from its checkpoint. It says
    so with :meth:`fork_epoch` and :meth:`warm_up`; its :meth:`search` must then resume from a
    warm-up checkpoint (``ctx.resume``) exactly as from its own.
    """

    def fork_epoch(self) -> int | None:
        """The epochs at the start of the search that do not depend on its latency target (None:
        the whole search does, so a sweep cannot share them)."""
        return None

    def warm_up(self, ctx: SearchContext) -> None:  # pragma: no cover - only with fork_epoch
        """Train the first :meth:`fork_epoch` epochs, as :meth:`search` would, and stop, leaving
        the run's checkpoint (resumable with ``ctx.resume``) at that epoch."""
        raise NotImplementedError
