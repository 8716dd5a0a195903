"""Reinforcement-learning search: REINFORCE on the MnasNet reward (Tan et al. 2019, Eq. 2).

The policy is one categorical distribution per searchable layer (independent logits, as in
ProxylessNAS's REINFORCE variant; MnasNet's RNN controller conditions each choice on the
previous ones, which a space of independent per-layer choices does not need). Each told
candidate updates it with REINFORCE, ``grad = (R - b) * grad log p(arch)``, where
``R = ACC * (LAT / T) ** w`` (w = -0.07 as in MnasNet's soft constraint) and ``b`` is a moving
average of past rewards. A candidate outside the hard latency constraint is not evaluated and
gets ``infeasible_reward``. Adam on the logits makes the step size independent of the reward's
scale, which keeps the defaults sample-efficient: a few hundred candidates.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from spnas.space.arch import Architecture
from spnas.core.hookspecs import hookimpl
from spnas.searching.sampling import SamplingOptions, SamplingStrategy, Trial
from spnas.searching.strategy import check_options, option


@dataclass
class RLOptions(SamplingOptions):
    policy_lr: float = option(0.05, "Adam learning rate of the policy's logits")
    baseline_decay: float = option(0.9, "decay of the moving-average reward baseline")
    reward_exponent: float = option(-0.07, "w in ACC * (LAT / T) ** w (MnasNet: -0.07; 0 ignores latency)")
    reward_target: float | None = option(None, "T of the reward (default: the constraint's upper bound, else "
                                               "the middle of the space's latency range)", metavar="T",
                                         range_fraction=True)
    entropy_weight: float = option(0.0, "weight of an entropy bonus on the policy")
    infeasible_reward: float = option(0.0, "reward of a candidate outside the latency constraint")

    def __post_init__(self) -> None:
        super().__post_init__()
        check_options("rl", [
            ("policy_lr", self.policy_lr > 0, "> 0"), ("baseline_decay", 0 <= self.baseline_decay < 1, "in [0, 1)"),
            ("reward_target", self.reward_target is None or self.reward_target > 0, "> 0"),
            ("entropy_weight", self.entropy_weight >= 0, ">= 0"),
        ], self)


class ReinforceSearch(SamplingStrategy):
    """``--strategy rl``: a per-layer categorical policy trained with REINFORCE."""

    name = "rl"
    Options = RLOptions
    default_evaluations = 300

    def setup(self, space, runtime, constraint, seed) -> None:
        super().setup(space, runtime, constraint, seed)
        o: RLOptions = self.options
        self.logits = [torch.zeros(len(layer.ops), requires_grad=True) for layer in space.searchable]
        self.optimizer = torch.optim.Adam(self.logits, lr=o.policy_lr)
        self.generator = torch.Generator().manual_seed(seed)
        self.baseline: float | None = None
        if o.reward_target is not None:
            self.T = o.reward_target
        elif constraint.hi != float("inf"):
            self.T = constraint.hi
        else:
            lo, hi = runtime.bounds()
            self.T = (lo + hi) / 2

    def reward(self, trial: Trial) -> float:
        if not trial.feasible or trial.accuracy is None:
            return self.options.infeasible_reward
        return trial.accuracy * (trial.latency / self.T) ** self.options.reward_exponent

    @torch.no_grad()
    def ask(self) -> Architecture:
        choices = [int(torch.multinomial(torch.softmax(l, 0), 1, generator=self.generator)) for l in self.logits]
        return self.space.arch(layer.ops[i] for layer, i in zip(self.space.searchable, choices))

    def tell(self, trial: Trial) -> None:
        o: RLOptions = self.options
        r = self.reward(trial)
        if self.baseline is None:
            self.baseline = r
        advantage = r - self.baseline
        self.baseline = o.baseline_decay * self.baseline + (1 - o.baseline_decay) * r
        log_p = entropy = torch.zeros(())
        for logits, layer, op in zip(self.logits, self.space.searchable, trial.arch.ops):
            logp_all = torch.log_softmax(logits, 0)
            log_p = log_p + logp_all[layer.ops.index(op)]
            entropy = entropy - (logp_all.exp() * logp_all).sum()
        loss = -advantage * log_p - o.entropy_weight * entropy
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()

    def probabilities(self) -> list[list[float]]:
        """The policy's current per-layer choice probabilities (in each layer's op order)."""
        return [torch.softmax(l.detach(), 0).tolist() for l in self.logits]


@hookimpl
def spnas_register_strategies(register):
    register(ReinforceSearch.name, ReinforceSearch)
