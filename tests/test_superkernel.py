"""The superkernel: exact equality with standalone layers, decisions, gradients."""

from __future__ import annotations

import random

import pytest
import torch

from spnas.space.arch import SKIP, Op
from spnas.supernet.builder import ChildNet, Supernet
from spnas.space.graph import SpaceGraph
from spnas.supernet.superkernel import MBConv, SuperMBConv, indicator


def _perturb_bn(model: torch.nn.Module, seed: int = 0) -> None:
    """Non-trivial BatchNorm statistics and affine parameters, so that a leaked shift would show."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                n = m.num_features
                m.running_mean.copy_(torch.randn(n, generator=gen) * 0.5)
                m.running_var.copy_(torch.rand(n, generator=gen) + 0.5)
                m.weight.copy_(torch.rand(n, generator=gen) + 0.5)
                m.bias.copy_(torch.randn(n, generator=gen) * 0.5)


def test_indicator_is_hard_forward_sigmoid_backward():
    x = torch.tensor([-2.0, -0.0, 0.0, 0.3, 5.0], requires_grad=True)
    y = indicator(x)
    assert y.tolist() == [0.0, 1.0, 1.0, 1.0, 1.0]
    y.sum().backward()
    s = torch.sigmoid(x.detach())
    torch.testing.assert_close(x.grad, s * (1 - s))


@pytest.mark.parametrize("kernels,expansions", [((3, 5), (3, 6)), ((3, 5, 7), (2, 4, 6)), ((3,), (2, 4))])
def test_every_op_equals_standalone_mbconv(kernels, expansions):
    torch.manual_seed(0)
    sk = SuperMBConv(8, 8, 1, kernels, expansions, skip=True)
    _perturb_bn(sk)
    sk.eval()
    x = torch.randn(2, 8, 9, 9)
    for k in kernels:
        for e in expansions:
            op = Op(k, e)
            ref = sk.export(op).eval()(x)
            torch.testing.assert_close(sk(x, op=op), ref, rtol=0, atol=1e-5)
            sk.force(op)
            g, h = sk.decide()
            assert sk.op_of(g, h) == op
            torch.testing.assert_close(sk(x, decision=(g, h)), ref, rtol=0, atol=1e-5)
    sk.force(SKIP)
    assert sk.op_of(*sk.decide()) == SKIP
    assert torch.equal(sk(x), x)  # the branch is exactly zero: no BatchNorm shift leaks
    assert torch.equal(sk(x, op=SKIP), x)


def test_stride_two_superkernel_matches_standalone():
    torch.manual_seed(1)
    sk = SuperMBConv(8, 16, 2, (3, 5, 7), (3, 6), skip=False)
    _perturb_bn(sk, 1)
    sk.eval()
    x = torch.randn(2, 8, 11, 11)
    for op in (Op(3, 3), Op(7, 3), Op(5, 6)):
        sk.force(op)
        ref = sk.export(op).eval()(x)
        assert ref.shape == (2, 16, 6, 6)
        torch.testing.assert_close(sk(x), ref, rtol=0, atol=1e-5)


def test_thresholds_start_at_largest_op():
    sk = SuperMBConv(8, 8, 1, (3, 5, 7), (2, 4, 6), skip=True)
    assert sk.op_of(*sk.decide()) == Op(7, 6)


def test_channel_decisions_are_computed_on_the_chosen_kernel():
    """Eq. 3: the channel norm uses w_k, so dropping the 5x5 ring lowers the channel norms."""
    torch.manual_seed(2)
    sk = SuperMBConv(4, 4, 1, (3, 5), (3, 6), skip=True)
    w = sk.conv_dw.weight.detach().squeeze(1)
    norm_k3 = w[12:24, 1:4, 1:4].norm().item()  # the e6 group (channels 12..23) on the 3x3 centre
    norm_k5 = w[12:24].norm().item()
    with torch.no_grad():
        sk.t_expansion[1] = (norm_k3 + norm_k5) / 2  # between the two norms
        sk.t_kernel[0] = -1e4
    assert sk.op_of(*sk.decide()) == Op(5, 6)
    with torch.no_grad():
        sk.t_kernel[0] = 1e4
    assert sk.op_of(*sk.decide()) == Op(3, 3)


def test_threshold_gradients_flow_and_have_the_sigmoid_scale():
    torch.manual_seed(3)
    sk = SuperMBConv(8, 8, 1, (3, 5), (3, 6), skip=True)
    x = torch.randn(4, 8, 6, 6)
    g, h = sk.decide()
    sk(x, decision=(g, h)).square().mean().backward()
    assert sk.t_kernel.grad is not None and sk.t_expansion.grad is not None
    assert torch.all(sk.t_kernel.grad != 0) and torch.all(sk.t_expansion.grad != 0)


def test_indicator_dropout_keeps_with_probability_and_rescales_kernel_decisions():
    torch.manual_seed(4)
    sk = SuperMBConv(8, 8, 1, (3, 5), (3, 6), skip=True).train()
    draws = [sk.decide(keep_prob=0.6) for _ in range(2000)]
    g = torch.stack([d[0] for d in draws])
    h = torch.stack([d[1] for d in draws])
    g_values = torch.unique(g).tolist()
    assert len(g_values) == 2 and g_values[0] == 0.0 and g_values[1] == pytest.approx(1.0 / 0.6)
    assert torch.unique(h).tolist() == [0.0, 1.0]  # channel/skip decisions: a scale would not survive BN
    for values in (g, h):
        assert abs((values > 0).float().mean().item() - 0.6) < 0.03
    assert torch.all(torch.cat(sk.eval().decide(keep_prob=0.6)) == 1.0)  # no dropout in eval mode


def test_first_layer_cannot_skip():
    sk = SuperMBConv(8, 8, 1, (3, 5), (3, 6), skip=False)
    with torch.no_grad():
        sk.t_expansion.fill_(1e4)
        sk.t_kernel.fill_(1e4)
    g, h = sk.decide()
    assert h[0].item() == 1.0 and sk.op_of(g, h) == Op(3, 3)


@pytest.mark.parametrize("name", ["tiny", "spnas-cifar"])
def test_childnet_equals_supernet_on_its_path(name):
    """Three routes to one output, >= 20 random architectures with skips, eval mode, <= 1e-5."""
    space = SpaceGraph.load(name)
    torch.manual_seed(5)
    net = Supernet(space)
    _perturb_bn(net, 5)
    net.eval()
    rng = random.Random(5)
    x = torch.randn(3, 3, space.spec.resolution, space.spec.resolution)
    archs = [space.random(rng) for _ in range(20)] + [space.smallest(), space.largest()]
    assert sum(any(op.is_skip for op in a.ops) for a in archs) >= 5
    for arch in archs:
        ref = ChildNet.from_supernet(net, arch).eval()(x)
        assert (net(x, arch=arch) - ref).abs().max().item() <= 1e-5
        net.force(arch)
        assert net.read_arch() == arch
        assert (net(x) - ref).abs().max().item() <= 1e-5


def test_imagenet_childnet_runs_at_224():
    space = SpaceGraph.load("spnas-imagenet")
    arch = space.parse("k3e3 k3e3 k3e3 skip | k5e6 k3e3 k3e3 k3e3 | k5e6 k3e3 k3e3 k3e3 | "
                       "k5e6 k5e3 k5e3 k5e3 | k5e6 k5e6 k5e6 k5e6")
    net = ChildNet(space, arch).eval()
    n_params = sum(p.numel() for p in net.parameters())
    assert abs(n_params - 4.42e6) <= 0.01e6
    assert n_params == space.cost(arch)[0]  # the graph's count equals the module's
    with torch.no_grad():
        assert net(torch.randn(1, 3, 224, 224)).shape == (1, 1000)


def test_mbconv_param_count_matches_graph():
    space = SpaceGraph.load("tiny")
    rng = random.Random(0)
    for _ in range(10):
        arch = space.random(rng)
        assert sum(p.numel() for p in ChildNet(space, arch).parameters()) == space.cost(arch)[0]


@pytest.mark.parametrize("kernels,expansions,skip", [((3, 5), (3, 6), True), ((3, 5, 7), (2, 4, 6), True),
                                                     ((3, 5, 7), (2, 4, 6), False), ((3,), (2, 4), True)])
def test_fused_threshold_step_gradients_equal_autograd(kernels, expansions, skip):
    """Two routes to one step: the fused CPU nodes (hand-written backward) and plain autograd ops."""
    torch.manual_seed(6)
    sk = SuperMBConv(6, 6, 1, kernels, expansions, skip=skip).double().train()
    sk.set_threshold_units(relative=True)
    with torch.no_grad():  # thresholds near the norms: some decisions on, some off, sigmoid' not tiny
        sk.t_kernel.uniform_(0.7, 1.3)
        sk.t_expansion.uniform_(0.7, 1.3)
    x = torch.randn(3, 6, 7, 7, dtype=torch.float64)
    target = torch.randn(3, 6, 7, 7, dtype=torch.float64)

    def grads(route: str):
        sk.zero_grad()
        if route == "fused":
            g, h = decision = sk.decide()
            y = sk(x, decision=decision)
        else:
            g, h = sk._decide_graph(None, 1.0)
            y = sk.forward_masked(x, g, h)
        loss = ((y - target) ** 2).mean() + (g.sum() + h.sum()) * 0.1  # a direct path into (g, h) too
        loss.backward()
        return y.detach(), torch.cat([g, h]).detach(), {n: p.grad.clone() for n, p in sk.named_parameters()
                                                        if p.grad is not None}

    y_f, d_f, g_f = grads("fused")
    y_a, d_a, g_a = grads("autograd")
    assert torch.equal(d_f, d_a)
    torch.testing.assert_close(y_f, y_a, rtol=0, atol=1e-12)
    assert g_f.keys() == g_a.keys() and {"t_expansion", "conv_dw.weight"} <= g_f.keys()
    for name in g_f:
        torch.testing.assert_close(g_f[name], g_a[name], rtol=1e-9, atol=1e-12, msg=name)
