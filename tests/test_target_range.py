"""Targets as a fraction of the space's range (``--target 40%``), results placed in that range, and
single-path schedules that always keep an epoch with the runtime term (tiny space, flops device)."""

from __future__ import annotations

import json

import pytest
import torch
import yaml

from spnas.cli.main import main
from spnas.latency.device import resolve_table
from spnas.core.errors import SpnasError
from spnas.space.graph import SpaceGraph
from spnas.latency.runtime import RuntimeModel
from spnas.searching.sampling import Constraint, SamplingOptions
from spnas.searching.target import (RangeFraction, parse_target, parse_target_options, range_fraction_options,
                          range_position, resolve_target)
from strategies.rl import RLOptions
from strategies.single_path import SinglePathOptions

# tiny on flops: the cheapest network costs 0.235584 MMACs, the dearest 1.240128 (range 1.004544)
LO, HI = 0.235584, 1.240128


@pytest.fixture(scope="module")
def runtime() -> RuntimeModel:
    space = SpaceGraph.load("tiny")
    return RuntimeModel(space, resolve_table("flops", space))


def test_bounds_of_tiny_on_flops(runtime):
    lo, hi = runtime.bounds()
    assert lo == pytest.approx(LO) and hi == pytest.approx(HI)


@pytest.mark.parametrize("text,expected", [
    ("50%", 0.737856), ("100%", HI), ("40%", 0.6374016), (" 12.5 %", LO + 0.125 * (HI - LO)),
    ("3.0", 3.0), ("0.5", 0.5), (0.7, 0.7), (RangeFraction(0.5), 0.737856),
])
def test_resolve_target(runtime, text, expected):
    assert resolve_target(text, runtime) == pytest.approx(expected, abs=1e-12)


def test_parse_keeps_fractions_until_the_table_is_known():
    assert parse_target("40%") == RangeFraction(0.4) and str(parse_target("40%")) == "40%"
    assert parse_target("2.5") == 2.5 and isinstance(parse_target("2"), float)


@pytest.mark.parametrize("text,message", [
    ("0%", "--target 0%: a fraction of the range must be in (0%, 100%]; or give a cost in MMACs"),
    ("140%", "--target 140%: a fraction of the range must be in (0%, 100%]; or give a cost in MMACs"),
    ("-5%", "--target -5%: a fraction of the range must be in (0%, 100%]"),
    ("x%", "--target x%: a fraction of the range must be in (0%, 100%]"),
    ("abc", "--target abc: not a number; give a cost in MMACs (e.g. 3.0) or a fraction of the space's range"),
    ("0", "--target 0: a cost must be a finite number > 0; give a cost in MMACs or a fraction"),
    ("inf", "--target inf: a cost must be a finite number > 0"),
    ("a b", "--target 'a b': not a number"),
])
def test_bad_targets_name_the_flag_the_value_and_what_is_allowed(text, message):
    with pytest.raises(SpnasError) as err:
        parse_target(text, "--target", "MMACs")
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


def test_range_position(runtime):
    assert range_position(LO, runtime) == {"range_fraction": 0.0, "latency_range": [LO, HI]}
    assert range_position(HI, runtime)["range_fraction"] == 1.0
    assert range_position(0.737856, runtime)["range_fraction"] == pytest.approx(0.5)


def test_options_that_take_a_fraction_and_their_resolution(runtime):
    assert range_fraction_options(SinglePathOptions) == ("target",)
    assert range_fraction_options(SamplingOptions) == ("target", "max_latency")
    assert range_fraction_options(RLOptions) == ("target", "max_latency", "reward_target")
    plain, fractions = parse_target_options(RLOptions, {"max_latency": "25%", "reward_target": "1", "epochs": 2})
    assert plain == {"reward_target": 1.0, "epochs": 2} and fractions == {"max_latency": RangeFraction(0.25)}
    opts = RLOptions(**plain, **{k: f.resolve(runtime) for k, f in fractions.items()})
    assert opts.max_latency == pytest.approx(LO + 0.25 * (HI - LO))  # the dataclass holds device units
    assert Constraint.from_options(opts, runtime).hi == pytest.approx(LO + 0.25 * (HI - LO))
    with pytest.raises(SpnasError, match=r"^--max-latency 0%: a fraction of the range"):
        parse_target_options(SamplingOptions, {"max_latency": "0%"})


def test_default_warmup_always_leaves_a_runtime_epoch():
    assert [SinglePathOptions(epochs=e).warmup for e in (1, 2, 3, 8, 16)] == [0, 1, 2, 5, 10]
    assert SinglePathOptions(epochs=1, warmup_epochs=0).warmup == 0  # legal: no warm-up at all
    assert SinglePathOptions(epochs=1, lambda_=0).warmup == 0  # lambda 0 is not refused
    with pytest.raises(SpnasError) as err:
        SinglePathOptions(epochs=3, warmup_epochs=3)
    assert str(err.value) == ("single-path: --warmup-epochs 3 leaves no epoch of --epochs 3 with the runtime term, "
                              "so the search would return the largest network; use --warmup-epochs 2 or less, "
                              "or more --epochs")


@pytest.mark.parametrize("args,message", [
    (["search", "--target", "140%"],
     "spnas: error: --target 140%: a fraction of the range must be in (0%, 100%]; or give a cost in MMACs"),
    (["search", "--target", "fast"], "spnas: error: --target fast: not a number; give a cost in MMACs"),
    (["search", "--strategy", "random", "--max-latency", "0%"], "spnas: error: --max-latency 0%: a fraction"),
    (["search", "--epochs", "2", "--warmup-epochs", "2"],
     "spnas: error: single-path: --warmup-epochs 2 leaves no epoch of --epochs 2 with the runtime term"),
    (["compare", "--target", "101%"], "spnas: error: --target 101%: a fraction of the range must be in (0%, 100%]"),
])
def test_bad_values_at_the_cli_are_one_line_exit_2(args, message, capsys):
    assert main([*args, "--space", "tiny", "--device", "flops", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(message) and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_search_with_a_fraction_of_the_range(tmp_path, runtime, capsys):
    """--target 50% resolves to the middle of the range; one epoch still has a runtime epoch."""
    torch.set_num_threads(1)
    out = tmp_path / "run"
    assert main(["search", "--space", "tiny", "--device", "flops", "--epochs", "1", "--batch-size", "128",
                 "--val-fraction", "0.9", "--bn-batches", "1", "--quiet", "--no-report", "--target", "50%",
                 "--out", str(out)]) == 0
    result = yaml.safe_load((out / "result.yaml").read_text())
    config = yaml.safe_load((out / "config.yaml").read_text())
    middle = (LO + HI) / 2
    assert result["target"] == pytest.approx(middle) and result["target_spec"] == "50%"
    assert config["options"]["target"] == pytest.approx(middle) and config["target_spec"] == "50%"
    latency = result["predicted_latency"]
    assert 0.95 * middle <= latency <= middle
    assert result["range_fraction"] == pytest.approx((latency - LO) / (HI - LO), abs=1e-5)
    assert result["latency_range"] == pytest.approx([LO, HI])
    printed = capsys.readouterr().out
    assert f"predicted latency: {latency:.4f} MMACs (flops), {result['range_fraction'] * 100:.0f}% of the range " \
           f"0.2356-1.24" in printed
    steps = [r for r in map(json.loads, (out / "log.jsonl").read_text().splitlines()) if "ce" in r]
    assert steps and all(r["warmup"] is False and r["lambda"] > 0 for r in steps)  # the default warm-up is 0
    from spnas.report.writer import write_report  # report.md shows the position and the target as given

    report = write_report(out).read_text()
    assert f"{result['range_fraction'] * 100:.0f}% of the space's range 0.2356-1.24" in report
    assert "(--target 50%)" in report


def test_compare_resolves_a_fraction_once_the_table_is_known(tmp_path, runtime):
    from spnas.pipeline.compare import CompareOptions, Comparison
    from spnas.data.datasets import load_data

    assert CompareOptions(target=0.8).target == 0.8 and CompareOptions(target="0.8").target == 0.8
    opts = CompareOptions(strategies=("random",), target=" 40%")
    assert opts.target == "40%" and opts.target_spec == "40%"  # text until the table is known
    space = runtime.space
    data = load_data("digits", space.spec.resolution, space.spec.in_chs, seed=0, val_fraction=0.2)
    comparison = Comparison(space, data, runtime, None, tmp_path / "cmp", opts, progress=False)
    assert comparison.opts.target == pytest.approx(0.6374016) and comparison.opts.target_spec == "40%"
    strategy, _ = comparison.strategies["random"]
    assert strategy.options.target == pytest.approx(0.6374016)


def test_the_library_takes_device_units_and_refuses_an_unresolved_fraction():
    from strategies.single_path import SinglePathStrategy

    assert SinglePathStrategy.from_options({"target": "0.7"}).options.target == 0.7  # e.g. from YAML
    with pytest.raises(SpnasError, match=r"--target 40% is a fraction of the space's range; resolve it first"):
        SinglePathStrategy.from_options({"target": "40%"})
