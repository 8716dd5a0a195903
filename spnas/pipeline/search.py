"""One search, start to finish: the pipeline under ``spnas search``, :func:`spnas.search` and
``spnas compare``.

:func:`run_search` resolves what it is given (space, data, latency table, strategy and options),
checks the request before anything is trained, opens the run directory, writes ``config.yaml``,
runs the strategy, writes ``result.yaml`` and the report, and returns a :class:`SearchOutcome`.
Under ``torchrun`` every rank calls it; rank 0 alone builds the table and writes the directory.

Example:
    >>> outcome = run_search("tiny", "single-path", device="flops", data="digits",
    ...                      options={"target": "50%", "epochs": 2})          # doctest: +SKIP
    >>> outcome.arch, outcome.latency, outcome.child()                        # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from spnas.core.errors import SpnasError
from spnas.core.runs import RunDir
from spnas.data.split import DataSplit
from spnas.latency.runtime import RuntimeModel
from spnas.latency.table import LatencyTable
from spnas.searching.strategy import SearchContext, SearchResult, Strategy
from spnas.space.arch import Architecture
from spnas.space.graph import SpaceGraph

#: BatchNorm recalibration of a child sliced from a supernet: the sampling evaluator's own
#: (:class:`spnas.searching.evaluator.SupernetEvaluator`), so that the child scores what the search measured
BN_BATCHES, BN_BATCH_SIZE = 20, 64
#: where a search measures latency when no device is named (as ``spnas search``)
DEFAULT_DEVICE = "tflite"


def load_space(space: SpaceGraph | str | Path) -> SpaceGraph:
    """A space given by registered name, YAML path or as a :class:`SpaceGraph`."""
    if isinstance(space, SpaceGraph):
        return space
    if not isinstance(space, (str, Path)):
        raise SpnasError(f"space: {type(space).__name__} is not a search space; give a registered name, "
                         f"a YAML path or a SpaceGraph")
    return SpaceGraph.load(str(space))


def prepare_data(space: SpaceGraph, data: DataSplit | str, val_fraction: float = 0.2) -> tuple[SpaceGraph, DataSplit]:
    """The data set (a registered name such as ``digits`` / ``idx:DIR``, or a :class:`DataSplit`)
    and ``space`` with as many classes as the data has."""
    from spnas.data.datasets import load_data
    from spnas.supernet.loading import with_classes

    if not isinstance(val_fraction, (int, float)) or not 0 < val_fraction < 1:
        raise SpnasError(f"--val-fraction {val_fraction} is not allowed; use a value in (0, 1)")
    if isinstance(data, str):
        data = load_data(data, space.spec.resolution, space.spec.in_chs, seed=0, val_fraction=val_fraction)
    elif not isinstance(data, DataSplit):
        raise SpnasError(f"data: {type(data).__name__} is not a data set; give a name such as 'digits' or "
                         f"'idx:DIR', or a spnas.data.split.DataSplit")
    return with_classes(space, data.num_classes), data


def resolve_runtime(space: SpaceGraph, device: str, table: LatencyTable | str | Path | None = None,
                    device_options: Mapping[str, Any] | None = None) -> RuntimeModel:
    """The runtime model of ``device`` for ``space``: from ``table`` (a :class:`LatencyTable`, or a
    table file) when given, else from the device (measured and cached, or analytic)."""
    from spnas.latency.device import resolve_table

    if isinstance(table, LatencyTable):
        if table.header.device != device:
            raise SpnasError(f"table: a {table.header.device!r} table, not one of device {device!r}")
        table.check_covers(space)
        return RuntimeModel(space, table)
    return RuntimeModel(space, resolve_table(device, space, table, **dict(device_options or {})))


def accelerator_name(name: str | None) -> str:
    """``cpu`` or ``cuda`` (default: cuda when available); cuda without a GPU is a user error."""
    if name not in (None, "cpu", "cuda"):
        raise SpnasError(f"--accelerator {name!r} is not allowed; use cpu or cuda")
    accel = name or ("cuda" if torch.cuda.is_available() else "cpu")
    if accel == "cuda" and not torch.cuda.is_available():
        raise SpnasError("--accelerator cuda: no CUDA device is available; use --accelerator cpu")
    return accel


@dataclass
class SearchOutcome:
    """What one search found, and where it lies.

    ``arch``, ``latency`` (predicted, in ``units`` of the device), ``accuracy`` (validation top-1
    on the supernet's shared weights), ``params``, ``macs``; ``record`` is ``result.yaml``;
    ``run_dir`` the run directory (with ``out=None``, a temporary one that lives as long as this
    object: copy it, or pass ``out``, to keep it). :meth:`child` hands out the network.
    """

    result: SearchResult
    record: dict[str, Any]
    space: SpaceGraph
    runtime: RuntimeModel
    data: DataSplit
    seed: int
    run_dir: Path
    report: Path | None = None
    #: False on the other ranks of a ``torchrun`` job (rank 0 alone wrote the run directory)
    main: bool = True
    _tmp: Any = field(default=None, repr=False)

    @property
    def arch(self) -> Architecture:
        return self.result.arch

    @property
    def latency(self) -> float:
        return self.result.latency

    @property
    def units(self) -> str:
        return self.result.units

    @property
    def accuracy(self) -> float:
        return self.result.accuracy

    @property
    def params(self) -> int:
        return self.result.params

    @property
    def macs(self) -> int:
        return self.result.macs

    @property
    def strategy(self) -> str:
        return self.result.strategy

    @property
    def range_fraction(self) -> float | None:
        """Where ``latency`` lies in the space's range on the device (0: the cheapest network)."""
        return self.record.get("range_fraction")

    def to_dict(self) -> dict[str, Any]:
        """The content of ``result.yaml``."""
        return dict(self.record)

    def child(self, *, recalibrate: bool = True) -> nn.Module:
        """The found network as a standalone :class:`~spnas.supernet.builder.ChildNet` (eval mode)
        with the weights it inherits from the search's supernet.

        With ``recalibrate`` (default), its BatchNorm statistics are recomputed on training batches
        as the sampling evaluator does (:data:`BN_BATCHES` batches of :data:`BN_BATCH_SIZE`, seeded by
        the search's seed), so that it scores on the validation set what the search measured. A new
        object each call (train it, export it: the outcome is not changed).
        """
        return child_of_run(self.space, self.arch, self.record, self.run_dir, self.data, self.seed, recalibrate)

    def __repr__(self) -> str:
        return (f"SearchOutcome(strategy={self.strategy!r}, arch='{self.arch}', latency={self.latency:.6g} "
                f"{self.units}, accuracy={self.accuracy:.4f}, run_dir='{self.run_dir}')")


def child_of_run(space: SpaceGraph, arch: Architecture, record: Mapping[str, Any], run_dir: Path, data: DataSplit,
                 seed: int, recalibrate: bool = True) -> nn.Module:
    """The network a search found, with its inherited weights (see :meth:`SearchOutcome.child`)."""
    from spnas.supernet.builder import recalibrate_bn
    from spnas.supernet.loading import read_child

    named = record.get("supernet")
    source = Path(named) if isinstance(named, str) and Path(named).is_file() else run_dir
    loaded = read_child(space, arch, source)
    child = loaded.child
    if recalibrate and loaded.from_supernet:
        gen = torch.Generator().manual_seed(seed + 7)
        loader = torch.utils.data.DataLoader(data.train, batch_size=BN_BATCH_SIZE, shuffle=True, generator=gen)
        recalibrate_bn(child, [(x,) for (x, _), _ in zip(loader, range(BN_BATCHES))])
    return child.eval()


def strategy_options(strategy_cls: type[Strategy], options: Mapping[str, Any], target: Any = None) -> dict[str, Any]:
    """``options`` plus ``target`` (the latency target, for a strategy that has one), lists made tuples."""
    options = {k: tuple(v) if isinstance(v, list) else v for k, v in dict(options).items()}
    if target is not None:
        fields = {f.name for f in dataclasses.fields(strategy_cls.Options)}
        if "target" not in fields:
            raise SpnasError(f"strategy {strategy_cls.name}: takes no latency target; its options: "
                             f"{', '.join(sorted(fields))}")
        if options.get("target") is not None and options["target"] != target:
            raise SpnasError(f"target given twice ({target!r} and option target={options['target']!r}); give one")
        options["target"] = target
    return options


def run_search(space: SpaceGraph | str | Path, strategy: str | Strategy = "single-path", *,
               device: str | None = None, data: DataSplit | str = "digits", out: str | Path | None = None,
               options: Mapping[str, Any] | None = None, target: Any = None, seed: int = 0,
               val_fraction: float = 0.2, table: LatencyTable | str | Path | None = None,
               device_options: Mapping[str, Any] | None = None, runtime: RuntimeModel | None = None,
               accelerator: str | None = None, loader_workers: int = 0, resume: bool = False,
               progress: bool = False, report: bool = True, config: Mapping[str, Any] | None = None,
               seconds_from_start: bool = False, default_out: str | None = None,
               extra: Mapping[str, Any] | None = None) -> SearchOutcome:
    """Search ``space`` with ``strategy`` for ``device`` on ``data``; see :func:`spnas.search`.

    ``strategy`` is a registered name (its ``options`` are the fields of its options dataclass,
    e.g. ``epochs``, ``lambda_``, ``target``; a cost option may be ``"40%"`` of the space's range
    on the device) or a ready :class:`Strategy` (then ``options`` must be empty). ``runtime``
    skips the table resolution (``spnas compare`` shares one). ``config`` adds entries to
    config.yaml. ``default_out``: with ``out`` None, the run directory is this pattern
    (``{strategy}``, ``{space}``, ``{time}``) instead of a temporary directory. ``extra`` adds
    entries to result.yaml. ``seconds_from_start``: ``search_seconds`` is the wall time of the strategy's
    search even where the strategy keeps its own clock (compare's fair accounting).
    """
    from spnas.core.distributed import MainRun, device_of, from_env, per_rank_batch, shutdown
    from spnas.core.registry import get_registry
    from spnas.searching.target import parse_target_options, range_fraction_options, range_position

    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise SpnasError(f"--seed {seed!r} is not allowed; use an integer >= 0")
    if isinstance(loader_workers, bool) or not isinstance(loader_workers, int) or loader_workers < 0:
        raise SpnasError(f"--loader-workers {loader_workers} is not allowed; use >= 0")
    if isinstance(strategy, Strategy):
        if options or target is not None:
            raise SpnasError("options and target belong to the strategy object when one is given; pass its name "
                             "to set them here")
        strategy_cls, name = type(strategy), strategy.name
        given: dict[str, str] = {}
        fractions: dict[str, Any] = {}
        opts: dict[str, Any] = {}
    else:
        name = strategy
        strategy_cls = get_registry().get("strategy", name)
        opts = strategy_options(strategy_cls, options or {}, target)
        # the cost options as typed ('3.0', '40%'), recorded next to the absolute values they resolve to
        given = {k: str(opts[k]).strip() for k in range_fraction_options(strategy_cls.Options)
                 if opts.get(k) is not None}
        # '40%' is resolved once the latency table is known; a bad value fails now, before it is built
        opts, fractions = parse_target_options(strategy_cls.Options, opts, _device_units(device))
        strategy = strategy_cls.from_options(opts)
    if device is None:
        device = runtime.table.header.device if runtime is not None else DEFAULT_DEVICE
    space_arg = str(space) if isinstance(space, (str, Path)) else getattr(space, "name", None)  # a name or a YAML path
    data_arg = data if isinstance(data, str) else getattr(data, "name", None)
    space = load_space(space)
    space, data = prepare_data(space, data, val_fraction)
    accel = accelerator_name(accelerator)
    d = from_env(accel)  # under torchrun: join the process group (else one process)
    tmp = None
    try:
        batch = getattr(strategy.options, "batch_size", None)
        if d.enabled and isinstance(batch, int):  # each rank loads batch / world_size images a step
            d.from_main(lambda: per_rank_batch(d, batch))
        if runtime is None:  # one latency table for every rank: rank 0 builds (or measures) it, the others receive it
            runtime = RuntimeModel(space, d.from_main(lambda: resolve_runtime(space, device, table,
                                                                              device_options).table))
        if fractions:  # the same table on every rank: the same absolute values
            strategy = strategy_cls.from_options({**opts, **{k: f.resolve(runtime) for k, f in fractions.items()}})
        targets = {k: getattr(strategy.options, k) for k in given}  # absolute, in the device's units
        d.from_main(lambda: strategy.check(space, runtime))  # files it names need exist on rank 0's machine only
        if out is None and default_out is not None:  # rank 0's clock names it for every rank
            out = d.broadcast(default_out.format(strategy=name, space=space.name, time=time.strftime("%Y%m%d-%H%M%S")))
        elif out is None:
            tmp = tempfile.TemporaryDirectory(prefix=f"spnas-{name}-") if d.is_main else None
            out = d.broadcast(tmp.name if tmp else None)
        out = Path(out)
        opened: list[RunDir] = []

        def open_run() -> None:  # rank 0 alone writes the run directory
            opened.append(RunDir(out, resume=resume))
            opened[0].write_config({
                "command": "search", "strategy": name, "space": space_arg, "space_name": space.name,
                "device": device, "device_table": str(table) if isinstance(table, (str, Path)) else None,
                "device_options": [f"{k}={v}" for k, v in dict(device_options or {}).items()],
                "data": data_arg, "val_fraction": val_fraction, "seed": seed, "accelerator": accel,
                **({"processes": d.world_size, "backend": d.backend} if d.enabled else {}),
                **dict(config or {}),
                "options": dataclasses.asdict(strategy.options),
                **{f"{k}_spec": text for k, text in given.items()}, "table_header": runtime.table.header,
            })

        d.from_main(open_run)
        run = MainRun(opened[0] if opened else None, d, path=out)
        ctx = SearchContext(space, data, runtime, run, seed=seed, accelerator=device_of(d, accel), resume=resume,
                            progress=progress and d.is_main, dist=d, loader_workers=loader_workers)
        start = time.perf_counter()
        try:
            result = strategy.search(ctx)
        finally:
            run.close()
    except BaseException:
        if tmp is not None:
            tmp.cleanup()
        raise
    finally:
        shutdown(d)
    record = result.to_dict()
    # the search's own clock where it keeps one (sampling: without supernet training); else the
    # wall time of strategy.search in this process (a resumed run: since the resume)
    seconds = round(time.perf_counter() - start, 3)
    if seconds_from_start:
        record["search_seconds"] = seconds
    else:
        record.setdefault("search_seconds", seconds)
    for k, text in given.items():  # the absolute value searched for, and what was typed
        record.setdefault(k, targets[k])
        record[f"{k}_spec"] = text
    record.update(range_position(result.latency, runtime))
    record.update(extra or {})
    outcome = SearchOutcome(result, record, space, runtime, data, seed, out, main=d.is_main, _tmp=tmp)
    if d.is_main:
        run.write_result(record)
        if report:
            from spnas.report.writer import try_write_report

            outcome.report = try_write_report(out)
    return outcome


def _device_units(device: str) -> str | None:
    """The units of ``device`` for an error message, before its table is built (None if unknown)."""
    from spnas.core.registry import get_registry

    try:
        return get_registry().get("device", device).units
    except SpnasError:  # an unknown device is reported where the table is built
        return None
