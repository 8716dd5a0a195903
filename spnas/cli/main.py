"""The ``spnas`` command line: thin wrappers over library calls.

A user error (a bad file, flag or value) prints one line and exits with status 2; anything else
is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import types
from pathlib import Path
from typing import Callable, Sequence

from spnas.core.errors import SpnasError

EXIT_USER_ERROR = 2


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit 2 (argparse's own behaviour, kept consistent)
        self.exit(EXIT_USER_ERROR, f"spnas: error: {message} (see '{self.prog} --help')\n")


def _space_arg(p: argparse.ArgumentParser, default: str | None = "spnas-cifar") -> None:
    from spnas.cli.common import space_arg

    space_arg(p, default)


def _device_args(p: argparse.ArgumentParser, default: str | None = "tflite") -> None:
    from spnas.cli.common import device_args

    device_args(p, default)


def _add_search(sub, strategy_cls: type | None) -> None:
    p = sub.add_parser("search", help="search an architecture", description="Search an architecture on a space, "
                       "for a latency device, on a data set; writes a run directory. The options after the common "
                       "ones belong to the chosen --strategy (see 'spnas search --strategy NAME --help').")
    p.add_argument("--strategy", default=DEFAULT_STRATEGY, help="search strategy (default: %(default)s; see 'spnas plugins')")
    _space_arg(p)
    _device_args(p)
    p.add_argument("--data", default="digits", help="data set: digits (embedded), cifar10:DIR, idx:DIR (MNIST format), "
                   "npz:FILE or imagefolder:DIR; spnas never downloads (see docs/data.md) (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="seed of the weights, the data order and the strategy's "
                   "draws; the same seed gives the same search on CPU (default: %(default)s)")
    p.add_argument("--val-fraction", type=float, default=0.2, help="part of the training data held out for "
                   "validation, a stratified split fixed by the data, not --seed (default: %(default)s)")
    p.add_argument("--out", type=Path, help="run directory (default: runs/<strategy>-<space>-<time>)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    p.add_argument("--accelerator", choices=["cpu", "cuda"], help="where training runs (default: cuda if available); "
                   "under torchrun each process uses GPU LOCAL_RANK (see docs/scaling.md)")
    p.add_argument("--loader-workers", type=int, default=0, metavar="N",
                   help="data-loading worker processes per training process (default: %(default)s: none)")
    p.add_argument("--targets", metavar="T1,T2,...",
                   help="a front instead of one network: one search per latency target (costs in the device's units "
                        "or %% of the space's range, e.g. 30%%,50%%,70%%) sharing one warm-up (single-path); writes "
                        "OUT/target-*/ and the front in OUT/sweep.yaml, report.md, plots/front.png")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--no-report", action="store_true", help="do not write report.md and plots/ at the end "
                   "(build them later with 'spnas report RUN_DIR')")
    if strategy_cls is not None:
        group = p.add_argument_group(f"options of strategy {strategy_cls.name}")
        p.set_defaults(option_names=add_option_flags(group, strategy_cls.Options))
    p.set_defaults(func=cmd_search)


def add_option_flags(group, options_cls: type) -> list[str]:
    """One flag per field of a strategy's options dataclass (see :func:`spnas.searching.strategy.option`);
    returns the option names. Unset flags stay None, so the dataclass defaults (and presets) apply."""
    import typing

    from spnas.core.errors import flag_name

    hints = typing.get_type_hints(options_cls)
    names = []
    for f in dataclasses.fields(options_cls):
        meta = f.metadata
        if meta.get("cli") is False:
            continue
        kind = hints[f.name]
        if typing.get_origin(kind) in (typing.Union, types.UnionType):  # X | None -> X
            kind = next(a for a in typing.get_args(kind) if a is not type(None))
        help_text = meta.get("help", "")
        if meta.get("range_fraction"):  # parsed by spnas.searching.target.parse_target_options, resolved with the table
            help_text += "; or a fraction of the space's range on the device, e.g. 40%% (lo + 0.4 (hi - lo))"
        if f.default is not None and f.default is not dataclasses.MISSING:
            help_text += " (default: %s)" % str(f.default).replace("%", "%%")
        kw: dict = {"dest": f"opt_{f.name}", "default": None, "help": help_text,
                    "metavar": f.name.rstrip("_").upper()}
        if meta.get("choices"):  # listed in the usage and the help: {a,b,c}
            kw["metavar"] = "{" + ",".join(map(str, meta["choices"])) + "}"
        if meta.get("metavar"):
            kw["metavar"] = meta["metavar"]
        base = kind
        if base is bool:
            kw["action"] = argparse.BooleanOptionalAction
            kw.pop("metavar", None)
        elif typing.get_origin(base) is tuple:
            kw.update(nargs=len(typing.get_args(base)), type=typing.get_args(base)[0])
        else:
            kw["type"] = base if base in (int, float) and not meta.get("range_fraction") else str
            if meta.get("choices"):
                kw["choices"] = [*meta["choices"], *(meta.get("aliases") or {})]  # old names still accepted
        group.add_argument(flag_name(f.name), **kw)
        names.append(f.name)
    return names


DEFAULT_STRATEGY = "single-path"


def cmd_search(args: argparse.Namespace) -> int:
    from spnas.cli.common import parse_device_options
    from spnas.pipeline.search import run_search
    from spnas.searching.target import describe_position

    options = {k: getattr(args, f"opt_{k}") for k in getattr(args, "option_names", [])
               if getattr(args, f"opt_{k}") is not None}
    if args.targets is not None:
        return _sweep(args, options)
    outcome = run_search(args.space, args.strategy, device=args.device, data=args.data, out=args.out,
                         options=options, seed=args.seed, val_fraction=args.val_fraction, table=args.device_table,
                         device_options=parse_device_options(args.device_option), accelerator=args.accelerator,
                         loader_workers=args.loader_workers, resume=args.resume, progress=not args.quiet,
                         report=not args.no_report, config={"device_options": args.device_option or []},
                         default_out="runs/{strategy}-{space}-{time}")
    if not outcome.main:  # rank 0 reports for every rank of a torchrun job
        return 0
    result = outcome.result
    print(f"architecture: {result.arch}")
    print(f"predicted latency: {result.latency:.4f} {result.units} ({args.device}), "
          f"{describe_position(result.latency, outcome.runtime)}")
    print(f"supernet val accuracy: {result.accuracy:.4f}")
    print(f"params: {result.params / 1e6:.3f} M, MACs: {result.macs / 1e6:.2f} M")
    if result.pareto_front:
        d = result.details
        print(f"evaluated {d.get('evaluations')} candidates ({d.get('stop_reason')}); "
              f"Pareto front: {len(result.pareto_front)} architectures (in result.yaml)")
    print(f"run directory: {outcome.run_dir}")
    if outcome.report is not None:
        print(f"report: {outcome.report}")
    return 0


def _sweep(args: argparse.Namespace, options: dict) -> int:
    from spnas.cli.common import parse_device_options
    from spnas.pipeline.sweep import run_sweep

    if args.loader_workers:
        raise SpnasError("--targets loads data in the training process; leave out --loader-workers")
    outcome = run_sweep(args.space, args.targets, args.strategy, device=args.device, data=args.data, out=args.out,
                        options=options, seed=args.seed, val_fraction=args.val_fraction, table=args.device_table,
                        device_options=parse_device_options(args.device_option), accelerator=args.accelerator,
                        resume=args.resume, progress=not args.quiet, report=not args.no_report,
                        default_out="runs/sweep-{strategy}-{space}-{time}")
    record = outcome.record
    print(f"{'target':>8} {'predicted':>10} {'% range':>7} {'accuracy':>8}  architecture")
    for p in record["points"]:
        print(f"{p['target_spec']:>8} {p['predicted_latency']:>10.4f} {100 * p['range_fraction']:>6.0f}% "
              f"{p['supernet_val_accuracy']:>8.4f}  {p['arch']}")
    print(f"latency in {record['units']} ({args.device}); one warm-up of {record['warmup_epochs']} epochs "
          f"({record['warmup_seconds']:.1f} s), {record['seconds']:.1f} s in all")
    print(f"run directory: {outcome.run_dir}")
    if outcome.report is not None:
        print(f"report: {outcome.report}")
    return 0


def _write_report(run_dir: Path) -> Path | None:
    """report.md and plots after result.yaml is safe on disk: a failure costs the report, not the result."""
    from spnas.report.writer import try_write_report

    return try_write_report(run_dir)


def cmd_space_show(args: argparse.Namespace) -> int:
    from spnas.space.graph import SpaceGraph

    space = SpaceGraph.load(args.name)
    spec = space.spec
    print(f"{space.name}: {spec.description}".rstrip(": "))
    print(f"input {spec.in_chs}x{spec.resolution}x{spec.resolution}, {spec.num_classes} classes, "
          f"width x{spec.width_multiplier:g}, dropout {spec.dropout:g}, {spec.activation}")
    print(f"{'layer':<14}{'kind':<11}{'in':>10} -> {'out':<10}{'s':>2}  choices")
    for l in space.layers:
        choices = " ".join(str(op) for op in l.ops) if l.ops else "-"
        tag = "*" if l.searchable else " "
        if l.kind == "classifier":  # global pooling, then a linear layer: vectors, not feature maps
            shapes = f"{l.in_chs:>4}x{l.in_res:<5} -> {l.out_chs:>4}{'':<6}"
        else:
            shapes = f"{l.in_chs:>4}x{l.in_res:<5} -> {l.out_chs:>4}x{l.out_res:<5}"
        print(f"{tag}{l.name:<13}{l.kind:<11}{shapes}{l.stride:>2}  {choices}")
    lo, hi = space.cost(space.smallest()), space.cost(space.largest())
    print(f"searchable layers: {space.num_searchable} (stages of {list(space.stage_sizes)}); "
          f"architectures: {space.size} ({float(space.size):.4g})")
    print(f"smallest: {lo[0] / 1e6:.3f} M params, {lo[1] / 1e6:.2f} M MACs  [{space.smallest()}]")
    print(f"largest:  {hi[0] / 1e6:.3f} M params, {hi[1] / 1e6:.2f} M MACs  [{space.largest()}]")
    return 0


def cmd_space_list(args: argparse.Namespace) -> int:
    from spnas.core.registry import get_registry

    reg = get_registry()
    for name in reg.names("space"):
        print(f"{name:<20}{reg.space_path(name)}")
    return 0


def cmd_arch(args: argparse.Namespace) -> int:
    from spnas.space.arch import to_arch_def
    from spnas.space.graph import SpaceGraph
    from spnas.latency.runtime import RuntimeModel

    space = SpaceGraph.load(args.space)
    arch = space.parse(args.arch)
    params, macs = space.cost(arch)
    print(f"architecture: {arch}")
    print(f"params: {params} ({params / 1e6:.3f} M), MACs: {macs} ({macs / 1e6:.2f} M)")
    print(f"arch_def: {to_arch_def(arch, space)}")
    if args.device:
        from spnas.cli.common import parse_device_options
        from spnas.latency.device import resolve_table

        runtime = RuntimeModel(space, resolve_table(args.device, space, args.device_table,
                                                    **parse_device_options(args.device_option)))
        print(f"predicted latency: {runtime.predict(arch):.4f} {runtime.units} ({args.device})")
    return 0


def cmd_device_import(args: argparse.Namespace) -> int:
    from spnas.devices.pixel1 import import_pixel1

    if args.name != "pixel1":
        raise SpnasError(f"spnas device import {args.name!r}: only pixel1 can be imported")
    print(f"imported {args.path} -> {import_pixel1(args.path)}")
    return 0


def cmd_plugins(args: argparse.Namespace) -> int:
    from spnas.core.registry import autoload_enabled, get_registry

    reg = get_registry()
    for info in reg.plugins:
        origin = f"{info.distribution} {info.version}"
        if info.error is not None:
            print(f"{info.name} ({origin}): BROKEN: {info.error}")
            continue
        print(f"{info.name} ({origin})")
        for kind, name in info.registered:
            print(f"    {kind + ' ':<9}{name}")  # at least one space: 'checkpoint' is 10 letters
    if not autoload_enabled():
        print("(entry-point plugins not loaded: SPNAS_DISABLE_PLUGIN_AUTOLOAD is set)")
    return 0


def _strategy_in(argv: Sequence[str]) -> type | None:
    """The strategy class named by ``--strategy`` in a ``search`` command line (its options become
    flags); an unknown name raises the registry's error, which lists the available ones."""
    argv = list(argv)
    if "search" not in argv:
        return None
    name = DEFAULT_STRATEGY
    for i, a in enumerate(argv):
        if a == "--strategy" and i + 1 < len(argv):
            name = argv[i + 1]
        elif a.startswith("--strategy="):
            name = a.split("=", 1)[1]
    from spnas.core.registry import get_registry

    return get_registry().get("strategy", name)


def build_parser(strategy_cls: type | None = None) -> argparse.ArgumentParser:
    from spnas._version import __version__

    parser = _Parser(prog="spnas", description="Hardware-aware neural architecture search (Single-Path NAS).")
    parser.add_argument("--version", action="version", version=f"spnas {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    _add_search(sub, strategy_cls)
    sp = sub.add_parser("space", help="inspect search spaces")
    ssub = sp.add_subparsers(dest="space_command", metavar="SUBCOMMAND", parser_class=_Parser)
    ssub.required = True
    show = ssub.add_parser("show", help="layers, shapes, choices, size and cost range of a space")
    show.add_argument("name", help="registered space name or YAML path")
    show.set_defaults(func=cmd_space_show)
    ssub.add_parser("list", help="registered spaces").set_defaults(func=cmd_space_list)
    ap = sub.add_parser("arch", help="params, MACs, timm arch_def and predicted latency of an architecture")
    ap.add_argument("arch", help="architecture string, e.g. 'k3e3 k5e6 | skip k3e6 ...'")
    _space_arg(ap)
    ap.add_argument("--device", help="also predict latency on this device")
    ap.add_argument("--device-table", metavar="FILE")
    ap.add_argument("--device-option", action="append", metavar="KEY=VALUE")
    ap.set_defaults(func=cmd_arch)
    dp = sub.add_parser("device", help="manage devices")
    dsub = dp.add_subparsers(dest="device_command", metavar="SUBCOMMAND", parser_class=_Parser)
    dsub.required = True
    imp = dsub.add_parser("import", help="keep a user-level copy of a device's table (pixel1)")
    imp.add_argument("name")
    imp.add_argument("path", type=Path)
    imp.set_defaults(func=cmd_device_import)
    from spnas.cli.export import add_export_parser
    from spnas.cli.latency import add_latency_parsers
    from spnas.cli.report import add_report_parser

    add_latency_parsers(sub, _space_arg)
    add_export_parser(sub)
    add_report_parser(sub)
    from spnas.cli.train import add_train_parsers

    add_train_parsers(sub)
    sub.add_parser("plugins", help="registered strategies, devices, spaces, data sets, checkpoint formats").set_defaults(func=cmd_plugins)
    return parser


def _notes(show):
    """``warnings.showwarning`` that prints spnas's deprecation notes of options (a FutureWarning
    whose text starts with the flag, e.g. ``--recipe cpu is deprecated``) as one line on stderr, and
    hands every other warning to ``show``."""

    def show_warning(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, FutureWarning) and str(message).startswith("--"):
            print(f"spnas: note: {message}", file=sys.stderr)
        else:
            show(message, category, filename, lineno, file, line)

    return show_warning


def main(argv: Sequence[str] | None = None) -> int:
    import warnings

    argv = sys.argv[1:] if argv is None else list(argv)
    if not getattr(warnings.showwarning, "spnas_notes", False):
        warnings.showwarning = _notes(warnings.showwarning)
        warnings.showwarning.spnas_notes = True
    try:
        parser = build_parser(_strategy_in(argv))
    except SpnasError as exc:
        print(f"spnas: error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    args = parser.parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except SpnasError as exc:
        from spnas.core.distributed import ReplicatedError, launched

        if not isinstance(exc, ReplicatedError):  # rank 0 reports an error every rank shares
            where = f" (rank {os.environ.get('RANK')})" if launched() and os.environ.get("RANK", "0") != "0" else ""
            print(f"spnas: error{where}: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("spnas: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. 'spnas space show x | head'
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())
