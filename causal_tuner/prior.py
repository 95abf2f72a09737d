"""The analytical prior: every config priced by the analytical serving model before any trial.

For a config and the current load (the context nodes of a window), the prior runs
``simulator.analytical.estimate_aggregated`` on the deployment the config implies and turns its
TTFT/TPOT/throughput into the objective's reward. Its variance comes from the model's measured
error against the serving simulator (``benchmarks/prior_error.py``; the figure and the command
are in ``benchmarks/RESULTS.md``), not from a made-up constant.

Goodput from a steady-state estimate: the served output rate times the probability that a
request meets both SLA targets, each latency taken as log-normal through the estimate's mean and
p90 (independent). An overloaded config earns zero: the estimate's latencies are infinite, or
Little's law asks each replica to hold more requests than its running cap (``max_num_seqs`` or
the KV cache), so its queue and TTFT grow without bound. For the latency objective that growth
is priced, not flagged: an overloaded config's queue fills from an empty engine (the config took
effect ``warmup_s`` before the window) at the gap between the arrival rate and the config's
capacity (fluid queue), which bounds what its TTFT can reach within a window.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import replace

import numpy as np

from causal_tuner.knobs import KnobSpace
from causal_tuner.objective import Objective
from simulator.analytical import (
    DEFAULT_QUEUE,
    BatchingConfig,
    ServingEstimate,
    Workload,
    estimate_aggregated,
    lognormal_from_mean_p90,
)
from simulator.cluster import Deployment

__all__ = ["CAPACITY_ERROR", "PRIOR_REL_ERROR", "AnalyticalPrior", "config_to_batching", "p_below"]

#: RMS error of the prior's goodput, relative to the offered output rate, against the serving
#: simulator on the calibration grid of ``benchmarks/prior_error.py`` (Llama-3.1-8B / H100,
#: ShareGPT lengths; none of the tuning scenarios): 0.212 when first measured, rounded up; later
#: model changes moved it to 0.20-0.21. See benchmarks/RESULTS.md, "Analytical prior error".
PRIOR_REL_ERROR = 0.22

#: Log-normal sd of the analytical model's error on a config's capacity, for the prior's
#: expectation over it: about the model's held-out median step-time error on silicon_dev.csv
#: (TPOT 12%, TTFT 24%; benchmarks/RESULTS.md, "Analytical model"), not fitted to any scenario.
CAPACITY_ERROR = 0.2

_nodes, _weights = np.polynomial.hermite_e.hermegauss(5)
_GAUSS_HERMITE = (_nodes, _weights / _weights.sum())
#: Reward prices :class:`AnalyticalPrior` keeps (config and exact load) before starting afresh.
_REWARD_CACHE_SIZE = 1 << 16


def p_below(target: float, mean: float, p90: float) -> float:
    """P(X <= target) for a log-normal X with the given mean and 90th percentile.

    When ``p90 <= mean`` the spread is taken as zero (a step at the mean); when p90 is so far
    above the mean that no log-normal has both, the widest one matching the mean is used.
    """
    if not (math.isfinite(mean) and math.isfinite(p90)) or mean <= 0:
        return 0.0 if not math.isfinite(mean) else 1.0
    mu, s = lognormal_from_mean_p90(mean, p90)
    if s == 0.0:
        return 1.0 if target >= mean else 0.0
    z = (math.log(target) - mu) / s
    return 0.5 * math.erfc(-z / math.sqrt(2.0))


def config_to_batching(config: Mapping) -> BatchingConfig:
    """The analytical model's batching knobs for a knob-space config (defaults for the rest)."""
    kwargs = {}
    for knob, field_name in (
        ("max_num_seqs", "max_num_seqs"),
        ("max_num_batched_tokens", "max_num_batched_tokens"),
        ("enable_chunked_prefill", "chunked_prefill"),
        ("cuda_graphs", "cuda_graphs"),
        ("gpu_memory_utilization", "gpu_memory_utilization"),
        ("async_scheduling", "async_scheduling"),
    ):
        if knob in config:
            kwargs[field_name] = config[knob]
    return BatchingConfig(**kwargs)


class AnalyticalPrior:
    """Price configs of one model on a pool of GPUs under the current load.

    Parameters
    ----------
    model : str
        A supported model name or a local ``config.json`` path.
    system : str
        A perfdb system (``h100_sxm``, ``h200_sxm``, ...).
    gpus : int
        GPUs serving the model; a config's ``tensor_parallel_size`` (default ``tp``) sets the
        replicas, ``gpus // tp``.
    objective : Objective
    dtype, backend : str
    rel_error : float
        The prior's relative error (sd of the reward, relative); :data:`PRIOR_REL_ERROR`.
    capacity_error : float
        Log-normal sd of the model's error on a config's capacity; goodput and throughput are
        priced as their expectation over it (:data:`CAPACITY_ERROR`; 0: the point estimate).
    isl_p90_ratio, osl_p90_ratio : float
        90th percentile over mean of the prompt and output lengths (the context carries means
        only); defaults from the Azure conversation trace.
    tp : int
        Tensor parallelism when a config has no ``tensor_parallel_size`` knob.
    window_s, warmup_s : float
        A window's length, and the time from a config change to its first window (the engine
        restarts empty). They bound what an overloaded config's latency can grow to within a
        window, for the latency objective.

    Examples
    --------
    >>> from causal_tuner.objective import Objective
    >>> prior = AnalyticalPrior("meta-llama/Llama-3.1-8B", "h100_sxm", gpus=1, objective=Objective())
    >>> mean, var = prior([{"max_num_seqs": 64}], {"request_rate_rps": 2.0,
    ...     "mean_prompt_tokens": 1000.0, "mean_output_tokens": 200.0})
    >>> bool(mean[0] > 0 and var[0] > 0)
    True
    """

    def __init__(
        self,
        model: str,
        system: str,
        gpus: int,
        objective: Objective,
        *,
        dtype: str = "bf16",
        backend: str = "vllm",
        rel_error: float = PRIOR_REL_ERROR,
        capacity_error: float = CAPACITY_ERROR,
        isl_p90_ratio: float = 2.2,
        osl_p90_ratio: float = 2.0,
        tp: int = 1,
        window_s: float = 60.0,
        warmup_s: float = 30.0,
    ) -> None:
        if not (isinstance(gpus, int) and gpus >= 1):
            raise ValueError(f"gpus must be a positive integer, got {gpus!r}")
        if not rel_error > 0:
            raise ValueError(f"rel_error must be > 0, got {rel_error!r}")
        self.model = model
        self.system = system
        self.gpus = gpus
        self.objective = objective
        self.dtype = dtype
        self.backend = backend
        self.rel_error = float(rel_error)
        if not (capacity_error >= 0 and math.isfinite(capacity_error)):
            raise ValueError(f"capacity_error must be >= 0, got {capacity_error!r}")
        self.capacity_error = float(capacity_error)
        self.isl_p90_ratio = float(isl_p90_ratio)
        self.tp = int(tp)
        self.osl_p90_ratio = float(osl_p90_ratio)
        if not (window_s > 0 and warmup_s >= 0):
            raise ValueError(f"need window_s > 0 and warmup_s >= 0, got {window_s}, {warmup_s}")
        self.window_s = float(window_s)
        self.warmup_s = float(warmup_s)
        self._cache: dict[tuple, ServingEstimate | None] = {}
        # a window's reward price, by config and exact load: the tuner prices every config over
        # the loads of its recent windows each round, mostly the same windows as the round
        # before (emptied when full: a daemon's loads never repeat exactly)
        self._reward_cache: dict[tuple, float] = {}
        # fail early on an unknown model or system, with the simulator's message
        self.deployment(self.tp).step_model()

    def deployment(self, tp: int) -> Deployment:
        return Deployment(
            self.model, self.system, tp=int(tp), dtype=self.dtype, backend=self.backend
        )

    def replicas(self, config: Mapping) -> int:
        tp = int(config.get("tensor_parallel_size", self.tp))
        return max(self.gpus // tp, 0)

    def feasibility(self, config: Mapping) -> str | None:
        """Why ``config`` cannot run (memory, GPU count), or ``None``: a KnobSpace hook."""
        tp = int(config.get("tensor_parallel_size", self.tp))
        if self.gpus % tp:
            return f"tensor_parallel_size={tp} does not divide the {self.gpus} GPUs"
        try:
            model = self.deployment(tp).step_model()
        except ValueError as err:
            return str(err)
        b = config_to_batching(config)
        mem = model.memory(
            b.gpu_memory_utilization,
            max_num_batched_tokens=b.max_num_batched_tokens,
            max_num_seqs=b.max_num_seqs,
            cuda_graph_sizes=b.capture_sizes if b.cuda_graphs else None,
        )
        return None if mem.feasible else mem.reason()

    def constrain(self, space: KnobSpace) -> KnobSpace:
        """``space`` with this deployment's memory and GPU-count feasibility attached."""
        return space.with_feasibility(self.feasibility)

    def _estimate_uncached(
        self, key: tuple, rate: float, isl: float, osl: float, cv2: float | None
    ) -> ServingEstimate | None:
        config = dict(key)
        tp = int(config.get("tensor_parallel_size", self.tp))
        workload = Workload(
            isl=isl,
            osl=osl,
            request_rate=rate,
            isl_p90=isl * self.isl_p90_ratio,
            osl_p90=osl * self.osl_p90_ratio,
        )
        try:
            return estimate_aggregated(
                self.deployment(tp).step_model(),
                workload,
                config_to_batching(config),
                replicas=self.replicas(config),
                queue=None if cv2 is None else replace(DEFAULT_QUEUE, arrival_cv2=cv2),
            )
        except ValueError:
            return None

    def estimate(self, config: Mapping, context: Mapping[str, float]) -> ServingEstimate | None:
        """The analytical estimate of ``config`` at the context's load (``None``: infeasible)."""
        rate = float(context.get("request_rate_rps", 0.0))
        isl = float(context.get("mean_prompt_tokens", 0.0))
        osl = float(context.get("mean_output_tokens", 0.0))
        if not (rate > 0 and isl >= 1 and osl >= 1):
            raise ValueError(
                "the prior needs a context with request_rate_rps > 0, mean_prompt_tokens >= 1 "
                f"and mean_output_tokens >= 1, got {dict(context)}"
            )
        # the window's measured burstiness, when the context has it, sets the arrival
        # variability of the model's queue (the calibrated default otherwise)
        cv2 = context.get("arrival_cv2")
        cv2 = float(cv2) if cv2 is not None and math.isfinite(float(cv2)) else None
        # the load rounded to two significant digits (a few percent, well inside the model's
        # own error), so that the windows of one workload share cached estimates
        key = (
            tuple(sorted(config.items())),
            float(f"{rate:.2g}"),
            float(f"{isl:.2g}"),
            float(f"{osl:.2g}"),
            None if cv2 is None else float(f"{cv2:.2g}"),
        )
        if key not in self._cache:
            self._cache[key] = self._estimate_uncached(*key)
        return self._cache[key]

    def reward(self, config: Mapping, context: Mapping[str, float]) -> float:
        """The objective's reward the analytical model predicts for one window.

        For goodput and throughput this is the expectation over the model's own error on the
        config's capacity (log-normal, sd ``capacity_error``; 5-point Gauss-Hermite): the
        model's overload verdict is a cliff, the served reward of a config near its capacity
        is not, and a prior that jumps between zero and full goodput as the window's load moves
        by a few percent would make every residual against it a coin flip.
        """
        load = tuple(
            (k, float(context[k]))
            for k in ("request_rate_rps", "mean_prompt_tokens", "mean_output_tokens", "arrival_cv2")
            if k in context
        )
        key = (tuple(sorted(config.items())), load)
        if key not in self._reward_cache:
            if len(self._reward_cache) >= _REWARD_CACHE_SIZE:
                self._reward_cache.clear()
            self._reward_cache[key] = self._reward_uncached(config, dict(load))
        return self._reward_cache[key]

    def _reward_uncached(self, config: Mapping, context: Mapping[str, float]) -> float:
        if self.capacity_error == 0.0 or self.objective.kind == "latency":
            return self._reward_at(config, context, 1.0)
        return float(
            sum(
                w * self._reward_at(config, context, math.exp(self.capacity_error * z))
                for z, w in zip(*_GAUSS_HERMITE, strict=True)
            )
        )

    def _reward_at(self, config: Mapping, context: Mapping[str, float], f: float) -> float:
        """The reward if the config's capacity were ``1 / f`` of the model's: the model is
        priced at ``f`` times the load and the served volume scaled back by ``1 / f``."""
        if f != 1.0:
            context = {**context, "request_rate_rps": float(context["request_rate_rps"]) * f}
        return self._reward_one(config, context) / f

    def _little(
        self, config: Mapping, context: Mapping[str, float], est: ServingEstimate, rate: float
    ) -> tuple[bool, float, float]:
        """``(stable, cap, cycle_s)``: Little's law against the running cap.

        ``cap`` is the requests one replica can hold at once (``max_num_seqs``, or the KV
        cache), ``cycle_s`` one request's time in the engine. Beyond the cap the waiting queue
        grows without bound and TTFT with it, which the steady-state estimate does not flag by
        itself.
        """
        osl = float(context["mean_output_tokens"])
        if not (math.isfinite(est.ttft_ms) and math.isfinite(est.tpot_ms)):
            return False, 0.0, math.inf
        cap = float(config.get("max_num_seqs", 256))
        if est.memory is not None:
            isl = float(context["mean_prompt_tokens"])
            cap = min(cap, est.memory.kv_capacity_tokens / (isl + osl))
        cycle_s = (est.ttft_ms + max(osl - 1.0, 0.0) * est.tpot_ms) / 1e3
        replicas = max(self.replicas(config), 1)
        return rate / replicas * cycle_s <= cap, cap, cycle_s

    def _capacity(
        self, config: Mapping, context: Mapping[str, float], rate: float
    ) -> tuple[float, ServingEstimate | None]:
        """The largest request rate below ``rate`` the model says ``config`` sustains, and its
        estimate there (geometric bisection, 10 steps: a few percent, inside the model's own
        error). ``(0, None)`` if not even ``rate / 1024`` is sustained."""
        lo, hi, best = rate / 1024.0, rate, None
        for _ in range(10):
            mid = math.sqrt(lo * hi)
            ctx = {**context, "request_rate_rps": mid}
            est = self.estimate(config, ctx)
            if est is not None and self._little(config, ctx, est, mid)[0]:
                lo, best = mid, est
            else:
                hi = mid
        return (lo, best) if best is not None else (0.0, None)

    def _overloaded_ttft_p90_ms(
        self, config: Mapping, context: Mapping[str, float], rate: float
    ) -> float:
        """TTFT p90 of the requests that finish in the window, for a config whose queue grows.

        Fluid queue from an empty engine (the config took effect ``warmup_s`` before the
        window): arrivals at ``rate`` (``lam``), service at the config's capacity ``mu``. The
        request served at time ``s`` arrived at ``s * mu / lam``, so it waited
        ``s * (1 - mu / lam)``; the requests finishing in the window were served from
        ``warmup_s - cycle`` to ``warmup_s + window_s - cycle``, uniformly.
        """
        mu, est = self._capacity(config, context, rate)
        horizon = self.warmup_s + self.window_s
        if est is None:
            return horizon * 1e3  # nothing is served: every request waits the whole run
        _, _, cycle_s = self._little(config, {**context, "request_rate_rps": mu}, est, mu)
        a = max(self.warmup_s - cycle_s, 0.0)
        b = max(horizon - cycle_s, 0.0)
        if b <= 0.0:
            return horizon * 1e3
        s90 = a + 0.9 * (b - a)
        return est.ttft_p90_ms + 1e3 * s90 * max(1.0 - mu / rate, 0.0)

    def _reward_one(self, config: Mapping, context: Mapping[str, float]) -> float:
        est = self.estimate(config, context)
        if est is None:
            return 0.0 if self.objective.kind != "latency" else -self._horizon_ms()
        # prompts the engine rejects (chunked prefill off, longer than the step budget) are
        # not served: the rest is the load
        rate = float(context["request_rate_rps"]) * (
            1.0 - float(est.details.get("rejected_fraction", 0.0))
        )
        osl = float(context["mean_output_tokens"])
        stable, cap, cycle_s = self._little(config, context, est, rate)
        kind = self.objective.kind
        if kind == "latency":
            metric = self.objective.latency_metric
            if metric == "ttft":
                if stable:
                    return -est.ttft_p90_ms
                return -self._overloaded_ttft_p90_ms(config, context, rate)
            # a full running batch decodes at the cap's pace; an overloaded one at the
            # capacity point's
            if stable:
                return -est.tpot_p90_ms
            _, at_cap = self._capacity(config, context, rate)
            return -at_cap.tpot_p90_ms if at_cap is not None else -self._horizon_ms()
        replicas = max(self.replicas(config), 1)
        if stable:
            served_tok_s = rate * osl
        elif math.isfinite(cycle_s):
            # the running batch is full: each replica completes cap requests per cycle (the
            # steady-state estimate would report the offered rate as served)
            served_tok_s = cap / cycle_s * osl * replicas
        else:
            served_tok_s = est.output_tok_s_per_gpu * est.num_gpus
        if kind == "throughput":
            return served_tok_s
        if not stable:
            return 0.0
        sla = self.objective.sla
        attain = p_below(sla.ttft_ms, est.ttft_ms, est.ttft_p90_ms) * p_below(
            sla.tpot_ms, est.tpot_ms, est.tpot_p90_ms
        )
        return served_tok_s * attain

    def _horizon_ms(self) -> float:
        return (self.warmup_s + self.window_s) * 1e3

    def __call__(
        self, configs: Sequence[Mapping], context: Mapping[str, float]
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(mean, variance)`` of the reward of each config: the ``PriorFn`` contract."""
        mean = np.array([self.reward(c, context) for c in configs], dtype=float)
        if self.objective.kind in ("goodput", "throughput"):
            # the error was measured relative to the offered output rate
            # (benchmarks/prior_error.py): one sd for every config, whatever its price. A config
            # priced at zero (overloaded, by the model) is not known to earn nothing: near
            # overload the model's verdict is its least reliable one.
            offered = float(context["request_rate_rps"]) * float(context["mean_output_tokens"])
            return mean, np.full(len(mean), (self.rel_error * max(offered, 1e-9)) ** 2)
        scale = max(float(np.max(np.abs(mean))) if len(mean) else 0.0, 1e-9)
        sd = np.maximum(self.rel_error * np.abs(mean), 0.05 * self.rel_error * scale)
        return mean, sd**2
