"""Where the decisions act: spnas's placement against the authors' (bench/indicator_placement.py).

spnas puts the channel decisions on the projection's input channels and the skip decision on BN3's
affine, so a chosen op is exactly the standalone layer. The authors put every decision on the
depthwise weights, before BN2: a dropped channel's zero output becomes BN2's shift, which reaches
the projection. These tests use the bench's implementation of the authors' placement, so that the
numbers in docs/superkernel.md come from a function that is checked here.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from spnas.space.arch import SKIP, Op
from spnas.supernet.superkernel import SuperMBConv

_BENCH = Path(__file__).resolve().parents[1] / "bench" / "indicator_placement.py"


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny tensors: a second thread only waits for a time slice on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("indicator_placement", _BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _layer(seed: int = 0) -> SuperMBConv:
    """A {3, 5} x {3, 6} superkernel with non-trivial BatchNorm statistics and affine parameters."""
    from test_superkernel import _perturb_bn

    torch.manual_seed(seed)
    sk = SuperMBConv(8, 8, 1, (3, 5), (3, 6), skip=True)
    _perturb_bn(sk, seed)
    return sk


def _indicators(op: Op) -> tuple[torch.Tensor, torch.Tensor]:
    if op.is_skip:
        return torch.tensor([1.0]), torch.tensor([0.0, 1.0])
    return torch.tensor([float(op.kernel == 5)]), torch.tensor([1.0, float(op.expansion == 6)])


def test_eval_mode_spnas_is_the_standalone_op_and_the_authors_placement_leaks_bn2_shift(bench):
    sk = _layer().eval()
    x = torch.randn(4, 8, 7, 7, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        for op in (Op(5, 6), Op(3, 6)):  # every channel on: the two placements are the same network
            ref = sk.export(op).eval()(x)
            g, h = _indicators(op)
            torch.testing.assert_close(sk.forward_masked(x, g, h), ref, rtol=0, atol=1e-5)
            torch.testing.assert_close(bench.authors_forward(sk, x, g, h), ref, rtol=0, atol=1e-5)
        for op in (Op(5, 3), Op(3, 3)):  # h_1 = 0: the second channel group is dropped
            ref = sk.export(op).eval()(x)
            g, h = _indicators(op)
            torch.testing.assert_close(sk.forward_masked(x, g, h), ref, rtol=0, atol=1e-5)
            assert (bench.authors_forward(sk, x, g, h) - ref).abs().max().item() > 1e-3
        g, h = _indicators(SKIP)
        assert torch.equal(sk.forward_masked(x, g, h), x)
        assert (bench.authors_forward(sk, x, g, h) - x).abs().max().item() > 1e-3


def test_training_mode_bn3_removes_the_channel_leak_but_not_the_skip_leak(bench):
    """With batch statistics, a dropped channel's BN2 shift is a constant per projection output
    channel, which BN3 subtracts with the batch mean: the two placements give the same forward
    pass for h_1 = 0. A skipped layer still adds BN3's shift in the authors' placement."""
    sk = _layer().train()
    for m in sk.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = 0.0  # running statistics unchanged between the calls
    x = torch.randn(4, 8, 7, 7, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        g, h = _indicators(Op(5, 3))
        torch.testing.assert_close(bench.authors_forward(sk, x, g, h), sk.forward_masked(x, g, h), rtol=0, atol=1e-5)
        g, h = _indicators(SKIP)
        leak = bench.authors_forward(sk, x, g, h) - x
        torch.testing.assert_close(leak, sk.bn3.bias.view(1, -1, 1, 1).expand_as(x), rtol=0, atol=1e-3)
        assert sk.bn3.bias.abs().max().item() > 0.1


def test_authors_channel_gradient_is_set_by_bn2_epsilon(bench):
    """BN2 normalises whatever scale a channel decision puts on the depthwise weights: at h_1 = 1
    the authors' dL/dh_1 is of the order of eps (x100 for eps x100); at h_1 = 0 it is of the order
    of 1/sqrt(eps) (x0.1). spnas's gradient does not depend on BN2's epsilon this way."""
    sk = _layer(3).train()
    for m in sk.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = 0.0
    gen = torch.Generator().manual_seed(4)
    x, probe = torch.randn(8, 8, 7, 7, generator=gen), torch.randn(8, 8, 7, 7, generator=gen)

    def grad_h1(h1: float, eps: float | None, authors: bool) -> float:
        g, h = torch.tensor([1.0]), torch.tensor([1.0, h1], requires_grad=True)
        out = bench.authors_forward(sk, x, g, h, eps) if authors else sk.forward_masked(x, g, h)
        (d,) = torch.autograd.grad((out * probe).sum(), h)
        return d[1].item()

    on = [abs(grad_h1(1.0, eps, True)) for eps in (1e-5, 1e-3)]
    off = [abs(grad_h1(0.0, eps, True)) for eps in (1e-5, 1e-3)]
    assert 30 < on[1] / on[0] < 300
    assert 0.05 < off[1] / off[0] < 0.2
    spnas_on = abs(grad_h1(1.0, None, False))
    assert on[0] < 1e-2 * spnas_on  # the authors' h_1 barely receives a gradient while it is on
    assert off[0] > 10 * abs(grad_h1(0.0, None, False))
