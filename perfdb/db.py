"""The query API: :func:`load_system` returns a :class:`PerfDB` that prices ops.

``PerfDB.latency(op) -> (ms, source)``:

- ``"measured"``: the op's shape is a row of a measured table (the measured value is returned);
- ``"interpolated"``: inside the measured grid; the efficiency against the roofline (plus a
  fixed launch/latency floor, :func:`perfdb.roofline.reference_ms`) is interpolated
  multilinearly in log-size space (:mod:`perfdb.grid`);
- ``"roofline"``: outside the grid (efficiency held at the nearest boundary point, latency =
  reference / efficiency), on a structural value that was never measured (the nearest measured
  structure's size-dependent time scaled by the roofline ratio, plus the table's fixed per-call
  cost, which does not shrink with the work; context attention over a cached prefix, which no
  table measures, as the prefix-free prefill of equal roofline work), with no table for the op at all
  (``launch + roofline / DEFAULT_EFFICIENCY``), or for ops priced from the spec alone (P2P,
  element-wise, memory).

All-reduce is the faster of NCCL and the engine's custom all-reduce (CUDA-graph mode), as vLLM
picks; a collective over one GPU costs 0 ms. No query returns NaN: a non-finite result raises.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import MISSING, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import yaml

from perfdb.grid import EfficiencyGrid
from perfdb.ops import Op, normalize_dtype, op_class
from perfdb.roofline import SPEC_PRICED, fallback_ms, reference_ms, roofline_ms
from perfdb.specs import HardwareSpec
from perfdb.tables import NCCL_TABLES, SCHEMAS, TableSchema, read_table, version_key

if TYPE_CHECKING:  # pandas is imported on the first table read, keeping `import perfdb` fast
    import pandas as pd

#: Environment variable: extra database roots (``os.pathsep``-separated), searched first.
PATH_ENV = "CAUSAL_TUNER_PERFDB_PATH"
#: The database bundled with the package.
BUNDLED_ROOT = Path(__file__).resolve().parent / "data" / "systems"

SOURCES = np.array(["measured", "interpolated", "roofline"])

#: Which tables price each op type (all-reduce: the faster of the two).
_OP_TABLES: dict[str, tuple[str, ...]] = {
    "gemm": ("gemm",),
    "context_attention": ("context_attention",),
    "generation_attention": ("generation_attention",),
    "moe": ("moe",),
    "mla_context": ("mla_context",),
    "mla_generation": ("mla_generation",),
    "mla_bmm": ("mla_bmm",),
    "all_reduce": ("custom_all_reduce", "nccl_all_reduce"),
    "all_gather": ("nccl_all_gather",),
    "reduce_scatter": ("nccl_reduce_scatter",),
    "all_to_all": ("nccl_all_to_all",),
}

#: NCCL tables are measured for fp16 ("half") and int8: use the one with the same element size.
_COLLECTIVE_DTYPE = {"bf16": "fp16", "fp8": "int8", "fp8_block": "int8"}
_COLLECTIVES = frozenset({"all_reduce", "all_gather", "reduce_scatter", "all_to_all"})
#: Attention tables are sliced by (compute dtype, KV-cache dtype). Engines do not all file an
#: fp8 KV cache under the same compute dtype: SGLang's FlashAttention-3 path quantises Q to fp8
#: when the cache is fp8, so its Hopper tables hold fp8-KV prefill for ordinary head sizes
#: (64/128/192) under ``(fp8, fp8)`` and keep ``(bf16, fp8)`` for a few wide heads only. A query
#: is priced from the slice with the same KV dtype that measured its head geometry.
_ATTENTION_TABLES = frozenset({"context_attention", "generation_attention"})


def _structure_distance(sl: _Slice, query: np.ndarray) -> float:
    """Summed log2 distance from each query structure to the slice's nearest measured one."""
    dist = np.abs(np.log2(1.0 + query[:, None, :]) - np.log2(1.0 + sl.struct_keys[None, :, :]))
    return float(dist.sum(axis=2).min(axis=1).sum())


def _closest_kv_slice(
    slices: dict[tuple[str, ...], _Slice],
    lookup: tuple[str, ...],
    sub: dict[str, np.ndarray],
    schema: TableSchema,
) -> tuple[str, ...]:
    """Among the attention slices with ``lookup``'s KV dtype, the one whose measured head
    geometry is nearest the query (``lookup`` itself on ties; see ``_ATTENTION_TABLES``)."""
    kv_dtype = lookup[1]
    others = [key for key in slices if key != lookup and key[1] == kv_dtype]
    if not others:
        return lookup
    m = max(np.size(sub[c]) for c in schema.structural)
    query = np.unique(
        np.stack(
            [np.broadcast_to(sub[c], (m,)).astype(np.float64) for c in schema.structural], axis=1
        ),
        axis=0,
    )
    best, best_dist = lookup, _structure_distance(slices[lookup], query)
    for key in others:
        dist = _structure_distance(slices[key], query)
        if dist < best_dist:
            best, best_dist = key, dist
    return best


def _roots(root: str | Path | None) -> list[Path]:
    if root is not None:
        return [Path(root)]
    extra = [Path(p) for p in os.environ.get(PATH_ENV, "").split(os.pathsep) if p]
    return [*extra, BUNDLED_ROOT]


def list_systems(root: str | Path | None = None) -> list[str]:
    """Names of the systems that :func:`load_system` can open.

    Parameters
    ----------
    root : str or Path, optional
        A database root; default: the roots in ``$CAUSAL_TUNER_PERFDB_PATH`` then the bundled one.
    """
    found: set[str] = set()
    for base in _roots(root):
        if base.is_dir():
            found.update(p.name for p in base.iterdir() if (p / "system.yaml").is_file())
    return sorted(found)


def load_system(
    system: str,
    backend: str = "vllm",
    version: str | None = None,
    *,
    root: str | Path | None = None,
) -> PerfDB:
    """Open one system's database (tables are read on first use).

    Parameters
    ----------
    system : str
        E.g. ``"h100_sxm"``; see :func:`list_systems`.
    backend : str
        Serving framework whose kernels were measured: ``vllm``, ``sglang``, ``trtllm``.
    version : str, optional
        Framework version; default (or ``"current"``): the system's current one.
    root : str or Path, optional
        Database root to read instead of the default search path.

    Raises
    ------
    ValueError
        For an unknown system, backend or version (the message lists those that exist) or a
        malformed ``system.yaml`` (the message names it).

    Examples
    --------
    >>> from perfdb import GemmOp, load_system
    >>> db = load_system("h100_sxm")
    >>> db.latency(GemmOp(4096, 4096, 4096))[1]
    'measured'
    """
    sys_dir = next(
        (b / system for b in _roots(root) if (b / system / "system.yaml").is_file()), None
    )
    if sys_dir is None:
        known = ", ".join(list_systems(root)) or "none"
        raise ValueError(f"unknown system {system!r}; available: {known}")
    meta_path = sys_dir / "system.yaml"
    try:
        meta = yaml.safe_load(meta_path.read_text()) or {}
        spec = HardwareSpec.from_dict(meta["spec"], origin=str(meta_path))
        current = dict(meta.get("current") or {})
    except (yaml.YAMLError, KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"{meta_path}: malformed system file ({exc!r})") from None
    backends = sorted(p.name for p in sys_dir.iterdir() if p.is_dir() and p.name != "nccl")
    if backend not in backends:
        raise ValueError(
            f"{system}: no backend {backend!r}; available: {', '.join(backends) or 'none'}"
        )
    versions = sorted(
        (p.name for p in (sys_dir / backend).iterdir() if p.is_dir()), key=version_key
    )
    if version in (None, "current"):
        chosen = str(current.get(backend) or (versions[-1] if versions else ""))
    else:
        chosen = str(version)
    if chosen not in versions:
        raise ValueError(
            f"{system}/{backend}: no version {version!r}; available: {', '.join(versions) or 'none'}"
        )
    nccl_dir = None
    nccl_root = sys_dir / "nccl"
    if nccl_root.is_dir():
        nccl_versions = sorted((p.name for p in nccl_root.iterdir() if p.is_dir()), key=version_key)
        wanted = meta.get("nccl_version")
        pick = wanted if wanted in nccl_versions else (nccl_versions[-1] if nccl_versions else None)
        nccl_dir = nccl_root / pick if pick else None
    return PerfDB(spec, sys_dir / backend / chosen, nccl_dir, backend=backend, version=chosen)


class _Slice:
    """One categorical slice of a table: its structural keys and lazily built grids."""

    def __init__(self, frame: pd.DataFrame, schema: TableSchema) -> None:
        self.frame = frame
        self.schema = schema
        if schema.structural:
            groups = frame.groupby(list(schema.structural), sort=True).indices
            self.struct_keys = np.array(list(groups.keys()), dtype=np.float64).reshape(
                len(groups), len(schema.structural)
            )
            self.rows = list(groups.values())
        else:
            self.struct_keys = np.zeros((1, 0))
            self.rows = [np.arange(len(frame))]
        self.grids: dict[int, EfficiencyGrid] = {}
        self.floor_ms: float | None = None


class PerfDB:
    """Measured kernel latencies of one system and backend version.

    Use :func:`load_system` to open one. Queries are memoized on the op.

    Parameters
    ----------
    spec : HardwareSpec
        The GPU.
    table_dir : Path
        Folder of the backend version's tables.
    nccl_dir : Path or None
        Folder of the NCCL tables.
    backend, version : str
        For display.
    allreduce_mode : str
        Custom all-reduce rows to use (``graph``: vLLM under CUDA graphs, its default).
    """

    def __init__(
        self,
        spec: HardwareSpec,
        table_dir: Path,
        nccl_dir: Path | None,
        *,
        backend: str = "vllm",
        version: str = "",
        allreduce_mode: str = "graph",
    ) -> None:
        self._spec = spec
        self.table_dir = Path(table_dir)
        self.nccl_dir = nccl_dir
        self.backend = backend
        self.version = version
        self.allreduce_mode = allreduce_mode
        self._files: dict[str, Path] = {}
        for name in SCHEMAS:
            folder = nccl_dir if name in NCCL_TABLES else self.table_dir
            if folder is not None and (folder / f"{name}.parquet").is_file():
                self._files[name] = folder / f"{name}.parquet"
        self._slices: dict[str, dict[tuple, _Slice]] = {}
        self._cache: dict[Any, tuple[float, str]] = {}

    def __repr__(self) -> str:
        return f"PerfDB({self._spec.name!r}, backend={self.backend!r}, version={self.version!r})"

    @property
    def spec(self) -> HardwareSpec:
        """The hardware spec of this system."""
        return self._spec

    @property
    def tables(self) -> list[str]:
        """Names of the measured tables present for this system/backend."""
        return sorted(self._files)

    def table(self, name: str) -> pd.DataFrame:
        """The validated rows of one table (read from disk; for inspection and benchmarks)."""
        if name not in self._files:
            raise ValueError(f"{self}: no table {name!r}; available: {', '.join(self.tables)}")
        return read_table(self._files[name], SCHEMAS[name])

    # ------------------------------------------------------------------ loading
    def _table_slices(self, name: str) -> dict[tuple, _Slice]:
        if name not in self._slices:
            schema = SCHEMAS[name]
            frame = self.table(name)
            if name == "custom_all_reduce":
                modes = frame["mode"].unique()
                mode = self.allreduce_mode if self.allreduce_mode in modes else modes[0]
                frame = frame[frame["mode"] == mode]
            slices = {}
            for key, part in frame.groupby(list(schema.categorical), sort=True):
                key = key if isinstance(key, tuple) else (key,)
                slices[tuple(str(k) for k in key)] = _Slice(part.reset_index(drop=True), schema)
            self._slices[name] = slices
        return self._slices[name]

    def _grid(self, sl: _Slice, index: int, cat: Mapping[str, str], op_type: str) -> EfficiencyGrid:
        if index not in sl.grids:
            rows = sl.frame.iloc[sl.rows[index]]
            cols: dict[str, Any] = {
                c: rows[c].to_numpy() for c in (*sl.schema.structural, *sl.schema.grid)
            }
            cols.update(cat)
            sl.grids[index] = EfficiencyGrid(
                [rows[c].to_numpy() for c in sl.schema.grid],
                rows["latency_ms"].to_numpy(),
                reference_ms(self._spec, op_type, cols),
            )
        return sl.grids[index]

    def _fixed_floor_ms(self, sl: _Slice, cat: Mapping[str, str], op_type: str) -> float:
        """The fixed per-call cost of a kernel family (one categorical slice of a table): the
        fastest latency it measured, minus that shape's roofline (at least the spec's
        launch/latency floor).

        Fused modules (a MoE layer's routing, permutation and finalisation kernels) pay tens of
        microseconds per call whatever their size; that part must not be rescaled when a
        structure's efficiency is transferred to an unmeasured one (see :meth:`_transfer`).
        """
        if sl.floor_ms is None:
            cols: dict[str, Any] = {
                c: sl.frame[c].to_numpy() for c in (*sl.schema.structural, *sl.schema.grid)
            }
            cols.update(cat)
            latency = sl.frame["latency_ms"].to_numpy()
            i = int(np.argmin(latency))
            roof = np.ravel(roofline_ms(self._spec, op_type, cols))
            launch = np.ravel(reference_ms(self._spec, op_type, cols))
            sl.floor_ms = float(max(launch[i] - roof[i], latency[i] - roof[i]))
        return sl.floor_ms

    # ------------------------------------------------------------------ queries
    def latency(self, op: Op) -> tuple[float, str]:
        """Latency of one op on one GPU.

        Parameters
        ----------
        op : Op
            Any op of :mod:`perfdb.ops`.

        Returns
        -------
        tuple of (float, str)
            Milliseconds and the source (``measured``, ``interpolated`` or ``roofline``).
        """
        hit = self._cache.get(op)
        if hit is not None:
            return hit
        if not hasattr(op, "op_type"):
            raise ValueError(f"not a perfdb op: {op!r}")
        cls = type(op)
        cols, n = self._columns(cls, {f.name: getattr(op, f.name) for f in fields(op)})
        ms, src = self._query(cls.op_type, cols, n)
        result = (float(ms[0]), str(SOURCES[src[0]]))
        self._cache[op] = result
        return result

    def latencies(self, ops: Iterable[Op]) -> list[tuple[float, str]]:
        """Latencies of many ops of mixed types (e.g. one forward pass), memoized.

        The distinct ops not yet priced are priced with one vectorized call per op type, so a
        first pricing costs a few vectorized calls rather than one query per op.

        Parameters
        ----------
        ops : iterable of Op

        Returns
        -------
        list of (float, str)
            ``(ms, source)`` per op, in order.
        """
        ops = list(ops)
        todo: dict[type, dict[Any, None]] = {}
        for op in ops:
            if op not in self._cache:
                if not hasattr(op, "op_type"):
                    raise ValueError(f"not a perfdb op: {op!r}")
                todo.setdefault(type(op), {})[op] = None
        for cls, group in todo.items():
            batch = list(group)
            names = [f.name for f in fields(cls)]
            arrays = {name: np.array([getattr(o, name) for o in batch]) for name in names}
            cols, n = self._columns(cls, arrays)
            ms, src = self._query(cls.op_type, cols, n)
            for o, a, b in zip(batch, ms, src, strict=True):
                self._cache[o] = (float(a), str(SOURCES[b]))
        return [self._cache[op] for op in ops]

    def latency_many(self, op_type: str | type, **arrays: Any) -> tuple[np.ndarray, np.ndarray]:
        """Vectorized latency of many ops of one type.

        Parameters
        ----------
        op_type : str or type
            ``"gemm"`` or :class:`~perfdb.ops.GemmOp`, etc.
        **arrays
            The op's fields as equal-length arrays (or scalars, broadcast); omitted fields take
            the op's defaults. Sizes are checked for positivity; the cross-field checks of the
            op classes (e.g. heads divisible by KV heads) are not repeated here.

        Returns
        -------
        ms : numpy.ndarray of float
        source : numpy.ndarray of str

        Raises
        ------
        ValueError
            On unknown fields, non-positive sizes or unknown dtypes (naming the offender).

        Examples
        --------
        >>> from perfdb import load_system
        >>> db = load_system("h100_sxm")
        >>> ms, src = db.latency_many("gemm", m=[1, 100, 4096], n=4096, k=4096)
        >>> ms.shape, src.tolist()
        ((3,), ['measured', 'interpolated', 'measured'])
        """
        cls = op_class(op_type)
        cols, n = self._columns(cls, arrays)
        ms, src = self._query(cls.op_type, cols, n)
        return ms, SOURCES[src]

    def _columns(self, cls: type, arrays: Mapping[str, Any]) -> tuple[dict[str, np.ndarray], int]:
        """Validated columns: numeric fields as flat int64 arrays of length ``n``; string and
        flag fields stay 0-d when given as scalars (one categorical group, no sorting)."""
        names = {f.name: f for f in fields(cls)}
        unknown = set(arrays) - set(names)
        if unknown:
            raise ValueError(
                f"{cls.__name__} has no field(s) {sorted(unknown)}; fields: {list(names)}"
            )
        raw: dict[str, np.ndarray] = {}
        for name, f in names.items():
            if name in arrays:
                raw[name] = np.asarray(arrays[name])
            elif f.default is not MISSING:
                raw[name] = np.asarray(f.default)
            else:
                raise ValueError(f"{cls.__name__}: missing field {name!r}")
        try:
            shape = np.broadcast_shapes(*(a.shape for a in raw.values()))
        except ValueError:
            sizes = {k: a.shape for k, a in raw.items() if a.ndim}
            raise ValueError(
                f"{cls.__name__}: field arrays have different shapes {sizes}"
            ) from None
        n = int(np.prod(shape))
        if n == 0:
            raise ValueError(f"{cls.__name__}: empty query")
        out: dict[str, np.ndarray] = {}
        for name, arr in raw.items():
            owner = f"{cls.__name__}.{name}"
            if name in cls._dtype_fields:
                if arr.ndim == 0:
                    out[name] = np.asarray(normalize_dtype(str(arr), owner=owner))
                else:
                    flat = np.broadcast_to(arr, shape).ravel().astype(str)
                    uniq, inverse = np.unique(flat, return_inverse=True)
                    canon = np.array([normalize_dtype(u, owner=owner) for u in uniq])
                    out[name] = canon[inverse.ravel()]
            elif names[name].type in ("int", int):
                if arr.dtype.kind not in "iuf" or (
                    arr.dtype.kind == "f" and not np.all(np.mod(arr, 1) == 0)
                ):
                    raise ValueError(f"{owner} must be integers, got dtype {arr.dtype}")
                floor = 0 if name in cls._zero_ok else 1
                if np.any(arr < floor):
                    bad = arr[arr < floor].ravel()[0]
                    kind = "non-negative" if floor == 0 else "positive"
                    raise ValueError(f"{owner} must be {kind} integers, got {bad!r}")
                out[name] = np.broadcast_to(arr.astype(np.int64), shape).ravel()
            elif name == "distribution":
                norm = np.char.lower(arr.astype(str))
                norm = np.where(norm == "uniform", "balanced", norm)
                out[name] = norm if arr.ndim == 0 else np.broadcast_to(norm, shape).ravel()
            else:
                if arr.dtype.kind == "O":
                    arr = arr.astype(str)
                out[name] = arr if arr.ndim == 0 else np.broadcast_to(arr, shape).ravel()
        return out, n

    def _query(
        self, op_type: str, cols: dict[str, np.ndarray], n: int
    ) -> tuple[np.ndarray, np.ndarray]:
        if op_type in SPEC_PRICED:
            ms = np.asarray(roofline_ms(self._spec, op_type, cols), dtype=np.float64)
            return np.broadcast_to(ms, (n,)).copy(), np.full(n, 2, dtype=np.int8)
        remapped = None
        if op_type == "context_attention":
            cols, remapped = self._prefix_as_equal_work(cols, n)
        best_ms = np.full(n, np.inf)
        best_src = np.full(n, 2, dtype=np.int8)
        for name in _OP_TABLES[op_type]:
            ms, src = self._query_table(name, op_type, cols, n)
            better = ms < best_ms
            best_ms = np.where(better, ms, best_ms)
            best_src = np.where(better, src, best_src)
        if op_type in _COLLECTIVES:
            single = cols["num_gpus"] == 1
            best_ms = np.where(single, 0.0, best_ms)
            best_src = np.where(single, 2, best_src).astype(np.int8)
        if not np.all(np.isfinite(best_ms)):
            bad = int(np.flatnonzero(~np.isfinite(best_ms))[0])
            shape = {k: (v[bad] if v.ndim else v) for k, v in cols.items()}
            raise ValueError(f"{self}: no finite latency for {op_type} {shape}")
        if remapped is not None:  # an unmeasured structure, priced through the roofline
            best_src = np.where(remapped, 2, best_src).astype(np.int8)
        return best_ms, best_src

    def _prefix_as_equal_work(
        self, cols: dict[str, np.ndarray], n: int
    ) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
        """Context attention over a cached prefix, when the tables measure none.

        The tables time prefills from an empty cache only (``prefix_len`` 0). A chunk of
        ``isl`` new tokens over ``prefix_len`` cached ones is priced as the prefix-free prefill
        of the length ``L`` whose roofline equals the chunk's (the same compute, or the same
        key/value reads when those bound it), so it runs at the efficiency the tables measured
        for that much work. (Scaling the measured time of a prefix-free ``isl``-token prefill by
        the roofline ratio instead carries a tiny prefill's launch-bound efficiency to the
        chunk: one new token over 8,191 cached ones came out at 2.6 ms a layer on an H100,
        where a decode step reading the same keys takes about 20 us.) ``L`` lies between
        ``isl`` and ``isl + prefix_len``. Returns the mapped columns and which rows moved.
        """
        prefix = np.broadcast_to(cols["prefix_len"], (n,))
        if not np.any(prefix > 0) or self._measures_prefix("context_attention"):
            return cols, None
        out = {k: (np.broadcast_to(v, (n,)).copy() if v.ndim else v) for k, v in cols.items()}
        out["isl"] = np.broadcast_to(cols["isl"], (n,)).astype(np.int64)  # rows are rewritten
        isl = out["isl"].astype(np.float64)
        moved = prefix > 0
        keys = [c for c in ("dtype", "kv_dtype") if c in out]
        combos = np.stack([np.broadcast_to(out[c], (n,)).astype(str) for c in keys], axis=1)
        for combo in np.unique(combos, axis=0):
            sel = moved & np.all(combos == combo, axis=1)
            if not sel.any():
                continue
            part = {k: (v[sel] if v.ndim else v) for k, v in out.items()}
            cats = dict(zip(keys, combo, strict=True))
            target = roofline_ms(self._spec, "context_attention", {**part, **cats})
            lo = isl[sel].copy()
            hi = lo + prefix[sel]
            zero = np.zeros(len(lo), dtype=np.int64)
            for _ in range(40):
                mid = 0.5 * (lo + hi)
                roof = roofline_ms(
                    self._spec,
                    "context_attention",
                    {**part, "isl": mid, "prefix_len": zero, **cats},
                )
                below = roof < target
                lo = np.where(below, mid, lo)
                hi = np.where(below, hi, mid)
            out["isl"][sel] = np.maximum(np.ceil(hi), isl[sel]).astype(np.int64)
        out["prefix_len"] = np.where(moved, 0, prefix).astype(np.int64)
        return out, moved

    def _measures_prefix(self, name: str) -> bool:
        """Whether a table holds any row with a cached prefix (``prefix_len > 0``)."""
        if name not in self._files:
            return False
        at = SCHEMAS[name].structural.index("prefix_len")
        return any(
            bool(np.any(sl.struct_keys[:, at] > 0)) for sl in self._table_slices(name).values()
        )

    def _query_table(
        self, name: str, op_type: str, cols: dict[str, np.ndarray], n: int
    ) -> tuple[np.ndarray, np.ndarray]:
        schema = SCHEMAS[name]
        cat_cols = {c: cols[c] for c in schema.categorical if c != "mode"}
        ms = np.empty(n)
        src = np.full(n, 2, dtype=np.int8)
        if name == "custom_all_reduce" and name not in self._files:
            return np.full(n, np.inf), src  # optional: NCCL prices all-reduce alone
        slices = self._table_slices(name) if name in self._files else {}
        groups: list[tuple[tuple[str, ...], np.ndarray | None]]
        if all(v.ndim == 0 for v in cat_cols.values()):
            groups = [(tuple(str(v) for v in cat_cols.values()), None)]
        else:
            keys = np.stack([np.broadcast_to(v, (n,)) for v in cat_cols.values()], axis=1)
            uniq, inverse = np.unique(keys, axis=0, return_inverse=True)
            inverse = inverse.ravel()
            groups = [
                (tuple(str(k) for k in key), np.flatnonzero(inverse == u))
                for u, key in enumerate(uniq)
            ]
        for cat_key, sel in groups:
            if sel is None:
                where, sub, m = slice(None), cols, n
            else:
                where, m = sel, len(sel)
                sub = {k: (v[sel] if v.ndim else v) for k, v in cols.items()}
            if name == "custom_all_reduce":
                lookup = next((k for k in slices if k[0] == cat_key[0]), None)
            elif cat_key in slices:
                lookup = cat_key
            elif name in NCCL_TABLES:  # same element size: bf16 rides the fp16 table
                alias = (_COLLECTIVE_DTYPE.get(cat_key[0], cat_key[0]),)
                lookup = alias if alias in slices else None
            else:
                lookup = None
            if lookup is not None and name in _ATTENTION_TABLES and schema.structural:
                lookup = _closest_kv_slice(slices, lookup, sub, schema)
            if lookup is None:
                if name == "custom_all_reduce":
                    ms[where], src[where] = np.inf, 2
                    continue
                ms[where] = fallback_ms(self._spec, op_type, {**sub, **_scalar_cats(sub)})
                src[where] = 2
                continue
            sl = slices[lookup]
            cat = dict(zip(schema.categorical, lookup, strict=True))
            ms[where], src[where] = self._query_slice(sl, cat, op_type, sub, name, m)
        return ms, src

    def _query_slice(
        self,
        sl: _Slice,
        cat: dict[str, str],
        op_type: str,
        sub: dict[str, np.ndarray],
        name: str,
        m: int,
    ) -> tuple[np.ndarray, np.ndarray]:
        schema = sl.schema
        if schema.structural:
            q = np.stack([sub[c].astype(np.float64) for c in schema.structural], axis=1)
            if (q == q[0]).all():  # the common case: one structure for the whole query
                uq, inverse = q[:1], np.zeros(m, dtype=np.int64)
            else:
                uq, inverse = np.unique(q, axis=0, return_inverse=True)
                inverse = inverse.ravel()
            dist = np.abs(
                np.log2(1.0 + uq[:, None, :]) - np.log2(1.0 + sl.struct_keys[None, :, :])
            ).sum(axis=2)
            best = np.argmin(dist, axis=1)
            nearest = best[inverse]
            struct_exact = (dist[np.arange(len(uq)), best] == 0)[inverse]
        else:
            nearest = np.zeros(m, dtype=np.int64)
            struct_exact = np.ones(m, dtype=bool)
        # the roofline of the query itself, with the op's own dtypes (not the table's aliases)
        roof = reference_ms(self._spec, op_type, {**sub, **_scalar_cats(sub)})
        ms = np.empty(m)
        src = np.empty(m, dtype=np.int8)
        groups = (
            [0] if not schema.structural or (nearest == nearest[0]).all() else np.unique(nearest)
        )
        for g in groups:
            rows = slice(None) if len(groups) == 1 else np.flatnonzero(nearest == g)
            index = int(nearest[0]) if len(groups) == 1 else int(g)
            grid_cat = cat if name != "custom_all_reduce" else {"dtype": cat["dtype"]}
            grid = self._grid(sl, index, grid_cat, op_type)
            y, s, exact = grid.query([sub[c][rows] for c in schema.grid])
            est = np.exp(y) * roof[rows]
            transfer = ~struct_exact[rows]
            if transfer.any():
                moved = self._transfer(sl, index, grid_cat, op_type, sub, rows, est)
                est = np.where(transfer, moved, est)
            s = np.where(struct_exact[rows], s, 2).astype(np.int8)
            ms[rows] = np.where(s == 0, exact, est)
            src[rows] = s
        return ms, src

    def _transfer(
        self,
        sl: _Slice,
        index: int,
        cat: Mapping[str, str],
        op_type: str,
        sub: dict[str, np.ndarray],
        rows: slice | np.ndarray,
        est: np.ndarray,
    ) -> np.ndarray:
        """Price queries of an unmeasured structure from the nearest measured one (``index``).

        ``est`` is the plain transfer: the nearest structure's efficiency against roofline +
        launch floor, times the query's roofline + launch floor, which shrinks a fused module's
        fixed cost with its work. Here only the size-dependent part is rescaled and the
        structure's measured fixed cost is kept: ``F + (near - F) * roof_q / roof_near``, with
        ``near`` the nearest structure's latency at the query's grid point and ``F`` the
        slice's fixed floor (:meth:`_fixed_floor_ms`).
        """
        part = {k: (v[rows] if v.ndim else v) for k, v in sub.items()}
        n = len(est)
        near_cols = dict(part)
        for j, c in enumerate(sl.schema.structural):
            near_cols[c] = np.full(n, sl.struct_keys[index, j]).astype(np.int64)
        cats = _scalar_cats(part)
        roof_q = np.asarray(roofline_ms(self._spec, op_type, {**part, **cats}), dtype=np.float64)
        roof_near = np.asarray(
            roofline_ms(self._spec, op_type, {**near_cols, **cats}), dtype=np.float64
        )
        launch = float(
            reference_ms(self._spec, op_type, {**part, **cats}).ravel()[0] - roof_q.ravel()[0]
        )
        near = est / (roof_q + launch) * (roof_near + launch)
        floor = self._fixed_floor_ms(sl, cat, op_type)
        return floor + np.maximum(near - floor, 0.0) * roof_q / roof_near


def _scalar_cats(sub: dict[str, np.ndarray]) -> dict[str, Any]:
    """The string fields of a single-category group as scalars (for the roofline functions)."""
    out: dict[str, Any] = {}
    for c, v in sub.items():
        if v.dtype.kind in "UO":
            out[c] = str(v) if v.ndim == 0 else str(v[0])
    return out
