"""perfdb: measured GPU kernel latencies with honest interpolation and roofline fallback.

Ops (:mod:`perfdb.ops`) describe one kernel call on one GPU; a :class:`PerfDB` prices them:
``latency(op) -> (ms, source)`` with ``source`` in ``{"measured", "interpolated", "roofline"}``.
"""

from perfdb.db import PerfDB, list_systems, load_system
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
from perfdb.roofline import DEFAULT_EFFICIENCY
from perfdb.specs import BUILTIN_SPECS, HardwareSpec

__all__ = [
    "BUILTIN_SPECS",
    "DEFAULT_EFFICIENCY",
    "DTYPE_BYTES",
    "OP_TYPES",
    "AllGatherOp",
    "AllReduceOp",
    "AllToAllOp",
    "ContextAttentionOp",
    "ElementwiseOp",
    "GemmOp",
    "GenerationAttentionOp",
    "HardwareSpec",
    "MLABmmOp",
    "MLAContextOp",
    "MLAGenerationOp",
    "MemoryOp",
    "MoEOp",
    "Op",
    "P2POp",
    "PerfDB",
    "ReduceScatterOp",
    "list_systems",
    "load_system",
    "normalize_dtype",
]
