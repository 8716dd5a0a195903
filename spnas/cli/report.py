"""``spnas report RUN_DIR``: rebuild a run's report.md and plots.

    spnas report runs/single-path-spnas-cifar-20261121-164528

See :mod:`spnas.report.writer` for what the report holds; ``spnas search`` writes one at the end of a
finished search, this command rebuilds it (after deleting plots/, for an interrupted run, for a
``spnas train`` run).
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_report_parser(sub) -> argparse.ArgumentParser:
    """Add the ``report`` subcommand to an argparse subparsers object (``spnas.cli.main.build_parser``)."""
    p = sub.add_parser(
        "report", help="write report.md and plots of a run directory",
        description="Write RUN_DIR/report.md (strategy, space, device, architecture, latency, accuracy, cost) and "
                    "the plots that apply into RUN_DIR/plots/ (progress, architecture, superkernels, candidates, "
                    "training); prints the report's path.")
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="the --out directory of a search or training run")
    p.set_defaults(func=cmd_report)
    return p


def cmd_report(args: argparse.Namespace) -> int:
    from spnas.report.writer import write_report

    print(write_report(args.run_dir))
    return 0
