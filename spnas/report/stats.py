"""Statistics over seeds of a comparison (what compare.yaml keeps in ``aggregate``)."""

from __future__ import annotations

import statistics
from typing import Any, Mapping, Sequence


def _stats(key: str, values: Sequence[float]) -> dict[str, Any]:
    """``<key>_mean``, ``<key>_std`` (sample std, ddof 1; None for one value) and ``<key>_values``."""
    values = [float(v) for v in values]
    return {f"{key}_mean": statistics.fmean(values),
            f"{key}_std": statistics.stdev(values) if len(values) > 1 else None, f"{key}_values": values}


def aggregate(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Per strategy (in the rows' order), over every row of every seed (for random-arch: every drawn
    architecture of every seed): ``n``; top-1 mean, sample std and every value (:func:`_stats`); the same
    for ``test_top1`` when every row has one; the mean predicted latency (and its std), the mean measured
    latency when every row was measured, the mean search wall time; and the top-1 statistics per seed
    (``by_seed``).

    Example:
        >>> rows = [{"seed": s, "strategy": "random", "top1": t, "predicted_latency": 0.8, "search_seconds": 2.0}
        ...         for s, t in ((0, 0.5), (1, 0.7))]
        >>> a = aggregate(rows)[0]
        >>> a["n"], round(a["top1_mean"], 6), round(a["top1_std"], 6), a["top1_values"]
        (2, 0.6, 0.141421, [0.5, 0.7])
    """
    groups: dict[str, list[Mapping[str, Any]]] = {}
    for r in rows:
        groups.setdefault(str(r["strategy"]), []).append(r)
    out = []
    for name, rs in groups.items():
        entry: dict[str, Any] = {"strategy": name, "n": len(rs), **_stats("top1", [r["top1"] for r in rs])}
        if all(r.get("test_top1") is not None for r in rs):
            entry.update(_stats("test_top1", [r["test_top1"] for r in rs]))
        predicted = _stats("predicted_latency", [r["predicted_latency"] for r in rs])
        measured = [r.get("measured_latency") for r in rs]
        entry.update(predicted_latency_mean=predicted["predicted_latency_mean"],
                     predicted_latency_std=predicted["predicted_latency_std"],
                     measured_latency_mean=(statistics.fmean(measured)
                                            if all(m is not None for m in measured) else None),
                     search_seconds_mean=statistics.fmean(float(r["search_seconds"]) for r in rs))
        seeds = list(dict.fromkeys(r.get("seed") for r in rs))
        entry["by_seed"] = [{"seed": s, "n": sum(r.get("seed") == s for r in rs),
                             **_stats("top1", [r["top1"] for r in rs if r.get("seed") == s])} for s in seeds]
        out.append(entry)
    return out
