"""The plugin registry: built-ins through the same hooks, duplicates, broken and foreign plugins."""

from __future__ import annotations

import importlib.metadata as md
import subprocess
import sys

import pytest

import spnas
from spnas.core import registry as reg_mod
from spnas.core.errors import SpnasError
from spnas.core.registry import BUILTIN_PLUGINS, PluginInfo, Registry, get_registry


class _Plugin:
    def __init__(self, strategy_name: str):
        self.strategy_name = strategy_name

    @spnas.hookimpl
    def spnas_register_strategies(self, register):
        register(self.strategy_name, object)


def test_builtins_are_registered_through_the_hooks():
    reg = get_registry()
    assert [p.name for p in reg.plugins[: len(BUILTIN_PLUGINS)]] == list(BUILTIN_PLUGINS)
    impls = {i.plugin_name for i in reg.pm.hook.spnas_register_strategies.get_hookimpls()}
    assert {"spnas.strategies.single_path", "spnas.strategies.evolution"} <= impls
    assert reg.names("strategy") == ["evolution", "random", "rl", "single-path"]
    assert ("strategy", "rl") in next(p for p in reg.plugins if p.name == "spnas.strategies.rl").registered


def test_a_duplicate_name_is_refused_naming_both_plugins():
    reg = Registry()
    reg.add(_Plugin("dup"), PluginInfo("first-plugin", "a", "1"))
    with pytest.raises(SpnasError, match="strategy 'dup' is registered twice: by plugin 'first-plugin' and by "
                                         "plugin 'second-plugin'"):
        reg.add(_Plugin("dup"), PluginInfo("second-plugin", "b", "1"))
    assert reg.plugin_of("strategy", "dup") == "first-plugin"


def test_an_unknown_name_lists_the_available_ones():
    with pytest.raises(SpnasError, match=r"unknown strategy 'evo'; available: evolution, random, rl, single-path"):
        get_registry().get("strategy", "evo")


class _FakeEntryPoint:
    def __init__(self, name, target, dist="fake-dist"):
        self.name, self._target = name, target
        self.dist = type("D", (), {"name": dist, "version": "9.9"})()

    def load(self):
        if isinstance(self._target, Exception):
            raise self._target
        return self._target


@pytest.fixture
def fake_entry_points(monkeypatch):
    eps = [_FakeEntryPoint("good", _Plugin("third-party")),
           _FakeEntryPoint("broken", ImportError("No module named 'missing_dependency'")),
           _FakeEntryPoint("clash", _Plugin("random"))]
    monkeypatch.setattr(md, "entry_points", lambda group: eps if group == "spnas" else [])
    monkeypatch.delenv("SPNAS_DISABLE_PLUGIN_AUTOLOAD", raising=False)
    reg_mod.reset_registry()
    yield
    reg_mod.reset_registry()


def test_a_broken_plugin_is_reported_and_does_not_take_the_others_down(fake_entry_points):
    reg = get_registry()
    assert reg.get("strategy", "third-party") is object
    broken = reg.broken
    assert broken["broken"] == "ImportError: No module named 'missing_dependency'"
    assert "strategy 'random' is registered twice: by plugin 'spnas.strategies.random_search' and by plugin " \
           "'clash'" in broken["clash"]
    assert reg.get("strategy", "random").__module__ == "spnas.strategies.random_search"
    good = next(p for p in reg.plugins if p.name == "good")
    assert (good.distribution, good.version, good.registered) == ("fake-dist", "9.9", [("strategy", "third-party")])
    with pytest.raises(SpnasError, match="broken plugins: broken, clash"):
        reg.get("strategy", "nope")


def test_spnas_plugins_lists_origins_and_errors(fake_entry_points, capsys):
    from spnas.cli.main import main

    assert main(["plugins"]) == 0
    out = capsys.readouterr().out
    assert "spnas.strategies.evolution (spnas 0.1.0)\n    strategy evolution" in out
    assert "good (fake-dist 9.9)\n    strategy third-party" in out
    assert "broken (fake-dist 9.9): BROKEN: ImportError: No module named 'missing_dependency'" in out


class _RaisingPlugin:
    """Registers a strategy and a device, then its data-set hook raises."""

    @spnas.hookimpl
    def spnas_register_strategies(self, register):
        register("half-done", object)

    @spnas.hookimpl
    def spnas_register_datasets(self, register):
        raise RuntimeError("the plugin's own bug\nwith a second line")


def test_a_hook_that_raises_breaks_only_its_plugin(monkeypatch, capsys):
    eps = [_FakeEntryPoint("raising", _RaisingPlugin()), _FakeEntryPoint("good", _Plugin("third-party"))]
    monkeypatch.setattr(md, "entry_points", lambda group: eps if group == "spnas" else [])
    monkeypatch.delenv("SPNAS_DISABLE_PLUGIN_AUTOLOAD", raising=False)
    reg_mod.reset_registry()
    try:
        reg = get_registry()
        assert reg.broken["raising"] == "RuntimeError: the plugin's own bug with a second line"
        assert "half-done" not in reg.names("strategy")  # its partial registration was rolled back
        assert "third-party" in reg.names("strategy")
        from spnas.cli.main import main

        assert main(["plugins"]) == 0
        assert "raising (fake-dist 9.9): BROKEN: RuntimeError: the plugin's own bug" in capsys.readouterr().out
        assert main(["space", "list"]) == 0  # a command that does not need the plugin
        assert main(["search", "--strategy", "half-done", "--device", "flops"]) == 2
        err = capsys.readouterr().err
        assert "unknown strategy 'half-done'" in err and "broken plugins: raising" in err and err.count("\n") == 1
    finally:
        reg_mod.reset_registry()


def test_autoload_can_be_turned_off(fake_entry_points, monkeypatch):
    monkeypatch.setenv("SPNAS_DISABLE_PLUGIN_AUTOLOAD", "1")
    reg_mod.reset_registry()
    assert "third-party" not in get_registry().names("strategy")


def test_a_hook_with_a_wrong_signature_is_a_broken_plugin(monkeypatch):
    class Wrong:
        @spnas.hookimpl
        def spnas_register_strategies(self, registr):  # misspelt argument
            pass

    monkeypatch.setattr(md, "entry_points", lambda group: [_FakeEntryPoint("wrong", Wrong())])
    monkeypatch.delenv("SPNAS_DISABLE_PLUGIN_AUTOLOAD", raising=False)
    reg_mod.reset_registry()
    try:
        assert "registr" in get_registry().broken["wrong"]
    finally:
        reg_mod.reset_registry()


def test_spnas_plugins_command_runs():
    proc = subprocess.run([sys.executable, "-m", "spnas", "plugins"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "strategy single-path" in proc.stdout
    assert "    checkpoint spnas-single-path-v1" in proc.stdout  # the checkpoint formats, readable


def _doc_blocks(marker: str) -> str:
    """The Python code block of docs/plugins.md that contains ``marker``."""
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "docs" / "plugins.md").read_text()
    return next(b for b in re.findall(r"```python\n(.*?)```", text, re.S) if marker in b)


def test_the_plugin_guide_examples_work():
    """The strategy and device of docs/plugins.md, run as written (our own docs, not user input)."""
    import types

    from spnas.latency.device import resolve_table
    from spnas.space.graph import SpaceGraph
    from spnas.latency.runtime import RuntimeModel
    from spnas.searching.sampling import Constraint, Driver
    from spnas.testing import synthetic_objective

    module = types.ModuleType("guide_plugin")
    sys.modules["guide_plugin"] = module  # dataclasses look their module up
    exec(compile(_doc_blocks("class LocalSearch") + _doc_blocks("class ParamsDevice"), "docs/plugins.md", "exec"),
         module.__dict__)
    reg = Registry()
    reg.add(module, PluginInfo("guide", "docs", "0"))
    assert reg.names("strategy") == ["local"] and reg.names("device") == ["params"]

    space = SpaceGraph.load("spnas-cifar")
    table = module.ParamsDevice().latency_table(space)
    table.check_covers(space)
    runtime = RuntimeModel(space, table)
    arch = space.largest()
    assert runtime.predict(arch) == pytest.approx(space.cost(arch)[0] / 1e6)  # two routes to the params

    _, objective = synthetic_objective(space)
    lo, hi = runtime.bounds()
    c = Constraint(0.0, (lo + hi) / 2)
    strategy = module.LocalSearch.from_options({"evaluations": 200, "layers": 2})
    driver = Driver(strategy, space, runtime, objective, c)
    trials = driver.run()
    evaluated = [t for t in trials if t.status == "evaluated"]
    assert len(evaluated) == 200 and all(c.ok(t.latency) for t in evaluated)
    assert driver.result(trials).accuracy > max(t.accuracy for t in evaluated[:10])


@pytest.mark.slow
def test_the_optuna_plugin_installs_with_pip_and_runs_from_the_cli(tmp_path):
    """A third-party package for real: pip builds and installs plugins/spnas-optuna (without
    dependencies, offline), spnas finds it through its entry point, and a search runs."""
    import os
    import shutil
    from pathlib import Path

    pytest.importorskip("optuna")
    root = Path(__file__).resolve().parents[1]
    src = tmp_path / "src"
    shutil.copytree(root / "plugins" / "spnas-optuna", src, ignore=shutil.ignore_patterns(
        "tests", "build", "*.egg-info", "__pycache__"))
    target = tmp_path / "site"
    pip = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                          "--no-index", "--target", str(target), str(src)], capture_output=True, text=True, timeout=300)
    if pip.returncode != 0 and "bdist_wheel" in pip.stderr + pip.stdout:
        pytest.skip(f"this environment's setuptools cannot build a wheel offline: {pip.stderr.strip()[-200:]}")
    assert pip.returncode == 0, pip.stderr
    env = {k: v for k, v in os.environ.items() if k != "SPNAS_DISABLE_PLUGIN_AUTOLOAD"}
    env["PYTHONPATH"] = os.pathsep.join([str(target), str(root), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    listed = subprocess.run([sys.executable, "-m", "spnas", "plugins"], capture_output=True, text=True, env=env,
                            timeout=300)
    assert listed.returncode == 0, listed.stderr
    assert "optuna (spnas-optuna 0.1.0)\n    strategy optuna-tpe\n    strategy optuna-nsga2" in listed.stdout
    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "spnas", "search", "--strategy", "optuna-nsga2", "--space", "tiny", "--device", "flops",
                           "--epochs", "1", "--evaluations", "8", "--bn-batches", "2", "--population", "4",
                           "--out", str(out), "--quiet"], capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr
    import yaml

    result = yaml.safe_load((out / "result.yaml").read_text())
    assert result["strategy"] == "optuna-nsga2" and result["evaluations"] == 8 and result["pareto_front"]
