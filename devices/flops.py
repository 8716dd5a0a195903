"""Device ``flops``: an analytic proxy, each layer's multiply-accumulates in millions.

No hardware involved: the cost of a (signature, op) entry is the MACs that
:func:`spnas.space.graph.mbconv_cost` counts for that layer and op (BatchNorm and activations are
free), so R of an architecture is its MACs in millions. Every fixed layer has its own entry.
"""

from __future__ import annotations

from spnas._version import __version__
from spnas.latency.device import Device
from spnas.space.graph import SpaceGraph
from spnas.core.hookspecs import hookimpl
from spnas.latency.table import LatencyTable, TableHeader


class FlopsDevice(Device):
    """Multiply-accumulates of each layer (an analytic proxy, no device)."""

    name = "flops"
    units = "MMACs"

    def latency_table(self, space: SpaceGraph) -> LatencyTable:
        entries: dict[str, dict[str, float]] = {}
        for layer in space.layers:
            row = entries.setdefault(layer.signature, {})
            if layer.kind != "mbconv":
                row[layer.choices[0]] = layer.macs[0] / 1e6
                continue
            for op, macs in zip(layer.ops, layer.macs):
                if not op.is_skip:
                    row[str(op)] = macs / 1e6
        header = TableHeader(
            device=self.name, units=self.units, runtime="analytic", runtime_version=f"spnas {__version__}",
            source="MACs per layer and op from spnas.space.graph.mbconv_cost",
        )
        return LatencyTable(header, entries, fixed_cost=None, origin=f"device {self.name}")


@hookimpl
def spnas_register_devices(register):
    register("flops", FlopsDevice)
