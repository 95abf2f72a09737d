"""Several serving replicas behind a router, optionally disaggregated into prefill and decode pools.

A :class:`Cluster` owns one :class:`~simulator.engine.EventLoop` shared by all its replicas, so
one simulation can serve the same arrivals with different configurations on different replicas
(an A/B split, a canary). Requests arrive from a :class:`~simulator.traces.Trace` (open loop) or
from ``N`` closed-loop clients that each send their next request when the previous one ends
(:meth:`Cluster.run_closed_loop`, the way serving benchmarks measure at a fixed concurrency).

With ``prefill_replicas``, the cluster is disaggregated: requests are prefilled in the prefill
pool, their KV cache (and first token) travels to a decode replica (:class:`KVTransfer` prices
it), which streams the first token and continues decoding; TTFT therefore includes the
transfer.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from tqdm.auto import tqdm

from simulator.batch import StepCostModel
from simulator.engine import (
    PRIORITY_ARRIVAL,
    EngineConfig,
    Event,
    EventLoop,
    Request,
    ServingEngine,
)
from simulator.memory import MemoryBreakdown
from simulator.metrics import SimulationResult, build_result
from simulator.step_time import AnalyticalStepModel, engine_overhead
from simulator.traces import Trace, shared_block_keys
from simulator.workloads import LengthDistribution

ROUTERS = ("round_robin", "least_loaded")


@dataclass(frozen=True)
class Replica:
    """One serving replica: its knobs, its step pricing and its KV capacity.

    Parameters
    ----------
    config : EngineConfig
    step_model : StepCostModel
    num_kv_blocks : int
        KV capacity in blocks of ``config.block_size`` tokens (``config.num_kv_blocks`` wins).
    name : str
        Label in results (defaults to ``replica<i>``).
    """

    config: EngineConfig
    step_model: StepCostModel
    num_kv_blocks: int
    name: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.config, EngineConfig):
            raise ValueError(
                f"Replica.config must be an EngineConfig, got {type(self.config).__name__}"
            )
        if not isinstance(self.step_model, StepCostModel):
            raise ValueError(
                "Replica.step_model must implement step_time_ms(batch), got "
                f"{type(self.step_model).__name__}"
            )
        blocks = self.config.num_kv_blocks or self.num_kv_blocks
        if isinstance(blocks, bool) or not isinstance(blocks, int | np.integer) or blocks < 1:
            raise ValueError(f"Replica.num_kv_blocks must be a positive integer, got {blocks!r}")


@dataclass(frozen=True)
class KVTransfer:
    """Time to move a prompt's KV cache from a prefill to a decode replica.

    ``latency_ms + prompt_tokens * kv_bytes_per_token / (bandwidth_gb_s * 1e6)`` milliseconds.
    """

    kv_bytes_per_token: float
    bandwidth_gb_s: float = 50.0
    latency_ms: float = 0.5

    def __post_init__(self) -> None:
        for name in ("kv_bytes_per_token", "bandwidth_gb_s"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v > 0):
                raise ValueError(f"KVTransfer.{name} must be finite and > 0, got {v!r}")
        if not (math.isfinite(self.latency_ms) and self.latency_ms >= 0):
            raise ValueError(
                f"KVTransfer.latency_ms must be finite and >= 0, got {self.latency_ms!r}"
            )

    def time_ms(self, tokens: int) -> float:
        return self.latency_ms + tokens * self.kv_bytes_per_token / (self.bandwidth_gb_s * 1e6)


def _spawn(seed: int | np.random.Generator | None, n: int) -> list[np.random.Generator]:
    if isinstance(seed, np.random.Generator):
        return list(seed.spawn(n))
    return [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(n)]


class Cluster:
    """Replicas behind a router, driven by one event loop.

    Parameters
    ----------
    replicas : sequence of Replica
        The (decode, or aggregated) replicas.
    router : {"round_robin", "least_loaded"}
        How arrivals pick a replica: in turn, or the one with the fewest running plus waiting
        requests (ties to the lowest index).
    prefill_replicas : sequence of Replica
        A prefill pool; when given, the cluster is disaggregated (their configs are switched to
        ``prefill_only``).
    kv_transfer : KVTransfer or None
        Required with a prefill pool.

    Examples
    --------
    >>> from simulator.engine import EngineConfig
    >>> from simulator.traces import Trace
    >>> class Flat:
    ...     def step_time_ms(self, batch):
    ...         return 5.0 + 0.01 * batch.num_tokens
    >>> cluster = Cluster([Replica(EngineConfig(step_noise_cv=0.0), Flat(), num_kv_blocks=1000)])
    >>> trace = Trace([0.0, 10.0], [100, 200], [3, 4])
    >>> result = cluster.run(trace, seed=0)
    >>> result.requests["output_tokens"].tolist()
    [3, 4]
    """

    def __init__(
        self,
        replicas: Sequence[Replica],
        router: str = "round_robin",
        prefill_replicas: Sequence[Replica] = (),
        kv_transfer: KVTransfer | None = None,
    ) -> None:
        if not replicas:
            raise ValueError("Cluster needs at least one replica")
        if router not in ROUTERS:
            raise ValueError(f"unknown router {router!r}; choose from {ROUTERS}")
        if prefill_replicas and kv_transfer is None:
            raise ValueError("a disaggregated cluster (prefill_replicas) needs a kv_transfer model")
        for r in (*replicas, *prefill_replicas):
            if not isinstance(r, Replica):
                raise ValueError(
                    f"Cluster replicas must be Replica objects, got {type(r).__name__}"
                )
        self.replicas = tuple(replicas)
        self.prefill_replicas = tuple(prefill_replicas)
        self.router = router
        self.kv_transfer = kv_transfer

    @property
    def disaggregated(self) -> bool:
        return bool(self.prefill_replicas)

    @property
    def engines(self) -> tuple[ServingEngine, ...]:
        """The engines of the last run (prefill pool first), for inspection after :meth:`run`."""
        return tuple(getattr(self, "_engines", ()))

    # ------------------------------------------------------------------ set-up of one run
    def _build(self, seed: int | np.random.Generator | None) -> None:
        specs = [*self.prefill_replicas, *self.replicas]
        rngs = _spawn(seed, len(specs))
        self._loop = EventLoop()
        self._inbound: list[float] = []  # times of scheduled arrivals and KV hand-offs
        self._engines: list[ServingEngine] = []
        for i, (spec, rng) in enumerate(zip(specs, rngs, strict=True)):
            cfg = spec.config
            if i < len(self.prefill_replicas) and not cfg.prefill_only:
                cfg = EngineConfig(**{**cfg.__dict__, "prefill_only": True})
            engine = ServingEngine(
                cfg,
                spec.step_model,
                spec.num_kv_blocks,
                rng,
                index=i,
                horizon_ms=self._horizon,
                on_finish=self._on_finish,
            )
            engine.attach(self._loop)
            self._engines.append(engine)
        n_pre = len(self.prefill_replicas)
        self._entry = self._engines[:n_pre] if n_pre else self._engines
        self._decode = self._engines[n_pre:]
        self._rr = {"entry": 0, "decode": 0}
        # requests routed to an engine but still in its front end (not yet submitted): the
        # least-loaded router counts them, or every arrival of a burst would see the same
        # (stale) loads and go to the same engine
        self._in_frontend = [0] * len(self._engines)
        self._requests: list[Request] = []
        self._hash_ids: tuple | None = None
        self._hash_block_tokens = 512
        self._on_done: Callable[[Request, float], None] | None = None
        self._pending_transfer: dict[int, Request] = {}

    def _horizon(self) -> float:
        return self._inbound[0] if self._inbound else math.inf

    def _route(self, pool: list[ServingEngine], which: str) -> ServingEngine:
        if self.router == "round_robin":
            i = self._rr[which] % len(pool)
            self._rr[which] += 1
            return pool[i]
        return min(pool, key=lambda e: (e.num_outstanding + self._in_frontend[e.index], e.index))

    def _submit(self, now_ms: float, engine: ServingEngine, req: Request) -> list[Event]:
        if self._hash_ids is not None and req.num_computed == 0 and not req.shared_keys:
            hashes = self._hash_ids[req.uid]
            req.shared_keys = shared_block_keys(
                hashes, self._hash_block_tokens, req.prompt_len, engine.config.block_size
            )
        return engine.submit(now_ms, req)

    def _on_arrival(self, now_ms: float, req: Request) -> list[Event]:
        heapq.heappop(self._inbound)
        engine = self._route(self._entry, "entry")
        latency = engine.config.frontend_latency_ms
        if latency > 0.0:  # the scheduler sees the request after the frontend's latency
            self._in_frontend[engine.index] += 1
            self._schedule_inbound(now_ms + latency, self._on_frontend_done, (engine, req))
            return []
        return self._submit(now_ms, engine, req)

    def _on_frontend_done(
        self, now_ms: float, payload: tuple[ServingEngine, Request]
    ) -> list[Event]:
        heapq.heappop(self._inbound)
        engine, req = payload
        self._in_frontend[engine.index] -= 1
        return self._submit(now_ms, engine, req)

    def _on_handoff(self, now_ms: float, req: Request) -> list[Event]:
        heapq.heappop(self._inbound)
        # the decode replica receives the prompt's KV and the first token, and streams that
        # token to the client (as Dynamo and SGLang's PD disaggregation do): TTFT includes
        # the prefill queue, the prefill and the KV transfer
        req.first_token_ms = now_ms
        req.held_shared = 0
        req.num_blocks = 0
        req.shared_keys = ()
        return self._submit(now_ms, self._route(self._decode, "decode"), req)

    def _schedule_inbound(self, time_ms: float, handler: Callable, req: Request) -> None:
        heapq.heappush(self._inbound, time_ms)
        self._loop.schedule(time_ms, PRIORITY_ARRIVAL, handler, req)

    def _on_finish(self, req: Request, now_ms: float) -> None:
        if (
            self.disaggregated
            and not req.reject_reason
            and req.replica < len(self.prefill_replicas)
            and req.num_generated < req.output_len
        ):
            req.finish_ms = math.nan
            self._schedule_inbound(
                now_ms + self.kv_transfer.time_ms(req.prompt_len), self._on_handoff, req
            )
            return
        if self._on_done is not None:
            self._on_done(req, now_ms)

    def _new_request(
        self, uid: int, arrival_ms: float, prompt: int, output: int, priority: int
    ) -> Request:
        req = Request(uid, arrival_ms, prompt, output, priority)
        self._requests.append(req)
        return req

    def _run_loop(self, until_ms: float, progress: bool, total_ms: float, desc: str) -> int:
        if not progress:
            return self._loop.run(until_ms)
        total_s = max(1, math.ceil(total_ms / 1000.0)) if math.isfinite(total_ms) else None
        with tqdm(total=total_s, desc=desc, unit="sim-s", leave=False) as bar:

            def advance(now_ms: float) -> None:
                target = int(now_ms // 1000.0)
                if total_s is not None:
                    target = min(target, total_s)
                if target > bar.n:
                    bar.update(target - bar.n)

            return self._loop.run(until_ms, on_progress=advance)

    def _result(self, events: int, label: str) -> SimulationResult:
        return build_result(
            self._requests,
            self._engines,
            names=[
                spec.name or f"{'prefill' if i < len(self.prefill_replicas) else 'replica'}{i}"
                for i, spec in enumerate([*self.prefill_replicas, *self.replicas])
            ],
            events=events,
            label=label,
        )

    # ------------------------------------------------------------------ open loop
    def run(
        self,
        trace: Trace,
        seed: int | np.random.Generator | None = None,
        progress: bool = False,
        label: str = "",
    ) -> SimulationResult:
        """Serve every request of ``trace``; returns per-request and per-step records.

        Parameters
        ----------
        trace : Trace
            Arrivals and lengths (and, if present, priorities and prefix hashes).
        seed : int, Generator or None
            Seeds the replicas' step-noise streams (one independent stream each).
        progress : bool
            Show a tqdm bar over simulated seconds.
        """
        if not isinstance(trace, Trace):
            raise ValueError(f"Cluster.run needs a Trace, got {type(trace).__name__}")
        self._build(seed)
        self._hash_ids = trace.hash_ids
        self._hash_block_tokens = trace.hash_block_tokens
        arrival = trace.arrival_ms.tolist()
        prompt = trace.prompt_tokens.tolist()
        output = trace.output_tokens.tolist()
        prio = trace.priority.tolist() if trace.priority is not None else None
        n = len(arrival)
        state = {"next": 0}

        def feed(now_ms: float, req: Request) -> list[Event]:
            events = self._on_arrival(now_ms, req)
            i = state["next"]
            if i < n:
                state["next"] = i + 1
                self._schedule_inbound(
                    arrival[i],
                    feed,
                    self._new_request(i, arrival[i], prompt[i], output[i], prio[i] if prio else 0),
                )
            return events

        if n:
            state["next"] = 1
            self._schedule_inbound(
                arrival[0],
                feed,
                self._new_request(0, arrival[0], prompt[0], output[0], prio[0] if prio else 0),
            )
        events = self._run_loop(math.inf, progress, trace.duration_ms, label or trace.name)
        return self._result(events, label or trace.name)

    # ------------------------------------------------------------------ closed loop
    def run_closed_loop(
        self,
        concurrency: int,
        lengths: LengthDistribution,
        num_requests: int,
        seed: int | np.random.Generator | None = None,
        think_time_ms: float = 0.0,
        progress: bool = False,
        label: str = "",
    ) -> SimulationResult:
        """``concurrency`` clients, each sending its next request as soon as (plus
        ``think_time_ms`` after) its previous one ends, until ``num_requests`` were sent.

        Request lengths are drawn from ``lengths`` with a stream independent of the step noise,
        so two configurations run with the same seed see the same requests (common random
        numbers).
        """
        if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
            raise ValueError(f"concurrency must be a positive integer, got {concurrency!r}")
        if isinstance(num_requests, bool) or not isinstance(num_requests, int) or num_requests < 1:
            raise ValueError(f"num_requests must be a positive integer, got {num_requests!r}")
        if not (math.isfinite(think_time_ms) and think_time_ms >= 0):
            raise ValueError(f"think_time_ms must be finite and >= 0, got {think_time_ms!r}")
        if isinstance(seed, np.random.Generator):
            len_rng, engine_seed = seed.spawn(2)
        else:
            ss = np.random.SeedSequence(seed).spawn(2)
            len_rng, engine_seed = np.random.default_rng(ss[0]), np.random.default_rng(ss[1])
        prompts, outputs = lengths.sample(num_requests, len_rng)
        self._build(engine_seed)
        state = {"sent": 0}

        def send(now_ms: float) -> None:
            i = state["sent"]
            if i >= num_requests:
                return
            state["sent"] = i + 1
            req = self._new_request(i, now_ms, int(prompts[i]), int(outputs[i]), 0)
            self._schedule_inbound(now_ms, lambda t, r: self._on_arrival(t, r), req)

        def done(_req: Request, now_ms: float) -> None:
            send(now_ms + think_time_ms)

        self._on_done = done
        for _ in range(min(concurrency, num_requests)):
            send(0.0)
        events = self._run_loop(
            math.inf, progress, math.inf, label or f"closed-loop c={concurrency}"
        )
        return self._result(events, label or f"closed-loop c={concurrency}")


def single_replica(
    config: EngineConfig, step_model: StepCostModel, num_kv_blocks: int, name: str = ""
) -> Cluster:
    """A one-replica cluster (the common case)."""
    return Cluster([Replica(config, step_model, num_kv_blocks, name)])


@lru_cache(maxsize=32)
def _step_model(deployment: Deployment) -> AnalyticalStepModel:
    return AnalyticalStepModel.from_names(
        model=deployment.model,
        system=deployment.system,
        tp=deployment.tp,
        pp=deployment.pp,
        ep=deployment.ep,
        dtype=deployment.dtype,
        backend=deployment.backend,
    )


@lru_cache(maxsize=32)
def _engine_step_model(deployment: Deployment) -> AnalyticalStepModel:
    return _step_model(deployment).with_overhead(engine_overhead(deployment.backend))


@dataclass(frozen=True)
class Deployment:
    """What a replica runs on: model, GPU system, parallel layout, precision, backend.

    Builds replicas priced by the analytical step model (:mod:`simulator.step_time`) with the KV
    capacity its memory model leaves for a config's ``gpu_memory_utilization``,
    ``max_num_batched_tokens``, ``max_num_seqs``, CUDA graphs and block size.

    Examples
    --------
    >>> dep = Deployment("meta-llama/Llama-3.1-8B", "h100_sxm")
    >>> replica = dep.replica(EngineConfig())
    >>> replica.num_kv_blocks > 10_000
    True
    """

    model: str = "meta-llama/Llama-3.1-8B"
    system: str = "h100_sxm"
    tp: int = 1
    pp: int = 1
    ep: int = 1
    dtype: str = "bf16"
    backend: str = "vllm"

    def __post_init__(self) -> None:
        for name in ("tp", "pp", "ep"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"Deployment.{name} must be a positive integer, got {v!r}")

    def step_model(self) -> AnalyticalStepModel:
        """The (cached, shared) analytical step model of this deployment, with the analytical
        estimates' overhead (:data:`~simulator.step_time.DEFAULT_OVERHEAD`)."""
        return _step_model(self)

    def engine_step_model(self) -> AnalyticalStepModel:
        """The step model the serving engine prices this deployment's steps with: the same
        kernel prices, with the engine's own overhead
        (:func:`~simulator.step_time.engine_overhead`)."""
        return _engine_step_model(self)

    def memory(self, config: EngineConfig) -> MemoryBreakdown:
        """Per-GPU memory and KV capacity under ``config`` (the MTP module included when it
        decodes speculatively)."""
        model = self.step_model()
        return model.memory(
            config.gpu_memory_utilization,
            max_num_batched_tokens=config.max_num_batched_tokens,
            max_num_seqs=config.max_num_seqs,
            cuda_graph_sizes=config.cuda_graph_sizes or None,
            block_size=config.block_size,
            draft_layers=model.model.mtp_layers if config.speculative_tokens else 0,
        )

    def kv_bytes_per_token(self) -> float:
        """KV bytes one token occupies across the replica's ``tp * pp`` GPUs (what a
        disaggregated hand-off moves; see :class:`KVTransfer`)."""
        return self.memory(EngineConfig()).kv_bytes_per_token * self.tp * self.pp

    def replica(self, config: EngineConfig, name: str = "") -> Replica:
        """A replica with this deployment's pricing and KV capacity.

        Raises
        ------
        ValueError
            When ``config`` leaves no memory for the KV cache (the reason names the consumers),
            or decodes speculatively with a model that ships no MTP module.
        """
        if config.speculative_tokens and self.step_model().model.mtp_layers < 1:
            raise ValueError(
                f"{self.model} ships no multi-token-prediction module (num_nextn_predict_layers "
                f"= 0 in its config.json): speculative_tokens={config.speculative_tokens} needs one"
            )
        if config.num_kv_blocks is not None:
            return Replica(config, self.engine_step_model(), config.num_kv_blocks, name)
        mem = self.memory(config)
        if not mem.feasible:
            raise ValueError(
                f"{self.model} on {self.system} (tp={self.tp}, pp={self.pp}): {mem.reason()}"
            )
        return Replica(config, self.engine_step_model(), mem.kv_capacity_blocks, name)
