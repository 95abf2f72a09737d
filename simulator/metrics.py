"""Serving metrics: per request, per window (the tuner's observation), and vLLM's Prometheus names.

* :class:`SimulationResult` holds what a run produced: one row per request (TTFT, TPOT,
  end-to-end, queue time, preemptions, prefix hits) and one row per engine step (or decode span).
* :func:`window_observations` cuts a run into windows of serving and returns one
  :class:`WindowObservation` per window: the vector a tuning round observes, its fields tagged
  with the causal tier of ``DESIGN.md`` (0 context, 1 knobs, 2 mediators, 3 reward).
* :func:`to_prometheus` renders a run's state at a time as the Prometheus text a vLLM 0.x
  ``/metrics`` endpoint serves (same metric names, ``engine`` and ``model_name`` labels), so the
  live and the simulated environments can share one metrics reader.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

from simulator.engine import STEP_LOG_COLUMNS, EngineConfig

if TYPE_CHECKING:
    from simulator.engine import Request, ServingEngine

REQUEST_COLUMNS = (
    "request_id",
    "replica",
    "status",
    "arrival_ms",
    "first_scheduled_ms",
    "first_token_ms",
    "finish_ms",
    "prompt_tokens",
    "output_tokens",
    "prefix_hit_tokens",
    "num_preemptions",
    "queue_ms",
    "ttft_ms",
    "tpot_ms",
    "e2e_ms",
    "reject_reason",
)


@dataclass(frozen=True)
class SLA:
    """Latency targets a request must meet to count towards goodput.

    Parameters
    ----------
    ttft_ms : float
        Most time to first token.
    tpot_ms : float
        Most mean time per output token after the first.
    """

    ttft_ms: float = 2000.0
    tpot_ms: float = 100.0

    def __post_init__(self) -> None:
        for name in ("ttft_ms", "tpot_ms"):
            v = getattr(self, name)
            if not (isinstance(v, int | float) and v > 0):
                raise ValueError(f"SLA.{name} must be > 0, got {v!r}")

    def met(self, ttft_ms: np.ndarray, tpot_ms: np.ndarray) -> np.ndarray:
        """Whether each request met both targets (a one-token request has no TPOT to miss)."""
        tpot_ok = np.isnan(tpot_ms) | (tpot_ms <= self.tpot_ms)
        return (ttft_ms <= self.ttft_ms) & tpot_ok


@dataclass(frozen=True)
class SimulationResult:
    """What one simulation produced.

    Attributes
    ----------
    requests : pandas.DataFrame
        One row per request, columns :data:`REQUEST_COLUMNS` (times in ms from the trace start;
        ``status`` is ``ok``, ``rejected`` with ``reject_reason``, or ``unfinished``).
    steps : pandas.DataFrame
        One row per engine step or decode span, columns ``replica`` plus
        :data:`~simulator.engine.STEP_LOG_COLUMNS`.
    replica_names : tuple of str
    replica_configs : tuple of EngineConfig
    replica_kv_blocks : tuple of int
    events : int
        Events the loop processed.
    model_calls : int
        Step-cost-model evaluations.
    label : str
    """

    requests: pd.DataFrame
    steps: pd.DataFrame
    replica_names: tuple[str, ...]
    replica_configs: tuple[EngineConfig, ...]
    replica_kv_blocks: tuple[int, ...]
    events: int
    model_calls: int
    label: str = ""

    @property
    def duration_ms(self) -> float:
        """From the first arrival to the last finish."""
        r = self.requests
        if r.empty:
            return 0.0
        return float(np.nanmax(r["finish_ms"].to_numpy()) - r["arrival_ms"].min())

    @property
    def num_preemptions(self) -> int:
        return int(self.requests["num_preemptions"].sum())

    @property
    def num_steps(self) -> int:
        """Engine steps (a decode span counts its steps)."""
        return int(self.steps["steps"].sum()) if not self.steps.empty else 0

    def summary(self, sla: SLA | None = None) -> dict[str, float]:
        """Whole-run figures: counts, throughput, goodput, latency percentiles."""
        return summarize(self, sla or SLA())


def build_result(
    requests: list[Request],
    engines: list[ServingEngine],
    names: list[str],
    events: int,
    label: str = "",
) -> SimulationResult:
    """Assemble a :class:`SimulationResult` from the engines' state after a run."""
    n = len(requests)
    arrival = np.fromiter((r.arrival_ms for r in requests), float, n)
    first_sched = np.fromiter((r.first_scheduled_ms for r in requests), float, n)
    first_tok = np.fromiter((r.first_token_ms for r in requests), float, n)
    finish = np.fromiter((r.finish_ms for r in requests), float, n)
    output = np.fromiter((r.output_len for r in requests), np.int64, n)
    reasons = [r.reject_reason for r in requests]
    status = np.where(
        np.array([bool(x) for x in reasons], dtype=bool),
        "rejected",
        np.where(np.isnan(finish), "unfinished", "ok"),
    )
    ok = status == "ok"
    with np.errstate(invalid="ignore", divide="ignore"):
        tpot = np.where(ok & (output > 1), (finish - first_tok) / (output - 1), np.nan)
    frame = pd.DataFrame(
        {
            "request_id": np.fromiter((r.uid for r in requests), np.int64, n),
            "replica": np.fromiter((r.replica for r in requests), np.int64, n),
            "status": status,
            "arrival_ms": arrival,
            "first_scheduled_ms": first_sched,
            "first_token_ms": first_tok,
            "finish_ms": finish,
            "prompt_tokens": np.fromiter((r.prompt_len for r in requests), np.int64, n),
            "output_tokens": output,
            "prefix_hit_tokens": np.fromiter((r.prefix_hit_tokens for r in requests), np.int64, n),
            "num_preemptions": np.fromiter((r.num_preemptions for r in requests), np.int64, n),
            "queue_ms": np.where(ok, first_sched - arrival, np.nan),
            "ttft_ms": np.where(ok, first_tok - arrival, np.nan),
            "tpot_ms": tpot,
            "e2e_ms": np.where(ok, finish - arrival, np.nan),
            "reject_reason": reasons,
        }
    ).sort_values("request_id", kind="stable", ignore_index=True)
    step_frames = []
    for e in engines:
        log = np.asarray(e.step_log, dtype=np.float64).reshape(-1, len(STEP_LOG_COLUMNS))
        sf = pd.DataFrame(log, columns=list(STEP_LOG_COLUMNS))
        sf.insert(0, "replica", e.index)
        step_frames.append(sf)
    steps = pd.concat(step_frames, ignore_index=True)
    for col in STEP_LOG_COLUMNS[2:]:
        steps[col] = steps[col].astype(np.int64)
    return SimulationResult(
        requests=frame,
        steps=steps,
        replica_names=tuple(names),
        replica_configs=tuple(e.config for e in engines),
        replica_kv_blocks=tuple(e.pool.num_blocks for e in engines),
        events=events,
        model_calls=sum(e.model_calls for e in engines),
        label=label,
    )


def _pct(values: np.ndarray, q: float) -> float:
    values = values[~np.isnan(values)]
    return float(np.percentile(values, q)) if values.size else math.nan


def summarize(result: SimulationResult, sla: SLA) -> dict[str, float]:
    """Whole-run summary (one row of the replay summary table)."""
    r = result.requests
    ok = r[r["status"] == "ok"]
    dur_s = result.duration_ms / 1000.0
    ttft = ok["ttft_ms"].to_numpy()
    tpot = ok["tpot_ms"].to_numpy()
    met = sla.met(ttft, tpot)
    out = {
        "requests": len(r),
        "completed": len(ok),
        "rejected": int((r["status"] == "rejected").sum()),
        "unfinished": int((r["status"] == "unfinished").sum()),
        "duration_s": dur_s,
        "throughput_tok_s": float(ok["output_tokens"].sum()) / dur_s if dur_s > 0 else math.nan,
        "goodput_tok_s": float(ok["output_tokens"].to_numpy()[met].sum()) / dur_s
        if dur_s > 0
        else math.nan,
        "sla_attainment": float(met.mean()) if len(ok) else math.nan,
        "preemptions": int(r["num_preemptions"].sum()),
        "prefix_hit_ratio": float(r["prefix_hit_tokens"].sum() / max(r["prompt_tokens"].sum(), 1)),
    }
    for name, values in (
        ("ttft_ms", ttft),
        ("tpot_ms", tpot),
        ("e2e_ms", ok["e2e_ms"].to_numpy()),
        ("queue_ms", ok["queue_ms"].to_numpy()),
    ):
        out[f"{name}_mean"] = float(np.nanmean(values)) if np.any(~np.isnan(values)) else math.nan
        for q in (50, 90, 99):
            out[f"{name}_p{q}"] = _pct(values, q)
    return out


# ------------------------------------------------------------------------------ observations
def _tier(t: int, doc: str) -> Any:
    return field(metadata={"tier": t, "doc": doc})


@dataclass(frozen=True)
class WindowObservation:
    """One window of serving, as the tuner observes it.

    Every field but the window bounds carries ``metadata["tier"]`` (0 context, 1 knobs,
    2 mediators, 3 reward; DESIGN.md forbids edges from a later tier to an earlier one).
    Latency percentiles are over requests that *finished* in the window; context over requests
    that *arrived* in it; throughput and mediators are time-weighted over the window's steps.
    Windows without finished requests have NaN latencies.
    """

    window_start_s: float
    window_end_s: float
    # tier 0: context (the workload; not intervenable)
    request_rate_rps: float = _tier(0, "arrivals per second")
    mean_prompt_tokens: float = _tier(0, "mean prompt length of arrivals")
    mean_output_tokens: float = _tier(0, "mean output length of arrivals")
    prefix_hit_ratio: float = _tier(0, "prefix-cache hit tokens / prompt tokens admitted")
    arrival_cv2: float = _tier(0, "squared coefficient of variation of inter-arrival gaps")
    # tier 1: knobs (the arms)
    max_num_seqs: float = _tier(1, "EngineConfig.max_num_seqs")
    max_num_batched_tokens: float = _tier(1, "EngineConfig.max_num_batched_tokens")
    enable_chunked_prefill: float = _tier(1, "1 when chunked prefill is on")
    gpu_memory_utilization: float = _tier(1, "KV memory fraction knob")
    cuda_graphs: float = _tier(1, "1 with CUDA graphs, 0 eager")
    enable_prefix_caching: float = _tier(1, "1 when prefix caching is on")
    priority_scheduling: float = _tier(1, "1 for the priority policy, 0 for FCFS")
    # tier 2: mediators (engine state)
    mean_running_batch: float = _tier(2, "time-weighted running requests")
    mean_waiting: float = _tier(2, "time-weighted waiting queue length")
    kv_usage_frac: float = _tier(2, "time-weighted fraction of KV blocks in use")
    preemptions_per_s: float = _tier(2, "preemptions per second")
    mean_step_time_ms: float = _tier(2, "mean wall time of an engine step")
    mean_tokens_per_step: float = _tier(2, "mean tokens computed per step")
    # tier 3: reward and outcomes
    goodput_tok_s: float = _tier(3, "output tokens/s of finished requests meeting the SLA")
    throughput_tok_s: float = _tier(3, "output tokens/s generated")
    sla_attainment: float = _tier(3, "fraction of finished requests meeting the SLA")
    ttft_p50_ms: float = _tier(3, "median time to first token")
    ttft_p90_ms: float = _tier(3, "p90 time to first token")
    ttft_p99_ms: float = _tier(3, "p99 time to first token")
    tpot_p50_ms: float = _tier(3, "median time per output token")
    tpot_p90_ms: float = _tier(3, "p90 time per output token")
    tpot_p99_ms: float = _tier(3, "p99 time per output token")
    e2e_p50_ms: float = _tier(3, "median end-to-end latency")

    @classmethod
    def tiers(cls) -> dict[str, int]:
        """Node name -> tier, for every tiered field (the causal graph's nodes)."""
        return {f.name: f.metadata["tier"] for f in fields(cls) if "tier" in f.metadata}

    @classmethod
    def nodes(cls, tier: int) -> tuple[str, ...]:
        """Names of the fields in one tier."""
        return tuple(n for n, t in cls.tiers().items() if t == tier)

    def to_dict(self) -> dict[str, float]:
        """All fields, window bounds included."""
        return asdict(self)


def _gap_cv2(arrival_ms: np.ndarray) -> float:
    """Squared coefficient of variation of the gaps between arrivals (1 for Poisson; bursts
    push it up): the arrival variability of Kingman's queueing formula. NaN with fewer than
    three arrivals."""
    if len(arrival_ms) < 3:
        return math.nan
    gaps = np.diff(np.sort(arrival_ms))
    mean = float(gaps.mean())
    return float(gaps.var() / mean**2) if mean > 0 else math.nan


def _knob_values(config: EngineConfig) -> dict[str, float]:
    return {
        "max_num_seqs": float(config.max_num_seqs),
        "max_num_batched_tokens": float(config.max_num_batched_tokens),
        "enable_chunked_prefill": float(config.enable_chunked_prefill),
        "gpu_memory_utilization": float(config.gpu_memory_utilization),
        "cuda_graphs": float(config.cuda_graphs),
        "enable_prefix_caching": float(config.enable_prefix_caching),
        "priority_scheduling": float(config.scheduling_policy == "priority"),
    }


def _overlap(start: np.ndarray, end: np.ndarray, lo: float, hi: float) -> np.ndarray:
    return np.clip(np.minimum(end, hi) - np.maximum(start, lo), 0.0, None)


def window_observations(
    result: SimulationResult,
    window_s: float = 60.0,
    sla: SLA | None = None,
    replica: int | None = None,
    start_s: float = 0.0,
    end_s: float | None = None,
) -> list[WindowObservation]:
    """Cut a run into consecutive windows and observe each.

    Parameters
    ----------
    result : SimulationResult
    window_s : float
        Window length in seconds.
    sla : SLA, optional
        Goodput targets (default :class:`SLA`).
    replica : int, optional
        Observe one replica only (required when replicas run different configs).
    start_s, end_s : float
        Span to cut (default: from 0 to the last finish).

    Raises
    ------
    ValueError
        Non-positive window, or mixed replica configs without ``replica``.
    """
    if not (math.isfinite(window_s) and window_s > 0):
        raise ValueError(f"window_s must be finite and > 0, got {window_s!r}")
    sla = sla or SLA()
    configs = result.replica_configs
    if replica is None:
        if len({c for c in configs if not c.prefill_only}) > 1:
            raise ValueError("replicas run different configs: choose one with replica=<index>")
        idx = [i for i, c in enumerate(configs) if not c.prefill_only] or list(range(len(configs)))
    else:
        if not (0 <= replica < len(configs)):
            raise ValueError(f"replica {replica} out of range (0..{len(configs) - 1})")
        idx = [replica]
    config = configs[idx[0]]
    total_blocks = float(sum(result.replica_kv_blocks[i] for i in idx))
    req = result.requests
    if replica is not None:
        req = req[req["replica"] == replica]
    st = result.steps[result.steps["replica"].isin(idx)]
    if end_s is None:
        end_s = max(result.duration_ms / 1000.0, start_s + window_s)
    knobs = _knob_values(config)
    s_start = st["start_ms"].to_numpy()
    s_end = st["end_ms"].to_numpy()
    s_steps = st["steps"].to_numpy().astype(float)
    s_dec = st["decode_seqs"].to_numpy().astype(float)
    s_pf = st["prefill_tokens"].to_numpy().astype(float)
    s_run = st["running"].to_numpy().astype(float)
    s_wait = st["waiting"].to_numpy().astype(float)
    s_kv = st["kv_used_blocks"].to_numpy().astype(float)
    s_pre = st["preemptions"].to_numpy().astype(float)
    s_out = st["sampled_tokens"].to_numpy().astype(float)
    dur = np.maximum(s_end - s_start, 1e-12)
    arrival = req["arrival_ms"].to_numpy()
    finish = req["finish_ms"].to_numpy()
    ok = (req["status"] == "ok").to_numpy()
    out: list[WindowObservation] = []
    n_windows = max(1, math.ceil((end_s - start_s) / window_s - 1e-9))
    for w in range(n_windows):
        lo_s = start_s + w * window_s
        hi_s = lo_s + window_s
        lo, hi = lo_s * 1000.0, hi_s * 1000.0
        arrived = (arrival >= lo) & (arrival < hi)
        done = ok & (finish >= lo) & (finish < hi)
        frac = _overlap(s_start, s_end, lo, hi) / dur
        busy_ms = float(np.sum(frac * dur))
        n_steps = float(np.sum(frac * s_steps))
        ttft = req["ttft_ms"].to_numpy()[done]
        tpot = req["tpot_ms"].to_numpy()[done]
        met = sla.met(ttft, tpot)
        sampled = float(np.sum(frac * s_out))
        prompt_arr = req["prompt_tokens"].to_numpy()[arrived]
        hits = req["prefix_hit_tokens"].to_numpy()[arrived]
        out.append(
            WindowObservation(
                window_start_s=lo_s,
                window_end_s=hi_s,
                request_rate_rps=float(arrived.sum()) / window_s,
                mean_prompt_tokens=float(prompt_arr.mean()) if arrived.any() else math.nan,
                mean_output_tokens=float(req["output_tokens"].to_numpy()[arrived].mean())
                if arrived.any()
                else math.nan,
                prefix_hit_ratio=float(hits.sum() / prompt_arr.sum())
                if arrived.any()
                else math.nan,
                arrival_cv2=_gap_cv2(arrival[arrived]),
                **knobs,
                mean_running_batch=float(np.sum(frac * dur * s_run)) / (hi - lo),
                mean_waiting=float(np.sum(frac * dur * s_wait)) / (hi - lo),
                kv_usage_frac=float(np.sum(frac * dur * s_kv)) / (hi - lo) / total_blocks,
                preemptions_per_s=float(np.sum(s_pre[(s_start >= lo) & (s_start < hi)])) / window_s,
                mean_step_time_ms=busy_ms / n_steps if n_steps > 0 else math.nan,
                mean_tokens_per_step=float(np.sum(frac * (s_pf + s_steps * s_dec))) / n_steps
                if n_steps > 0
                else math.nan,
                goodput_tok_s=float(req["output_tokens"].to_numpy()[done][met].sum()) / window_s,
                throughput_tok_s=sampled / window_s,
                sla_attainment=float(met.mean()) if done.any() else math.nan,
                ttft_p50_ms=_pct(ttft, 50),
                ttft_p90_ms=_pct(ttft, 90),
                ttft_p99_ms=_pct(ttft, 99),
                tpot_p50_ms=_pct(tpot, 50),
                tpot_p90_ms=_pct(tpot, 90),
                tpot_p99_ms=_pct(tpot, 99),
                e2e_p50_ms=_pct(req["e2e_ms"].to_numpy()[done], 50),
            )
        )
    return out


def observations_frame(observations: list[WindowObservation]) -> pd.DataFrame:
    """Window observations as rows of a DataFrame (columns in field order)."""
    return pd.DataFrame([o.to_dict() for o in observations])


# ------------------------------------------------------------------------------ Prometheus
#: vLLM's default histogram buckets (seconds) for the latency metrics it exports.
TTFT_BUCKETS_S = (
    0.001,
    0.005,
    0.01,
    0.02,
    0.04,
    0.06,
    0.08,
    0.1,
    0.25,
    0.5,
    0.75,
    1.0,
    2.5,
    5.0,
    7.5,
    10.0,
    20.0,
    40.0,
    80.0,
    160.0,
    640.0,
    2560.0,
)
ITL_BUCKETS_S = (
    0.01,
    0.025,
    0.05,
    0.075,
    0.1,
    0.15,
    0.2,
    0.3,
    0.4,
    0.5,
    0.75,
    1.0,
    2.5,
    5.0,
    7.5,
    10.0,
    20.0,
    40.0,
    80.0,
)
REQUEST_LATENCY_BUCKETS_S = (
    0.3,
    0.5,
    0.8,
    1.0,
    1.5,
    2.0,
    2.5,
    5.0,
    10.0,
    15.0,
    20.0,
    30.0,
    40.0,
    50.0,
    60.0,
    120.0,
    240.0,
    480.0,
    960.0,
    1920.0,
    7680.0,
)


def _histogram(
    name: str,
    doc: str,
    labels: dict[str, str],
    values: np.ndarray,
    buckets: tuple[float, ...],
    weights: np.ndarray | None = None,
) -> HistogramMetricFamily:
    fam = HistogramMetricFamily(name, doc, labels=list(labels))
    w = np.ones_like(values) if weights is None else weights
    keep = ~np.isnan(values)
    values, w = values[keep], w[keep]
    cum = [(repr(float(b)), float(np.sum(w[values <= b]))) for b in buckets]
    cum.append(("+Inf", float(np.sum(w))))
    fam.add_metric(list(labels.values()), cum, float(np.sum(values * w)))
    return fam


class _SimulatedVllmCollector:
    def __init__(self, result: SimulationResult, at_ms: float, model_name: str) -> None:
        self.result = result
        self.at_ms = at_ms
        self.model_name = model_name

    def collect(self):
        res = self.result
        at = self.at_ms
        r = res.requests
        for i, _name in enumerate(res.replica_names):
            labels = {"engine": str(i), "model_name": self.model_name}
            mine = r[(r["replica"] == i) & (r["status"] == "ok") & (r["finish_ms"] <= at)]
            steps = res.steps[(res.steps["replica"] == i) & (res.steps["start_ms"] <= at)]
            last = steps.iloc[-1] if len(steps) else None
            busy = last is not None and last["end_ms"] > at
            s = 1e-3
            yield _histogram(
                "vllm:time_to_first_token_seconds",
                "Time to first token (s).",
                labels,
                mine["ttft_ms"].to_numpy() * s,
                TTFT_BUCKETS_S,
            )
            out = mine["output_tokens"].to_numpy()
            yield _histogram(
                "vllm:inter_token_latency_seconds",
                "Inter-token latency (s); each request's gaps at its mean TPOT.",
                labels,
                mine["tpot_ms"].to_numpy() * s,
                ITL_BUCKETS_S,
                weights=np.maximum(out - 1, 0).astype(float),
            )
            for metric, col in (
                ("vllm:e2e_request_latency_seconds", "e2e_ms"),
                ("vllm:request_queue_time_seconds", "queue_ms"),
            ):
                yield _histogram(
                    metric,
                    f"{col} (s).",
                    labels,
                    mine[col].to_numpy() * s,
                    REQUEST_LATENCY_BUCKETS_S,
                )
            for metric, value, doc in (
                (
                    "vllm:num_requests_running",
                    float(last["running"]) if busy else 0.0,
                    "Running requests.",
                ),
                (
                    "vllm:num_requests_waiting",
                    float(last["waiting"]) if last is not None else 0.0,
                    "Waiting requests.",
                ),
                (
                    "vllm:kv_cache_usage_perc",
                    float(last["kv_used_blocks"]) / res.replica_kv_blocks[i] if busy else 0.0,
                    "Fraction of KV blocks in use (0-1).",
                ),
            ):
                g = GaugeMetricFamily(metric, doc, labels=list(labels))
                g.add_metric(list(labels.values()), value)
                yield g
            started = r[(r["replica"] == i) & (r["first_scheduled_ms"] <= at)]
            for metric, value, doc in (
                ("vllm:num_preemptions", float(steps["preemptions"].sum()), "Preemptions."),
                (
                    "vllm:prompt_tokens",
                    float(mine["prompt_tokens"].sum()),
                    "Prompt tokens of finished requests.",
                ),
                (
                    "vllm:generation_tokens",
                    float(mine["output_tokens"].sum()),
                    "Generated tokens of finished requests.",
                ),
                ("vllm:request_success", float(len(mine)), "Finished requests."),
                (
                    "vllm:prefix_cache_queries",
                    float(started["prompt_tokens"].sum()),
                    "Prefix-cache queried tokens.",
                ),
                (
                    "vllm:prefix_cache_hits",
                    float(started["prefix_hit_tokens"].sum()),
                    "Prefix-cache hit tokens.",
                ),
            ):
                c = CounterMetricFamily(metric, doc, labels=list(labels))
                c.add_metric(list(labels.values()), value)
                yield c


def to_prometheus(
    result: SimulationResult, at_ms: float | None = None, model_name: str = "model"
) -> str:
    """The run's metrics at simulated time ``at_ms`` (default: the end) in Prometheus text format,
    under vLLM's metric names (``vllm:time_to_first_token_seconds``, ``vllm:num_preemptions_total``, ...).
    """
    at = math.inf if at_ms is None else float(at_ms)
    registry = CollectorRegistry()
    registry.register(_SimulatedVllmCollector(result, at, model_name))
    return generate_latest(registry).decode()
