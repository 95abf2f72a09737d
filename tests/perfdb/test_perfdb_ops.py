"""Validation of the op vocabulary: canonical dtypes, positive sizes, clear errors."""

import dataclasses

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from perfdb import (
    OP_TYPES,
    AllReduceOp,
    ContextAttentionOp,
    ElementwiseOp,
    GemmOp,
    GenerationAttentionOp,
    MemoryOp,
    MLABmmOp,
    MoEOp,
    P2POp,
)


def test_dtype_aliases_normalise_so_ops_compare_equal():
    assert GemmOp(8, 16, 32, dtype="bfloat16") == GemmOp(8, 16, 32, dtype="bf16")
    assert AllReduceOp(1024, 2, dtype="half").dtype == "fp16"
    assert hash(GemmOp(8, 16, 32, "BF16")) == hash(GemmOp(8, 16, 32))


def test_numpy_integers_are_accepted_and_stored_as_int():
    op = GemmOp(np.int64(4), np.int32(8), 16)
    assert type(op.m) is int and op.m == 4


def test_ops_are_frozen():
    op = GemmOp(1, 2, 3)
    with pytest.raises(dataclasses.FrozenInstanceError):
        op.m = 5  # type: ignore[misc]


@pytest.mark.parametrize(
    ("factory", "fragment"),
    [
        (lambda: GemmOp(0, 1, 1), "GemmOp.m"),
        (lambda: GemmOp(1, -3, 1), "GemmOp.n"),
        (lambda: GemmOp(1, 1, 2.5), "GemmOp.k"),
        (lambda: GemmOp(1, 1, True), "GemmOp.k"),
        (lambda: GemmOp(1, 1, 1, dtype="fp9"), "known dtypes"),
        (lambda: ContextAttentionOp(1, 16, 32, 5, 128), "multiple of num_kv_heads"),
        (lambda: ContextAttentionOp(1, 16, 32, 8, 128, prefix_len=-1), "prefix_len"),
        (lambda: GenerationAttentionOp(1, 0, 8, 8, 64), "kv_len"),
        (lambda: MoEOp(1, 64, 64, 9, 8), "topk"),
        (lambda: MoEOp(1, 64, 64, 2, 8, moe_ep_size=3), "divisible"),
        (lambda: MoEOp(1, 64, 64, 2, 8, distribution="zipf"), "distribution"),
        (lambda: MLABmmOp(4, 16, phase="mid"), "phase"),
        (lambda: AllReduceOp(0, 2), "message_bytes"),
        (lambda: P2POp(-1), "message_bytes"),
        (lambda: ElementwiseOp(0), "bytes_moved"),
        (lambda: MemoryOp(0, 0), "must be positive"),
    ],
)
def test_bad_ops_raise_value_error_naming_the_field(factory, fragment):
    with pytest.raises(ValueError, match=fragment):
        factory()


def test_uniform_is_the_balanced_distribution():
    assert MoEOp(4, 64, 64, 2, 8).distribution == "balanced"


def test_registry_maps_every_type_name_to_its_class():
    assert all(cls.op_type == name for name, cls in OP_TYPES.items())
    assert {"gemm", "context_attention", "generation_attention", "moe", "all_reduce"} <= set(
        OP_TYPES
    )


@given(st.integers(min_value=-(2**40), max_value=2**40))
def test_gemm_accepts_exactly_the_positive_integers(m):
    if m > 0:
        assert GemmOp(m, 1, 1).m == m
    else:
        with pytest.raises(ValueError, match=r"GemmOp\.m"):
            GemmOp(m, 1, 1)
