"""The declarative knob space: parsing, validation, constraints, encoding, restart cost."""

import itertools

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from causal_tuner.knobs import BACKEND_ARGUMENTS, Constraint, Knob, KnobSpace

TOML = """
backend = "vllm"

[knobs.max_num_seqs]
levels = [256, 32, 64, 128]
default = 128
restart_cost_s = 30

[knobs.max_num_batched_tokens]
levels = [64, 2048, 8192]
default = 2048
restart_cost_s = 30

[knobs.scheduling_policy]
levels = ["fcfs", "priority"]
default = "fcfs"
restart_cost_s = 45

[[constraints]]
kind = "ge"
left = "max_num_batched_tokens"
right = "max_num_seqs"
reason = "one token per running sequence"
"""


@pytest.fixture
def space(tmp_path):
    path = tmp_path / "space.toml"
    path.write_text(TOML)
    return KnobSpace.from_toml(path)


def test_toml_round_trip_and_sorted_levels(space):
    assert space.names == ("max_num_seqs", "max_num_batched_tokens", "scheduling_policy")
    assert space.knob("max_num_seqs").levels == (32, 64, 128, 256)
    assert KnobSpace.from_mapping(space.to_mapping()) == space


def test_constraint_prunes_grid_and_explains(space):
    grid = list(space.grid())
    # 4 * 3 * 2 = 24 combinations; batched_tokens=64 is below max_num_seqs 128 and 256 (2 * 2 dropped)
    assert len(grid) == 24 - 4
    assert all(c["max_num_batched_tokens"] >= c["max_num_seqs"] for c in grid)
    with pytest.raises(
        ValueError, match=r"max_num_batched_tokens=64 must be >= max_num_seqs=256 \(one token"
    ):
        space.validate(
            {"max_num_seqs": 256, "max_num_batched_tokens": 64, "scheduling_policy": "fcfs"}
        )


def test_validate_names_the_offender(space):
    with pytest.raises(ValueError, match=r"100 is not a level of knob 'max_num_seqs'"):
        space.validate(
            {"max_num_seqs": 100, "max_num_batched_tokens": 2048, "scheduling_policy": "fcfs"}
        )
    with pytest.raises(ValueError, match=r"missing \['scheduling_policy'\], unknown \['tp'\]"):
        space.validate({"max_num_seqs": 32, "max_num_batched_tokens": 2048, "tp": 2})


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("[knobs.a]\nlevels=[1]\ndefault=1\n", "at least two levels"),
        ("[knobs.a]\nlevels=[1, 2]\ndefault=3\n", "default 3 is not one of its levels"),
        (
            "[knobs.a]\nlevels=[1, 'x']\ndefault=1\n",
            "must all be numbers, all strings or all booleans",
        ),
        ("[knobs.a]\nlevels=[1, 1.0]\ndefault=1\n", "twice"),
        ("[knobs.a]\nlevels=[1, 2]\ndefault=1\ncolour=3\n", "unknown keys"),
        (
            "[knobs.a]\nlevels=[1, 2]\ndefault=1\n[[constraints]]\nkind='ge'\nleft='b'\nvalue=1\n",
            "unknown knob",
        ),
        (
            "[knobs.a]\nlevels=[1, 2]\ndefault=1\n[[constraints]]\nkind='ge'\nleft='a'\nvalue=2\n",
            "default config violates",
        ),
        ("knobs = [", "not valid TOML"),
    ],
)
def test_bad_files_give_clear_errors(tmp_path, text, match):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ValueError, match=match) as info:
        KnobSpace.from_toml(path)
    assert str(path) in str(info.value)


def test_missing_file(tmp_path):
    with pytest.raises(ValueError, match="not found"):
        KnobSpace.from_toml(tmp_path / "nope.toml")


def test_divides_constraint_for_tensor_parallel():
    space = KnobSpace.vllm_default(num_attention_heads=40)
    assert space.knob("tensor_parallel_size").levels == (1, 2, 4, 8)
    space = KnobSpace.vllm_default(num_attention_heads=12)
    assert space.knob("tensor_parallel_size").levels == (1, 2, 4)
    c = Constraint("divides", "tensor_parallel_size", value=12)
    assert c.violation({"tensor_parallel_size": 8}) == "tensor_parallel_size=8 must divide 12"


def test_feasibility_hook_and_neighbours(space):
    tight = space.with_feasibility(
        lambda c: "KV does not fit" if c["max_num_seqs"] == 256 else None
    )
    assert all(c["max_num_seqs"] != 256 for c in tight.grid())
    nbrs = tight.neighbours(tight.default_config())
    assert nbrs and all(
        sum(a != b for a, b in zip(n.values(), tight.default_config().values(), strict=True)) == 1
        for n in nbrs
    )
    assert all(tight.violation(n) is None for n in nbrs)


def test_restart_cost_is_the_costliest_changed_knob(space):
    a = space.default_config()
    assert space.restart_cost_s(a, a) == 0.0
    b = {**a, "max_num_seqs": 64}
    assert space.restart_cost_s(a, b) == 30.0
    c = {**b, "scheduling_policy": "priority"}
    assert space.restart_cost_s(a, c) == 45.0


def test_every_canonical_knob_maps_to_every_backend():
    for name, args in BACKEND_ARGUMENTS.items():
        assert set(args) == {"vllm", "sglang", "trtllm"}, name
    space = KnobSpace.vllm_default()
    assert space.backend_arguments()["max_num_seqs"] == "--max-num-seqs"


@given(
    levels=st.lists(st.integers(1, 10_000), min_size=2, max_size=6, unique=True),
    data=st.data(),
)
def test_encoding_lets_a_linear_model_fit_any_per_level_effect(levels, data):
    """Least squares on the encoding reproduces arbitrary per-level means exactly."""
    ordered = Knob("k", tuple(levels), levels[0])
    cat = Knob("c", tuple(str(v) for v in levels), str(levels[-1]))
    effects = data.draw(st.lists(st.floats(-100, 100), min_size=len(levels), max_size=len(levels)))
    for knob in (ordered, cat):
        design = np.array([np.r_[1.0, knob.encode(v)] for v in knob.levels])
        assert design.shape == (len(levels), len(levels))
        coef, *_ = np.linalg.lstsq(design, np.array(effects), rcond=None)
        np.testing.assert_allclose(design @ coef, effects, atol=1e-6)
        assert len(knob.feature_names()) == len(levels) - 1


def test_encode_many_shape(space):
    configs = list(itertools.islice(space.grid(), 5))
    x = space.encode_many(configs)
    assert x.shape == (5, len(space.feature_names())) == (5, 3 + 2 + 1)
    assert space.encode_many([]).shape == (0, 6)


def test_pairwise_features_are_the_products_of_two_knobs_levels(space):
    configs = list(space.grid())
    x = space.encode_many(configs, pairs=True)
    names = space.feature_names(pairs=True)
    # 6 per-level features, then 3*2 + 3*1 + 2*1 products
    assert x.shape == (len(configs), len(names)) == (len(configs), 6 + 6 + 3 + 2)
    assert space.encode_many([], pairs=True).shape == (0, 17)
    single, single_names = space.encode_many(configs), space.feature_names()
    np.testing.assert_array_equal(x[:, :6], single)
    for j, name in enumerate(names[6:], start=6):
        a, b = name.split(" & ")
        assert a.split(">=")[0].split("=")[0] != b.split(">=")[0].split("=")[0]
        expected = single[:, single_names.index(a)] * single[:, single_names.index(b)]
        np.testing.assert_array_equal(x[:, j], expected)
