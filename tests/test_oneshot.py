"""The shared supernet: uniform training (resumable), its file, reuse, and the candidate evaluator."""

from __future__ import annotations

import copy
import json

import pytest
import torch
import yaml

from spnas.supernet.builder import ChildNet, Supernet, recalibrate_bn
from spnas.core.errors import SpnasError
from spnas.searching.evaluator import SupernetEvaluator
from spnas.space.graph import SpaceGraph
from spnas.training.oneshot import UniformTraining, load_supernet, save_supernet, train_uniform
from spnas.core.runs import RunDir
from spnas.testing import InterruptingRun, tiny_setup


def test_evaluator_equals_the_child_network_route():
    """Two routes to a candidate's accuracy: the supernet on the candidate's path after BN
    recalibration, and the standalone ChildNet with the inherited weights recalibrated the same way."""
    space, _, data = tiny_setup()
    torch.manual_seed(0)
    net = Supernet(space)
    evaluate = SupernetEvaluator(net, data, bn_batches=3, batch_size=32, seed=5)
    for arch in (space.largest(), space.parse("k3e2 skip | k5e6 skip"), space.smallest()):
        acc = evaluate(arch)
        child = ChildNet.from_supernet(copy.deepcopy(net), arch)
        recalibrate_bn(child, [(x,) for x in evaluate.bn_batches])
        child.eval()
        correct = total = 0
        with torch.no_grad():
            for x, y in evaluate.val:
                correct += int((child(x).argmax(1) == y).sum())
                total += len(y)
                torch.testing.assert_close(child(x), net.eval()(x, arch=arch), rtol=1e-5, atol=1e-5)
        assert acc == correct / total
        assert evaluate.cache[str(arch)] == acc


def test_recalibration_replaces_the_statistics_of_other_paths():
    space, _, data = tiny_setup()
    net = Supernet(space)
    evaluate = SupernetEvaluator(net, data, bn_batches=2, batch_size=16)
    a, b = space.largest(), space.smallest()
    first = evaluate(a)
    evaluate(b)
    evaluate.cache.clear()
    assert evaluate(a) == first  # nothing of b's statistics is left when a is evaluated again


def test_uniform_training_resumes_to_the_same_weights(tmp_path):
    space, _, data = tiny_setup()
    opts = UniformTraining(epochs=2, batch_size=64)
    straight = train_uniform(space, data, opts, RunDir(tmp_path / "a"), seed=2, progress=False)
    with pytest.raises(KeyboardInterrupt):
        train_uniform(space, data, opts, InterruptingRun(tmp_path / "b", after=1), seed=2, progress=False)
    assert not (tmp_path / "b" / "supernet.pt").exists()
    resumed = train_uniform(space, data, opts, RunDir(tmp_path / "b", resume=True), seed=2, resume=True,
                            progress=False)
    for (k, v), w in zip(straight.state_dict().items(), resumed.state_dict().values()):
        torch.testing.assert_close(v, w, rtol=0, atol=0, msg=k)
    epochs = [json.loads(l)["epoch"] for l in (tmp_path / "b" / "log.jsonl").read_text().splitlines()]
    assert epochs == [1, 2]
    assert load_supernet(tmp_path / "b" / "supernet.pt", space).state_dict().keys() == straight.state_dict().keys()


def test_supernet_file_is_checked_against_the_space(tmp_path):
    space, _, _ = tiny_setup()
    path = save_supernet(tmp_path / "s.pt", Supernet(space), "uniform")
    cifar = SpaceGraph.load("spnas-cifar")
    with pytest.raises(SpnasError, match=r"s.pt: trained on space 'tiny' with 10 classes .* this search is on "
                                         r"'spnas-cifar'"):
        load_supernet(path, cifar)
    torch.save({"format": "something-else"}, tmp_path / "other.pt")
    with pytest.raises(SpnasError, match="other.pt: a 'something-else' file, not a supernet"):
        load_supernet(tmp_path / "other.pt", space)
    with pytest.raises(SpnasError, match="missing.pt: no such file"):
        load_supernet(tmp_path / "missing.pt", space)


@pytest.fixture
def _cli(capsys):
    """``spnas search ...`` through the command line's main() in this process (one torch thread):
    its exit status, stdout and stderr, as a process would give them."""
    from types import SimpleNamespace

    from spnas.cli.main import main

    def run(*args):
        capsys.readouterr()
        try:
            code = main(["search", "--space", "tiny", "--device", "flops", "--quiet", *args])
        except SystemExit as exit:  # argparse's usage errors
            code = exit.code
        out, err = capsys.readouterr()
        return SimpleNamespace(returncode=code, stdout=out, stderr=err)

    return run


@pytest.mark.parametrize("strategy,extra", [
    ("random", ["--evaluations", "5"]),
    ("evolution", ["--population", "3", "--mutations", "1", "--crossovers", "1", "--generations", "2"]),
    ("rl", ["--evaluations", "5", "--target", "0.7"]),
])
def test_each_sampling_strategy_from_the_cli(_cli, tmp_path, strategy, extra):
    out = tmp_path / "run"
    proc = _cli("--strategy", strategy, "--epochs", "1", "--bn-batches", "2", "--out", str(out), *extra)
    assert proc.returncode == 0, proc.stderr
    assert "Pareto front:" in proc.stdout
    result = yaml.safe_load((out / "result.yaml").read_text())
    assert result["strategy"] == strategy and result["pareto_front"]
    trials = [json.loads(l) for l in (out / "log.jsonl").read_text().splitlines() if '"trial"' in l]
    evaluated = [t for t in trials if t["status"] == "evaluated"]
    assert len(evaluated) == result["evaluations"] <= 6
    assert max(t["accuracy"] for t in evaluated) == pytest.approx(result["supernet_val_accuracy"], abs=1e-6)
    if "--target" in extra:
        assert all(0.665 - 1e-9 <= t["latency"] <= 0.7 + 1e-9 for t in evaluated)
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert config["strategy"] == strategy and "evaluations" in config["options"]
    assert (out / "supernet.pt").is_file()


def test_a_single_path_supernet_is_reused_by_evolution(_cli, tmp_path):
    sp = tmp_path / "sp"
    proc = _cli("--strategy", "single-path", "--epochs", "1", "--bn-batches", "2", "--out", str(sp))
    assert proc.returncode == 0, proc.stderr
    evo = tmp_path / "evo"
    proc = _cli("--strategy", "evolution", "--supernet", str(sp / "supernet.pt"), "--population", "3",
                "--mutations", "1", "--crossovers", "1", "--generations", "2", "--bn-batches", "2", "--out", str(evo))
    assert proc.returncode == 0, proc.stderr
    log = (evo / "log.jsonl").read_text()
    assert '"phase": "supernet"' not in log  # nothing was trained
    assert yaml.safe_load((evo / "result.yaml").read_text())["supernet"] == str(sp / "supernet.pt")


def test_sampling_cli_user_errors(_cli, tmp_path):
    proc = _cli("--strategy", "random", "--latency-window", "50", "60")
    assert proc.returncode == 2 and "cannot be met: architectures of tiny reach" in proc.stderr
    proc = _cli("--strategy", "random", "--threshold-lr", "0.1")
    assert proc.returncode == 2 and "unrecognized arguments: --threshold-lr" in proc.stderr
    proc = _cli("--strategy", "evolution", "--supernet", str(tmp_path / "none.pt"), "--out", str(tmp_path / "r"))
    assert proc.returncode == 2 and "none.pt: no such file" in proc.stderr
    assert "Traceback" not in proc.stderr
