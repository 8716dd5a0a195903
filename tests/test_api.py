"""The Python API (spnas.search, train, evaluate, profile, export, compare): docs/api.md runs, the
library and the command line reach the same answers, and a strategy defined here, outside spnas,
searches, exports and reports like a built-in one."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import yaml

import spnas
from spnas.cli.main import main
from spnas.core.checkpoints import CheckpointFormat
from spnas.core.errors import SpnasError
from spnas.core.registry import register_plugin, reset_registry
from spnas.searching.strategy import SearchResult, Strategy, option
from spnas.space.graph import SpaceGraph
from spnas.supernet.builder import Supernet

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--space", "tiny", "--device", "flops", "--quiet"]


def _python_blocks(markdown: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", markdown, flags=re.S)


@pytest.mark.slow
def test_the_api_page_runs(tmp_path, monkeypatch, capsys):
    """Every example of docs/api.md, in order, in one namespace (the page's own asserts included)."""
    monkeypatch.chdir(tmp_path)
    blocks = _python_blocks((ROOT / "docs" / "api.md").read_text())
    assert len(blocks) >= 7
    namespace: dict = {}
    for i, block in enumerate(blocks):
        exec(compile(block, f"docs/api.md block {i + 1}", "exec"), namespace)  # noqa: S102 - our own docs
    out = capsys.readouterr().out
    assert "unknown option(s) epochz" in out  # the error example printed the CLI's message
    assert Path(namespace["onnx"].path).read_bytes()[:2] != b""  # an ONNX file was written
    assert {row["strategy"] for row in namespace["cmp"].aggregate} == {"random", "random-arch"}
    assert all(row["n"] == 2 for row in namespace["cmp"].aggregate)  # two seeds, one network each


def test_search_from_python_equals_the_command_line(tmp_path, capsys):
    """Two routes to one search: ``spnas search`` and ``spnas.search`` with the same seed."""
    args = ["--strategy", "random", "--target", "50%", "--evaluations", "5", "--epochs", "1", "--seed", "3"]
    assert main(["search", *args, *TINY, "--out", str(tmp_path / "cli"), "--no-report"]) == 0
    cli = yaml.safe_load((tmp_path / "cli" / "result.yaml").read_text())
    api = spnas.search(space="tiny", strategy="random", device="flops", data="digits", target="50%",
                       evaluations=5, epochs=1, seed=3, out=tmp_path / "api", report=False)
    keys = ("arch", "predicted_latency", "supernet_val_accuracy", "evaluations", "range_fraction")
    assert {k: api.record[k] for k in keys} == {k: cli[k] for k in keys}
    assert str(api.arch) == cli["arch"] and round(api.latency, 6) == cli["predicted_latency"]
    assert api.record["pareto_front"] == cli["pareto_front"]
    assert api.run_dir == tmp_path / "api" and (api.run_dir / "config.yaml").is_file()


def test_out_none_is_a_temporary_run_that_lives_with_the_result():
    found = spnas.search(space="tiny", strategy="random", device="flops", target="50%", evaluations=3,
                         epochs=1, report=False)
    run_dir = found.run_dir
    assert (run_dir / "result.yaml").is_file() and (run_dir / "supernet.pt").is_file()
    child = found.child()
    # the child scores on the validation split what the search's evaluator measured
    assert spnas.evaluate(child, data="digits").val_top1 == found.accuracy
    del found, child
    import gc

    gc.collect()
    assert not run_dir.exists()


def test_child_equals_the_supernet_on_that_path(tmp_path):
    """``child()`` is the supernet's network for the found architecture (eval mode, the same
    BatchNorm statistics): two routes to the same logits."""
    found = spnas.search(space="tiny", strategy="random", device="flops", target="50%", evaluations=3, epochs=1,
                         out=tmp_path / "run", report=False)
    child = found.child(recalibrate=False)
    supernet = Supernet(found.space)
    supernet.load_state_dict(torch.load(tmp_path / "run" / "supernet.pt", weights_only=True)["model"])
    x = torch.randn(4, 3, 16, 16)
    assert torch.equal(child(x), supernet.eval()(x, arch=found.arch))


@pytest.mark.parametrize("call, message", [
    (lambda: spnas.search(space="tiny", device="flops", epochz=1), "strategy single-path: unknown option(s) epochz"),
    (lambda: spnas.search(space="tiny", device="flops", strategy="nope"), "unknown strategy 'nope'"),
    (lambda: spnas.search(space="nope-space", device="flops"), "nope-space"),
    (lambda: spnas.search(space="tiny", device="flops", data="nope"), "nope"),
    (lambda: spnas.search(space="tiny", device="flops", target="150%"), "150%"),
    (lambda: spnas.search(space="tiny", device="flops", val_fraction=1.5), "--val-fraction 1.5 is not allowed"),
    (lambda: spnas.search(space=3), "space: int is not a search space"),
    (lambda: spnas.train("k3e3 skip | k5e6 k3e3", "tiny", epochs=0), "--epochs 0 is not allowed"),
    (lambda: spnas.train("k3e3 skip | k5e6 k3e3", "tiny", epoch=3), "unknown training option(s) epoch"),
    (lambda: spnas.export("k9e9", space="tiny"), "k9e9"),
    (lambda: spnas.evaluate("no/such/model.pt"), "no/such/model.pt: no such file or directory"),
])
def test_bad_arguments_raise_the_command_lines_one_line_error(call, message):
    with pytest.raises(SpnasError) as info:
        call()
    assert message in str(info.value) and "\n" not in str(info.value)


def test_the_same_error_reads_the_same_on_the_command_line(capsys):
    for call, argv in [
        (lambda: spnas.search(space="tiny", device="flops", val_fraction=0.0), ["--val-fraction", "0"]),
        (lambda: spnas.search(space="tiny", device="flops", target="-5%"), ["--target=-5%"]),
        (lambda: spnas.search(space="tiny", device="flops", strategy="rl", target=1e9), ["--strategy", "rl", "--target", "1e9"]),
    ]:
        with pytest.raises(SpnasError) as info:
            call()
        assert main(["search", *TINY, *argv]) == 2
        assert capsys.readouterr().err.strip() == f"spnas: error: {info.value}"


def test_search_context_without_a_run_is_a_clear_error():
    from spnas.searching.strategy import SearchContext

    with pytest.raises(SpnasError, match="SearchContext: run is None"):
        SearchContext(SpaceGraph.load("tiny"), None, None, None)


# --- a strategy from outside spnas -------------------------------------------------------------------
THIRD_PARTY_FORMAT = "test-largest-v1"


@dataclass
class _LargestOptions:
    steps: int = option(2, "SGD steps on the largest path")
    target: float | None = option(None, "latency target", range_fraction=True)


def _largest_report(run, report):
    from spnas.report.writer import arch_block, search_facts

    search_facts(run, report)
    report.fact("steps taken", run.result.get("steps_taken"))
    arch_block(run, report)


class _Largest(Strategy):
    """Trains the supernet's largest path for a few steps and returns it (a third-party strategy
    with its own checkpoint layout: the weights under ``weights``, not ``model``)."""

    name = "test-largest"
    Options = _LargestOptions
    report = staticmethod(_largest_report)

    def search(self, ctx):
        torch.manual_seed(ctx.seed)
        net = Supernet(ctx.space)
        arch = ctx.space.largest()
        optimizer = torch.optim.SGD(net.parameters(), lr=0.05)
        loader = torch.utils.data.DataLoader(ctx.data.train, batch_size=32, shuffle=False)
        for _, (x, y) in zip(range(self.options.steps), loader):
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(net(x, arch=arch), y).backward()
            optimizer.step()
        ctx.run.save_checkpoint({"format": THIRD_PARTY_FORMAT, "space": ctx.space.name, "weights": net.state_dict()})
        params, macs = ctx.space.cost(arch)
        return SearchResult(self.name, ctx.space.name, arch, ctx.runtime.predict(arch), ctx.runtime.units, 0.5,
                            params, macs, ctx.run.path, details={"steps_taken": self.options.steps})


class _ThirdParty:
    @spnas.hookimpl
    def spnas_register_strategies(self, register):
        register(_Largest.name, _Largest)

    @spnas.hookimpl
    def spnas_register_checkpoint_formats(self, register):
        register(THIRD_PARTY_FORMAT, CheckpointFormat("test-largest checkpoint", holds="supernet",
                                                      weights=lambda state: state["weights"]))


@pytest.fixture
def third_party():
    reset_registry()
    register_plugin(_ThirdParty(), name="test-third-party")
    yield
    reset_registry()


def test_a_third_party_strategy_searches_exports_and_reports(third_party, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["search", "--strategy", "test-largest", "--steps", "3", *TINY, "--out", str(run)]) == 0
    arch = yaml.safe_load((run / "result.yaml").read_text())["arch"]
    # its report is the one it declares (the core names no strategy)
    text = (run / "report.md").read_text()
    assert "# run: test-largest search" in text and "| steps taken | 3 |" in text
    # its checkpoint exports: the registered format says where the supernet's weights are
    capsys.readouterr()
    assert main(["export", arch, "--space", "tiny", "--checkpoint", str(run), "--format", "onnx",
                 "--out", str(tmp_path / "net.onnx")]) == 0
    assert "weights: test-largest checkpoint" in capsys.readouterr().out
    # and the exported child has exactly those weights: the same logits as the supernet on that path
    from spnas.supernet.loading import read_child

    child = read_child("tiny", arch, run).child
    supernet = Supernet(SpaceGraph.load("tiny"))
    supernet.load_state_dict(torch.load(run / "checkpoint.pt", weights_only=True)["weights"])
    x = torch.randn(2, 3, 16, 16)
    assert torch.equal(child(x), supernet.eval()(x, arch=child.arch))
    # and from Python
    found = spnas.search(space="tiny", strategy="test-largest", device="flops", steps=1, report=False)
    assert found.strategy == "test-largest" and found.child()(x).shape == (2, 10)
