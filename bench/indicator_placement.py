"""Where the decisions act, and the cross-entropy gradient that reaches them.

Single-Path NAS (Stamoulis et al. 2019) trains each threshold with
``dL/dt = -sigma'(||w|| - t) * (dCE/dI + lambda * 1e3 * dlog R/dI)`` for the indicator ``I`` it
decides: both terms meet in the same indicator and share the sigmoid slope, so which of the two
is larger at ``I`` decides where the threshold goes. ``dCE/dI`` depends on where the decision
multiplies the network:

* **spnas** (``SuperMBConv._masked_weights``): the kernel decision ``g`` on the depthwise
  weights, the channel decisions ``h_1..`` on the projection's input channels, the skip decision
  ``h_0`` on BN3's weight and bias. A chosen op is exactly the standalone layer.
* **authors** (``DepthwiseConv2DMasked`` in the authors' TensorFlow ``superkernel.py``): every
  indicator multiplies the depthwise weights,
  ``w_used = h_0 * (w_k[group 0] + h_1 * w_k[group 1])`` with ``w_k = w * (centre + g_0 ring)``;
  BN2, the activation, the projection and BN3 follow unmasked (:func:`authors_forward`).

What runs: a toy network on the embedded digits set (16x16, 3 channels): a 3x3 stride-2 stem
(16 channels, 8x8), ``--layers`` spnas ``SuperMBConv(16, 16, 1, (3, 5), (3, 6), skip=True)``
layers, global average pooling and a linear classifier. It is trained as the full superkernel
(fixed-choice mode, op k5e6: every weight is used) with Adam, batch 32. After each of
``--checkpoints`` steps (100 and 300) the weights are frozen and, with BatchNorm in training mode
(as during the search; running statistics left unchanged), for each layer, each indicator state
(all on; g_0, h_1 or h_0 off) and ``--batches`` fixed training batches of 64, it computes the CE
and ``dCE/dg_0``, ``dCE/dh_1``, ``dCE/dh_0`` with the indicators as leaf tensors, under both
placements; training then goes on. The authors' placement is also run with BN2's epsilon at
1e-3, the value of the authors' BatchNorm (``batch_norm_epsilon=1e-3``); spnas uses PyTorch's
1e-5. For spnas, the gradient through the module's own route (``force``, ``_decide_graph``,
``forward_masked``) is checked against the leaf-tensor one on the first batch.

The runtime term is spnas's own: ``20 log R`` (``--lambda 0.02 --lambda-scale 1e3``) of the
spnas-cifar space under the ``flops`` device, differentiated with respect to the indicators of
``blocks.2.1``, ``blocks.2.2``, ... (16 -> 16 channels, stride 1, 8x8 inputs: the toy layers'
shape), with every other searchable layer at k5e6 (the search's start).

Deterministic (seeded, one thread; about 40 s of CPU). Writes
``bench/results/indicator_placement.json`` (per-batch values included) and prints the two
Markdown tables of docs/superkernel.md::

    .venv/bin/python bench/indicator_placement.py
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import re
import time
from pathlib import Path
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from spnas.space.arch import Op
from spnas.supernet.superkernel import SuperMBConv, _act_fn, _bn

AUTHORS_BN_EPS = 1e-3  # the authors' supernet: GlobalParams(batch_norm_epsilon=1e-3)
LAMBDA_TIMES_SCALE = 20.0  # --lambda 0.02 x --lambda-scale 1e3 (authors: runtime_lambda_val 0.020 x 1e3)
# indicator states of the measured layer, (g_0, h_0, h_1), named by the op they select
STATES = {"all on (k5e6)": (1.0, 1.0, 1.0), "g0 = 0 (k3e6)": (0.0, 1.0, 1.0),
          "h1 = 0 (k5e3)": (1.0, 1.0, 0.0), "h0 = 0 (skip)": (1.0, 0.0, 1.0)}
INDICATORS = ("g0", "h1", "h0")
TABLE_ROWS = [("all on (k5e6)", "g0"), ("all on (k5e6)", "h1"), ("all on (k5e6)", "h0"),
              ("g0 = 0 (k3e6)", "g0"), ("h1 = 0 (k5e3)", "h1"), ("h0 = 0 (skip)", "h0")]
PLACEMENTS = ("spnas", "authors", "authors_eps1e-3")


def authors_forward(sk: SuperMBConv, x: Tensor, g: Tensor, h: Tensor, bn2_eps: float | None = None) -> Tensor:
    """``sk`` with the decisions placed as in the authors' code: all of them on the depthwise weights.

    ``w_used = w * kernel_mask(g) * h_0 * channel_mask(h)``: the kernel ring mask as spnas has it,
    and per channel ``h_0`` (group 0) or ``h_0 h_1 ... h_j`` (group j), the authors'
    ``d50c * (kernel_50c + d100c * kernel_100c)``. Then BN2 (its own affine, unmasked), the
    activation, the projection and BN3, unmasked, and the residual. A dropped channel's depthwise
    output is 0, and BN2 maps it to its shift, which reaches the projection. ``bn2_eps`` replaces
    BN2's epsilon (None: the module's).
    """
    act = _act_fn(sk.act_name)
    chan = (h[0] * sk._channel_mask(h)).view(-1, 1, 1, 1)  # (mid, 1, 1, 1): per depthwise filter
    w = sk.conv_dw.weight * sk._kernel_mask(g) * chan
    y = act(_bn(sk.bn1, F.conv2d(x, sk.conv_pw.weight)))
    y = F.conv2d(y, w, None, sk.stride, sk.conv_dw.padding, 1, sk.mid)
    if bn2_eps is None:
        y = _bn(sk.bn2, y)
    else:
        bn = sk.bn2
        training = bn.training or bn.running_mean is None
        y = F.batch_norm(y, bn.running_mean, bn.running_var, bn.weight, bn.bias, training,
                         bn.momentum if bn.training and bn.momentum is not None else 0.0, bn2_eps)
    y = F.conv2d(act(y), sk.conv_pwl.weight)
    y = _bn(sk.bn3, y)
    return x + y if sk.has_residual else y


class ToyNet(nn.Module):
    """Stem, ``layers`` superkernels (16 -> 16, stride 1, {3, 5} x {3, 6}, skip), pooling, linear."""

    def __init__(self, layers: int = 2, width: int = 16, num_classes: int = 10):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, width, 3, 2, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU())
        self.layers = nn.ModuleList(SuperMBConv(width, width, 1, (3, 5), (3, 6), skip=True) for _ in range(layers))
        self.fc = nn.Linear(width, num_classes)

    def forward(self, x: Tensor, which: int = -1, g: Tensor | None = None, h: Tensor | None = None,
                placement: str = "spnas", start: int = -1) -> Tensor:
        """Every layer as k5e6 (fixed-choice mode), except layer ``which``, masked by ``(g, h)``.
        ``start >= 0``: ``x`` is already the input of layer ``start`` (:meth:`features`)."""
        if start < 0:
            x, start = self.stem(x), 0
        for i in range(start, len(self.layers)):
            sk = self.layers[i]
            if i != which:
                x = sk(x, op=Op(5, 6))
            elif placement == "spnas":
                x = sk.forward_masked(x, g, h)
            else:
                x = authors_forward(sk, x, g, h, AUTHORS_BN_EPS if placement == "authors_eps1e-3" else None)
        return self.fc(x.mean((2, 3)))

    @torch.no_grad()
    def features(self, x: Tensor, upto: int) -> Tensor:
        """The input of layer ``upto`` (every earlier layer as k5e6)."""
        x = self.stem(x)
        for sk in self.layers[:upto]:
            x = sk(x, op=Op(5, 6))
        return x


def _batches(n: int, count: int, size: int, gen: torch.Generator) -> list[Tensor]:
    out: list[Tensor] = []
    while len(out) < count:
        perm = torch.randperm(n, generator=gen)
        out += [perm[i:i + size] for i in range(0, n - size + 1, size)]
    return out[:count]


def train(net: ToyNet, x: Tensor, y: Tensor, steps: int, batch: int, lr: float, seed: int,
          checkpoints: Sequence[int], at_checkpoint: Callable[[int, list[float]], None]) -> None:
    """Plain training of the full superkernel (op k5e6 everywhere) with Adam; after ``c`` steps,
    for each ``c`` in ``checkpoints``, ``at_checkpoint(c, mean CE of the last 50 steps)``."""
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    losses: list[float] = []
    for step, idx in enumerate(_batches(len(x), steps, batch, gen), 1):
        net.train()
        loss = F.cross_entropy(net(x[idx]), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
        if step in checkpoints:
            at_checkpoint(step, losses[-50:])


def _state_tensors(state: tuple[float, float, float]) -> tuple[Tensor, Tensor]:
    g0, h0, h1 = state
    return torch.tensor([g0], requires_grad=True), torch.tensor([h0, h1], requires_grad=True)


def ce_gradients(net: ToyNet, which: int, placement: str, state, feats: Tensor, yb: Tensor) -> dict[str, float]:
    """CE and dCE/d(g_0, h_1, h_0) for one batch; ``feats`` is the input of layer ``which``."""
    g, h = _state_tensors(state)
    loss = F.cross_entropy(net(feats, which, g, h, placement, start=which), yb)
    dg, dh = torch.autograd.grad(loss, (g, h))
    return {"ce": loss.item(), "g0": dg[0].item(), "h0": dh[0].item(), "h1": dh[1].item()}


def decide_graph_check(net: ToyNet, which: int, state, feats: Tensor, yb: Tensor) -> float:
    """The spnas gradient through the module's own route: ``force`` the state's op, ``_decide_graph``
    for ``(g, h)``, ``forward_masked``; max |difference| to the leaf-tensor route."""
    sk = net.layers[which]
    g0, h0, h1 = state
    op = Op(0, 0) if h0 == 0.0 else Op(5 if g0 else 3, 6 if h1 else 3)
    saved = sk.t_kernel.detach().clone(), sk.t_expansion.detach().clone()
    sk.force(op)
    sk.t_kernel.requires_grad_(True)  # the parameters are frozen while measuring: the indicators
    sk.t_expansion.requires_grad_(True)  # need a graph to differentiate through
    g, h = sk._decide_graph(None, 1.0)
    with torch.no_grad():
        sk.t_kernel.copy_(saved[0])
        sk.t_expansion.copy_(saved[1])
    sk.t_kernel.requires_grad_(False)
    sk.t_expansion.requires_grad_(False)
    assert sk.op_of(g, h) == op, (g, h, op)
    loss = F.cross_entropy(net(feats, which, g, h, "spnas", start=which), yb)
    dg, dh = torch.autograd.grad(loss, (g, h))
    ref = ce_gradients(net, which, "spnas", (g[0].item(), h[0].item(), h[1].item()), feats, yb)
    return max(abs(dg[0].item() - ref["g0"]), abs(dh[0].item() - ref["h0"]), abs(dh[1].item() - ref["h1"]))


def measure(net: ToyNet, x: Tensor, y: Tensor, batches: list[Tensor]) -> tuple[list[dict], float]:
    """Per layer, state, placement and indicator: the summary of dCE/dI over ``batches``; and per
    layer and placement the CE change of each single decision flipped off (``delta_ce``)."""
    layers, check = [], 0.0
    for which in range(len(net.layers)):
        feats = [net.features(x[i], which) for i in batches]
        per_state: dict = {}
        for label, state in STATES.items():
            per_state[label] = {}
            for p in PLACEMENTS:
                grads = [ce_gradients(net, which, p, state, f, y[i]) for f, i in zip(feats, batches)]
                per_state[label][p] = {ind: _summary([gr[ind] for gr in grads]) for ind in INDICATORS}
                per_state[label][p]["ce"] = [gr["ce"] for gr in grads]
            check = max(check, decide_graph_check(net, which, state, feats[0], y[batches[0]]))
        on = per_state[TABLE_ROWS[0][0]]
        delta = {p: {label: _summary([c - c0 for c, c0 in zip(per_state[label][p]["ce"], on[p]["ce"])])
                     for label, _ in TABLE_ROWS[3:]} for p in PLACEMENTS}
        for label in per_state:
            for p in PLACEMENTS:
                per_state[label][p]["ce"] = sum(per_state[label][p]["ce"]) / len(batches)
        layers.append({"states": per_state, "delta_ce": delta})
    return layers, check


def runtime_gradients(layers: int) -> dict:
    """d(20 log R)/d(g_0, h_1, h_0) of spnas-cifar (flops) at blocks.2.1.. in each state, others k5e6."""
    from spnas.devices.flops import FlopsDevice
    from spnas.space.graph import SpaceGraph
    from spnas.latency.runtime import RuntimeModel

    space = SpaceGraph.load("spnas-cifar")
    model = RuntimeModel(space, FlopsDevice().latency_table(space))
    start = model.hard_indicators(space.largest(), torch.float64)
    names = [f"blocks.2.{i + 1}" for i in range(layers)]
    index = {layer.name: layer.search_index for layer in space.searchable}
    out: dict = {"space": "spnas-cifar", "device": "flops", "units": model.units,
                 "lambda_times_scale": LAMBDA_TIMES_SCALE, "R_start": model(start).item(), "layers": {}}
    for name in names:
        layer = space.searchable[index[name]]
        table = dict(zip((str(op) for op in layer.ops), (m / 1e6 for m in layer.macs)))
        per_state = {}
        for label, (g0, h0, h1) in STATES.items():
            inds = [(g.clone(), h.clone()) for g, h in start]
            inds[index[name]] = (torch.tensor([g0], dtype=torch.float64),
                                 torch.tensor([h0, h1], dtype=torch.float64))
            for g, h in inds:
                g.requires_grad_(True)
                h.requires_grad_(True)
            R = model(inds)
            dg, dh = torch.autograd.grad(LAMBDA_TIMES_SCALE * torch.log(R), inds[index[name]])
            per_state[label] = {"R": R.item(), "g0": dg[0].item(), "h1": dh[1].item(), "h0": dh[0].item(),
                                "delta_20logR": LAMBDA_TIMES_SCALE * math.log(R.item() / out["R_start"])}
        out["layers"][name] = {"search_index": index[name], "MMACs": table, "states": per_state}
    # context: d(20 log R)/dh_1 over every searchable layer at the start
    inds = [(g.clone().requires_grad_(True), h.clone().requires_grad_(True)) for g, h in start]
    grads = torch.autograd.grad(LAMBDA_TIMES_SCALE * torch.log(model(inds)), [h for _, h in inds])
    h1 = [d[1].item() for d in grads]
    out["h1_all_layers_at_start"] = {"min": min(h1), "max": max(h1)}
    return out


def _summary(values: list[float]) -> dict:
    mean = sum(values) / len(values)
    sign = math.copysign(1.0, mean) if mean != 0.0 else 0.0
    agree = sum(1 for v in values if v != 0.0 and math.copysign(1.0, v) == sign) / len(values)
    return {"mean_abs": sum(abs(v) for v in values) / len(values), "mean": mean,
            "sign_agreement": agree, "values": [float(f"{v:.6e}") for v in values]}


def _fmt(x: float) -> str:
    if x == 0.0:
        return "0"
    return f"{x:.2g}" if 1e-2 <= abs(x) < 1e3 else f"{x:.1e}".replace("e-0", "e-").replace("e+0", "e+")


def gradient_table(results: dict) -> str:
    """dCE/dI under each placement against d(20 log R)/dI, for every checkpoint, layer, state."""
    rt = results["runtime"]["layers"]
    lines = ["| steps | layer | state | I | spnas: mean \\|∂CE/∂I\\| (mean; sign agr.) | authors, BN2 eps 1e-5 "
             "| authors, BN2 eps 1e-3 | 20 ∂log R/∂I | spnas / runtime | authors 1e-5 / runtime |",
             "|" + "---|" * 10]
    for cp in results["checkpoints"]:
        for li, layer in enumerate(cp["layers"]):
            name = f"blocks.2.{li + 1}"
            for state, ind in TABLE_ROWS:
                cells = []
                for p in PLACEMENTS:
                    s = layer["states"][state][p][ind]
                    cells.append(f"{_fmt(s['mean_abs'])} ({_fmt(s['mean'])}; {s['sign_agreement']:.0%})")
                r = rt[name]["states"][state][ind]
                ratio = [layer["states"][state][p][ind]["mean_abs"] / r for p in ("spnas", "authors")]
                lines.append(f"| {cp['steps']} | {li + 1} | {state} | {ind} | " + " | ".join(cells)
                             + f" | {_fmt(r)} | {_fmt(ratio[0])} | {_fmt(ratio[1])} |")
    return "\n".join(lines)


def delta_table(results: dict) -> str:
    """What one flip does: CE(off) - CE(all on) under each placement, against 20 (log R_off - log R_on)."""
    rt = results["runtime"]["layers"]
    lines = ["| steps | layer | flip | ΔCE spnas (sign agr.) | ΔCE authors, eps 1e-5 | ΔCE authors, eps 1e-3 "
             "| Δ 20 log R |", "|" + "---|" * 7]
    for cp in results["checkpoints"]:
        for li, layer in enumerate(cp["layers"]):
            name = f"blocks.2.{li + 1}"
            for state, _ in TABLE_ROWS[3:]:
                deltas = [layer["delta_ce"][p][state] for p in PLACEMENTS]
                cells = [f"{_fmt(d['mean'])} ({d['sign_agreement']:.0%})" for d in deltas]
                lines.append(f"| {cp['steps']} | {li + 1} | {state} | " + " | ".join(cells)
                             + f" | {_fmt(rt[name]['states'][state]['delta_20logR'])} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--checkpoints", type=int, nargs="+", default=[100, 300],
                        help="measure after these many training steps (the last one ends training)")
    parser.add_argument("--train-batch", type=int, default=32)
    parser.add_argument("--batch", type=int, default=64, help="batch size of the measured batches")
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "indicator_placement.json")
    args = parser.parse_args()

    from spnas.data.datasets import load_data

    t0, c0 = time.perf_counter(), time.process_time()
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    data = load_data("digits", 16, 3, seed=0)
    x, y = data.train.tensors
    xv, yv = data.val.tensors
    net = ToyNet(args.layers)
    batches = _batches(len(x), args.batches, args.batch, torch.Generator().manual_seed(args.seed + 1))
    checkpoints: list[dict] = []
    checks: list[float] = []

    def at_checkpoint(step: int, recent: list[float]) -> None:
        state = copy.deepcopy(net.state_dict())  # BatchNorm counters and statistics come back after
        net.requires_grad_(False)
        bns = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
        momenta = [m.momentum for m in bns]
        for m in bns:  # measured in training mode (batch statistics), running stats unchanged
            m.momentum = 0.0
        with torch.no_grad():
            net.eval()
            val_acc = (net(xv).argmax(1) == yv).float().mean().item()
            net.train()
        layers, check = measure(net, x, y, batches)
        checks.append(check)
        checkpoints.append({"steps": step, "train_ce_last_50_steps": round(sum(recent) / len(recent), 4),
                            "val_accuracy_k5e6": round(val_acc, 4),
                            "measured_batches_ce": round(layers[0]["states"][TABLE_ROWS[0][0]]["spnas"]["ce"], 4),
                            "layers": layers})
        for m, momentum in zip(bns, momenta):
            m.momentum = momentum
        net.requires_grad_(True)
        net.load_state_dict(state)

    train(net, x, y, max(args.checkpoints), args.train_batch, args.lr, args.seed, args.checkpoints, at_checkpoint)
    results = {
        "setting": {"data": "digits 16x16x3 (train split, seed 0)", "net": f"stem 3x3 s2 -> {args.layers} x "
                    "SuperMBConv(16, 16, 1, (3, 5), (3, 6), skip=True) -> pool -> linear",
                    "train_batch": args.train_batch, "batch": args.batch, "lr": args.lr, "optimizer": "Adam",
                    "batches_measured": args.batches,
                    "seed": args.seed, "bn_mode": "training (batch statistics)",
                    "authors_bn_eps": AUTHORS_BN_EPS, "spnas_bn_eps": net.layers[0].bn2.eps,
                    "torch": torch.__version__},
        "spnas_leaf_vs_decide_graph_max_abs_diff": max(checks),
        "checkpoints": checkpoints,
        "runtime": runtime_gradients(args.layers),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(results, indent=1)  # lists of numbers (the per-batch values) on one line each
    text = re.sub(r"\[[-0-9.e+,\s]*\]",
                  lambda m: " ".join(m.group(0).split()).replace("[ ", "[").replace(" ]", "]"), text)
    args.out.write_text(text + "\n")
    print(gradient_table(results))
    print()
    print(delta_table(results))
    print()
    for cp in checkpoints:
        print(f"after {cp['steps']} steps: train CE (last 50 steps) {cp['train_ce_last_50_steps']}, CE on the "
              f"measured batches {cp['measured_batches_ce']}, "
              f"val accuracy (k5e6, eval mode) {cp['val_accuracy_k5e6']}")
    print(f"spnas leaf tensors vs the module's _decide_graph route: max |diff| {max(checks):.1e}; "
          f"R at start {results['runtime']['R_start']:.4f} MMACs; 20 dlogR/dh1 over all searchable layers at "
          f"start: {results['runtime']['h1_all_layers_at_start']['min']:.3f} .. "
          f"{results['runtime']['h1_all_layers_at_start']['max']:.3f}; "
          f"wrote {args.out} in {time.perf_counter() - t0:.1f} s "
          f"({time.process_time() - c0:.1f} s CPU)")


if __name__ == "__main__":
    main()
