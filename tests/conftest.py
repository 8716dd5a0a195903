"""Shared test set-up: built-in plugins only, the shared data folder, an importable checkout."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

# entry-point plugins installed in the environment must not change what the tests see
os.environ.setdefault("SPNAS_DISABLE_PLUGIN_AUTOLOAD", "1")
# runs write no TensorBoard files unless a test turns them on (tests/test_report.py does)
os.environ.setdefault("SPNAS_TENSORBOARD", "0")
# measured latency tables go to a throwaway cache, not the user's
if "SPNAS_CACHE_DIR" not in os.environ:
    import tempfile

    os.environ["SPNAS_CACHE_DIR"] = tempfile.mkdtemp(prefix="spnas-test-cache-")

ROOT = Path(__file__).resolve().parents[1]

try:
    import spnas  # noqa: F401
except ImportError:  # a plain checkout, not installed
    sys.path.insert(0, str(ROOT))


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """``../shared`` next to the checkout: data kept out of the source tree (see its SOURCE.md files)."""
    path = ROOT.parent / "shared"
    if not path.is_dir():
        pytest.skip(f"{path} not found")
    return path


@pytest.fixture(scope="session")
def pixel1_json(shared_dir: Path) -> Path:
    """The Single-Path NAS authors' Pixel 1 runtime model (skips when it is not there)."""
    path = shared_dir / "data" / "pixel1" / "pixel1_runtime_model.json"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    return path
