"""The one training loop (spnas.training.loop) against facts outside it.

* driving a plain model, it computes bit for bit what a hand-written PyTorch loop computes: SGD
  with Nesterov momentum and L2 weight decay on the weights only, and the cosine rate, each
  written out here (no torch.optim, no LambdaLR), on the data order of a shuffling DataLoader
  seeded with ``seed * 1000 + epoch``;
* a run interrupted (right after a checkpoint, or in the middle of an epoch) and resumed in a
  process whose random number generators moved on ends bit for bit where an uninterrupted run
  does, weights, optimizer and log alike (the model draws dropout masks from the global RNG);
* a non-finite loss stops the run with a one-line error and keeps the last checkpoint.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from spnas.core.errors import SpnasError
from spnas.core.runs import RunDir, load_checkpoint
from spnas.training.loop import Checkpoint, Loop, Optim, ParamGroup, Step, constant, cosine

LR, MOMENTUM, WD = 0.1, 0.9, 4e-3
EPOCHS, BATCH, SEED = 3, 8, 7  # 40 examples: 5 steps an epoch
FORMAT = "test-loop-v1"


def _data() -> TensorDataset:
    g = torch.Generator().manual_seed(0)
    return TensorDataset(torch.randn(40, 6, generator=g), torch.randint(0, 3, (40,), generator=g))


def _model(dropout: float = 0.0) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(dropout), nn.Linear(16, 3))


def _groups(model: nn.Module) -> list[ParamGroup]:
    return [ParamGroup([p for p in model.parameters() if p.ndim > 1], WD),
            ParamGroup([p for p in model.parameters() if p.ndim <= 1], 0.0)]


def _bits(state: dict) -> dict:
    """Each tensor's bytes (torch.equal would call -0.0 and 0.0 the same)."""
    return {k: v.detach().contiguous().reshape(-1).view(torch.uint8).tolist() if v.is_floating_point() else v.tolist()
            for k, v in state.items()}


def _step(loop: Loop, batch) -> Step:
    x, y = batch
    return Step(F.cross_entropy(loop.module(x), y))


def _loop(model: nn.Module, run: RunDir, optim: Optim | None = None) -> Loop:
    return Loop(model, _data(), optim or Optim("sgd", LR, MOMENTUM, schedule=cosine(EPOCHS)), _groups(model),
                epochs=EPOCHS, batch_size=BATCH, run=run, seed=SEED, progress=False)


def _by_hand(model: nn.Module) -> list[float]:
    """The same training written out: returns the learning rate of every step."""
    data, rates, buffers, step = _data(), [], {}, 0
    total = EPOCHS * (len(data) // BATCH)
    model.train()
    for epoch in range(EPOCHS):
        order = torch.Generator().manual_seed(SEED * 1000 + epoch)
        for x, y in DataLoader(data, batch_size=BATCH, shuffle=True, drop_last=True, generator=order):
            lr = LR * (0.5 * (1 + math.cos(math.pi * min(step, total) / total)))  # cosine to 0 over the run
            rates.append(lr)
            loss = F.cross_entropy(model(x), y)
            model.zero_grad(set_to_none=True)
            loss.backward()
            with torch.no_grad():
                for name, p in model.named_parameters():
                    d = p.grad
                    if p.ndim > 1:  # L2 weight decay on weights, not on biases and BatchNorm
                        d = d.add(p, alpha=WD)
                    if name not in buffers:  # the momentum buffer starts at the first gradient
                        buffers[name] = d.clone()
                    else:
                        buffers[name].mul_(MOMENTUM).add_(d)
                    d = d.add(buffers[name], alpha=MOMENTUM)  # Nesterov: look one momentum step ahead
                    p.add_(d, alpha=-lr)
            step += 1
    return rates


def test_the_loop_equals_a_hand_written_loop_bit_for_bit(tmp_path):
    torch.set_num_threads(1)
    reference = _model()
    rates = _by_hand(reference)
    model = _model()
    seen = []
    state = _loop(model, RunDir(tmp_path / "run")).fit(
        _step, Checkpoint(FORMAT), on_step=lambda loop, end: seen.append(end.lr))
    assert (state.epoch, state.step) == (EPOCHS, 15)
    assert seen == rates  # the rate each step used, as the formula gives it
    assert _bits(model.state_dict()) == _bits(reference.state_dict())
    saved = load_checkpoint(tmp_path / "run" / "checkpoint.pt")
    assert saved["format"] == FORMAT and (saved["epoch"], saved["step"]) == (EPOCHS, 15)
    assert _bits(saved["model"]) == _bits(reference.state_dict())
    assert {"optimizer", "scheduler", "rng", "seconds"} <= set(saved)


def test_per_group_rates_schedules_and_options_reach_the_optimizer(tmp_path):
    model = _model()
    weights, rest = _groups(model)
    groups = [weights, ParamGroup(rest.params, 0.0, lr=0.5, schedule=lambda step, per_epoch: 0.25,
                                  options={"betas": (0.0, 0.999)})]
    loop = Loop(model, _data(), Optim("adam", 0.01, schedule=constant), groups, epochs=1, batch_size=BATCH,
                run=RunDir(tmp_path / "run"), progress=False)
    a, b = loop.optimizer.param_groups
    assert isinstance(loop.optimizer, torch.optim.Adam) and loop.steps_per_epoch == 5
    assert (a["lr"], a["weight_decay"], a["betas"]) == (0.01, WD, (0.9, 0.999))
    assert (b["lr"], b["weight_decay"], b["betas"]) == (0.5 * 0.25, 0.0, (0.0, 0.999))
    with pytest.raises(SpnasError, match="optimizer 'lion' is not known; allowed: sgd, rmsprop, adam, adamw"):
        Optim("lion")
    with pytest.raises(SpnasError, match=r"--batch-size 64 is larger than the training set \(40 images\)"):
        Loop(model, _data(), Optim(), epochs=1, batch_size=64, run=RunDir(tmp_path / "other"), progress=False)


class _Interrupting(RunDir):
    """Raises KeyboardInterrupt right after checkpoint number ``saves``, or instead of log record ``logs + 1``."""

    def __init__(self, path, saves=None, logs=None):
        super().__init__(path)
        self.saves, self.logs = saves, logs

    def save_checkpoint(self, state):
        super().save_checkpoint(state)
        self.saves = None if self.saves is None else self.saves - 1
        if self.saves == 0:
            raise KeyboardInterrupt

    def log(self, record):
        if self.logs == 0:
            raise KeyboardInterrupt
        self.logs = None if self.logs is None else self.logs - 1
        super().log(record)


def _fit_with_dropout(run: RunDir, resume: bool = False) -> nn.Module:
    model = _model(dropout=0.3)
    loop = _loop(model, run, Optim("sgd", LR, MOMENTUM, schedule=cosine(EPOCHS)))

    def log_step(loop, end):
        loop.run.log({"step": end.step, "loss": end.loss, "lr": end.lr})

    def log_epoch(loop, end):
        loop.run.log({"epoch": end.epoch, "step": end.step, "loss": end.loss, "draw": torch.rand(()).item()})

    entries = {"note": "kept"}

    def restore(ckpt):
        assert ckpt["note"] == "kept"  # the trainer's own entries come back

    loop.fit(_step, Checkpoint(FORMAT, lambda loop: entries, restore=restore), on_step=log_step,
             on_epoch_end=log_epoch, resume=resume)
    run.close()
    return model


@pytest.mark.parametrize("interrupt", [{"saves": 1}, {"logs": 8}], ids=["after-checkpoint-1", "mid-epoch-2"])
def test_an_interrupted_run_resumes_to_the_uninterrupted_one_bit_for_bit(tmp_path, interrupt):
    torch.set_num_threads(1)
    straight = _fit_with_dropout(RunDir(tmp_path / "straight"))
    with pytest.raises(KeyboardInterrupt):
        _fit_with_dropout(_Interrupting(tmp_path / "part", **interrupt))
    assert load_checkpoint(tmp_path / "part" / "checkpoint.pt")["epoch"] == 1
    torch.manual_seed(12345)  # a new process: the global generator is elsewhere
    resumed = _fit_with_dropout(RunDir(tmp_path / "part", resume=True), resume=True)
    assert _bits(resumed.state_dict()) == _bits(straight.state_dict())
    a, b = (load_checkpoint(tmp_path / d / "checkpoint.pt") for d in ("straight", "part"))
    assert _bits(a["optimizer"]["state"][0]) == _bits(b["optimizer"]["state"][0])
    assert (tmp_path / "part" / "log.jsonl").read_text() == (tmp_path / "straight" / "log.jsonl").read_text()


def test_a_non_finite_loss_stops_with_one_line_and_keeps_the_last_checkpoint(tmp_path):
    calls = {"n": 0}

    def step(loop, batch):
        calls["n"] += 1
        out = _step(loop, batch)
        return Step(out.loss * float("nan")) if calls["n"] == 8 else out  # step index 7, in epoch 2

    with pytest.raises(SpnasError) as err:
        _loop(_model(), RunDir(tmp_path / "run")).fit(step, Checkpoint(FORMAT))
    message = str(err.value)
    assert "\n" not in message
    assert message == (f"training: the loss became nan at step 7 (epoch 2); the checkpoint of epoch 1 is kept in "
                       f"{tmp_path / 'run'}; lower --lr")
    assert load_checkpoint(tmp_path / "run" / "checkpoint.pt")["epoch"] == 1


def test_a_checkpoint_of_another_format_is_refused_or_ignored(tmp_path):
    torch.set_num_threads(1)
    run = RunDir(tmp_path / "run")
    run.save_checkpoint({"format": "something-else"})
    with pytest.raises(SpnasError, match="a 'something-else' checkpoint, not 'test-loop-v1'; resume it with the "
                                         "command that wrote it, or use another --out"):
        _loop(_model(), run).fit(_step, Checkpoint(FORMAT), resume=True)
    model = _model()
    state = _loop(model, run).fit(_step, Checkpoint(FORMAT, other_formats="ignore"), resume=True)
    assert state.epoch == EPOCHS  # trained from the start
    fresh = _model()
    _loop(fresh, RunDir(tmp_path / "fresh")).fit(_step, Checkpoint(FORMAT))
    assert _bits(model.state_dict()) == _bits(fresh.state_dict())
