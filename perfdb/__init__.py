"""perfdb: measured GPU kernel latencies with honest interpolation and roofline fallback.

Ops (:mod:`perfdb.ops`) describe one kernel call on one GPU; a :class:`PerfDB` prices them:
``latency(op) -> (ms, source)`` with ``source`` in ``{"measured", "interpolated", "roofline"}``.
"""

from perfdb.ops import (
    DTYPE_BYTES,
    OP_TYPES,
    AllGatherOp,
    AllReduceOp,
    AllToAllOp,
    ContextAttentionOp,
    ElementwiseOp,
    GemmOp,
    GenerationAttentionOp,
    MemoryOp,
    MLABmmOp,
    MLAContextOp,
    MLAGenerationOp,
    MoEOp,
    Op,
    P2POp,
    ReduceScatterOp,
    normalize_dtype,
)

__all__ = [
    "DTYPE_BYTES",
    "OP_TYPES",
    "AllGatherOp",
    "AllReduceOp",
    "AllToAllOp",
    "ContextAttentionOp",
    "ElementwiseOp",
    "GemmOp",
    "GenerationAttentionOp",
    "MLABmmOp",
    "MLAContextOp",
    "MLAGenerationOp",
    "MemoryOp",
    "MoEOp",
    "Op",
    "P2POp",
    "ReduceScatterOp",
    "normalize_dtype",
]
