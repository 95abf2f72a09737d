"""Environments: where a config serves one window and the window is observed.

* :class:`SimulatedEnvironment` serves each window on the discrete-event serving simulator
  (``simulator.cluster``): the scenario's workload for that round, a fresh engine (a config
  change restarts vLLM, so each window starts cold and the first ``warmup_s`` are not observed),
  one replica simulated at its share of the load (round-robin routing splits arrivals evenly;
  totals are scaled back to the whole pool).
* :class:`PooledEnvironment` precomputes ``R`` simulated windows per config and hands them out by
  round: the benchmarks' ground truth (the oracle is the pool mean) with common random numbers
  (round ``r`` of seed ``s`` gets the same workload draw for every policy and config).

Both return the fields of ``simulator.metrics.WindowObservation`` plus ``sla_violated``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from causal_tuner.objective import Objective
from simulator.batch import BatchShape, StepCostModel
from simulator.cluster import Cluster, Deployment, Replica
from simulator.engine import EngineConfig
from simulator.metrics import window_observations
from simulator.traces import Trace
from simulator.workloads import ConstantRate, LengthDistribution, Workload

__all__ = [
    "BiasedStepModel",
    "PooledEnvironment",
    "SimulatedEnvironment",
    "TraceLoad",
    "WindowLoad",
    "config_to_engine",
]

#: knob-space names that map one-to-one onto ``simulator.engine.EngineConfig`` fields
_ENGINE_KNOBS = (
    "max_num_seqs",
    "max_num_batched_tokens",
    "enable_chunked_prefill",
    "gpu_memory_utilization",
    "enable_prefix_caching",
    "scheduling_policy",
    "cuda_graphs",
    "cuda_graph_max_batch",
    "async_scheduling",
)


def config_to_engine(config: Mapping[str, Any]) -> EngineConfig:
    """The simulator's engine config for a knob-space config (vLLM defaults for the rest)."""
    unknown = sorted(set(config) - {*_ENGINE_KNOBS, "tensor_parallel_size"})
    if unknown:
        raise ValueError(
            f"the simulator has no knob(s) {unknown}; it knows {sorted(_ENGINE_KNOBS)}"
        )
    kwargs = {k: config[k] for k in _ENGINE_KNOBS if k in config}
    for name in ("max_num_seqs", "max_num_batched_tokens", "cuda_graph_max_batch"):
        if name in kwargs:
            kwargs[name] = int(kwargs[name])
    for name in (
        "enable_chunked_prefill",
        "enable_prefix_caching",
        "cuda_graphs",
        "async_scheduling",
    ):
        if name in kwargs:
            kwargs[name] = bool(kwargs[name])
    if "gpu_memory_utilization" in kwargs:
        kwargs["gpu_memory_utilization"] = float(kwargs["gpu_memory_utilization"])
    return EngineConfig(**kwargs)


@dataclass(frozen=True)
class BiasedStepModel:
    """A step model whose op families are off by fixed factors: a ground truth the analytical
    prior does not know (scenario (f): the model's systematic error in one op family).

    Parameters
    ----------
    base : AnalyticalStepModel
        Must provide ``breakdown_ms(batch)`` (per op family) and ``step_time_ms(batch)``.
    factors : mapping of str to float
        Op family (a key of ``breakdown_ms``, e.g. ``"context_attention"``) -> multiplier.
    """

    base: Any
    factors: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for family, f in self.factors.items():
            if not (math.isfinite(f) and f > 0):
                raise ValueError(f"factor for {family!r} must be > 0, got {f!r}")
        # the families a step can have: price a probe step with a prefill chunk and a decode
        probe = BatchShape(np.array([16]), np.array([0]), np.array([16]))
        known = set(self.base.breakdown_ms(probe))
        unknown = sorted(set(self.factors) - known)
        if unknown:
            raise ValueError(f"unknown op families {unknown}; the model has {sorted(known)}")

    def step_time_ms(self, batch: BatchShape) -> float:
        ms = self.base.step_time_ms(batch)
        if self.factors:
            parts = self.base.breakdown_ms(batch)  # families absent from this step cost nothing
            ms += sum(
                (f - 1.0) * parts.get(fam, 0.0) * self.base.parallel.pp
                for fam, f in self.factors.items()
            )
        return ms

    def __getattr__(self, name: str) -> Any:  # memory(), parallel, ... come from the base model
        return getattr(self.base, name)


@dataclass(frozen=True)
class WindowLoad:
    """The load of one window for the whole pool of GPUs."""

    rate_rps: float
    lengths: LengthDistribution
    cv: float = 1.0


@dataclass(frozen=True)
class TraceLoad:
    """Windows cut from a recorded trace (its real burstiness and lengths), rate-scaled.

    Each window draw takes a random slice of the rate-scaled trace; a replica receives every
    ``replicas``-th request of it, as a round-robin router would send.
    """

    trace: Trace
    rate_scale: float = 1.0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.rate_scale) and self.rate_scale > 0):
            raise ValueError(f"rate_scale must be > 0, got {self.rate_scale!r}")
        if len(self.trace) < 2:
            raise ValueError("a TraceLoad needs a trace of at least two requests")

    @property
    def rate_rps(self) -> float:
        return self.rate_scale * len(self.trace) / (self.trace.duration_ms / 1e3)

    def window(self, span_s: float, replicas: int, rng: np.random.Generator) -> Trace:
        scaled = self.trace.scale_rate(self.rate_scale).rebase()
        span_ms = span_s * 1e3
        latest = max(scaled.duration_ms - span_ms, 0.0)
        start = float(rng.uniform(0.0, latest)) if latest > 0 else 0.0
        cut = scaled.between(start, start + span_ms)
        idx = np.arange(int(rng.integers(replicas)), len(cut), replicas)
        return Trace(
            cut.arrival_ms[idx],
            cut.prompt_tokens[idx],
            cut.output_tokens[idx],
            name=f"{self.trace.name} window",
        )


class SimulatedEnvironment:
    """Serve windows on the discrete-event simulator.

    Parameters
    ----------
    model, system : str
        Deployment (a supported model name and a perfdb system).
    gpus : int
        GPUs in the pool; a config's ``tensor_parallel_size`` sets the replica count.
    load : WindowLoad, TraceLoad or callable
        The load of each window (synthetic arrivals, or slices of a recorded trace); a callable
        ``round_index -> load`` gives drift.
    objective : Objective
        Its SLA decides goodput.
    window_s, warmup_s : float
        Observed window and the unobserved warm-up served before it.
    step_factors : mapping, optional
        Op-family multipliers for the ground truth (:class:`BiasedStepModel`).
    tp : int
        Tensor parallelism when a config has no ``tensor_parallel_size`` knob.
    seed : int
        Round ``r`` draws its workload from ``SeedSequence([seed, r])``: the same draw for
        every config and policy (common random numbers).
    """

    def __init__(
        self,
        model: str,
        system: str,
        gpus: int,
        load: WindowLoad | TraceLoad | Callable[[int], WindowLoad | TraceLoad],
        objective: Objective,
        *,
        window_s: float = 60.0,
        warmup_s: float = 30.0,
        step_factors: Mapping[str, float] | None = None,
        dtype: str = "bf16",
        seed: int = 0,
        tp: int = 1,
    ) -> None:
        if not (window_s > 0 and warmup_s >= 0):
            raise ValueError(f"window_s must be > 0 and warmup_s >= 0, got {window_s}, {warmup_s}")
        self.model = model
        self.system = system
        self.gpus = int(gpus)
        self.load = load
        self.objective = objective
        self.window_s = float(window_s)
        self.warmup_s = float(warmup_s)
        self.step_factors = dict(step_factors or {})
        self.dtype = dtype
        self.seed = int(seed)
        self.tp = int(tp)

    def load_at(self, round_index: int) -> WindowLoad | TraceLoad:
        return self.load(round_index) if callable(self.load) else self.load

    def _step_model(self, tp: int) -> StepCostModel:
        # the scenarios' ground truth keeps the analytical constants (see ENGINE_STEP_SCALES)
        base = Deployment(self.model, self.system, tp=tp, dtype=self.dtype).step_model()
        return BiasedStepModel(base, self.step_factors) if self.step_factors else base

    def observe(
        self, config: Mapping[str, Any], round_index: int, *, draw: int | None = None
    ) -> dict[str, float]:
        """Serve one window of round ``round_index`` under ``config`` (``draw`` overrides the
        workload draw's index, for pools)."""
        tp = int(config.get("tensor_parallel_size", self.tp))
        if self.gpus % tp:
            raise ValueError(f"tensor_parallel_size={tp} does not divide the {self.gpus} GPUs")
        replicas = self.gpus // tp
        load = self.load_at(round_index)
        engine = config_to_engine(config)
        deployment = Deployment(self.model, self.system, tp=tp, dtype=self.dtype)
        mem = deployment.memory(engine)
        if not mem.feasible:
            raise ValueError(f"config does not fit: {mem.reason()}")
        replica = Replica(engine, self._step_model(tp), mem.kv_capacity_blocks)
        span = self.warmup_s + self.window_s
        seq = np.random.SeedSequence([self.seed, int(round_index if draw is None else draw)])
        trace_seed, noise_seed = seq.spawn(2)
        if isinstance(load, TraceLoad):
            trace = load.window(span, replicas, np.random.default_rng(trace_seed))
        else:
            workload = Workload(
                ConstantRate(load.rate_rps / replicas), load.lengths, duration_s=span, cv=load.cv
            )
            trace = workload.generate(seed=np.random.default_rng(trace_seed))
        result = Cluster([replica]).run(trace, seed=np.random.default_rng(noise_seed))
        (obs,) = window_observations(
            result,
            window_s=self.window_s,
            sla=self.objective.sla,
            start_s=self.warmup_s,
            end_s=span,
        )
        out = {k: float(v) for k, v in obs.to_dict().items()}
        for key in ("request_rate_rps", "goodput_tok_s", "throughput_tok_s"):
            out[key] *= replicas  # one replica simulated at its share; totals for the pool
        out["sla_violated"] = float(self.objective.violated(out))
        return out


class PooledEnvironment:
    """Precomputed windows per config: a fast, exactly known ground truth for benchmarks.

    Parameters
    ----------
    base : SimulatedEnvironment
    configs : sequence of mapping
        The candidate configs (the knob space's grid).
    pool_size : int
        Windows simulated per config (and per load phase).
    phase_of : callable, optional
        ``round_index -> phase``; each phase is one load (``base.load_at`` of the phase's first
        round, given by ``phase_rounds``). Default: one phase.
    phase_rounds : sequence of int
        A representative round of each phase.
    """

    def __init__(
        self,
        base: SimulatedEnvironment,
        configs: Sequence[Mapping[str, Any]],
        pool_size: int = 12,
        *,
        phase_of: Callable[[int], int] | None = None,
        phase_rounds: Sequence[int] = (0,),
        progress: bool = True,
    ) -> None:
        self.base = base
        self.configs = [dict(c) for c in configs]
        self.pool_size = int(pool_size)
        self.phase_of = phase_of or (lambda r: 0)
        self.phase_rounds = tuple(phase_rounds)
        self._index = {self._key(c): i for i, c in enumerate(self.configs)}
        self.windows_: dict[tuple[int, int], list[dict[str, float]]] = {}
        total = len(self.configs) * len(self.phase_rounds) * self.pool_size
        with tqdm(total=total, desc="simulating windows", disable=not progress) as bar:
            for p, r in enumerate(self.phase_rounds):
                for i, c in enumerate(self.configs):
                    rows = []
                    for d in range(self.pool_size):
                        rows.append(base.observe(c, r, draw=p * 1_000_003 + d))
                        bar.update()
                    self.windows_[(p, i)] = rows

    @staticmethod
    def _key(config: Mapping[str, Any]) -> tuple:
        return tuple(sorted(config.items()))

    def config_index(self, config: Mapping[str, Any]) -> int:
        key = self._key(config)
        if key not in self._index:
            raise ValueError(f"config {dict(config)} is not in the pool")
        return self._index[key]

    def observe(
        self, config: Mapping[str, Any], round_index: int, *, draw: int = 0
    ) -> dict[str, float]:
        """A pool window of the config in the round's phase, chosen at random by
        ``(draw, round_index)``: the same window index for every config and policy in that
        round (common random numbers), with no period a policy could fall into step with."""
        i = self.config_index(config)
        rows = self.windows_[(self.phase_of(round_index), i)]
        pick = int(np.random.default_rng([int(draw), int(round_index)]).integers(self.pool_size))
        return dict(rows[pick])

    def true_rewards(self, objective: Objective, round_index: int) -> np.ndarray:
        """The oracle: mean reward of every config over its pool, in the round's phase."""
        p = self.phase_of(round_index)
        return np.array(
            [
                np.mean([objective.reward(w) for w in self.windows_[(p, i)]])
                for i in range(len(self.configs))
            ]
        )
