"""``report.md`` and ``plots/compare.png`` of a ``spnas compare`` directory, and the statistics over
seeds (:func:`aggregate`) that compare.yaml keeps. :mod:`spnas.pipeline.compare` runs the comparison;
this module only reads and writes what it produced (``spnas report`` rebuilds it from compare.yaml).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

from spnas.core.runs import atomic_write_text
from spnas.report.stats import aggregate

RANDOM_ARCH = "random-arch"


def _fmt(value: Any, spec: str = ".4f") -> str:
    return "n/a" if value is None else format(value, spec)


def _mean_std(entry: Mapping[str, Any], key: str) -> str:
    mean, std = entry.get(f"{key}_mean"), entry.get(f"{key}_std")
    return _fmt(mean) if std is None else f"{mean:.4f} ± {std:.4f}"


def _every_value(entry: Mapping[str, Any]) -> str:
    """Every top-1 of a strategy; grouped by seed where a seed has several (random-arch)."""
    by_seed = entry.get("by_seed") or []
    if any(s["n"] > 1 for s in by_seed):
        return "; ".join(f"seed {s['seed']}: " + ", ".join(f"{v:.4f}" for v in s["top1_values"]) for s in by_seed)
    return ", ".join(f"{v:.4f}" for v in entry["top1_values"])


def _seeds_words(seeds: Sequence[int]) -> str:
    return f"seed {seeds[0]}" if len(seeds) == 1 else f"seeds {', '.join(map(str, seeds))}"


def _range_words(result: Mapping[str, Any]) -> str:
    """`` (--target 40%; networks of the space cost 1.197-6.075)``: the target as given and the range."""
    spec = result.get("target_spec")
    bounds = result.get("latency_range")
    words = [f"`--target {spec}`"] if spec and str(spec).endswith("%") else []
    if isinstance(bounds, list) and len(bounds) == 2:
        words.append(f"networks of the space cost {bounds[0]:.4g}-{bounds[1]:.4g}")
    return f" ({'; '.join(words)})" if words else ""


def _percent(row: Mapping[str, Any]) -> str:
    """`` (29%)``: where a result sits in the space's range (nothing for a row that predates it)."""
    f = row.get("range_fraction")
    return "" if f is None else f" ({f * 100:.0f}%)"


def write_compare_report(out: Path, result: dict[str, Any]) -> Path:
    """``report.md`` and ``plots/compare.png`` of a comparison (also rebuilt by ``spnas report``)."""
    out = Path(out)
    from spnas.report.plots import plot_comparison

    rows = result["results"]
    agg = result.get("aggregate") or aggregate(rows)  # a compare.yaml from before --seeds has none
    seeds = result.get("seeds") or [result.get("seed", 0)]
    plot_comparison(rows, out / "plots" / "compare.png", aggregate=agg, units=result["units"],
                    device=result["device"], target=result.get("target"),
                    title=f"{result['space']}: trained from scratch, {_seeds_words(seeds)}")
    u = result["units"]
    draws = result.get("random_archs")
    where = "inside the target window" if result.get("target") is not None else "from the whole space"
    lines = [f"# Strategy comparison on {result['space']}", "",
             f"Data `{result['data']}`, device `{result['device']}` ({u}), target "
             f"{_fmt(result.get('target'), 'g')}{_range_words(result)}, {_seeds_words(seeds)}. Budget: {result['supernet_epochs']} supernet "
             f"epochs each (sampling strategies share one uniform supernet and evaluate up to "
             f"{result['evaluations']} candidates); every found network trained from scratch for "
             f"{result['train_epochs']} epochs with the same recipe."
             + (f" {RANDOM_ARCH}: {draws} architectures per seed drawn uniformly at random {where}, each "
                f"trained from scratch with the same recipe, no supernet." if draws else ""), ""]
    test = any("test_top1_mean" in a for a in agg)
    lines += ["## Over seeds", "",
              f"| strategy | n | top-1 mean ± std | every value | {'test top-1 mean ± std | ' if test else ''}"
              f"predicted ({u}) | measured | search (s) |",
              "|---|---|---|---|" + ("---|" if test else "") + "---|---|---|"]
    for a in agg:
        cells = [a["strategy"], str(a["n"]), _mean_std(a, "top1"), _every_value(a),
                 *([_mean_std(a, "test_top1")] if test else []), _fmt(a.get("predicted_latency_mean")),
                 _fmt(a.get("measured_latency_mean")), _fmt(a.get("search_seconds_mean"), ".1f")]
        lines.append("| " + " | ".join(cells) + " |")
    row_test = any(r.get("test_top1") is not None for r in rows)  # the data has a test part
    lines += ["", "## Per seed", "",
              f"| seed | strategy | architecture | predicted ({u}, % of range) | measured | supernet acc. | top-1 | top-5 | "
              + ("test top-1 | " if row_test else "") + "search (s) | search epochs | evaluations | training (s) |",
              "|---|---|---|---|---|---|---|---|" + ("---|" if row_test else "") + "---|---|---|---|"]
    for r in rows:
        arch = str(r["arch"]).replace("|", "\\|")  # a bare | would end the table cell
        name = r["strategy"] + (f" #{r['draw']}" if r.get("draw") is not None else "")
        lines.append(f"| {r.get('seed', seeds[0])} | {name} | `{arch}` | {_fmt(r['predicted_latency'])}{_percent(r)} | "
                     f"{_fmt(r.get('measured_latency'))} | {_fmt(r['supernet_val_accuracy'])} | {_fmt(r['top1'])} | "
                     f"{_fmt(r['top5'])} | " + (f"{_fmt(r.get('test_top1'))} | " if row_test else "")
                     + f"{_fmt(r['search_seconds'], '.1f')} | {r['search_epochs']} | "
                     f"{_fmt(r.get('evaluations'), 'd')} | {_fmt(r['train_seconds'], '.1f')} |")
    notes = [f"- {n}" for n in result.get("notes") or []]
    lines += ([""] + ["Notes:", ""] + notes if notes else [])
    if len(seeds) == 1:
        spread = ("One seed proves no ranking: repeat with other `--seed` values, or run `--seeds 3`, before "
                  "drawing conclusions.")
    else:
        spread = (f"n counts the trained networks: one per seed and strategy ({RANDOM_ARCH}: one per drawn "
                  f"architecture); ± is their sample standard deviation (n - 1). A difference within it is "
                  f"noise: {len(seeds)} seeds rank two strategies only when their means lie well apart.")
    lines += ["", "Search time of sampling strategies includes their seed's shared supernet training "
              "(paid once for all of them, counted for each). " + spread, "", "![comparison](plots/compare.png)", ""]
    path = out / "report.md"
    atomic_write_text(path, "\n".join(lines))
    return path


def write_compare_front_report(out: Path, result: dict[str, Any]) -> Path:
    """``spnas compare --targets``: each strategy's front (mean top-1 from scratch against mean
    predicted latency, one point per target), a table per target, links to each target's report."""
    from spnas.report.plots import plot_compare_fronts

    out = Path(out)
    u = result["units"]
    agg = result["aggregate"]
    plot_compare_fronts(agg, out / "plots" / "front.png", units=u, device=result["device"],
                        latency_range=result.get("latency_range"),
                        title=f"{result['space']}: trained from scratch, {_seeds_words(result['seeds'])}")
    strategies = list(dict.fromkeys(a["strategy"] for a in agg))
    lines = [f"# Strategy fronts on {result['space']}", "",
             f"Data `{result['data']}`, device `{result['device']}` ({u}), targets "
             f"{', '.join(result['targets'])}, {_seeds_words(result['seeds'])}. One comparison per target "
             f"(links below); each seed's uniform supernet is trained once and shared by every target, and "
             f"single-path's warm-up is trained once per seed and forked into every target's search. Every "
             f"found network trained from scratch for {result['train_epochs']} epochs with one recipe.", "",
             "Top-1 mean ± std over seeds (predicted latency):", "",
             "| strategy | " + " | ".join(result["targets"]) + " |", "|---|" + "---|" * len(result["targets"])]
    for name in strategies:
        cells = []
        for spec in result["targets"]:
            a = next((x for x in agg if x["strategy"] == name and x["target_spec"] == spec), None)
            cells.append("n/a" if a is None else f"{_mean_std(a, 'top1')} ({_fmt(a.get('predicted_latency_mean'))})")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", "Per target: " + ", ".join(f"[{spec}]({run}/report.md)" for spec, run in
                                           zip(result["targets"], result["runs"])), "",
              "![fronts](plots/front.png)", ""]
    path = out / "report.md"
    atomic_write_text(path, "\n".join(lines))
    return path
