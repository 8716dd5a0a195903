"""The search spaces shipped with spnas, registered by file name (``spnas-imagenet.yaml`` -> ``spnas-imagenet``)."""

from __future__ import annotations

from pathlib import Path

from spnas.core.hookspecs import hookimpl

HERE = Path(__file__).parent


@hookimpl
def spnas_register_search_spaces(register):
    for path in sorted(HERE.glob("*.yaml")):
        register(path.stem, path)
