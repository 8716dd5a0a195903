"""Shared test set-up: built-in plugins only, the shipped Pixel 1 table, an importable checkout."""

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


#: the authors' Pixel 1 table, shipped as package data of spnas.devices
PIXEL1_TABLE = ROOT / "devices" / "data" / "pixel1_runtime_model.json"


@pytest.fixture(scope="session")
def pixel1_json() -> Path:
    """The Single-Path NAS authors' Pixel 1 runtime model, shipped with the pixel1 device
    (devices/data/NOTICE.md: source and licence)."""
    return PIXEL1_TABLE
