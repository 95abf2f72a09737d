"""Configuration search: parallelism x batching knobs x serving modes, Pareto frontier, SLA pick.

:func:`search` sweeps, for a model on ``num_gpus`` GPUs of one system and one workload:

* aggregated: every worker layout (:func:`~simulator.parallel.enumerate_parallel`) replicated
  to fill the GPUs, at client concurrencies 1..1024 (powers of two) with ``max_num_seqs`` set
  to the concurrency per replica, for each ``max_num_batched_tokens`` in the sweep;
* disaggregated: every (prefill layout, decode layout, decode batch) with the number of prefill
  and decode workers matched so that prefill capacity covers the decode side's request rate at
  utilisation <= ``PREFILL_TARGET_UTILIZATION`` (worker-ratio matching), using all GPUs it can.

Each point is estimated by :mod:`simulator.analytical`. The Pareto frontier maximises output
tokens/s per GPU and tokens/s per user; the best configuration is the one with the highest
tokens/s per GPU whose TTFT and TPOT meet the SLA.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from tqdm import tqdm

from simulator.analytical import (
    BatchingConfig,
    Workload,
    estimate_aggregated,
    estimate_disaggregated,
)
from simulator.models import load_model, precision_for, vllm_env
from simulator.parallel import ParallelConfig, enumerate_parallel
from simulator.step_time import BACKENDS, AnalyticalStepModel, _load_db

PREFILL_TARGET_UTILIZATION = 0.8
CONCURRENCIES = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
DECODE_BATCHES = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


@dataclass(frozen=True)
class SearchSpace:
    """What the search sweeps.

    Parameters
    ----------
    modes : tuple of str
        ``"agg"`` and/or ``"disagg"``.
    max_num_batched_tokens : tuple of int
        Step token budgets tried in aggregated mode.
    concurrencies : tuple of int
        Total client concurrencies tried in aggregated mode.
    decode_batches : tuple of int
        Decode batch sizes per attention-DP rank tried in disaggregated mode.
    cuda_graphs : tuple of bool
        Whether to try eager mode too.
    allow_pp : bool
        Include pipeline-parallel layouts.
    """

    modes: tuple[str, ...] = ("agg", "disagg")
    max_num_batched_tokens: tuple[int, ...] = (2048, 8192)
    concurrencies: tuple[int, ...] = CONCURRENCIES
    decode_batches: tuple[int, ...] = DECODE_BATCHES
    cuda_graphs: tuple[bool, ...] = (True,)
    allow_pp: bool = False

    def __post_init__(self) -> None:
        bad = set(self.modes) - {"agg", "disagg"}
        if bad or not self.modes:
            raise ValueError(f"modes must be a non-empty subset of agg, disagg; got {self.modes}")
        for name in ("max_num_batched_tokens", "concurrencies", "decode_batches"):
            values = getattr(self, name)
            if not values or min(values) < 1:
                raise ValueError(f"{name} must be non-empty positive integers, got {values}")


@dataclass
class SearchResult:
    """All evaluated points, the Pareto frontier and the best point under the SLA."""

    table: pd.DataFrame
    frontier: pd.DataFrame
    best: pd.Series | None
    skipped: dict[str, str]
    #: environment a ``vllm serve`` of these configurations needs (see ``models.vllm_env``)
    vllm_env: dict[str, str] = field(default_factory=dict)
    #: the model and precision searched (what :meth:`launch_config` serves)
    model: str = ""
    dtype: str = "bf16"

    def launch_config(self, row: pd.Series | None = None):
        """The :class:`~simulator.launch.LaunchConfig` of one aggregated point (``best`` by
        default): render it with :func:`simulator.launch.render_all` for ``vllm serve``, SGLang
        and ``trtllm-serve``. Each of the point's ``replicas`` runs it."""
        from simulator.analytical import BatchingConfig
        from simulator.launch import LaunchConfig

        row = self.best if row is None else row
        if row is None:
            raise ValueError("no configuration meets the SLA: pass a row of the table")
        if row["mode"] != "agg":
            raise ValueError(
                "launch configs are rendered for aggregated points; a disaggregated point runs "
                f"{int(row['prefill_workers'])} prefill worker(s) {row['prefill_layout']} and "
                f"{int(row['decode_workers'])} decode worker(s) {row['decode_layout']}"
            )
        par = ParallelConfig(
            tp=int(row["tp"]),
            pp=int(row["pp"]),
            attention_dp=int(row["attention_dp"]),
            moe_ep=int(row["moe_ep"]),
        )
        batching = BatchingConfig(
            max_num_seqs=int(row["max_num_seqs"]),
            max_num_batched_tokens=int(row["max_num_batched_tokens"]),
        )
        return LaunchConfig(
            self.model,
            par,
            batching,
            dtype=self.dtype,
            kv_cache_dtype="fp8" if self.dtype != "bf16" else "bf16",
            vllm_env=self.vllm_env,
        )

    def to_csv(self, path: str) -> None:
        self.table.to_csv(path, index=False)

    def plot(self, path: str, title: str = "") -> None:
        """Tokens/s/GPU vs tokens/s/user per mode, frontier and best point marked (PNG)."""
        from matplotlib.figure import Figure

        fig = Figure(figsize=(7, 4.5))
        ax = fig.subplots()
        colors = {"agg": "tab:blue", "disagg": "tab:orange"}
        for mode, grp in self.table.groupby("mode"):
            ok = grp["meets_sla"]
            ax.scatter(
                grp.loc[ok, "tok_s_per_user"],
                grp.loc[ok, "tok_s_per_gpu"],
                s=10,
                color=colors.get(mode),
                label=f"{mode} (meets SLA)",
            )
            ax.scatter(
                grp.loc[~ok, "tok_s_per_user"],
                grp.loc[~ok, "tok_s_per_gpu"],
                s=6,
                color=colors.get(mode),
                alpha=0.25,
                label=f"{mode} (misses SLA)",
            )
        front = self.frontier.sort_values("tok_s_per_user")
        ax.plot(
            front["tok_s_per_user"], front["tok_s_per_gpu"], "k-", lw=1, label="Pareto frontier"
        )
        if self.best is not None:
            ax.scatter(
                [self.best["tok_s_per_user"]],
                [self.best["tok_s_per_gpu"]],
                marker="*",
                s=200,
                color="red",
                label="best under SLA",
            )
        ax.set_xlabel("output tokens/s per user")
        ax.set_ylabel("output tokens/s per GPU")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(path, dpi=120)


def pareto_frontier(
    table: pd.DataFrame, x: str = "tok_s_per_user", y: str = "tok_s_per_gpu"
) -> pd.DataFrame:
    """Rows not dominated in (x, y), both maximised; sorted by ``x``."""
    finite = table[np.isfinite(table[x]) & np.isfinite(table[y]) & (table[y] > 0)]
    if finite.empty:
        return finite
    ordered = finite.sort_values([x, y], ascending=[False, False])
    best_y = -math.inf
    keep = []
    for idx, val in zip(ordered.index, ordered[y].to_numpy(), strict=True):
        if val > best_y:
            keep.append(idx)
            best_y = val
    return finite.loc[keep].sort_values(x)


def _row(mode: str, est: Any, **cols: Any) -> dict:
    return {
        "mode": mode,
        **cols,
        "num_gpus": est.num_gpus,
        "ttft_ms": est.ttft_ms,
        "ttft_p90_ms": est.ttft_p90_ms,
        "tpot_ms": est.tpot_ms,
        "tpot_p90_ms": est.tpot_p90_ms,
        "request_latency_ms": est.request_latency_ms,
        "tok_s_per_gpu": est.output_tok_s_per_gpu,
        "tok_s_per_user": est.output_tok_s_per_user,
        "request_rate_per_s": est.request_rate_per_s,
        "kv_capacity_tokens": est.memory.kv_capacity_tokens if est.memory else np.nan,
        "weights_gib_per_gpu": est.memory.weights_bytes / 2**30 if est.memory else np.nan,
    }


def search(
    model: str,
    system: str,
    num_gpus: int,
    isl: float,
    osl: float,
    *,
    ttft_ms: float | None = None,
    tpot_ms: float | None = None,
    backend: str = "vllm",
    dtype: str = "bf16",
    space: SearchSpace | None = None,
    db: Any = None,
    progress: bool = True,
) -> SearchResult:
    """Sweep configurations and return every point, the frontier and the SLA pick.

    Parameters
    ----------
    model : str
        Bundled model id or config path.
    system : str
        perfdb system (``"h200_sxm"``).
    num_gpus : int
        GPUs available.
    isl, osl : float
        Mean input/output lengths.
    ttft_ms, tpot_ms : float or None
        SLA limits (``None``: no limit).
    backend, dtype : str
        Serving engine and precision name.
    space : SearchSpace
        What to sweep.
    db : perfdb database or None
        Pricing source (default: ``perfdb.load_system(system, backend)``).
    progress : bool
        Show a tqdm bar.

    Raises
    ------
    ValueError
        For an unknown model/system/backend/precision, or when no layout fits on the GPUs
        (the message lists each layout's reason).
    """
    if num_gpus < 1:
        raise ValueError(f"num_gpus must be >= 1, got {num_gpus}")
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose from {', '.join(BACKENDS)}")
    Workload(isl, osl, concurrency=1)  # validates the lengths with a clear message
    space = space or SearchSpace()
    spec = load_model(model)
    db = db if db is not None else _load_db(system, backend, None)
    sm_version = getattr(db.spec, "sm_version", 90)
    precision = precision_for(spec, dtype, sm_version=sm_version)
    gpus_per_node = int(getattr(db.spec, "gpus_per_node", 8))
    layouts = enumerate_parallel(
        spec, min(num_gpus, gpus_per_node), gpus_per_node=gpus_per_node, allow_pp=space.allow_pp
    )
    models: dict[ParallelConfig, AnalyticalStepModel] = {}
    skipped: dict[str, str] = {}
    for par in layouts:
        try:
            step = AnalyticalStepModel(spec, par, precision, db, backend=backend)
            mem = step.memory(max_num_batched_tokens=max(space.max_num_batched_tokens))
        except ValueError as exc:
            skipped[par.label()] = str(exc)
            continue
        if not mem.feasible:
            skipped[par.label()] = mem.reason()
            continue
        # price the shapes the estimates will query in a few vectorized perfdb calls
        budgets = [*space.max_num_batched_tokens, 8192]
        batches = sorted({*space.concurrencies, *space.decode_batches, 1})
        kv_mean = isl + osl / 2
        step.prefetch(
            token_counts=[*batches, *budgets, *(b + c for b in budgets for c in batches), isl],
            decode_points=[(b, kv_mean) for b in batches],
            prefill_points=[(min(isl, b), 0) for b in budgets]
            + [(b, i * b) for b in budgets for i in range(1, int(isl // b) + 1)],
        )
        models[par] = step
    if not models:
        reasons = "; ".join(f"{k}: {v}" for k, v in skipped.items()) or "no layout enumerated"
        raise ValueError(f"no parallel layout of {model} fits on {num_gpus} x {system}: {reasons}")

    work = []
    if "agg" in space.modes:
        for par in models:
            replicas = num_gpus // par.num_gpus
            for mnbt in space.max_num_batched_tokens:
                for graphs in space.cuda_graphs:
                    for conc in space.concurrencies:
                        work.append(("agg", par, replicas, mnbt, graphs, conc))
    if "disagg" in space.modes and num_gpus >= 2:
        for p_par in models:
            for d_par in models:
                if p_par.num_gpus + d_par.num_gpus > num_gpus:
                    continue
                for b in space.decode_batches:
                    work.append(("disagg", p_par, d_par, b))

    rows: list[dict] = []
    for item in tqdm(work, desc=f"search {spec.name}", disable=not progress, leave=False):
        try:
            if item[0] == "agg":
                _, par, replicas, mnbt, graphs, conc = item
                per_rank = conc / (replicas * par.attention_dp)
                if per_rank < 1:
                    continue
                seqs = int(2 ** math.ceil(math.log2(per_rank)))
                batching = BatchingConfig(
                    max_num_seqs=seqs, max_num_batched_tokens=mnbt, cuda_graphs=graphs
                )
                est = estimate_aggregated(
                    models[par], Workload(isl, osl, concurrency=conc), batching, replicas=replicas
                )
                rows.append(
                    _row(
                        "agg",
                        est,
                        prefill_layout="",
                        decode_layout=par.label(),
                        tp=par.tp,
                        pp=par.pp,
                        attention_dp=par.attention_dp,
                        moe_ep=par.moe_ep,
                        replicas=replicas,
                        prefill_workers=0,
                        decode_workers=0,
                        concurrency=conc,
                        max_num_seqs=seqs,
                        max_num_batched_tokens=mnbt,
                        cuda_graphs=graphs,
                    )
                )
            else:
                _, p_par, d_par, b = item
                row = _disagg_point(models[p_par], models[d_par], num_gpus, isl, osl, b)
                if row is not None:
                    rows.append(row)
        except ValueError as exc:  # memory of a batch size, overload: skip the point
            skipped[str(item[1:])] = str(exc)
    table = pd.DataFrame(rows)
    if table.empty:
        raise ValueError(f"no configuration of {model} could be evaluated on {num_gpus} GPUs")
    table["meets_sla"] = np.isfinite(table["ttft_ms"]) & np.isfinite(table["tpot_ms"])
    if ttft_ms is not None:
        table["meets_sla"] &= table["ttft_ms"] <= ttft_ms
    if tpot_ms is not None:
        table["meets_sla"] &= table["tpot_ms"] <= tpot_ms
    frontier = pareto_frontier(table)
    ok = table[table["meets_sla"]]
    best = ok.loc[ok["tok_s_per_gpu"].idxmax()] if not ok.empty else None
    return SearchResult(
        table=table,
        frontier=frontier,
        best=best,
        skipped=skipped,
        vllm_env=vllm_env(spec, sm_version=sm_version),
        model=model,
        dtype=dtype,
    )


def _disagg_point(
    prefill: AnalyticalStepModel,
    decode: AnalyticalStepModel,
    num_gpus: int,
    isl: float,
    osl: float,
    decode_batch: int,
) -> dict | None:
    """Match worker counts for one (prefill layout, decode layout, decode batch) and estimate."""
    d_ranks_per_worker = decode.parallel.attention_dp
    batching = BatchingConfig(max_num_seqs=int(decode_batch))
    mem = decode.memory(max_num_seqs=int(decode_batch))
    if mem.kv_capacity_tokens < decode_batch * (isl + osl):
        return None
    tpot = decode.decode_step_ms(decode_batch, isl + osl / 2)
    decode_rate = d_ranks_per_worker * decode_batch / (max(osl - 1, 1) * tpot)  # req/ms/worker
    p_budget = 8192
    n_chunks = max(1, math.ceil(isl / p_budget))
    s_p = sum(
        prefill.mixed_step_ms(min(p_budget, isl - i * p_budget), i * p_budget)
        for i in range(n_chunks)
    )
    prefill_rate = prefill.parallel.attention_dp / s_p * PREFILL_TARGET_UTILIZATION
    best = None
    for y in range(1, num_gpus // decode.parallel.num_gpus + 1):
        x = math.ceil(y * decode_rate / prefill_rate)
        if x * prefill.parallel.num_gpus + y * decode.parallel.num_gpus <= num_gpus:
            best = (x, y)
    if best is None:
        return None
    x, y = best
    conc = int(y * d_ranks_per_worker * decode_batch)
    est = estimate_disaggregated(
        prefill,
        decode,
        Workload(isl, osl, concurrency=conc),
        prefill_workers=x,
        decode_workers=y,
        decode_batching=batching,
    )
    return _row(
        "disagg",
        est,
        prefill_layout=prefill.parallel.label(),
        decode_layout=decode.parallel.label(),
        tp=decode.parallel.tp,
        pp=decode.parallel.pp,
        attention_dp=decode.parallel.attention_dp,
        moe_ep=decode.parallel.moe_ep,
        replicas=0,
        prefill_workers=x,
        decode_workers=y,
        concurrency=conc,
        max_num_seqs=int(decode_batch),
        max_num_batched_tokens=p_budget,
        cuda_graphs=True,
    )
