"""Convert an AIConfigurator ``systems/`` tree into our format (:mod:`perfdb.tables`).

For each system and backend the importer takes the backend's *current* version from
``systems/query_versions.yaml`` (per-system overrides honoured). For each op family it uses that
version's folder, or -- as AIConfigurator itself does -- the newest older version of the family
when the current one did not recollect it ("backward fill"); the manifest records which. NCCL
tables come from the version named by the system spec (``misc.nccl_version``), else the newest.

Pruning (documented in ``perfdb/data/PROVENANCE.md``): rows with ``beam_width > 1`` are dropped;
framework/device/kernel-name columns are dropped (one device per system, and when several
kernels were measured for one shape the fastest is kept, since engines pick the fastest);
tables outside our vocabulary (wide-EP MoE, DeepEP all-to-all, MLA sub-kernels) are not imported.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from tqdm import tqdm

from perfdb.ops import DTYPE_BYTES, normalize_dtype
from perfdb.specs import BUILTIN_SPECS, spec_from_aiconfigurator_yaml
from perfdb.tables import SCHEMAS, version_key, write_table

_NCCL_OPS = {
    "all_reduce": "nccl_all_reduce",
    "all_gather": "nccl_all_gather",
    "reduce_scatter": "nccl_reduce_scatter",
    "alltoall": "nccl_all_to_all",
}


def _need(frame: pd.DataFrame, cols: Sequence[str], path: Path) -> None:
    missing = [c for c in cols if c not in frame.columns]
    if missing:
        raise ValueError(f"{path}: expected column(s) {missing} in an AIConfigurator table")


#: Source dtypes outside our vocabulary seen by the current import (their rows are dropped).
_DROPPED_DTYPES: set[tuple[str, str]] = set()


def _dtypes(values: pd.Series, path: Path) -> pd.Series:
    """Canonical dtype names; unknown ones (e.g. SmoothQuant ``sq``) map to NaN and are dropped."""
    mapping = {}
    for raw in values.unique():
        try:
            mapping[raw] = normalize_dtype(str(raw))
        except ValueError:
            mapping[raw] = None
            _DROPPED_DTYPES.add((str(path), str(raw)))
    return values.map(mapping)


def _beam1(frame: pd.DataFrame) -> pd.DataFrame:
    return frame[frame["beam_width"] == 1] if "beam_width" in frame.columns else frame


def _gemm(frame: pd.DataFrame, path: Path) -> dict[str, pd.DataFrame]:
    _need(frame, ["gemm_dtype", "m", "n", "k", "latency"], path)
    out = pd.DataFrame(
        {
            "dtype": _dtypes(frame["gemm_dtype"], path),
            "m": frame["m"],
            "n": frame["n"],
            "k": frame["k"],
            "latency_ms": frame["latency"],
        }
    )
    return {"gemm": out}


def _attention(kind: str) -> Callable[[pd.DataFrame, Path], dict[str, pd.DataFrame]]:
    def convert(frame: pd.DataFrame, path: Path) -> dict[str, pd.DataFrame]:
        cols = ["batch_size", "isl", "num_heads", "num_key_value_heads", "head_dim", "step"]
        _need(frame, [*cols, "attn_dtype", "kv_cache_dtype", "latency"], path)
        frame = _beam1(frame)
        out = pd.DataFrame(
            {
                "dtype": _dtypes(frame["attn_dtype"], path),
                "kv_dtype": _dtypes(frame["kv_cache_dtype"], path),
                "window_size": frame["window_size"] if "window_size" in frame else 0,
                "head_dim": frame["head_dim"],
                "num_kv_heads": frame["num_key_value_heads"],
                "batch_size": frame["batch_size"],
                "num_heads": frame["num_heads"],
                "latency_ms": frame["latency"],
            }
        )
        if kind == "context_attention":
            out["prefix_len"] = frame["step"]
            out["isl"] = frame["isl"]
        else:  # decode: one new token attends to `step` cached tokens plus itself
            out["kv_len"] = frame["step"] + 1
        return {kind: out}

    return convert


def _moe(frame: pd.DataFrame, path: Path) -> dict[str, pd.DataFrame]:
    cols = ["num_tokens", "hidden_size", "inter_size", "topk", "num_experts"]
    cols += ["moe_tp_size", "moe_ep_size", "moe_dtype", "distribution", "latency"]
    _need(frame, cols, path)
    out = frame[cols[:7]].copy()
    out["dtype"] = _dtypes(frame["moe_dtype"], path)
    out["distribution"] = frame["distribution"].astype(str)
    out["latency_ms"] = frame["latency"]
    return {"moe": out}


def _mla_module(kind: str) -> Callable[[pd.DataFrame, Path], dict[str, pd.DataFrame]]:
    def convert(frame: pd.DataFrame, path: Path) -> dict[str, pd.DataFrame]:
        cols = ["batch_size", "num_heads", "kv_cache_dtype", "gemm_type", "step", "isl", "latency"]
        _need(frame, cols, path)
        if "tp_size" in frame.columns:
            frame = frame[frame["tp_size"] == 1]  # num_heads is already per GPU
        out = pd.DataFrame(
            {
                "kv_dtype": _dtypes(frame["kv_cache_dtype"], path),
                "gemm_dtype": _dtypes(frame["gemm_type"], path),
                "batch_size": frame["batch_size"],
                "num_heads": frame["num_heads"],
                "latency_ms": frame["latency"],
            }
        )
        if kind == "mla_context":
            out["isl"] = frame["isl"]
            out["prefix_len"] = frame["step"]
        else:  # the MLA decode sweep records the KV length itself in `step`
            out["kv_len"] = frame["step"]
        return {kind: out}

    return convert


def _mla_bmm(frame: pd.DataFrame, path: Path) -> dict[str, pd.DataFrame]:
    _need(frame, ["op_name", "bmm_dtype", "num_tokens", "num_heads", "latency"], path)
    phase = frame["op_name"].map({"mla_gen_pre": "pre", "mla_gen_post": "post"})
    keep = phase.notna()
    out = pd.DataFrame(
        {
            "dtype": _dtypes(frame.loc[keep, "bmm_dtype"], path),
            "phase": phase[keep],
            "num_tokens": frame.loc[keep, "num_tokens"],
            "num_heads": frame.loc[keep, "num_heads"],
            "latency_ms": frame.loc[keep, "latency"],
        }
    )
    return {"mla_bmm": out}


def _message_bytes(frame: pd.DataFrame, dtype: pd.Series) -> pd.Series:
    # AIConfigurator's message_size counts elements (int8 at 2N elements times like half at N)
    return (frame["message_size"] * dtype.map(DTYPE_BYTES)).astype(np.int64)


def _nccl(frame: pd.DataFrame, path: Path) -> dict[str, pd.DataFrame]:
    _need(frame, ["op_name", "nccl_dtype", "num_gpus", "message_size", "latency"], path)
    dtype = _dtypes(frame["nccl_dtype"], path)
    base = pd.DataFrame(
        {
            "dtype": dtype,
            "num_gpus": frame["num_gpus"],
            "message_bytes": _message_bytes(frame, dtype),
            "latency_ms": frame["latency"],
        }
    )
    return {
        table: base[frame["op_name"] == op].reset_index(drop=True)
        for op, table in _NCCL_OPS.items()
        if (frame["op_name"] == op).any()
    }


def _custom_allreduce(frame: pd.DataFrame, path: Path) -> dict[str, pd.DataFrame]:
    _need(frame, ["allreduce_dtype", "num_gpus", "message_size", "latency"], path)
    dtype = _dtypes(frame["allreduce_dtype"], path)
    if "backend" in frame.columns:
        mode = frame["backend"].astype(str).str.replace(r"^[a-z]+_", "", regex=True)
    else:
        mode = pd.Series("default", index=frame.index)
    out = pd.DataFrame(
        {
            "dtype": dtype,
            "mode": mode,
            "num_gpus": frame["num_gpus"],
            "message_bytes": _message_bytes(frame, dtype),
            "latency_ms": frame["latency"],
        }
    )
    return {"custom_all_reduce": out}


#: (op family folder, source file name) -> converter.
CONVERTERS: dict[tuple[str, str], Callable[[pd.DataFrame, Path], dict[str, pd.DataFrame]]] = {
    ("gemm", "gemm_perf.parquet"): _gemm,
    ("attention", "context_attention_perf.parquet"): _attention("context_attention"),
    ("attention", "generation_attention_perf.parquet"): _attention("generation_attention"),
    ("moe", "moe_perf.parquet"): _moe,
    ("mla", "mla_context_module_perf.parquet"): _mla_module("mla_context"),
    ("mla", "mla_generation_module_perf.parquet"): _mla_module("mla_generation"),
    ("mla_bmm", "mla_bmm_perf.parquet"): _mla_bmm,
    ("comm", "custom_allreduce_perf.parquet"): _custom_allreduce,
}


@dataclass
class ImportReport:
    """What one import wrote: per (system, backend) the tables, rows and their source files."""

    out_dir: Path
    written: list[dict] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """Human-readable lines for the CLI."""
        lines = [f"wrote {len(self.written)} table(s) under {self.out_dir}"]
        for row in self.written:
            lines.append(
                f"  {row['system']}/{row['backend']}/{row['version']}: {row['table']} "
                f"({row['rows']} rows from {row['source']})"
            )
        lines.extend(f"  missing: {m}" for m in self.missing)
        return "\n".join(lines)


def _current_versions(systems_dir: Path) -> dict:
    path = systems_dir / "query_versions.yaml"
    if not path.is_file():
        return {}
    try:
        doc = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ValueError(f"{path}: not valid YAML ({exc})") from None
    return doc


def _current_for(doc: dict, system: str, backend: str) -> str | None:
    override = ((doc.get("overrides") or {}).get(system) or {}).get(backend) or {}
    default = (doc.get("defaults") or {}).get(backend) or {}
    return override.get("current") or default.get("current")


def _pick_version(family_dir: Path, current: str | None) -> str | None:
    """The current version's folder, else the newest older one (backward fill)."""
    if not family_dir.is_dir():
        return None
    versions = sorted((p.name for p in family_dir.iterdir() if p.is_dir()), key=version_key)
    if not versions:
        return None
    if current is None:
        return versions[-1]
    older = [v for v in versions if version_key(v) <= version_key(current)]
    return older[-1] if older else None


def available_systems(systems_dir: str | Path) -> list[str]:
    """Systems with a data folder in an AIConfigurator ``systems/`` tree."""
    data = Path(systems_dir) / "data"
    return sorted(p.name for p in data.iterdir() if p.is_dir()) if data.is_dir() else []


def import_aiconfigurator(
    systems_dir: str | Path,
    out_dir: str | Path,
    systems: Iterable[str] | None = None,
    backends: Iterable[str] = ("vllm",),
    *,
    progress: bool = True,
) -> ImportReport:
    """Convert measured tables from an AIConfigurator ``systems/`` tree into our format.

    Parameters
    ----------
    systems_dir : str or Path
        The ``systems`` folder (holding ``data/`` and ``<system>.yaml``); its parent is accepted
        too.
    out_dir : str or Path
        Database root to write (``<out_dir>/<system>/...``); existing system folders written by
        this import are replaced.
    systems : iterable of str, optional
        Systems to convert (default: all in the tree).
    backends : iterable of str
        Serving frameworks (``vllm``, ``sglang``, ``trtllm``).
    progress : bool
        Show a tqdm progress bar.

    Returns
    -------
    ImportReport

    Raises
    ------
    ValueError
        If the tree is not an AIConfigurator ``systems/`` folder, a system is unknown (the
        message lists those present), or a table cannot be read (the message names the file).
    """
    root = Path(systems_dir)
    if not (root / "data").is_dir() and (root / "systems" / "data").is_dir():
        root = root / "systems"
    if not (root / "data").is_dir():
        raise ValueError(f"{systems_dir}: not an AIConfigurator systems/ tree (no data/ folder)")
    present = available_systems(root)
    chosen = list(systems) if systems else present
    unknown = [s for s in chosen if s not in present]
    if unknown:
        raise ValueError(f"unknown system(s) {unknown} in {root}; present: {', '.join(present)}")
    backends = list(backends)
    versions_doc = _current_versions(root)
    out = Path(out_dir)
    report = ImportReport(out_dir=out)
    jobs = []
    for system in chosen:
        spec_yaml = root / f"{system}.yaml"
        if spec_yaml.is_file():
            spec = spec_from_aiconfigurator_yaml(spec_yaml, system)
            if system in BUILTIN_SPECS:  # keep the per-field citations of the built-in spec
                spec = BUILTIN_SPECS[system]
        elif system in BUILTIN_SPECS:
            spec = BUILTIN_SPECS[system]
        else:
            raise ValueError(f"{spec_yaml}: missing hardware spec for system {system!r}")
        sys_out = out / system
        if sys_out.exists():
            shutil.rmtree(sys_out)
        sys_out.mkdir(parents=True)
        current = {}
        for backend in backends:
            version = _current_for(versions_doc, system, backend)
            if version is None:
                version = _pick_version(root / "data" / system / "gemm" / backend, None)
            if version is None:
                report.missing.append(f"{system}/{backend}: no data")
                continue
            current[backend] = version
            for (family, fname), conv in CONVERTERS.items():
                picked = _pick_version(root / "data" / system / family / backend, version)
                src = root / "data" / system / family / backend / str(picked) / fname
                if picked is None or not src.is_file():
                    report.missing.append(f"{system}/{backend}/{version}: {family}/{fname}")
                    continue
                jobs.append(
                    (system, backend, version, picked, src, conv, sys_out / backend / version)
                )
        nccl_dir = root / "data" / system / "comm" / "nccl"
        nccl_version = spec.nccl_version if (nccl_dir / spec.nccl_version).is_dir() else None
        nccl_version = nccl_version or _pick_version(nccl_dir, None)
        if nccl_version is None:
            report.missing.append(f"{system}: comm/nccl")
        else:
            src = nccl_dir / nccl_version / "nccl_perf.parquet"
            jobs.append(
                (
                    system,
                    "nccl",
                    nccl_version,
                    nccl_version,
                    src,
                    _nccl,
                    sys_out / "nccl" / nccl_version,
                )
            )
        doc = {"spec": spec.to_dict(), "current": current, "nccl_version": nccl_version}
        (sys_out / "system.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))

    _DROPPED_DTYPES.clear()
    manifests: dict[Path, dict] = {}
    for system, backend, version, picked, src, conv, dest in tqdm(
        jobs, desc="import tables", unit="table", disable=not progress
    ):
        try:
            frame = pd.read_parquet(src)
        except Exception as exc:
            raise ValueError(f"{src}: cannot read ({type(exc).__name__}: {exc})") from None
        for table, converted in conv(frame, src).items():
            schema = SCHEMAS[table]
            converted = converted.dropna(subset=[c for c in schema.categorical])
            if converted.empty:
                continue
            converted = converted.groupby(list(schema.keys), as_index=False, sort=False)[
                "latency_ms"
            ].min()
            rows = write_table(converted, schema, dest / f"{table}.parquet")
            source = str(src.relative_to(root.parent)) if root.parent in src.parents else str(src)
            manifests.setdefault(
                dest, {"system": system, "backend": backend, "version": version, "tables": {}}
            )
            manifests[dest]["tables"][table] = {
                "source": source,
                "source_version": picked,
                "backward_fill": picked != version,
                "rows": rows,
            }
            report.written.append(
                {
                    "system": system,
                    "backend": backend,
                    "version": version,
                    "table": table,
                    "rows": rows,
                    "source": source,
                }
            )
    report.missing.extend(
        f"{src}: rows with dtype {dt!r} dropped" for src, dt in sorted(_DROPPED_DTYPES)
    )
    for dest, manifest in manifests.items():
        (dest / "manifest.yaml").write_text(yaml.safe_dump(manifest, sort_keys=False))
    return report
