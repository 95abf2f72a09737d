"""Our on-disk format: one parquet file per measured table, with a fixed schema per table.

Layout of a database root (the bundled one is ``perfdb/data/systems``)::

    <root>/<system>/system.yaml                         hardware spec + current versions
    <root>/<system>/<backend>/<version>/<table>.parquet  backend-specific kernels
    <root>/<system>/<backend>/<version>/manifest.yaml    where each table came from
    <root>/<system>/nccl/<nccl_version>/<table>.parquet  NCCL collectives

Every table has the columns of its :class:`TableSchema` (categorical, structural, grid) plus
``latency_ms``. Categorical columns must match a query exactly; structural columns select the
nearest measured slice (an inexact match is priced as ``roofline``); grid columns are
interpolated (:mod:`perfdb.grid`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import pandas as pd


@dataclass(frozen=True)
class TableSchema:
    """Columns of one measured table and how queries use them.

    Parameters
    ----------
    name : str
        File stem of the table.
    op_type : str
        The op type it prices (a key of :data:`perfdb.ops.OP_TYPES`).
    categorical : tuple of str
        Exact-match string columns (dtypes, modes).
    structural : tuple of str
        Integer columns matched to the nearest measured value (log distance).
    grid : tuple of str
        Positive integer columns interpolated over.
    """

    name: str
    op_type: str
    categorical: tuple[str, ...]
    structural: tuple[str, ...]
    grid: tuple[str, ...]

    def __post_init__(self) -> None:
        if not self.grid:
            raise ValueError(f"TableSchema {self.name!r} needs at least one grid column")

    @property
    def columns(self) -> tuple[str, ...]:
        """All key columns, then ``latency_ms``."""
        return (*self.categorical, *self.structural, *self.grid, "latency_ms")

    @property
    def keys(self) -> tuple[str, ...]:
        """Key columns (everything but ``latency_ms``)."""
        return (*self.categorical, *self.structural, *self.grid)


_ATTN_CAT = ("dtype", "kv_dtype")
_COLLECTIVE = (("dtype",), (), ("num_gpus", "message_bytes"))

SCHEMAS: dict[str, TableSchema] = {
    s.name: s
    for s in (
        TableSchema("gemm", "gemm", ("dtype",), (), ("m", "n", "k")),
        TableSchema(
            "context_attention",
            "context_attention",
            _ATTN_CAT,
            ("window_size", "head_dim", "num_kv_heads", "prefix_len"),
            ("batch_size", "isl", "num_heads"),
        ),
        TableSchema(
            "generation_attention",
            "generation_attention",
            _ATTN_CAT,
            ("window_size", "head_dim", "num_kv_heads"),
            ("batch_size", "kv_len", "num_heads"),
        ),
        TableSchema(
            "moe",
            "moe",
            ("dtype", "distribution"),
            ("hidden_size", "inter_size", "topk", "num_experts", "moe_tp_size", "moe_ep_size"),
            ("num_tokens",),
        ),
        TableSchema(
            "mla_context",
            "mla_context",
            ("kv_dtype", "gemm_dtype"),
            ("prefix_len",),
            ("batch_size", "isl", "num_heads"),
        ),
        TableSchema(
            "mla_generation",
            "mla_generation",
            ("kv_dtype", "gemm_dtype"),
            (),
            ("batch_size", "kv_len", "num_heads"),
        ),
        TableSchema("mla_bmm", "mla_bmm", ("dtype", "phase"), (), ("num_tokens", "num_heads")),
        TableSchema("nccl_all_reduce", "all_reduce", *_COLLECTIVE),
        TableSchema("nccl_all_gather", "all_gather", *_COLLECTIVE),
        TableSchema("nccl_reduce_scatter", "reduce_scatter", *_COLLECTIVE),
        TableSchema("nccl_all_to_all", "all_to_all", *_COLLECTIVE),
        TableSchema(
            "custom_all_reduce", "all_reduce", ("dtype", "mode"), (), ("num_gpus", "message_bytes")
        ),
    )
}

#: Tables that live under ``<system>/nccl/<version>/`` rather than the backend folder.
NCCL_TABLES: tuple[str, ...] = (
    "nccl_all_reduce",
    "nccl_all_gather",
    "nccl_reduce_scatter",
    "nccl_all_to_all",
)


def version_key(version: str) -> tuple:
    """Sort key for versions such as ``0.24.0``, ``1.3.0rc20``, ``0.5.6.post2``.

    A pre-release (``rc``) sorts before its release; a ``post`` release after it.
    """
    parts = re.findall(r"\d+|[a-z]+", str(version).lower())
    key: list[tuple[int, int]] = []
    for part in parts:
        if part.isdigit():
            key.append((1, int(part)))
        else:
            key.append((0 if part in ("a", "b", "rc", "dev") else 2, 0))
    key.append((1, -1))  # a release outranks its own rc ("0.24.0" > "0.24.0rc1")
    return tuple(key)


def validate_table(frame: pd.DataFrame, schema: TableSchema, origin: str | Path) -> pd.DataFrame:
    """Check a table against its schema; return it with canonical column types.

    Raises
    ------
    ValueError
        Naming ``origin`` when a column is missing, a key is not a positive integer, a latency is
        NaN or non-positive, or the table is empty.
    """
    import pandas as pd

    missing = [c for c in schema.columns if c not in frame.columns]
    if missing:
        raise ValueError(f"{origin}: table {schema.name!r} lacks column(s) {missing}")
    if frame.empty:
        raise ValueError(f"{origin}: table {schema.name!r} is empty")
    out = frame.loc[:, list(schema.columns)].copy()
    for col in (*schema.structural, *schema.grid):
        values = pd.to_numeric(out[col], errors="coerce")
        allow_zero = col in schema.structural
        bad = values.isna() | (values < 0) | ((values == 0) & ~allow_zero)
        if bad.any():
            raise ValueError(
                f"{origin}: column {col!r} has {int(bad.sum())} missing or invalid value(s)"
            )
        out[col] = values.astype(np.int64)
    lat = pd.to_numeric(out["latency_ms"], errors="coerce")
    bad = lat.isna() | ~np.isfinite(lat) | (lat <= 0)
    if bad.any():
        raise ValueError(
            f"{origin}: column 'latency_ms' has {int(bad.sum())} NaN/non-positive value(s)"
        )
    out["latency_ms"] = lat.astype(np.float64)
    for col in schema.categorical:
        if out[col].isna().any():
            raise ValueError(f"{origin}: column {col!r} has missing values")
        out[col] = out[col].astype(str)
    return out


def read_table(path: str | Path, schema: TableSchema) -> pd.DataFrame:
    """Read and validate one table file; errors name the file."""
    import pandas as pd

    path = Path(path)
    try:
        frame = pd.read_parquet(path)
    except Exception as exc:  # pyarrow raises several unrelated types for corrupt files
        raise ValueError(
            f"{path}: cannot read table {schema.name!r} ({type(exc).__name__}: {exc})"
        ) from None
    return validate_table(frame, schema, path)


def write_table(frame: pd.DataFrame, schema: TableSchema, path: str | Path) -> int:
    """Validate, sort and write a table (zstd parquet); return the row count."""
    path = Path(path)
    table = validate_table(frame, schema, path)
    table = table.sort_values(list(schema.keys), kind="stable").reset_index(drop=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    table.to_parquet(path, index=False, compression="zstd")
    return len(table)
