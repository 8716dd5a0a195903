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


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist's own hook reads the xdist_group marks
def pytest_collection_modifyitems(config, items):
    """Scheduling for pytest-xdist (``--dist loadgroup``, pyproject.toml); nothing else changes.

    * Tests sharing a fixture of scope module or class defined in their own module (one expensive
      run, a torchrun launch, a trained supernet, that serves several tests) get one
      ``xdist_group`` per fixture, unless they are in a group already: xdist runs a group in one
      process, so the fixture is computed once, not once in each process.
    * Tests marked ``slow`` are handed out first (pytest-xdist hands out the groups first, the
      largest first, then single tests in this order), so that no long test starts last while
      the other processes have nothing left to do.
    """
    for item in items:
        if item.get_closest_marker("xdist_group") is None:
            info = getattr(item, "_fixtureinfo", None)
            module = item.nodeid.split("::")[0]
            for name in getattr(info, "names_closure", ()):
                defs = info.name2fixturedefs.get(name)
                if defs and defs[-1].scope in ("module", "class") and defs[-1].baseid.startswith(module):
                    item.add_marker(pytest.mark.xdist_group(f"{module}::{name}"))
                    break
        if getattr(config.option, "loadgroup", False):  # a pytest-xdist worker, --dist loadgroup
            _group_suffix(item)
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)  # stable: slow ones first


def _group_suffix(item) -> None:
    """What pytest-xdist's worker does for ``--dist loadgroup``: append ``@<group>`` to the
    nodeid, from which the controller reads the group. pytest-xdist 3.8 writes ``item._nodeid``;
    pytest 9.2 keeps the nodeid in ``item._id`` instead, so there the group is silently lost and
    every test is scheduled alone (pytest-xdist issue #1386). This does it on such a pytest only:
    on an older one (``_nodeid`` present), pytest-xdist's hook, which runs after this, does it."""
    if hasattr(item, "_nodeid") or not hasattr(item, "_id"):
        return
    marks = item.iter_markers("xdist_group")
    groups = {str(m.args[0] if m.args else m.kwargs.get("name", "default")) for m in marks}
    if groups and "@" not in item.nodeid.rsplit("]", 1)[-1]:
        item._id = type(item._id).parse(f"{item.nodeid}@{'_'.join(sorted(groups))}")
