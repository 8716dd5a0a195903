"""The runtime model (Eq. 10-12, any nesting): exact at hard indicators, multilinear, gradients."""

from __future__ import annotations

import itertools
import json
import random
from pathlib import Path

import pytest
import torch

from spnas.devices import pixel1
from spnas.devices.flops import FlopsDevice
from spnas.core.errors import LatencyTableError
from spnas.space.graph import SpaceGraph
from spnas.latency.runtime import RuntimeModel

SPACES = Path(__file__).resolve().parents[1] / "search_spaces"
SHARED_TABLE = Path(__file__).resolve().parents[1] / "devices" / "data" / "pixel1_runtime_model.json"  # shipped
DERIVED = ("k3e3 k3e3 k3e3 skip | k5e6 k3e3 k3e3 k3e3 | k5e6 k3e3 k3e3 k3e3 | "
           "k5e6 k5e3 k5e3 k5e3 | k5e6 k5e6 k5e6 k5e6")  # the paper's network, SOURCE.md
AUTHORS_KEY = {op: key for key, op in pixel1.AUTHORS_OPS.items()}

needs_table = pytest.mark.skipif(not SHARED_TABLE.is_file(), reason=f"{SHARED_TABLE} not found")


@pytest.fixture(scope="module")
def imagenet() -> SpaceGraph:
    return SpaceGraph.load(SPACES / "spnas-imagenet.yaml")


@pytest.fixture(scope="module")
def tiny() -> SpaceGraph:
    return SpaceGraph.load(SPACES / "tiny.yaml")


@pytest.fixture(scope="module")
def raw() -> dict:
    if not SHARED_TABLE.is_file():
        pytest.skip(f"{SHARED_TABLE} not found")
    return json.loads(SHARED_TABLE.read_text())


@pytest.fixture(scope="module")
def model(imagenet, raw) -> RuntimeModel:
    return RuntimeModel(imagenet, pixel1.read_table(SHARED_TABLE))


@pytest.fixture(scope="module")
def flops_model(tiny) -> RuntimeModel:
    return RuntimeModel(tiny, FlopsDevice().latency_table(tiny))


def _hand_sum(raw: dict, arch) -> float:
    """The authors' model by hand: 19.5999 ms plus key i+1 of the JSON for searchable layer i."""
    total = 19.5999
    for i, op in enumerate(arch.ops):
        if not op.is_skip:
            total += raw[str(i + 1)][AUTHORS_KEY[str(op)]]
    return total


@needs_table
@pytest.mark.parametrize("which, expected", [
    ("derived", 80.4411), ("k5e6", 131.4578), ("k3e3", 65.6914), ("k5e3", 76.3622), ("smallest", 30.6319),
])
def test_known_runtimes(model, imagenet, which, expected):
    arch = {"derived": lambda: imagenet.parse(DERIVED), "smallest": imagenet.smallest}.get(
        which, lambda: imagenet.uniform(which))()
    assert model.predict(arch) == pytest.approx(expected, abs=1e-3)
    assert model(model.hard_indicators(arch)).item() == pytest.approx(expected, abs=1e-3)


@needs_table
def test_bounds_are_smallest_and_largest(model, imagenet):
    lo, hi = model.bounds()
    assert lo == pytest.approx(model.predict(imagenet.smallest()), abs=1e-9)
    assert hi == pytest.approx(model.predict(imagenet.largest()), abs=1e-9)
    assert model.units == "ms" and model.constant == 19.5999


@needs_table
def test_hard_indicators_match_predict_and_the_raw_json(model, imagenet, raw):
    rng = random.Random(1904)
    for _ in range(50):
        arch = imagenet.random(rng)
        expected = _hand_sum(raw, arch)
        assert model.predict(arch) == pytest.approx(expected, abs=1e-9)
        assert sum(model.per_layer(arch)) + model.constant == pytest.approx(expected, abs=1e-9)
        ind64 = model.hard_indicators(arch, torch.float64)
        assert model(ind64).item() == pytest.approx(expected, abs=1e-9)
        out32 = model(model.hard_indicators(arch))
        assert out32.dtype == torch.float32 and out32.item() == pytest.approx(expected, abs=1e-4)


def test_tiny_flops_is_exactly_the_macs(flops_model, tiny):
    rng = random.Random(7)
    for _ in range(50):
        arch = tiny.random(rng)
        macs = tiny.cost(arch)[1] / 1e6
        assert flops_model.predict(arch) == pytest.approx(macs, rel=1e-12)
        assert flops_model(flops_model.hard_indicators(arch, torch.float64)).item() == pytest.approx(macs, rel=1e-12)


def test_tiny_bounds_by_enumeration(flops_model, tiny):
    values = [flops_model.predict(tiny.arch(ops)) for ops in itertools.product(*(l.ops for l in tiny.searchable))]
    assert len(values) == tiny.size
    assert flops_model.bounds() == pytest.approx((min(values), max(values)), rel=1e-12)


def _soft(model: RuntimeModel, rng: random.Random) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(torch.tensor([rng.uniform(0.05, 0.95) for _ in range(T.shape[0] - 1)], dtype=torch.float64),
             torch.tensor([rng.uniform(0.05, 0.95) for _ in range(T.shape[1])], dtype=torch.float64))
            for T in model.tables]


@pytest.mark.parametrize("which", ["tiny-flops", "imagenet-pixel1"])
def test_affine_in_each_indicator(request, which):
    """Multilinear: with the others fixed, R is affine in any one indicator, soft or hard."""
    model = request.getfixturevalue("flops_model" if which == "tiny-flops" else "model")
    rng = random.Random(3)
    for start in (_soft(model, rng), model.hard_indicators(model.space.random(rng), torch.float64)):
        for l, which_t, i in [(l, w, i) for l in range(len(start)) for w in (0, 1) for i in range(len(start[l][w]))]:
            def at(x: float) -> float:
                ind = [(g.clone(), h.clone()) for g, h in start]
                ind[l][which_t][i] = x
                return model(ind).item()

            r0, r1 = at(0.0), at(1.0)
            for t in (0.25, 0.6):
                assert at(t) == pytest.approx((1 - t) * r0 + t * r1, abs=1e-9)
            # the gradient is that slope too (autograd through cumprod, zeros included)
            ind = [(g.clone().requires_grad_(), h.clone().requires_grad_()) for g, h in start]
            model(ind).backward()
            assert ind[l][which_t].grad[i].item() == pytest.approx(r1 - r0, abs=1e-9)


@needs_table
def test_gradient_signs_at_the_largest_choice(model):
    ones = [(torch.ones(T.shape[0] - 1, requires_grad=True), torch.ones(T.shape[1], requires_grad=True))
            for T in model.tables]
    R = model(ones)
    assert R.item() == pytest.approx(131.4578, abs=1e-3)
    R.backward()
    for T, (g, h) in zip(model.tables, ones):
        # kernel ring: dR/dg0 = R(k5e6) - R(k3e6), positive on the Pixel 1 in every layer
        assert T[1, 1] > T[0, 1]
        assert g.grad[0].item() == pytest.approx((T[1, 1] - T[0, 1]).item(), abs=1e-5) and g.grad[0] > 0
        # keep the layer: dR/dh0 = R(k5e6); channel group e6: dR/dh1 = R(k5e6) - R(k5e3)
        assert h.grad[0].item() == pytest.approx(T[1, 1].item(), abs=1e-5)
        assert h.grad[1].item() == pytest.approx((T[1, 1] - T[1, 0]).item(), abs=1e-5)
        assert (h.grad >= 0).all()


def test_gradients_flow_to_every_indicator(flops_model):
    rng = random.Random(5)
    ind = [(g.float().requires_grad_(), h.float().requires_grad_()) for g, h in _soft(flops_model, rng)]
    out = flops_model(ind)
    assert out.dtype == torch.float32
    out.backward()
    for g, h in ind:
        assert g.grad is not None and h.grad is not None and torch.isfinite(torch.cat([g.grad, h.grad])).all()
        assert (g.grad > 0).all() and (h.grad > 0).all()  # MACs grow with kernel and expansion


def test_forward_rejects_wrong_shapes(flops_model):
    ind = flops_model.hard_indicators(flops_model.space.largest())
    with pytest.raises(ValueError, match="got indicators for 3 layers; space tiny has 4"):
        flops_model(ind[:3])
    ind[0] = (torch.ones(1), ind[0][1])
    with pytest.raises(ValueError, match=r"searchable layer 0: indicator shapes g \(1,\), h \(3,\); expected g \(2,\)"):
        flops_model(ind)


def test_model_checks_coverage(imagenet, tiny):
    with pytest.raises(LatencyTableError, match="space 'spnas-imagenet' needs"):
        RuntimeModel(imagenet, FlopsDevice().latency_table(tiny))
