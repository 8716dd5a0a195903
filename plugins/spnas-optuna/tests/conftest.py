"""Test set-up for spnas-optuna: spnas's built-in plugins plus this one, registered by hand.

The package is imported from ``src/`` when it is not installed, entry-point autoloading is off
(as in spnas's own tests), and without Optuna every test module is skipped (each one starts with
``pytest.importorskip("optuna")``; a skip raised here, in the directory's first conftest, would
abort the whole pytest run instead).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

# entry-point plugins installed in the environment must not change what the tests see
os.environ.setdefault("SPNAS_DISABLE_PLUGIN_AUTOLOAD", "1")

TESTS = Path(__file__).resolve().parent
if str(TESTS) not in sys.path:  # optuna_helpers, whatever pytest's import mode
    sys.path.insert(0, str(TESTS))

try:
    import optuna  # noqa: F401
except ImportError:
    HAVE_OPTUNA = False
else:
    HAVE_OPTUNA = True
    try:
        import spnas_optuna
    except ImportError:  # a plain checkout, not pip-installed
        sys.path.insert(0, str(TESTS.parent / "src"))
        import spnas_optuna
    import spnas_optuna.plugin


def register() -> None:
    """Add the plugin to the live registry, as its entry point would (a no-op once it is there)."""
    from spnas.core.registry import register_plugin

    if HAVE_OPTUNA:
        register_plugin(spnas_optuna.plugin, name="optuna", distribution="spnas-optuna",
                        version=spnas_optuna.__version__)


@pytest.fixture(autouse=True)
def _optuna_plugin_registered():
    """The plugin in the registry during each test of this directory, and not after it: tests of
    other directories in the same session (spnas's own) expect the built-in plugins only."""
    from spnas.core.registry import reset_registry

    register()
    yield
    reset_registry()


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """One torch thread during each test (unless OMP_NUM_THREADS says otherwise). The supernets
    here are tiny: one thread is as fast on an idle machine, and on a busy one torch's worker
    threads fight for the cores (seen on 2 cores: 405 s for this directory instead of 20 s)."""
    import torch

    if "OMP_NUM_THREADS" in os.environ:
        yield
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def fast_sqlite():
    """SQLite without fsync (``PRAGMA synchronous=OFF``) while the test runs.

    Optuna commits every parameter of a trial separately (about 27 commits per candidate here);
    on a disk with a slow fsync that is half a second per candidate, which would make the
    storage tests slow without testing anything more. Only durability on an OS crash is lost.
    """
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    def no_sync(dbapi_connection, _record):
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA synchronous=OFF")
        cursor.close()

    event.listen(Engine, "connect", no_sync)
    yield
    event.remove(Engine, "connect", no_sync)
