"""Fuzzing (hypothesis): mutated spaces, latency tables, architecture strings, result files and
command lines either work or end in spnas's own one-line error; never another exception.

About 1,150 cases per run (see the ``max_examples`` of each test); ``SPNAS_FUZZ_EXAMPLES=N``
multiplies none of them but replaces each count by N, for a longer run.
"""

from __future__ import annotations

import copy
import math
import os
from pathlib import Path

import pytest
import yaml

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from spnas.cli.main import main  # noqa: E402
from spnas.core.errors import SpnasError  # noqa: E402
from spnas.space.graph import SpaceGraph  # noqa: E402
from spnas.latency.table import LatencyTable  # noqa: E402
from spnas.latency.runtime import RuntimeModel  # noqa: E402
from spnas.space.spec import parse_space  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TINY_YAML = yaml.safe_load((ROOT / "search_spaces" / "tiny.yaml").read_text())
TINY = SpaceGraph.load("tiny")


def examples(n: int) -> settings:
    n = int(os.environ.get("SPNAS_FUZZ_EXAMPLES", n))
    return settings(max_examples=n, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


def one_line(exc: SpnasError) -> None:
    text = str(exc)
    assert text and "\n" not in text and len(text) < 2000, text


# --- values a mutation puts anywhere -----------------------------------------------------------
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-10**12, 10**12), st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12), st.sampled_from(["k3e3", "skip", "3", "-1", "1e309", "nan", "", " ", "|"]),
)
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                       st.dictionaries(st.text(max_size=6), inner, max_size=3)),
                      max_leaves=6)


def paths(data, prefix=()):
    """Every key path into nested dicts and lists."""
    yield prefix
    if isinstance(data, dict):
        for k, v in data.items():
            yield from paths(v, prefix + (k,))
    elif isinstance(data, list):
        for i, v in enumerate(data):
            yield from paths(v, prefix + (i,))


@st.composite
def mutated(draw, base):
    """``base`` with 1-3 mutations: a value replaced, a key deleted, or a key added."""
    data = copy.deepcopy(base)
    for _ in range(draw(st.integers(1, 3))):
        where = draw(st.sampled_from(list(paths(data))))
        if not where:
            if draw(st.booleans()):
                return draw(values)  # the whole document replaced
            continue
        parent = data
        for key in where[:-1]:
            parent = parent[key]
        action = draw(st.sampled_from(["replace", "delete", "add"]))
        if action == "replace":
            parent[where[-1]] = draw(values)
        elif action == "delete":
            del parent[where[-1]]
        elif isinstance(parent, dict):
            parent[draw(st.text(min_size=1, max_size=8))] = draw(values)
        else:
            parent.append(draw(values))
    return data


# --- search spaces ----------------------------------------------------------------------------
@examples(300)
@given(mutated(TINY_YAML))
def test_mutated_space_yaml(data):
    text = yaml.safe_dump(data, allow_unicode=True)  # what a user's file would hold
    try:
        spec = parse_space(yaml.safe_load(text), source="fuzz.yaml")
        space = SpaceGraph(spec)
        assert space.num_searchable >= 0 and len(space.layers) >= 1
        if space.num_searchable:
            space.parse(str(space.largest()))
    except SpnasError as exc:
        one_line(exc)
        assert str(exc).startswith("fuzz.yaml"), exc


@examples(100)
@given(st.text(max_size=300))
def test_arbitrary_text_as_a_space_file(tmp_path_factory, text):
    path = tmp_path_factory.mktemp("space") / "s.yaml"
    path.write_text(text, encoding="utf-8")
    try:
        SpaceGraph.load(path)
    except SpnasError as exc:
        one_line(exc)
        assert str(path) in str(exc)


# --- latency tables ---------------------------------------------------------------------------
TABLE = __import__("spnas.devices.flops", fromlist=["FlopsDevice"]).FlopsDevice().latency_table(TINY).to_dict()


@examples(300)
@given(mutated(TABLE))
def test_mutated_latency_table(data):
    try:
        table = LatencyTable.from_dict(data, origin="fuzz.json")
        runtime = RuntimeModel(TINY, table)
        lo, hi = runtime.bounds()
        assert math.isfinite(lo) and math.isfinite(hi) and lo <= hi
    except SpnasError as exc:
        one_line(exc)
        assert "fuzz.json" in str(exc), exc


# --- architecture strings ---------------------------------------------------------------------
tokens = st.sampled_from(["k3e2", "k3e4", "k5e6", "k7e6", "k3e3", "k5e3", "skip", "|", " ", "k", "e", "9", "k3",
                          "e3", "K5E6", "SKIP", "k0e0", "k99e99", "\t", "||", "k3e3|", "é", "\n"])


@examples(250)
@given(st.one_of(st.lists(tokens, max_size=14).map(" ".join), st.lists(tokens, max_size=14).map("".join),
                 st.text(max_size=40)))
def test_architecture_strings(text):
    try:
        arch = TINY.parse(text)
    except SpnasError as exc:
        one_line(exc)
        return
    assert TINY.parse(str(arch)) == arch  # what parses prints back to itself


# --- result files (spnas train RESULT.yaml reads them) --------------------------------------------
RESULT = {"strategy": "single-path", "space": "tiny", "arch": "k3e2 skip | k5e6 k3e3", "predicted_latency": 0.5,
          "units": "MMACs", "supernet_val_accuracy": 0.9}


@examples(100)
@given(mutated(RESULT))
def test_mutated_result_file(tmp_path_factory, data):
    from spnas.pipeline.train import resolve_arch

    path = tmp_path_factory.mktemp("run") / "result.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    try:
        arch, space = resolve_arch(str(path), None)
        SpaceGraph.load(space).parse(arch)
    except SpnasError as exc:
        one_line(exc)


# --- command lines ----------------------------------------------------------------------------
words = st.sampled_from(["arch", "space", "show", "list", "search", "--space", "tiny", "spnas-cifar", "nope.yaml",
                         "--device", "flops", "pixel1", "--target", "-1", "nan", "1e999", "k3e3", "skip", "|",
                         "--epochs", "0", "--lambda", "--device-option", "x=1", "threads=0", "--strategy", "rl",
                         "--evaluations", "--seed", "abc", "latency", "train", "eval", "report", "compare",
                         "--strategies", ",", "random,random", "--val-fraction", "2", "--data", "idx:/nonexistent",
                         "plugins", "export", "--format", "pdf", "--help-me"])


@examples(100)
@given(st.lists(words, min_size=1, max_size=7))
def test_command_lines(tmp_path_factory, capsys, argv):
    out = tmp_path_factory.mktemp("cli")
    cwd = os.getcwd()
    os.chdir(out)  # anything a command writes stays in a throwaway directory
    try:
        # a command that would train stops at once: only argument handling is under test here
        argv = [a for a in argv if a not in ("search", "train", "compare")] or ["plugins"]
        try:
            code = main(argv)
        except SystemExit as exc:  # argparse: usage errors exit 2
            code = exc.code
    finally:
        os.chdir(cwd)
    err = capsys.readouterr().err
    assert code in (0, 2), (argv, code, err)
    assert "Traceback" not in err
    if code == 2 and err.startswith("spnas: error:"):
        assert err.count("\n") == 1, err
