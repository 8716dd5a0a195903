"""Training a derived network from scratch (spnas train) and evaluating it (spnas eval)."""

from __future__ import annotations

import json

import pytest
import torch
import yaml
from torch import nn

from spnas.cli.main import main
from spnas.space.graph import SpaceGraph
from spnas.core.runs import load_checkpoint
from spnas.training.train import TrainRecipe, lr_factor, recipe, topk_accuracy

ARCH = "k3e2 skip | k5e6 k3e3"
FAST = ["--space", "tiny", "--epochs", "3", "--batch-size", "128", "--quiet"]


def _train(tmp_path, name, *extra, arch=ARCH):
    out = tmp_path / name
    assert main(["train", arch, *FAST, "--out", str(out), *extra]) == 0
    return out, yaml.safe_load((out / "result.yaml").read_text())


class _Fixed(nn.Module):
    """Returns the logits it was given, batch by batch."""

    def __init__(self, logits):
        super().__init__()
        self.logits = list(logits)

    def forward(self, x):
        return self.logits.pop(0)


def test_topk_counts_by_hand():
    logits = torch.tensor([[0.0, 1, 2, 3, 4, 5],    # ranking 5 4 3 2 1 0
                           [5.0, 4, 3, 2, 1, 0],    # ranking 0 1 2 3 4 5
                           [0.0, 0, 9, 0, 0, 1]])   # ranking 2 5 ...
    labels = torch.tensor([5, 5, 5])
    acc = topk_accuracy(_Fixed([logits]), [(torch.zeros(3), labels)], ks=(1, 2, 5))
    # sample 0: top-1 hit; sample 1: label ranked 6th, no hit; sample 2: label ranked 2nd
    assert acc == {1: 1 / 3, 2: 2 / 3, 5: 2 / 3}
    # with fewer classes than k, top-k counts every sample
    assert topk_accuracy(_Fixed([logits[:, :3]]), [(torch.zeros(3), torch.tensor([0, 1, 2]))], ks=(5,)) == {5: 1.0}


def test_learning_rate_schedule_by_hand():
    r = TrainRecipe(epochs=10, warmup_epochs=2)
    assert lr_factor(r, 0, 100) == pytest.approx(1 / 200)          # warm-up, first step
    assert lr_factor(r, 199, 100) == pytest.approx(1.0)            # warm-up, last step
    assert lr_factor(r, 600, 100) == pytest.approx(0.5)            # cosine, half-way through epochs 2..10
    assert lr_factor(r, 1000, 100) == pytest.approx(0.0, abs=1e-12)
    a = recipe("authors", epochs=20)
    assert a.optimizer == "rmsprop" and a.scaled_lr == pytest.approx(0.016 * 64 / 256)
    assert lr_factor(a, 100 * (5 + 4.8), 100) == pytest.approx(0.97 ** 2)  # two decays of 0.97 after warm-up
    assert lr_factor(a, 100 * (5 + 4.7), 100) == pytest.approx(0.97)
    assert recipe("authors", lr=0.1).lr == 0.1  # explicit values win over the preset


def test_train_learns_writes_a_run_and_eval_agrees(tmp_path, capsys):
    torch.set_num_threads(1)
    out, result = _train(tmp_path, "run", "--epochs", "6")
    assert {"config.yaml", "log.jsonl", "checkpoint.pt", "model.pt", "result.yaml"} <= {p.name for p in out.iterdir()}
    space = SpaceGraph.load("tiny")
    assert result["kind"] == "train" and result["arch"] == ARCH
    assert (result["params"], result["macs"]) == space.cost(space.parse(ARCH))
    assert result["top1"] > 0.7  # ten classes: chance is 0.1
    assert result["top1"] <= result["top5"] <= 1.0
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == [1, 2, 3, 4, 5, 6] and log[-1]["val_top1"] == result["top1"]
    assert log[-1]["train_loss"] < log[0]["train_loss"]
    # two routes to the same number: the training run's own evaluation and 'spnas eval' on model.pt
    capsys.readouterr()
    assert main(["eval", str(out), "--json", str(tmp_path / "e.json")]) == 0
    numbers = json.loads((tmp_path / "e.json").read_text())
    assert numbers["val_top1"] == result["top1"] and numbers["val_top5"] == result["top5"]
    # the trained network exports: spnas export reads model.pt from the run directory
    from spnas.supernet.loading import read_child

    loaded = read_child(None, None, out)
    assert str(loaded.child.arch) == ARCH and "spnas-child-v1" in loaded.source


def test_resume_after_interruption_gives_the_same_weights(tmp_path, monkeypatch):
    torch.set_num_threads(1)
    full, a = _train(tmp_path, "full", "--seed", "2")
    from spnas.core.runs import RunDir

    original = RunDir.log
    calls = {"n": 0}

    def interrupt_after_first_epoch(self, record):
        if calls["n"] >= 1:
            raise KeyboardInterrupt
        calls["n"] += 1
        original(self, record)

    monkeypatch.setattr(RunDir, "log", interrupt_after_first_epoch)
    part = tmp_path / "part"
    assert main(["train", ARCH, *FAST, "--out", str(part), "--seed", "2"]) == 130
    monkeypatch.setattr(RunDir, "log", original)
    assert load_checkpoint(part / "checkpoint.pt")["epoch"] == 1  # the interrupted epoch was not saved
    assert main(["train", ARCH, *FAST, "--out", str(part), "--seed", "2"]) == 2  # refuses to overwrite
    assert main(["train", ARCH, *FAST, "--out", str(part), "--seed", "2", "--resume"]) == 0
    b = yaml.safe_load((part / "result.yaml").read_text())
    assert (b["top1"], b["top5"]) == (a["top1"], a["top5"])
    wa, wb = (load_checkpoint(d / "model.pt")["model"] for d in (full, part))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert (full / "log.jsonl").read_text() == (part / "log.jsonl").read_text()


def test_train_takes_a_search_result(tmp_path):
    torch.set_num_threads(1)
    search = tmp_path / "search"
    assert main(["search", "--space", "tiny", "--device", "flops", "--epochs", "1", "--batch-size", "128",
                 "--quiet", "--out", str(search)]) == 0
    found = yaml.safe_load((search / "result.yaml").read_text())["arch"]
    out, result = _train(tmp_path, "from-result", "--epochs", "1", arch=str(search / "result.yaml"))
    assert result["arch"] == found and result["space"] == "tiny"
    out2 = tmp_path / "from-dir"
    assert main(["train", str(search), "--epochs", "1", "--quiet", "--out", str(out2)]) == 0  # space from config
    assert yaml.safe_load((out2 / "result.yaml").read_text())["arch"] == found


@pytest.mark.parametrize("args, message", [
    (["--lr", "-1"], "--lr -1.0 is not allowed; use a number > 0"),
    (["--epochs", "0"], "--epochs 0 is not allowed; use an integer >= 1"),
    (["--label-smoothing", "1"], "--label-smoothing 1.0 is not allowed; use a number in [0, 1)"),
    (["--batch-size", "100000"], "--batch-size 100000 is larger than the training set"),
    (["--data", "nope"], "unknown dataset 'nope'"),
])
def test_bad_training_options_exit_2_with_one_line(tmp_path, capsys, args, message):
    assert main(["train", ARCH, *FAST, "--out", str(tmp_path / "x"), *args]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_resume_refuses_another_architecture(tmp_path, capsys):
    torch.set_num_threads(1)
    out, _ = _train(tmp_path, "run", "--epochs", "1")
    (out / "model.pt").unlink()
    assert main(["train", "k3e2 k3e2 | k3e3 k3e3", *FAST, "--out", str(out), "--resume"]) == 2
    assert "resume with the same architecture and space" in capsys.readouterr().err


def test_missing_files_are_user_errors(tmp_path, capsys):
    assert main(["train", str(tmp_path / "nothing.yaml"), "--quiet"]) == 2
    assert "nothing.yaml: no such file" in capsys.readouterr().err
    assert main(["eval", str(tmp_path / "model.pt")]) == 2
    assert "model.pt: no such file or directory; give a model.pt" in capsys.readouterr().err


def test_eval_of_a_training_checkpoint_keeps_its_batchnorm(tmp_path, capsys):
    """A training checkpoint holds a child network: evaluated as is, like model.pt (no recalibration)."""
    torch.set_num_threads(1)
    out, result = _train(tmp_path, "run", "--epochs", "2")
    assert main(["eval", str(out / "checkpoint.pt"), "--json", str(tmp_path / "c.json")]) == 0
    assert json.loads((tmp_path / "c.json").read_text())["val_top1"] == result["top1"]
