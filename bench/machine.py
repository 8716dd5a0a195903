"""Facts about the machine a benchmark ran on, for its results file.

Timings only mean something next to the CPU, the thread count, the library versions and how
busy the machine was; on a shared machine the load average and the kernel's CPU pressure
(``/proc/pressure/cpu``: the share of time runnable tasks waited for a CPU) say how much to
trust a run.
"""

from __future__ import annotations

import datetime
import os
import platform
import subprocess
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def _cpu_model() -> str:
    from spnas.latency.profiling import processor

    return processor()


def _git_commit() -> str:
    """HEAD, with ``+dirty`` when the working tree has changes (the measured code may differ)."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                              text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("+dirty" if dirty else "")


def load_snapshot() -> dict[str, object]:
    """Load average (1, 5, 15 min) and CPU pressure (% of time some task waited, 10 s and 60 s)."""
    snap: dict[str, object] = {"loadavg": " ".join(f"{x:.2f}" for x in os.getloadavg())}
    try:
        some = Path("/proc/pressure/cpu").read_text().splitlines()[0].split()
        fields = dict(kv.split("=") for kv in some[1:])
        snap["cpu_pressure_avg10"] = float(fields["avg10"])
        snap["cpu_pressure_avg60"] = float(fields["avg60"])
    except (OSError, IndexError, KeyError, ValueError):
        pass
    return snap


def machine_info(threads: int) -> dict[str, object]:
    """CPU, visible CPUs, threads used, versions, date (UTC) and the code's git commit."""
    return {
        "cpu": _cpu_model(),
        "cpus": os.cpu_count(),
        "threads": threads,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "git": _git_commit(),
    }
