"""What a checkpoint file holds, declared by whoever writes it (the checkpoint-format hook).

Every ``.pt`` file spnas writes is a dict with a ``format`` field (``spnas-supernet-v1``,
``spnas-single-path-v1``, ...). :func:`spnas.supernet.loading.read_child` (``spnas export``,
``spnas eval``, ``spnas.export``) turns such a file into a child network without knowing any
format by name: it asks the registry for the :class:`CheckpointFormat` of the file's ``format``.
A strategy whose checkpoints hold a supernet registers one line in its plugin::

    @spnas.hookimpl
    def spnas_register_checkpoint_formats(register):
        register("my-strategy-v1", CheckpointFormat("my-strategy search checkpoint", holds="supernet"))
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

#: what a checkpoint's weights are the state dict of
HOLDS = ("supernet", "child")


def _model(state: dict) -> Any:
    return state.get("model")


@dataclass(frozen=True)
class CheckpointFormat:
    """How to read a network out of one ``format`` of checkpoint.

    Attributes:
        description: a few words for messages, e.g. ``"single-path search checkpoint"``.
        holds: ``"supernet"`` (the weights of a :class:`~spnas.supernet.builder.Supernet`: every
            architecture of the space; the reader slices out the one asked for) or ``"child"`` (a
            :class:`~spnas.supernet.builder.ChildNet` of the architecture stored in the file's
            ``arch`` field).
        weights: ``weights(state) -> state dict`` of the network; by default the file's ``model``.
        bn_as_trained: for ``holds="supernet"``: the BatchNorm statistics are those of training
            (many paths mixed), not recalibrated for one architecture; ``spnas eval`` recalibrates.
    """

    description: str
    holds: str = "supernet"
    weights: Callable[[dict], Any] = _model
    bn_as_trained: bool = True

    def __post_init__(self) -> None:
        if self.holds not in HOLDS:
            raise ValueError(f"CheckpointFormat.holds {self.holds!r} is not allowed; use one of {', '.join(HOLDS)}")
