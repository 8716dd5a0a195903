"""Architectures: string form, YAML/JSON round trips, timm arch_def, validation."""

from __future__ import annotations

import json
import random

import pytest
import yaml

from spnas.space.arch import SKIP, Architecture, BlockDef, Op, from_arch_def, to_arch_def
from spnas.core.errors import SpaceError
from spnas.space.graph import SpaceGraph

PAPER_ARCH = ("k3e3 k3e3 k3e3 skip | k5e6 k3e3 k3e3 k3e3 | k5e6 k3e3 k3e3 k3e3 | "
              "k5e6 k5e3 k5e3 k5e3 | k5e6 k5e6 k5e6 k5e6")

# timm's _gen_spnasnet arch_def (efficientnet.py), the independent record of the paper's network;
# timm writes '_noskip' on blocks whose shapes rule out a residual anyway, and we do not.
TIMM_SPNASNET = [
    ["ds_r1_k3_s1_c16"],
    ["ir_r3_k3_s2_e3_c24"],
    ["ir_r1_k5_s2_e6_c40", "ir_r3_k3_s1_e3_c40"],
    ["ir_r1_k5_s2_e6_c80", "ir_r3_k3_s1_e3_c80"],
    ["ir_r1_k5_s1_e6_c96", "ir_r3_k5_s1_e3_c96"],
    ["ir_r4_k5_s2_e6_c192"],
    ["ir_r1_k3_s1_e6_c320"],
]


@pytest.fixture(scope="module")
def space() -> SpaceGraph:
    return SpaceGraph.load("spnas-imagenet")


def test_op_parse_and_str():
    assert Op.parse("k5e6") == Op(5, 6) and str(Op(7, 4)) == "k7e4"
    assert Op.parse(" SKIP ") is SKIP and str(SKIP) == "skip"
    with pytest.raises(SpaceError, match="'k5' is not an op"):
        Op.parse("k5")


def test_string_round_trip(space):
    rng = random.Random(0)
    for _ in range(50):
        arch = space.random(rng)
        assert Architecture.parse(str(arch), space) == arch
        assert str(Architecture.parse(str(arch), space)) == str(arch)


def test_flat_string_is_regrouped_by_the_space(space):
    flat = PAPER_ARCH.replace("|", " ")
    assert str(space.parse(flat)) == PAPER_ARCH


def test_yaml_and_json_round_trip(space):
    arch = space.parse(PAPER_ARCH)
    assert space.parse(yaml.safe_load(yaml.safe_dump(arch.to_dict()))["arch"]) == arch
    assert space.arch(json.loads(json.dumps(arch.to_dict()))["ops"]) == arch


def test_paper_network_is_timm_spnasnet_100(space):
    arch = space.parse(PAPER_ARCH)
    assert to_arch_def(arch, space) == TIMM_SPNASNET
    assert from_arch_def(TIMM_SPNASNET, space) == arch


def test_arch_def_round_trip_random(space):
    """arch_def cannot say where a skip sits; it round-trips to the canonical form (skips last)."""
    rng = random.Random(1)
    for _ in range(50):
        arch = space.random(rng)
        assert from_arch_def(to_arch_def(arch, space), space) == space.canonical(arch)


def test_canonical_moves_skips_to_stage_end():
    big = SpaceGraph.load("spnas-cifar")
    arch = big.parse("k3e3 skip k5e6 k3e3 | " + " | ".join(["k3e3 skip skip k3e6"] * 4))
    canon = big.canonical(arch)
    assert str(canon) == "k3e3 k5e6 k3e3 skip | " + " | ".join(["k3e3 k3e6 skip skip"] * 4)
    assert big.cost(arch) == big.cost(canon) and big.canonical(canon) == canon


def test_block_def_decoder():
    b = BlockDef.parse("ir_r3_k5_s2_e6_c40_noskip")
    assert (b.block_type, b.repeat, b.kernel, b.stride, b.expansion, b.out_chs, b.noskip) == ("ir", 3, 5, 2, 6, 40, True)
    assert str(b) == "ir_r3_k5_s2_e6_c40_noskip"
    with pytest.raises(SpaceError, match="option 'x9' is not supported"):
        BlockDef.parse("ir_r1_k3_x9_c16")
    with pytest.raises(SpaceError, match="type 'er' is not supported"):
        BlockDef.parse("er_r1_k3_c16")


def test_from_arch_def_checks_channels_stride_and_fixed_blocks(space):
    wrong_chs = [list(s) for s in TIMM_SPNASNET]
    wrong_chs[1] = ["ir_r3_k3_s2_e3_c999"]
    with pytest.raises(SpaceError, match="stage 1: block ir_r3_k3_s2_e3_c999 has 999 channels; the space has 24"):
        from_arch_def(wrong_chs, space)
    wrong_stride = [list(s) for s in TIMM_SPNASNET]
    wrong_stride[1] = ["ir_r3_k3_s1_e3_c24"]
    with pytest.raises(SpaceError, match="has stride 1; the space has 2"):
        from_arch_def(wrong_stride, space)
    wrong_fixed = [list(s) for s in TIMM_SPNASNET]
    wrong_fixed[6] = ["ir_r1_k5_s1_e6_c320"]
    with pytest.raises(SpaceError, match="differs from the space's fixed block"):
        from_arch_def(wrong_fixed, space)


@pytest.mark.parametrize("text,message", [
    ("k3e3 " * 19, "has 19 ops; space spnas-imagenet has 20 searchable layers"),
    ("skip " + "k3e3 " * 19, "layer 0 (blocks.1.0) cannot be skipped"),
    ("k7e6 " + "k3e3 " * 19, "layer 0 (blocks.1.0) has no op k7e6; allowed: k3e3, k3e6, k5e3, k5e6"),
    ("k3e3 k3e3 | k3e3", "has stages of [2, 1] layers; space spnas-imagenet has [4, 4, 4, 4, 4]"),
    ("", "is not an architecture"),
    ("k3e3 || k3e3", "empty stage"),
])
def test_validation_errors(space, text, message):
    with pytest.raises(SpaceError, match=message.replace("[", r"\[").replace("]", r"\]").replace("(", r"\(").replace(")", r"\)")):
        space.parse(text)


def test_extremes(space):
    assert all(op == Op(5, 6) for op in space.largest().ops)
    smallest = space.smallest()
    assert [op.is_skip for op in smallest.ops] == [False, True, True, True] * 5
    assert space.cost(smallest)[1] < space.cost(space.largest())[1]
