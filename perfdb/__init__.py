"""perfdb: measured GPU kernel latencies with honest interpolation and roofline fallback.

Ops (:mod:`perfdb.ops`) describe one kernel call on one GPU; a :class:`PerfDB` prices them:
``latency(op) -> (ms, source)`` with ``source`` in ``{"measured", "interpolated", "roofline"}``.
"""

from perfdb.db import BUNDLED_ROOT, PATH_ENV, PerfDB, list_systems, load_system
from perfdb.grid import EfficiencyGrid
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
from perfdb.roofline import (
    DEFAULT_EFFICIENCY,
    DEFAULT_LAUNCH_MS,
    fallback_ms,
    reference_ms,
    roofline_ms,
)
from perfdb.specs import BUILTIN_SPECS, HardwareSpec, spec_from_aiconfigurator_yaml
from perfdb.tables import SCHEMAS, TableSchema

__all__ = [
    "BUILTIN_SPECS",
    "BUNDLED_ROOT",
    "DEFAULT_EFFICIENCY",
    "DEFAULT_LAUNCH_MS",
    "DTYPE_BYTES",
    "OP_TYPES",
    "PATH_ENV",
    "SCHEMAS",
    "AllGatherOp",
    "AllReduceOp",
    "AllToAllOp",
    "CollectConfig",
    "ContextAttentionOp",
    "EfficiencyGrid",
    "ElementwiseOp",
    "GemmOp",
    "GenerationAttentionOp",
    "HardwareSpec",
    "ImportReport",
    "MLABmmOp",
    "MLAContextOp",
    "MLAGenerationOp",
    "MemoryOp",
    "MoEOp",
    "Op",
    "P2POp",
    "PerfDB",
    "ReduceScatterOp",
    "TableSchema",
    "collect",
    "fallback_ms",
    "import_aiconfigurator",
    "list_systems",
    "load_system",
    "normalize_dtype",
    "reference_ms",
    "roofline_ms",
    "spec_from_aiconfigurator_yaml",
]


_LAZY = {
    "CollectConfig": "perfdb.collector",
    "collect": "perfdb.collector",
    "ImportReport": "perfdb.importer",
    "import_aiconfigurator": "perfdb.importer",
}


def __getattr__(name: str):
    """Import the collector and importer (pandas, tqdm) only when they are used."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'perfdb' has no attribute {name!r}")
