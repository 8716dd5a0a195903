"""Shared test set-up: built-in plugins only, the shipped Pixel 1 table, an importable checkout,
one torch thread per process, and one latency cache for every pytest-xdist worker of a run."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import pytest

# entry-point plugins installed in the environment must not change what the tests see
os.environ.setdefault("SPNAS_DISABLE_PLUGIN_AUTOLOAD", "1")
# runs write no TensorBoard files unless a test turns them on (tests/test_report.py does)
os.environ.setdefault("SPNAS_TENSORBOARD", "0")
# one OpenMP/MKL thread in this process (set before torch is imported) and in every process a test
# starts (spnas, torchrun): pytest-xdist runs one test process per core (pyproject.toml's addopts),
# and torch's worker threads of several processes fighting for the same cores make every one of
# them slower. The networks of the tests are tiny: one thread computes them as fast.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
# measured latency tables go to a throwaway cache, not the user's; the workers of one pytest-xdist
# run share it, so that a table measured by one is read by the others (cache files are written by
# atomic replace): they inherit it from the controller, which loads this file first, or else name
# it after PYTEST_XDIST_TESTRUNUID (the same for every worker of a run)
if "SPNAS_CACHE_DIR" not in os.environ:
    _run = os.environ.get("PYTEST_XDIST_TESTRUNUID")
    if _run:
        _cache = Path(tempfile.gettempdir()) / f"spnas-test-cache-{_run}"
        _cache.mkdir(exist_ok=True)
        os.environ["SPNAS_CACHE_DIR"] = str(_cache)
    else:
        os.environ["SPNAS_CACHE_DIR"] = tempfile.mkdtemp(prefix="spnas-test-cache-")

ROOT = Path(__file__).resolve().parents[1]

try:
    import spnas  # noqa: F401
except ImportError:  # a plain checkout, not installed
    sys.path.insert(0, str(ROOT))


#: the authors' Pixel 1 table, shipped as package data of spnas.devices
PIXEL1_TABLE = ROOT / "devices" / "data" / "pixel1_runtime_model.json"


@pytest.fixture(scope="session")
def pixel1_json() -> Path:
    """The Single-Path NAS authors' Pixel 1 runtime model, shipped with the pixel1 device
    (devices/data/NOTICE.md: source and licence)."""
    return PIXEL1_TABLE

