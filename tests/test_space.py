"""Search-space files: validation errors, the compiled graph, and the paper's numbers."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from spnas.core.errors import SpaceError
from spnas.space.graph import SpaceGraph
from spnas.space.spec import load_space_file, make_divisible, parse_space
from spnas.core.registry import get_registry

PAPER_ARCH = ("k3e3 k3e3 k3e3 skip | k5e6 k3e3 k3e3 k3e3 | k5e6 k3e3 k3e3 k3e3 | "
              "k5e6 k5e3 k5e3 k5e3 | k5e6 k5e6 k5e6 k5e6")


@pytest.fixture()
def tiny_data() -> dict:
    return yaml.safe_load(Path(get_registry().space_path("tiny")).read_text())


def _error(data, tmp_path) -> str:
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(SpaceError) as info:
        load_space_file(path)
    message = str(info.value)
    assert "\n" not in message and message.startswith(str(path))
    return message


@pytest.mark.parametrize("mutate,expected", [
    (lambda d: d.update(colour="red"), ["colour", "unknown key", "allowed keys"]),
    (lambda d: d["blocks"][1]["search"].update(kernel=[3, 4]), ["blocks[1].search.kernel[1]", "4", "even"]),
    (lambda d: d["blocks"][1]["search"].update(kernel=[]), ["blocks[1].search.kernel", "[]", "non-empty list"]),
    (lambda d: d["blocks"][1]["search"].update(kernel=[5, 3]), ["blocks[1].search.kernel", "[5, 3]", "sorted"]),
    (lambda d: d["blocks"][1]["search"].update(expansion=[3, 3]), ["expansion", "[3, 3]", "sorted"]),
    (lambda d: d["blocks"][1]["search"].update(expansion=[1, 3]), ["expansion", "[1, 3]", ">= 2"]),
    (lambda d: d["blocks"][1]["search"].update(stride=3), ["blocks[1].search.stride", "3", "use 1 or 2"]),
    (lambda d: d["blocks"][2]["search"].update(out_chs=0), ["blocks[2].search.out_chs", "0", ">= 1"]),
    (lambda d: d["blocks"][2]["search"].update(out_chs="wide"), ["out_chs", "'wide'", "not an integer"]),
    (lambda d: d["blocks"][2]["search"].update(skip="yes"), ["skip", "'yes'", "true or false"]),
    (lambda d: d["blocks"][2]["search"].update(layers=2.5), ["layers", "2.5", "not an integer"]),
    (lambda d: d["input"].update(resolution=2), ["input.resolution", "2", "total stride 4", "at least 4"]),
    (lambda d: d.update(dropout=1.5), ["dropout", "1.5", "[0.0, 1.0)"]),
    (lambda d: d.update(activation="gelu"), ["activation", "'gelu'", "relu, relu6"]),
    (lambda d: d["blocks"].append({"pool": {}}), ["blocks[3]", "'fixed' or 'search'"]),
    (lambda d: d["blocks"][0]["fixed"].pop("kernel"), ["blocks[0].fixed.kernel", "missing"]),
    (lambda d: d.update(blocks=[d["blocks"][0]]), ["blocks", "no searchable stage"]),
    (lambda d: d.update(stem=[1, 2]), ["stem", "[1, 2]", "mapping"]),
])
def test_validation_errors_name_file_key_value_and_allowed(tiny_data, tmp_path, mutate, expected):
    data = copy.deepcopy(tiny_data)
    mutate(data)
    message = _error(data, tmp_path)
    for part in expected:
        assert part in message, message


def test_yaml_syntax_error_and_missing_file(tmp_path):
    bad = tmp_path / "broken.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(SpaceError, match=r"broken.yaml: not valid YAML at line"):
        load_space_file(bad)
    with pytest.raises(SpaceError, match="no such search-space file"):
        load_space_file(tmp_path / "missing.yaml")


def test_yaml_objects_are_not_constructed(tmp_path):
    path = tmp_path / "evil.yaml"
    path.write_text("name: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(SpaceError, match="not valid YAML"):
        load_space_file(path)


def test_make_divisible_matches_mobilenet_rounding():
    # hand-computed: 0.25 x (32, 16, 24, 40, 80, 96, 192, 320, 1280)
    assert [make_divisible(c * 0.25) for c in (32, 16, 24, 40, 80, 96, 192, 320, 1280)] == \
        [8, 8, 8, 16, 24, 24, 48, 80, 320]
    assert make_divisible(1280 * 1.0) == 1280 and make_divisible(36) == 40


def test_paper_space_size_and_layers():
    space = SpaceGraph.load("spnas-imagenet")
    assert space.num_searchable == 20
    assert space.size == 4 ** 5 * 5 ** 15 == 31_250_000_000_000
    # skip is allowed everywhere except the first layer of each stage
    assert [l.skip_allowed for l in space.searchable] == [False, True, True, True] * 5
    # stage inputs 112, 56, 28, 14, 14 (SOURCE.md); output 7x7 into the head
    starts = [l.in_res for l in space.searchable[::4]]
    assert starts == [112, 56, 28, 14, 14]
    assert space.layers[-1].in_res == 7 and space.layers[-1].out_chs == 1000


def test_paper_network_params_and_macs():
    space = SpaceGraph.load("spnas-imagenet")
    params, macs = space.cost(space.parse(PAPER_ARCH))
    assert abs(params - 4.42e6) <= 0.01e6  # paper and timm: 4.42 M
    assert 325e6 <= macs <= 340e6  # "about 333 M MACs"


def test_costs_are_additive_over_the_graph():
    """Two routes to a network's cost: the graph's per-layer sum and a hand formula."""
    space = SpaceGraph.load("tiny")
    arch = space.parse("k5e4 skip | k3e6 k5e3")
    params, macs = space.cost(arch)
    # stem 3->8 k3 at 16x16; ds 8->8 k3; mbconv 8->16 s2 k5 e4; skip; 16->24 s2 k3 e6; 24->24 k5 e3; head; fc
    hand_params = (27 * 8 + 16) + (9 * 8 + 16 + 8 * 8 + 16) + (8 * 32 + 64 + 25 * 32 + 64 + 32 * 16 + 32) \
        + (16 * 96 + 192 + 9 * 96 + 192 + 96 * 24 + 48) + (24 * 72 + 144 + 25 * 72 + 144 + 72 * 24 + 48) \
        + (24 * 32 + 64) + (32 * 10 + 10)
    assert params == hand_params
    hand_macs = 256 * 27 * 8 + 256 * (72 + 64) + (256 * 8 * 32 + 64 * 25 * 32 + 64 * 32 * 16) \
        + (64 * 16 * 96 + 16 * 9 * 96 + 16 * 96 * 24) + (16 * 24 * 72 + 16 * 25 * 72 + 16 * 72 * 24) \
        + 16 * 24 * 32 + 32 * 10
    assert macs == hand_macs


def test_graph_nodes_carry_shapes_and_edges_follow_data():
    space = SpaceGraph.load("spnas-cifar")
    g = space.graph
    assert g.number_of_nodes() == len(space.layers) == 25
    for u, v, shape in g.edges(data="shape"):
        assert shape == (g.nodes[u]["layer"].out_chs, g.nodes[u]["layer"].out_res, g.nodes[u]["layer"].out_res)
    sigs = {l.signature for l in space.searchable}
    assert "mbconv_i8_o8_s2_r32" in sigs  # signatures come from shapes, not positions


def test_registered_name_or_path(tmp_path):
    by_name = SpaceGraph.load("tiny")
    by_path = SpaceGraph.load(get_registry().space_path("tiny"))
    assert by_name.signature() == by_path.signature()
    with pytest.raises(Exception, match="unknown space 'nope'; available: spnas-cifar, spnas-imagenet, tiny"):
        SpaceGraph.load("nope")


def test_parse_space_accepts_plain_dicts():
    spec = parse_space({"name": "x", "input": {"resolution": 8}, "num_classes": 2, "stem": {"out_chs": 8},
                        "blocks": [{"search": {"out_chs": 8, "layers": 2, "stride": 1, "kernel": [3],
                                               "expansion": [2]}}], "head": {"out_chs": 8}})
    assert SpaceGraph(spec).size == 2
