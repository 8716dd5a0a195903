"""The package's folders are its layers: no module imports a layer above it, and no import circles.

Every ``import`` statement counts, also the ones inside functions and under ``if TYPE_CHECKING``
(a circle that only type checkers see still ties two layers together). The import graph is read
from the source with :mod:`ast`, so nothing here depends on import order at run time.
"""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

import networkx as nx
import pytest

ROOT = Path(__file__).resolve().parents[1]

# lowest first; a module may import its own layer and the layers before it
LAYERS = ["_version", "core", "space", "data", "supernet", "latency", "training", "searching", "exporting",
          "report", "pipeline", "api", "cli", "testing", "__main__"]
# built-in plugins, installed as spnas.<name>: they build on the library like a third party would
PLUGINS = {"strategies": "strategies", "devices": "devices", "search_spaces": "search_spaces"}
PLUGIN_CEILING = "report"  # plugins may import up to this layer
PLUGIN_USERS = {"cli"}  # layers that may name a built-in plugin (for example `spnas import-pixel1`)


def _modules() -> dict[str, Path]:
    found = {}
    for path in sorted((ROOT / "spnas").rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    for package, folder in PLUGINS.items():
        for path in sorted((ROOT / folder).glob("*.py")):
            stem = path.stem
            found["spnas." + package + ("" if stem == "__init__" else "." + stem)] = path
    return found


def _imports(path: Path, module: str, known: set[str]) -> set[str]:
    """Every spnas module that ``module`` imports, resolved to the most specific known module."""
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")[: -node.level + (1 if path.name == "__init__.py" else 0) or None]
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module or ""
            for alias in node.names:
                full = f"{prefix}.{alias.name}"
                names.add(full if full in known else prefix)
    out = set()
    for name in names:
        if not (name == "spnas" or name.startswith("spnas.")):
            continue
        while name not in known and "." in name:
            name = name.rsplit(".", 1)[0]
        if name != module:
            out.add(name)
    return out


def _layer(module: str) -> str:
    parts = module.split(".")
    if module == "spnas":
        return "spnas"
    return parts[1]


@pytest.fixture(scope="module")
def graph() -> nx.DiGraph:
    modules = _modules()
    g = nx.DiGraph()
    for module, path in modules.items():
        g.add_node(module)
        for target in _imports(path, module, set(modules)):
            g.add_edge(module, target)
    return g


def test_every_module_sits_in_a_known_layer(graph):
    layers = {_layer(m) for m in graph} - {"spnas"}
    assert layers <= set(LAYERS) | set(PLUGINS), sorted(layers - set(LAYERS) - set(PLUGINS))
    # the package is really split: no module left in the flat top folder except the listed ones
    top = sorted(m for m in graph if m.count(".") == 1 and _layer(m) not in LAYERS + list(PLUGINS))
    assert top == [], top


def test_no_module_imports_a_layer_above_it(graph):
    rank = {name: i for i, name in enumerate(LAYERS)}
    ceiling = rank[PLUGIN_CEILING]
    bad = []
    for source, target in graph.edges:
        s, t = _layer(source), _layer(target)
        if t == "spnas":  # the package's lazy namespace is the very top: nothing inside imports it
            bad.append(f"{source} -> {target}")
        elif s in PLUGINS:
            if t in rank and rank[t] > ceiling:
                bad.append(f"{source} -> {target} (plugins build on layers up to {PLUGIN_CEILING})")
        elif t in PLUGINS:
            if s not in PLUGIN_USERS:
                bad.append(f"{source} -> {target} (the library names no built-in plugin)")
        elif s in rank and rank[t] > rank[s]:
            bad.append(f"{source} -> {target}")
    assert bad == [], "\n".join(bad)


def test_no_import_circles(graph):
    cycles = [c for c in nx.simple_cycles(graph)]
    assert cycles == [], cycles[:5]


def test_the_checker_sees_a_planted_violation(tmp_path):
    """The graph reader finds function-level and TYPE_CHECKING imports (else the tests above could
    pass by seeing nothing)."""
    src = tmp_path / "mod.py"
    src.write_text(textwrap.dedent("""
        from typing import TYPE_CHECKING
        if TYPE_CHECKING:
            from spnas.cli.main import main
        def f():
            from spnas.report import plots
            import spnas.space.graph
    """))
    known = {"spnas.cli.main", "spnas.report.plots", "spnas.space.graph", "spnas.report"}
    assert _imports(src, "spnas.core.x", known) == {"spnas.cli.main", "spnas.report.plots", "spnas.space.graph"}


def test_spnas_testing_imports_without_pytest():
    """Plugin authors import spnas.testing from their own test runner; pytest is not needed
    until a contract test actually runs."""
    code = textwrap.dedent("""
        import sys
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name == "pytest" or name.startswith("_pytest"):
                    raise ImportError("pytest blocked")
        sys.meta_path.insert(0, Block())
        import spnas.testing
        print(sorted(n for n in dir(spnas.testing) if n.endswith("Contract")))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert "SamplingStrategyContract" in out.stdout


def test_import_spnas_is_lazy():
    """``import spnas`` loads no torch; the first use of a name imports its module."""
    code = "import sys, spnas; a = 'torch' in sys.modules; spnas.Architecture; print(a, 'spnas.space.arch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "True"]
