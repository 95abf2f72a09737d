"""A discrete-event model of one vLLM V1 serving replica.

The engine reproduces the scheduler of vLLM's V1 engine closely enough for the tuner to learn
the effects of its knobs:

* **continuous batching** with a per-step token budget (``max_num_batched_tokens``) and a cap
  on running sequences (``max_num_seqs``); running requests are scheduled first, then waiting
  ones are admitted while budget, sequence slots and KV blocks last;
* **chunked prefill** (a prompt is split over steps to fill the budget) or, when disabled,
  whole prompts only;
* a **paged KV cache** of ``num_kv_blocks`` blocks of ``block_size`` tokens, with **prefix
  caching** by block hash (full prompt blocks are shared between requests and kept, LRU, after
  their owners finish) and **preemption by recompute** when a running request needs a block and
  none is free (the newest, or lowest-priority, request is evicted and re-prefilled later);
* **FCFS or priority** scheduling; **CUDA graphs** (decode-only steps are padded to a captured
  batch size) versus eager execution;
* step time from any :class:`~simulator.batch.StepCostModel` times a seeded, mean-one lognormal
  noise factor (:class:`StepNoise`).

Performance: between two scheduling changes (an arrival, a completion, a KV block shortage) a
decode-only batch is the same batch step after step, only one token longer. The engine then
advances a *decode span* of ``k`` steps in one event: it prices the first and the last step
exactly and interpolates the steps between (decode cost is linear in KV length), takes the
span's per-step noise factors from the same stream single steps use, and cuts the span at the
first step that ends after the next arrival, so every arrival still meets the scheduler at the
next step boundary. With a cost model linear in KV length the span path reproduces the
step-by-step path exactly, noise included (tested); ``EngineConfig(decode_span_steps=1)`` turns
spans off.

The clock is owned by :class:`EventLoop` (a heap keyed by ``(time, priority, seq)``; handlers
return follow-up events), shared by every replica of a :class:`~simulator.cluster.Cluster`.
"""

from __future__ import annotations

import bisect
import heapq
import math
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from simulator.batch import DEEPSEEK_MTP_ACCEPTANCE, BatchShape, StepCostModel, tokens_per_step

#: Event priorities: ties at one instant run arrivals first, then step ends, then wake-ups, so
#: requests arriving at the same time as a step boundary join that boundary's schedule.
PRIORITY_ARRIVAL = 0
PRIORITY_STEP_END = 1
PRIORITY_WAKE = 2

SCHEDULING_POLICIES = ("fcfs", "priority")

#: How an engine admits waiting requests against its KV cache (``EngineConfig.kv_admission``).
KV_ADMISSION_POLICIES = ("on_demand", "reserve", "estimate", "lookahead")
#: Each backend's default admission: vLLM V1 allocates blocks as requests grow and preempts;
#: TensorRT-LLM's default capacity scheduler (``GUARANTEED_NO_EVICT``) admits a request only
#: when the blocks of its whole lifetime fit; SGLang's scheduler reserves an estimate of the
#: running requests' remaining output and retracts when decoding runs out of blocks.
KV_ADMISSION_DEFAULT = {"vllm": "on_demand", "trtllm": "reserve", "sglang": "estimate"}

#: SGLang's admission estimate (``python/sglang/srt/environ.py`` and the scheduler's
#: ``new_token_ratio`` tracker): the share of a running request's remaining output tokens
#: held back from admission starts at ``SGLANG_INIT_NEW_TOKEN_RATIO``, falls by
#: ``(init - min) / SGLANG_NEW_TOKEN_RATIO_DECAY_STEPS`` per decode step to ``init x
#: SGLANG_MIN_NEW_TOKEN_RATIO_FACTOR``, returns to ``init`` when the scheduler idles, and after a
#: retraction is set to ``(tokens decoded + RETRACT_DECODE_STEPS x requests) / max new tokens``
#: of the requests left running (at most 1). Remaining outputs count at most
#: ``SGLANG_CLIP_MAX_NEW_TOKENS`` tokens.
SGLANG_INIT_NEW_TOKEN_RATIO = 0.7
SGLANG_MIN_NEW_TOKEN_RATIO_FACTOR = 0.14
SGLANG_NEW_TOKEN_RATIO_DECAY_STEPS = 600
SGLANG_RETRACT_DECODE_STEPS = 20
SGLANG_CLIP_MAX_NEW_TOKENS = 4096
#: Tokens SGLang keeps free per running request in its ``ignore_eos`` admission check
#: (``IGNORE_EOS_RESERVE_TOKENS``).
SGLANG_IGNORE_EOS_RESERVE_TOKENS = 1

#: Per-step jitter of the step time (coefficient of variation), fitted on decoder steps timed one
#: by one on an H200 (``benchmarks/gpu_step_noise.py``, ``benchmarks/step_noise_check.py``: the
#: median over the fit run's cases of the within-block CV of a step's host wall time; RESULTS.md,
#: "Per-step noise of decoder steps on a GPU"). Was 0.03, an assumption.
DEFAULT_STEP_NOISE_CV = 0.0046

#: Run-to-run spread of a whole run's speed (coefficient of variation), fitted on silicon_dev.csv:
#: the median TPOT coefficient of variation over the 130 groups of repeated identical deployments
#: whose measurements differ (``benchmarks/engine_fidelity.py --calibrate-noise`` recomputes it).
DEFAULT_RUN_NOISE_CV = 0.006

#: Columns of :attr:`ServingEngine.step_log` (counts are at the step's start, after scheduling;
#: ``sampled_tokens`` counts the tokens the step, or decode span, emitted).
STEP_LOG_COLUMNS = (
    "start_ms",
    "end_ms",
    "steps",
    "prefill_tokens",
    "decode_seqs",
    "running",
    "waiting",
    "kv_used_blocks",
    "preemptions",
    "sampled_tokens",
)

Event = tuple[float, int, Callable[[float, Any], Iterable["Event"] | None], Any]


class EventLoop:
    """The simulation clock: a heap of events keyed by ``(time_ms, priority, seq)``.

    ``seq`` is a running counter, so events with equal time and priority run in the order they
    were scheduled and every run with the same inputs is identical. A handler is called as
    ``handler(now_ms, payload)`` and returns the follow-up events (or ``None``).

    Examples
    --------
    >>> loop = EventLoop()
    >>> seen = []
    >>> def tick(now, n):
    ...     seen.append((now, n))
    ...     return [(now + 1.0, 0, tick, n - 1)] if n > 1 else None
    >>> loop.schedule(0.0, 0, tick, 3)
    >>> loop.run()
    3
    >>> seen
    [(0.0, 3), (1.0, 2), (2.0, 1)]
    """

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, int, Callable, Any]] = []
        self._seq = 0
        self.now_ms = 0.0

    def schedule(
        self, time_ms: float, priority: int, handler: Callable, payload: Any = None
    ) -> None:
        """Add one event. Raises ``ValueError`` for an event in the past."""
        if time_ms < self.now_ms:
            raise ValueError(f"event at {time_ms} ms is before the clock ({self.now_ms} ms)")
        heapq.heappush(self._heap, (time_ms, priority, self._seq, handler, payload))
        self._seq += 1

    def __len__(self) -> int:
        return len(self._heap)

    def run(
        self,
        until_ms: float = math.inf,
        on_progress: Callable[[float], None] | None = None,
        progress_every: int = 2000,
    ) -> int:
        """Process events in order until the heap is empty or the next event is after ``until_ms``.

        Parameters
        ----------
        until_ms : float
            Stop before the first event later than this.
        on_progress : callable, optional
            Called with the clock (ms) every ``progress_every`` events (for a progress bar).

        Returns
        -------
        int
            Events processed.
        """
        heap = self._heap
        push = heapq.heappush
        pop = heapq.heappop
        n = 0
        while heap and heap[0][0] <= until_ms:
            time_ms, _, _, handler, payload = pop(heap)
            self.now_ms = time_ms
            follow = handler(time_ms, payload)
            if follow:
                for t, prio, h, p in follow:
                    if t < time_ms:
                        raise ValueError(f"handler {h!r} scheduled an event in the past")
                    push(heap, (t, prio, self._seq, h, p))
                    self._seq += 1
            n += 1
            if on_progress is not None and n % progress_every == 0:
                on_progress(time_ms)
        if on_progress is not None:
            on_progress(self.now_ms)
        return n


@dataclass(frozen=True)
class StepNoise:
    """Multiplicative step-time noise: a per-run factor times a per-step factor, both lognormal
    with mean one.

    A factor with coefficient of variation ``c`` is ``exp(sigma * z - sigma**2 / 2)`` with
    ``sigma**2 = log(1 + c**2)`` and ``z`` standard normal, so mean step times stay the cost
    model's. ``cv`` is the step-to-step jitter (kernel timing, host scheduling); ``run_cv`` the
    spread between whole runs of one deployment (clocks, placement), drawn once per replica and
    run. A zero CV draws no random numbers.

    ``run_cv`` defaults to :data:`DEFAULT_RUN_NOISE_CV`, fitted on the repeated deployments in
    silicon_dev.csv. ``cv`` defaults to :data:`DEFAULT_STEP_NOISE_CV`, fitted on steps timed one
    by one on a GPU: end-to-end means average thousands of steps, so they cannot identify
    per-step jitter. Those steps are a plain-PyTorch decoder's on an otherwise idle machine, so
    the fit leaves out a real engine's own host jitter (its scheduler, tokenizer and HTTP
    server sharing the CPU); the measured steps' jitter is also correlated from step to step
    (lag-1 autocorrelation 0.1-0.9), which independent draws do not reproduce.
    """

    cv: float = DEFAULT_STEP_NOISE_CV
    run_cv: float = DEFAULT_RUN_NOISE_CV

    def __post_init__(self) -> None:
        for name in ("cv", "run_cv"):
            v = getattr(self, name)
            if not (isinstance(v, int | float) and math.isfinite(v) and 0.0 <= v <= 2.0):
                raise ValueError(f"StepNoise.{name} must be in [0, 2], got {v!r}")

    @staticmethod
    def _lognormal(rng: np.random.Generator, cv: float, n: int) -> np.ndarray:
        sigma2 = math.log1p(cv * cv)
        return np.exp(math.sqrt(sigma2) * rng.standard_normal(n) - 0.5 * sigma2)

    def factors(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """``n`` independent per-step factors (all ones when ``cv == 0``)."""
        if self.cv == 0.0:
            return np.ones(n)
        return self._lognormal(rng, self.cv, n)

    def run_factor(self, rng: np.random.Generator) -> float:
        """One run's speed factor (1.0 when ``run_cv == 0``)."""
        if self.run_cv == 0.0:
            return 1.0
        return float(self._lognormal(rng, self.run_cv, 1)[0])


def default_cuda_graph_sizes(max_size: int) -> tuple[int, ...]:
    """vLLM's default CUDA-graph capture sizes up to ``max_size``: 1, 2, 4, then steps of 8 to
    256, then steps of 16."""
    sizes = [1, 2, 4, *range(8, 256, 8), *range(256, max_size + 1, 16)]
    return tuple(s for s in sizes if s <= max_size) or (1,)


@dataclass(frozen=True)
class EngineConfig:
    """The knobs of one serving replica (vLLM engine arguments of the same names).

    Parameters
    ----------
    max_num_seqs : int
        Most requests running (holding KV and scheduled) at once.
    max_num_batched_tokens : int
        Token budget of one step (prefill chunks plus one per decoding request).
    enable_chunked_prefill : bool
        Split prompts over steps to fill the budget. When off, a prompt is prefilled whole and a
        prompt longer than the budget is rejected (as vLLM refuses it).
    gpu_memory_utilization : float
        Fraction of GPU memory the engine may use; with the memory model it sets the KV capacity
        (see :meth:`simulator.cluster.Deployment.replica`). Ignored when
        ``num_kv_blocks`` is given.
    num_kv_blocks : int or None
        KV-cache capacity in blocks, overriding the memory model (e.g. a deliberately tiny cache).
    block_size : int
        Tokens per KV block.
    enable_prefix_caching : bool
        Share full prompt blocks with equal hashes between requests and keep freed ones cached.
    scheduling_policy : {"fcfs", "priority"}
        Waiting-queue order; preemption victims are the newest (fcfs) or the lowest-priority,
        newest (priority) running requests. Lower ``priority`` values run first, as in vLLM.
    cuda_graphs : bool
        Decode-only steps of at most ``cuda_graph_max_batch`` sequences replay a captured CUDA
        graph padded to the next capture size; ``False`` is vLLM's ``--enforce-eager``.
    cuda_graph_max_batch : int or None
        Largest captured batch; ``None`` means vLLM's default ``min(2 * max_num_seqs, 512)``.
    max_model_len : int or None
        Longest prompt + output accepted; longer requests are rejected (counted, never dropped).
    frontend_latency_ms : float
        Time from a client's send to the scheduler seeing the request (HTTP, tokenization,
        inter-process hand-off): requests join the waiting queue this long after they arrive,
        so TTFT and end-to-end latency include it.
    step_noise_cv : float
        Step-to-step coefficient of variation of the step time (:class:`StepNoise`).
    run_noise_cv : float
        Run-to-run coefficient of variation of the replica's speed (:class:`StepNoise`).
    decode_span_steps : int
        Most decode steps advanced in one event (1 = strictly step by step).
    prefill_only : bool
        A disaggregated prefill worker: requests finish after their first token and are handed
        to a decode worker.
    async_scheduling : bool
        The scheduler plans step ``k + 1`` when step ``k`` starts (vLLM's
        ``--async-scheduling``, its default in releases after 0.12; SGLang's and TensorRT-LLM's overlap
        schedulers work the same way), so a request that reaches a busy engine joins the
        waiting queue only at the next step boundary and is first scheduled one step later
        than a synchronous scheduler would. ``False`` is vLLM's ``--no-async-scheduling``.
    scheduler_recv_interval : int
        SGLang's ``--scheduler-recv-interval``: a busy scheduler takes in new requests only
        once this many decode steps have run since it last did (at once after a step with
        prefill work, and when idle); ``1`` (every engine's default) takes them in at every step.
    mixed_batching : bool
        ``True`` (vLLM, TensorRT-LLM): one step carries decodes and prefill chunks together.
        ``False`` (SGLang's default scheduler, no ``--enable-mixed-chunk``): a step runs either
        prefill work (new prompts and prompt chunks, up to the token budget) or the decodes,
        prefill first, so every arrival stalls the running decodes for its prefill.
    speculative_tokens : int
        Draft tokens per decode step from the model's multi-token-prediction head (0: off).
        Each decoding request then takes ``1 + speculative_tokens`` tokens of the step budget
        and KV slots, the step is priced with the drafts (:class:`~simulator.batch.BatchShape`),
        and the request advances by the mean accepted tokens per step
        (:func:`~simulator.batch.tokens_per_step`), carried as a fraction between steps so the
        run stays deterministic.
    draft_acceptance : tuple of float
        Probability that the ``i``-th draft token of a step is accepted (default: DeepSeek-R1's
        MTP module, :data:`simulator.batch.DEEPSEEK_MTP_ACCEPTANCE`).
    batch_wait_iters, batch_wait_tokens_ratio : int, float
        TensorRT-LLM's ``batch_wait_timeout_iters`` and ``batch_wait_max_tokens_ratio``: while
        requests decode, waiting prompts are not admitted until the decodes' tokens plus the
        waiting prompts' reach ``ratio x max_num_batched_tokens`` or they have been held this
        many steps (the count restarts at each release). 0: no batch waiting.
    attention_dp_balance_iters : int
        TensorRT-LLM's attention-DP balance (``attention_dp_config.timeout_iters`` with
        ``enable_balance``): a busy rank takes new prompts in only when a counter of this many
        steps fires, restarting at each release; modelled with the receive window of
        ``scheduler_recv_interval`` (the larger of the two applies). 0: off.
    kv_admission : {"on_demand", "reserve", "estimate"}
        How waiting requests are admitted against the KV cache (:data:`KV_ADMISSION_DEFAULT`
        per backend). ``"on_demand"`` (vLLM V1): a request goes in when its next chunk's
        blocks are free; running requests take blocks as they grow and, when none are left,
        the newest is preempted (recomputed later) and nothing new is admitted in that step.
        ``"reserve"`` (TensorRT-LLM's ``GUARANTEED_NO_EVICT``): a request goes in only when the
        blocks of its whole prompt and output fit beside the blocks the running requests still
        need to finish, so nothing is ever preempted; the first request that does not fit
        blocks the queue. ``"estimate"`` (SGLang): a request goes in when its prompt, its
        output (at most :data:`SGLANG_CLIP_MAX_NEW_TOKENS`) and one block fit beside a share
        (``new_token_ratio``, :data:`SGLANG_INIT_NEW_TOKEN_RATIO`) of the running requests'
        remaining output; when decoding runs out of blocks it retracts the running request
        with the fewest output tokens (the longest prompt on ties) to the back of the queue.
        ``"lookahead"`` (SGLang's check for ``ignore_eos`` requests when its radix cache is
        off): a request goes in only if, with every running request and it decoding to the end
        and the shortest finishing first, the free tokens never run out. The reservations use
        the request's output length (with ``ignore_eos`` clients, the ``max_tokens`` the
        engines reserve for).
    """

    max_num_seqs: int = 256
    max_num_batched_tokens: int = 8192
    enable_chunked_prefill: bool = True
    gpu_memory_utilization: float = 0.9
    num_kv_blocks: int | None = None
    block_size: int = 16
    enable_prefix_caching: bool = True
    scheduling_policy: str = "fcfs"
    cuda_graphs: bool = True
    cuda_graph_max_batch: int | None = None
    max_model_len: int | None = None
    frontend_latency_ms: float = 0.0
    step_noise_cv: float = DEFAULT_STEP_NOISE_CV
    run_noise_cv: float = DEFAULT_RUN_NOISE_CV
    decode_span_steps: int = 4096
    prefill_only: bool = False
    mixed_batching: bool = True
    async_scheduling: bool = True
    scheduler_recv_interval: int = 1
    speculative_tokens: int = 0
    draft_acceptance: tuple[float, ...] = DEEPSEEK_MTP_ACCEPTANCE
    batch_wait_iters: int = 0
    batch_wait_tokens_ratio: float = 0.0
    attention_dp_balance_iters: int = 0
    kv_admission: str = "on_demand"

    def __post_init__(self) -> None:
        for name in (
            "max_num_seqs",
            "max_num_batched_tokens",
            "block_size",
            "decode_span_steps",
            "scheduler_recv_interval",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
                raise ValueError(f"EngineConfig.{name} must be a positive integer, got {value!r}")
        for name in ("num_kv_blocks", "cuda_graph_max_batch", "max_model_len"):
            value = getattr(self, name)
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1
            ):
                raise ValueError(
                    f"EngineConfig.{name} must be a positive integer or None, got {value!r}"
                )
        if not (0.0 < float(self.gpu_memory_utilization) <= 1.0):
            raise ValueError(
                "EngineConfig.gpu_memory_utilization must be in (0, 1], got "
                f"{self.gpu_memory_utilization!r}"
            )
        lat = self.frontend_latency_ms
        if isinstance(lat, bool) or not isinstance(lat, int | float) or not (0.0 <= lat < math.inf):
            raise ValueError(
                f"EngineConfig.frontend_latency_ms must be finite and >= 0, got {lat!r}"
            )
        if self.kv_admission not in KV_ADMISSION_POLICIES:
            raise ValueError(
                f"EngineConfig.kv_admission must be one of {KV_ADMISSION_POLICIES}, got "
                f"{self.kv_admission!r}"
            )
        if self.scheduling_policy not in SCHEDULING_POLICIES:
            raise ValueError(
                f"EngineConfig.scheduling_policy must be one of {SCHEDULING_POLICIES}, got "
                f"{self.scheduling_policy!r}"
            )
        for name in (
            "enable_chunked_prefill",
            "enable_prefix_caching",
            "cuda_graphs",
            "prefill_only",
            "mixed_batching",
            "async_scheduling",
        ):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"EngineConfig.{name} must be a bool, got {getattr(self, name)!r}")
        for name in ("speculative_tokens", "batch_wait_iters", "attention_dp_balance_iters"):
            k = getattr(self, name)
            if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 0:
                raise ValueError(f"EngineConfig.{name} must be an integer >= 0, got {k!r}")
        if not 0.0 <= float(self.batch_wait_tokens_ratio) <= 1.0:
            raise ValueError(
                "EngineConfig.batch_wait_tokens_ratio must be in [0, 1], got "
                f"{self.batch_wait_tokens_ratio!r}"
            )
        if not all(0.0 <= float(p) <= 1.0 for p in self.draft_acceptance):
            raise ValueError(
                f"EngineConfig.draft_acceptance entries must be in [0, 1], got "
                f"{self.draft_acceptance!r}"
            )
        StepNoise(self.step_noise_cv, self.run_noise_cv)  # validates both

    @property
    def cuda_graph_sizes(self) -> tuple[int, ...]:
        """Captured decode batch sizes (empty when CUDA graphs are off)."""
        if not self.cuda_graphs:
            return ()
        max_size = self.cuda_graph_max_batch or min(2 * self.max_num_seqs, 512)
        return default_cuda_graph_sizes(max_size)

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(cls.__dataclass_fields__)


class Request:
    """One request's state inside the simulation (mutable; results are read at the end)."""

    __slots__ = (
        "arrival_ms",
        "finish_ms",
        "first_scheduled_ms",
        "first_token_ms",
        "held_shared",
        "num_blocks",
        "num_computed",
        "num_generated",
        "num_preemptions",
        "num_tokens",
        "output_len",
        "prefix_hit_tokens",
        "priority",
        "prompt_len",
        "reject_reason",
        "replica",
        "shared_keys",
        "spec_credit",
        "uid",
    )

    def __init__(
        self,
        uid: int,
        arrival_ms: float,
        prompt_len: int,
        output_len: int,
        priority: int = 0,
        shared_keys: tuple | None = None,
    ) -> None:
        self.uid = uid
        self.arrival_ms = arrival_ms
        self.prompt_len = prompt_len
        self.output_len = output_len
        self.priority = priority
        self.shared_keys = shared_keys or ()
        self.num_tokens = prompt_len  # prompt plus tokens sampled so far
        self.num_computed = 0  # tokens whose KV is in the cache
        self.num_generated = 0
        self.num_blocks = 0  # blocks covering the KV, shared ones included
        self.held_shared = 0  # leading blocks held as references in the prefix cache
        self.num_preemptions = 0
        self.prefix_hit_tokens = 0
        self.first_scheduled_ms = math.nan
        self.first_token_ms = math.nan
        self.finish_ms = math.nan
        self.reject_reason = ""
        self.replica = -1
        self.spec_credit = 0.0  # speculative decoding: the fraction of a token carried over

    def block_key(self, j: int) -> Any:
        """Hash key of the ``j``-th KV block: the trace's shared prefix hash where it has one,
        else a key private to this request (useful only to itself after a preemption)."""
        return self.shared_keys[j] if j < len(self.shared_keys) else (-1 - self.uid, j)


def _block_keys(req: Request, start: int, stop: int) -> tuple | list:
    """Keys of blocks ``start:stop`` of ``req`` (:meth:`Request.block_key`, without a call per
    block: the hot path of prefix caching)."""
    keys = req.shared_keys
    n = len(keys)
    if stop <= n:
        return keys[start:stop]
    tag = -1 - req.uid
    return [*keys[start:n], *((tag, j) for j in range(max(start, n), stop))]


class _BlockPool:
    """Paged KV blocks with an LRU prefix cache of freed full blocks.

    ``free_empty`` blocks hold nothing; ``evictable`` blocks hold a cached prefix block whose
    reference count dropped to zero (reusable: a prefix hit revives it, an allocation evicts
    the least recently freed). ``refcount`` maps a cached key to its live references.
    """

    __slots__ = ("evictable", "free_empty", "num_blocks", "refcount")

    def __init__(self, num_blocks: int) -> None:
        self.num_blocks = num_blocks
        self.free_empty = num_blocks
        self.refcount: dict[Any, int] = {}
        self.evictable: OrderedDict[Any, None] = OrderedDict()

    @property
    def available(self) -> int:
        return self.free_empty + len(self.evictable)

    @property
    def used(self) -> int:
        return self.num_blocks - self.free_empty - len(self.evictable)

    def take(self, n: int) -> None:
        """Allocate ``n`` blocks (caller checked ``available``), evicting LRU cached blocks."""
        if n <= self.free_empty:
            self.free_empty -= n
            return
        n -= self.free_empty
        self.free_empty = 0
        evictable, refcount = self.evictable, self.refcount
        for _ in range(n):
            key, _ = evictable.popitem(last=False)
            del refcount[key]


class ServingEngine:
    """One simulated vLLM V1 replica.

    Parameters
    ----------
    config : EngineConfig
        The knobs.
    step_model : StepCostModel
        Prices each step.
    num_kv_blocks : int
        KV capacity in blocks (``config.num_kv_blocks`` wins when set).
    rng : numpy.random.Generator
        The replica's own noise stream.
    index : int
        Replica number (recorded on its requests).

    Notes
    -----
    The engine is driven by a :class:`EventLoop`; a :class:`~simulator.cluster.Cluster` routes
    requests to it with :meth:`submit`. ``horizon_ms`` is a callable giving the time of the next
    request that may reach this engine (decode spans end at the first step boundary after it);
    ``on_finish`` is called with each finished (or handed-off) request.
    """

    def __init__(
        self,
        config: EngineConfig,
        step_model: StepCostModel,
        num_kv_blocks: int,
        rng: np.random.Generator,
        index: int = 0,
        horizon_ms: Callable[[], float] | None = None,
        on_finish: Callable[[Request, float], None] | None = None,
    ) -> None:
        if not isinstance(step_model, StepCostModel):
            raise ValueError(
                f"step_model must implement StepCostModel.step_time_ms, got {type(step_model).__name__}"
            )
        blocks = config.num_kv_blocks or num_kv_blocks
        if isinstance(blocks, bool) or int(blocks) < 1:
            raise ValueError(f"num_kv_blocks must be a positive integer, got {blocks!r}")
        self.config = config
        self.step_model = step_model
        self.index = index
        self.rng = rng
        self.noise = StepNoise(config.step_noise_cv, config.run_noise_cv)
        self._run_factor = self.noise.run_factor(rng)
        self._noise_buf = np.ones(0)
        self._noise_pos = 0
        self.pool = _BlockPool(int(blocks))
        self.horizon_ms = horizon_ms or (lambda: math.inf)
        self.on_finish = on_finish
        self._bs = config.block_size
        # speculative decoding: drafts verified per decode, and tokens emitted per step
        self._draft = int(config.speculative_tokens)
        self._alpha = tokens_per_step(self._draft, config.draft_acceptance)
        # TensorRT-LLM's attention-DP balance holds arrivals like SGLang's receive window
        self._recv_interval = max(config.scheduler_recv_interval, config.attention_dp_balance_iters)
        # TensorRT-LLM's batch waiting: steps the waiting prompts have been held, and whether
        # they are held in the step being planned
        self._wait_count = 0
        self._holding = False
        self._graph_sizes = config.cuda_graph_sizes
        self._priority = config.scheduling_policy == "priority"
        # KV admission (EngineConfig.kv_admission) and SGLang's new-token ratio
        self._admission = config.kv_admission
        self._token_ratio = SGLANG_INIT_NEW_TOKEN_RATIO
        self._waiting_fifo: deque[Request] = deque()
        self._waiting_heap: list[tuple[int, float, int, Request]] = []
        # asynchronous scheduling: requests that reached the busy engine after the scheduler
        # planned the next step; they join the waiting queue once that step starts
        self._inbox: list[Request] = []
        # decode steps run since the scheduler last took in new requests (SGLang's receive
        # skipper), and the last step's decode steps (-1: it had prefill work)
        self._recv_count = 0
        self._last_weight = 0
        self.running: list[Request] = []
        self._busy = False
        self._wake_pending = False
        self.loop: EventLoop | None = None
        # one row per event-step (a decode span is one row with ``steps`` > 1), see STEP_LOG_COLUMNS
        self.step_log: list[tuple] = []
        self.num_preemptions = 0
        self.prefix_queries_tokens = 0
        self.prefix_hits_tokens = 0
        self.rejected: list[Request] = []
        self.model_calls = 0

    # ------------------------------------------------------------------ queue helpers
    @property
    def num_waiting(self) -> int:
        queued = len(self._waiting_heap) if self._priority else len(self._waiting_fifo)
        return queued + len(self._inbox)

    @property
    def num_outstanding(self) -> int:
        """Running plus waiting requests (the least-loaded router's load)."""
        return len(self.running) + self.num_waiting

    def _push_waiting(self, req: Request, front: bool = False) -> None:
        if self._priority:
            heapq.heappush(self._waiting_heap, (req.priority, req.arrival_ms, req.uid, req))
        elif front:
            self._waiting_fifo.appendleft(req)
        else:
            self._waiting_fifo.append(req)

    def _peek_waiting(self) -> Request | None:
        if self._priority:
            return self._waiting_heap[0][3] if self._waiting_heap else None
        return self._waiting_fifo[0] if self._waiting_fifo else None

    def _pop_waiting(self) -> Request:
        if self._priority:
            return heapq.heappop(self._waiting_heap)[3]
        return self._waiting_fifo.popleft()

    # ------------------------------------------------------------------ admission of requests
    def reject_reason(self, req: Request) -> str:
        """Why this engine can never serve ``req`` ('' when it can)."""
        cfg = self.config
        total = req.prompt_len + req.output_len
        if cfg.max_model_len is not None and total > cfg.max_model_len:
            return f"prompt+output {total} tokens > max_model_len {cfg.max_model_len}"
        if not cfg.enable_chunked_prefill and req.num_tokens > cfg.max_num_batched_tokens:
            return (
                f"prompt {req.num_tokens} tokens > max_num_batched_tokens "
                f"{cfg.max_num_batched_tokens} with chunked prefill off"
            )
        if -(-total // self._bs) > self.pool.num_blocks:
            return f"needs {-(-total // self._bs)} KV blocks > capacity {self.pool.num_blocks}"
        return ""

    def submit(self, now_ms: float, req: Request) -> list[Event]:
        """A request reaches this engine at ``now_ms``; returns the follow-up events."""
        req.replica = self.index
        reason = self.reject_reason(req)
        if reason:
            req.reject_reason = reason
            req.finish_ms = now_ms
            self.rejected.append(req)
            if self.on_finish is not None:
                self.on_finish(req, now_ms)
            return []
        if self._busy and (self.config.async_scheduling or self._recv_interval > 1):
            self._inbox.append(req)  # the next step is already planned, or not yet receiving
            return []
        self._push_waiting(req)
        if not self._busy and not self._wake_pending:
            self._wake_pending = True
            return [(now_ms, PRIORITY_WAKE, self._on_wake, None)]
        return []

    # ------------------------------------------------------------------ KV helpers
    def _free(self, req: Request, keep_private: bool) -> None:
        """Release ``req``'s blocks; full blocks it computed stay cached when prefix caching is
        on and (for private keys) ``keep_private`` (a preempted request may hit them again)."""
        pool = self.pool
        refcount, evictable = pool.refcount, pool.evictable
        for key in _block_keys(req, 0, req.held_shared):
            c = refcount[key] - 1
            refcount[key] = c
            if c == 0:
                evictable[key] = None
        private = req.num_blocks - req.held_shared
        if private and self.config.enable_prefix_caching:
            full = min(req.num_computed // self._bs, req.num_blocks)
            stop = full if keep_private else min(full, len(req.shared_keys))
            for key in _block_keys(req, req.held_shared, stop):
                if key in refcount:
                    continue
                refcount[key] = 0
                evictable[key] = None
                pool.free_empty -= 1  # this physical block now holds a cached prefix
            # the remaining private blocks return empty
        pool.free_empty += private
        req.num_blocks = 0
        req.held_shared = 0

    def _promote_shared(self, req: Request) -> None:
        """Register ``req``'s newly full blocks that carry a shared hash in the prefix cache."""
        n = min(req.num_computed // self._bs, len(req.shared_keys), req.num_blocks)
        refcount = self.pool.refcount
        j = req.held_shared
        while j < n:
            key = req.shared_keys[j]
            if key in refcount:  # computed concurrently by another request: keep ours private
                break
            refcount[key] = 1
            j += 1
        req.held_shared = j

    def _lookup_hits(self, req: Request) -> tuple[int, int]:
        """Prefix-cache hit blocks for a request starting from scratch, and how many of them are
        currently evictable (they leave the free pool when acquired)."""
        if not self.config.enable_prefix_caching:
            return 0, 0
        if not req.shared_keys and req.num_preemptions == 0:
            return 0, 0
        max_blocks = (req.num_tokens - 1) // self._bs  # at least one token must be computed
        get = self.pool.refcount.get
        hits = evicted = 0
        keys = req.shared_keys
        for key in keys[:max_blocks]:
            c = get(key)
            if c is None:
                return hits, evicted
            hits += 1
            if c == 0:
                evicted += 1
        if req.num_preemptions:  # its own blocks, cached when it was preempted
            tag = -1 - req.uid
            for j in range(hits, max_blocks):
                c = get((tag, j))
                if c is None:
                    break
                hits += 1
                if c == 0:
                    evicted += 1
        return hits, evicted

    def _acquire_hits(self, req: Request, hits: int) -> None:
        pool = self.pool
        refcount, evictable = pool.refcount, pool.evictable
        for key in _block_keys(req, 0, hits):
            c = refcount[key]
            if c == 0:
                del evictable[key]
            refcount[key] = c + 1
        req.held_shared = hits
        req.num_blocks = hits
        req.num_computed = hits * self._bs
        req.prefix_hit_tokens += hits * self._bs

    def _preempt(self, req: Request) -> None:
        self._free(req, keep_private=True)
        req.num_computed = 0
        req.num_preemptions += 1
        self.num_preemptions += 1
        # vLLM puts a preempted request back at the head of the queue; SGLang appends a
        # retracted one
        self._push_waiting(req, front=self._admission != "estimate")

    def _pick_victim(self) -> Request:
        if self._priority:
            return max(self.running, key=lambda r: (r.priority, r.arrival_ms, r.uid))
        if self._admission == "estimate":  # SGLang: fewest output tokens, then longest prompt
            return min(self.running, key=lambda r: (r.num_generated, -r.prompt_len, -r.uid))
        return self.running[-1]

    def _lifetime_blocks(self, req: Request) -> int:
        """Blocks ``req`` holds once its prompt and whole output are in the cache."""
        return -(-(req.prompt_len + req.output_len + self._draft) // self._bs)

    def _admission_room(self) -> float:
        """What the waiting queue may use under the ``reserve`` (blocks) and ``estimate``
        (tokens) policies, before this pass admits anything."""
        pool, running = self.pool, self.running
        if self._admission == "reserve":
            held = sum(max(self._lifetime_blocks(r) - r.num_blocks, 0) for r in running)
            return pool.available - held
        if self._admission == "lookahead":  # the running requests enter the simulation
            return pool.available * self._bs
        clip, ratio = SGLANG_CLIP_MAX_NEW_TOKENS, self._token_ratio
        pending = 0.0
        for r in running:
            # unfinished prompt chunks, plus the estimated share of the remaining output
            pending += max(r.num_tokens - r.num_computed - 1, 0)
            pending += min(r.output_len - r.num_generated, clip) * ratio
        return pool.available * self._bs - pending

    def _lookahead_fits(self, req: Request, free_tokens: float) -> bool:
        """SGLang's ``ignore_eos`` admission: with the running requests and ``req`` all decoding
        to their last token (shortest remaining first, each finished one freeing its tokens),
        ``free_tokens`` never drops to the reserve."""
        states = [
            (r.output_len - r.num_generated, r.prompt_len + r.num_generated)
            for r in self.running
            if r.output_len > r.num_generated
        ]
        states.append((req.output_len - req.num_generated, req.prompt_len + req.num_generated))
        states.sort()
        freed = 0.0
        n = len(states)
        for i, (left, occupied) in enumerate(states):
            alive = n - i
            if free_tokens + freed - left * alive <= SGLANG_IGNORE_EOS_RESERVE_TOKENS * alive:
                return False
            freed += occupied
        return True

    def _retracted(self) -> None:
        """SGLang's ratio after a retraction, from the requests still running."""
        running = self.running
        if not running:
            return
        decoded = sum(r.num_generated for r in running)
        budget = sum(r.output_len for r in running)
        self._token_ratio = min(
            1.0, (decoded + SGLANG_RETRACT_DECODE_STEPS * len(running)) / (budget + 1)
        )

    def _decay_ratio(self, steps: int) -> None:
        floor = SGLANG_INIT_NEW_TOKEN_RATIO * SGLANG_MIN_NEW_TOKEN_RATIO_FACTOR
        step = (SGLANG_INIT_NEW_TOKEN_RATIO - floor) / SGLANG_NEW_TOKEN_RATIO_DECAY_STEPS
        self._token_ratio = max(self._token_ratio - steps * step, floor)

    # ------------------------------------------------------------------ the scheduler
    def _schedule(self, now_ms: float) -> tuple[dict[Request, int], bool]:
        """One scheduling decision: returns ``{request: new tokens}`` and whether anything was
        preempted. vLLM V1 mixes decodes and prefill chunks in one step; a non-mixing scheduler
        (``mixed_batching=False``) runs prefill work alone when there is any it can run, and the
        decodes alone otherwise."""
        if self.config.mixed_batching:
            return self._schedule_pass(now_ms, "all")
        sched, preempted = self._schedule_pass(now_ms, "prefill")
        if sched:
            return sched, preempted
        # no prefill work fits (a prompt may even have preempted itself for KV): decode
        sched, preempted_decoding = self._schedule_pass(now_ms, "decode")
        return sched, preempted or preempted_decoding

    def _schedule_pass(self, now_ms: float, phase: str) -> tuple[dict[Request, int], bool]:
        """One vLLM V1 scheduling pass over the running requests (their decodes and unfinished
        prompts) and then the waiting queue. ``phase`` ``"prefill"`` schedules only prompt
        work, ``"decode"`` only decodes (hand-offs whose KV is already there included)."""
        cfg = self.config
        bs = self._bs
        pool = self.pool
        budget = cfg.max_num_batched_tokens
        chunked = cfg.enable_chunked_prefill
        sched: dict[Request, int] = {}
        preempted = False
        running = self.running
        i = 0
        while i < len(running) and budget > 0:
            req = running[i]
            # decoding: one token (the last sampled) left to compute; more is a prompt (or a
            # preempted request's recompute)
            decoding = req.num_tokens - req.num_computed <= 1
            if phase != "all" and decoding == (phase == "prefill"):
                i += 1
                continue
            remaining = req.num_tokens - req.num_computed
            # a speculative decode also computes (and holds KV slots for) its draft tokens
            drafts = self._draft if decoding and req.num_generated >= 1 else 0
            if decoding and drafts and budget < 1 + drafts:
                i += 1
                continue
            n_new = remaining if remaining <= budget else budget
            if n_new < remaining and not chunked:
                i += 1
                continue
            need = -(-(req.num_computed + n_new + drafts) // bs) - req.num_blocks
            self_preempted = False
            while need > pool.available:
                victim = self._pick_victim()
                running.remove(victim)
                if victim in sched:
                    budget += sched.pop(victim)
                self._preempt(victim)
                preempted = True
                if victim is req:
                    self_preempted = True
                    break
            if self_preempted:
                break
            if need > 0:
                pool.take(need)
                req.num_blocks += need
            sched[req] = n_new
            budget -= n_new + drafts
            i = running.index(req) + 1 if self._priority else i + 1
        if preempted and self._admission == "estimate":
            self._retracted()
        # the reserving policies' room, summed over the running requests only when a request
        # waits (the scheduling pass runs every step)
        room = (
            self._admission_room()
            if self._admission != "on_demand"
            and not preempted
            and not self._holding
            and self._peek_waiting() is not None
            else 0.0
        )
        if not preempted and not self._holding:
            while budget > 0 and len(running) < cfg.max_num_seqs:
                req = self._peek_waiting()
                if req is None:
                    break
                if req.num_computed == 0:
                    hits, hits_evictable = self._lookup_hits(req)
                else:  # KV already present (a disaggregated hand-off)
                    hits, hits_evictable = 0, 0
                computed = req.num_computed + hits * bs
                remaining = req.num_tokens - computed
                # a non-mixing scheduler admits prompts into prefill steps and requests whose KV
                # is already there (a disaggregated hand-off) into decode steps, in FCFS order
                if phase != "all" and (remaining <= 1) == (phase == "prefill"):
                    break
                if remaining > budget and not chunked:
                    break
                n_new = remaining if remaining <= budget else budget
                need = -(-(computed + n_new) // bs) - hits - req.num_blocks
                if need + hits_evictable > pool.available:
                    break
                # the policy's room (an idle engine takes the head request in regardless)
                idle = not (running or sched)
                if self._admission == "reserve":
                    # TensorRT-LLM: the whole lifetime's blocks, beside the running requests'
                    cost = self._lifetime_blocks(req) - hits - req.num_blocks + hits_evictable
                    if cost > room and not idle:
                        break
                    room -= cost
                elif self._admission == "lookahead":
                    # SGLang (ignore_eos, no radix cache): everyone decodes to the end
                    cost = -(-(req.num_tokens - computed) // bs) * bs + hits_evictable * bs
                    if not idle and not self._lookahead_fits(req, room - cost):
                        break
                    room -= cost
                elif self._admission == "estimate":
                    # SGLang: prompt + clipped output + one page, against the estimated room
                    out = min(req.output_len - req.num_generated, SGLANG_CLIP_MAX_NEW_TOKENS)
                    extend = req.num_tokens - computed
                    if extend + out + bs >= room - hits_evictable * bs and not idle:
                        break
                    room -= -(-extend // bs) * bs + bs + out + hits_evictable * bs
                self._pop_waiting()
                if req.num_computed == 0:
                    self.prefix_queries_tokens += req.num_tokens
                    if hits:
                        self._acquire_hits(req, hits)
                        self.prefix_hits_tokens += hits * bs
                pool.take(need)
                req.num_blocks += need
                if req.first_scheduled_ms != req.first_scheduled_ms:  # NaN: first time
                    req.first_scheduled_ms = now_ms
                running.append(req)
                sched[req] = n_new
                budget -= n_new
        return sched, preempted

    # ------------------------------------------------------------------ steps
    def _price(self, sched: dict[Request, int]) -> tuple[float, int, int, BatchShape]:
        """Cost-model time of the scheduled step; also returns the decode count, how many
        prefills finish their prompt in this step (and so sample a token), and the batch."""
        pf_new: list[int] = []
        pf_ctx: list[int] = []
        dec: list[int] = []
        completing = 0
        for req, n_new in sched.items():
            remaining = req.num_tokens - req.num_computed
            if n_new == 1 and remaining == 1 and req.num_generated >= 1:
                dec.append(req.num_computed + 1)
            else:
                pf_new.append(n_new)
                pf_ctx.append(req.num_computed)
                if n_new == remaining:
                    completing += 1
        graph = None
        if not pf_new and self._graph_sizes and len(dec) <= self._graph_sizes[-1]:
            graph = self._graph_sizes[bisect.bisect_left(self._graph_sizes, len(dec))]
        batch = BatchShape(
            np.asarray(pf_new, dtype=np.int64),
            np.asarray(pf_ctx, dtype=np.int64),
            np.asarray(dec, dtype=np.int64),
            graph,
            self._draft if dec else 0,
        )
        return self._call_model(batch), len(dec), completing, batch

    def _call_model(self, batch: BatchShape) -> float:
        self.model_calls += 1
        t = float(self.step_model.step_time_ms(batch))
        if not (t > 0.0 and math.isfinite(t)):
            raise ValueError(
                f"step model returned {t!r} ms for {batch!r}; it must be finite and > 0"
            )
        return t

    def _noise(self, k: int) -> np.ndarray | None:
        """The next ``k`` per-step noise factors (``None`` when there is no step noise). Factors
        are drawn in blocks (the same stream as drawing them one by one) to keep the hot loop
        out of numpy call overhead."""
        if self.noise.cv == 0.0:
            return None
        pos = self._noise_pos
        if pos + k > len(self._noise_buf):
            fresh = self.noise.factors(self.rng, max(4096, k))
            self._noise_buf = np.concatenate([self._noise_buf[pos:], fresh])
            pos = 0
        self._noise_pos = pos + k
        return self._noise_buf[pos : pos + k]

    def _on_wake(self, now_ms: float, _payload: Any) -> list[Event] | None:
        self._wake_pending = False
        if self._busy:
            return None
        # an idle scheduler polls without pause: it has just taken the new request in
        self._recv_count = 0
        self._last_weight = 0
        return self._start_step(now_ms)

    def _flush_inbox(self) -> bool:
        """Move the requests that arrived during the last step into the waiting queue (in
        arrival order); returns whether there were any."""
        if not self._inbox:
            return False
        for req in self._inbox:
            self._push_waiting(req)
        self._inbox.clear()
        return True

    def _receives(self) -> bool:
        """Whether the scheduler takes in new requests at this step boundary (SGLang's receive
        skipper: after ``scheduler_recv_interval`` decode steps, or after any prefill step)."""
        interval = self._recv_interval
        steps, self._last_weight = self._last_weight, 0
        if steps < 0:  # the last step had prefill work
            self._recv_count = 0
            return True
        # a span of decode steps: the counter fired (and restarted) at every multiple of the
        # interval on the way, as it does step by step; nothing was held back before the span's
        # last step, which is the only one an arrival can fall in
        self._recv_count = (self._recv_count + steps) % interval
        return self._recv_count == 0

    def _batch_wait_holds(self) -> bool:
        """Whether TensorRT-LLM's batch waiting keeps the waiting prompts out of this step (it
        applies only while requests decode; the count restarts at each release)."""
        cfg = self.config
        if cfg.batch_wait_iters <= 0 or not self.num_waiting:
            self._wait_count = 0
            return False
        decodes = sum(1 for r in self.running if r.num_tokens - r.num_computed <= 1)
        if not decodes:
            self._wait_count = 0
            return False
        budget = cfg.max_num_batched_tokens
        tokens = decodes * (1 + self._draft)
        waiting = self._waiting_heap if self._priority else self._waiting_fifo
        for item in waiting:
            req = item[-1] if self._priority else item
            tokens += req.num_tokens - req.num_computed
            if tokens >= budget:
                break
        if (
            self._wait_count >= cfg.batch_wait_iters
            or tokens >= cfg.batch_wait_tokens_ratio * budget
        ):
            self._wait_count = 0
            return False
        return True

    def _start_step(self, now_ms: float) -> list[Event] | None:
        preemptions_before = self.num_preemptions
        receive = self._receives()
        arrived = False
        if not self.config.async_scheduling and receive:
            arrived = self._flush_inbox()
        self._holding = self._batch_wait_holds()
        sched, preempted = self._schedule(now_ms)
        if self.config.async_scheduling and receive:
            # asynchronous scheduling: this step was planned when the last one started, without
            # the requests that arrived since; they are seen from the next step on
            arrived = self._flush_inbox()
        if not sched and (arrived or self._inbox):
            # nothing else to run: an idle scheduler takes new requests in at once
            self._flush_inbox()
            self._recv_count = 0
            sched, preempted = self._schedule(now_ms)
            arrived = False
        if not sched:
            self._busy = False
            self._token_ratio = SGLANG_INIT_NEW_TOKEN_RATIO  # SGLang resets it when idle
            if self.running or self.num_waiting:
                # reject_reason() and the scheduler's invariants rule this out; never strand work
                raise RuntimeError(
                    f"replica {self.index}: {len(self.running)} running and {self.num_waiting} "
                    "waiting requests but nothing schedulable"
                )
            return None
        self._busy = True
        t0, n_dec, completing, batch = self._price(sched)
        t0 *= self._run_factor
        steps = 1
        # a decode span must end at the next boundary when requests just became schedulable,
        # and at the boundary where the scheduler next takes in the ones still held back
        admit_next = arrived and len(self.running) < self.config.max_num_seqs
        if (
            n_dec == len(sched)
            and not preempted
            and not admit_next
            and self.config.decode_span_steps > 1
        ):
            # how many identical decode steps can run before anything changes (a speculative
            # step emits alpha tokens per request on average, 1 + drafts at most)
            if self._draft:
                alpha = self._alpha
                k_finish = min(
                    max(math.ceil((r.output_len - r.num_generated - r.spec_credit) / alpha), 1)
                    for r in sched
                )
            else:
                k_finish = min(req.output_len - req.num_generated for req in sched)
            free_per_req = self.pool.available // n_dec
            per_step = 1 + self._draft
            k = min(
                k_finish, self.config.decode_span_steps, 1 + free_per_req * self._bs // per_step
            )
            if self._inbox:  # held back until the receive skipper next fires
                k = min(k, self._recv_interval - self._recv_count)
            if self._holding:  # batch waiting: the span ends where the held prompts go in
                k = min(k, self.config.batch_wait_iters - self._wait_count)
        else:
            k = 1
        if k > 1:
            last = BatchShape(
                batch.prefill_new_tokens,
                batch.prefill_context_tokens,
                batch.decode_context_tokens + round((k - 1) * self._alpha),
                batch.cuda_graph_batch,
                batch.draft_tokens,
            )
            t_last = self._call_model(last) * self._run_factor
            base = t0 + (t_last - t0) * np.arange(k) / (k - 1)
            noise = self._noise(k)
            ends = now_ms + np.cumsum(base if noise is None else base * noise)
            horizon = self.horizon_ms()
            if horizon < ends[-1]:
                k = int(np.searchsorted(ends, horizon, side="left")) + 1
                if noise is not None:  # give back the factors of the steps not taken
                    self._noise_pos -= len(ends) - k
            steps = k
            end_ms = float(ends[k - 1])
        else:
            noise = self._noise(1)
            end_ms = now_ms + (t0 if noise is None else t0 * float(noise[0]))
        n_prefill_tokens = sum(sched.values()) - n_dec
        if self._admission == "estimate" and n_dec and not preempted:
            self._decay_ratio(steps)
        if self._holding:
            self._wait_count += steps
        # SGLang's receive skipper counts decode steps; after prefill work it receives at once
        self._last_weight = steps if n_dec == len(sched) else -1
        self.step_log.append(
            (
                now_ms,
                end_ms,
                steps,
                n_prefill_tokens,
                n_dec,
                len(self.running),
                self.num_waiting,
                self.pool.used,
                self.num_preemptions - preemptions_before,
                completing + round(n_dec * steps * self._alpha),
            )
        )
        return [(end_ms, PRIORITY_STEP_END, self._on_step_end, (sched, steps))]

    def _on_step_end(
        self, now_ms: float, payload: tuple[dict[Request, int], int]
    ) -> list[Event] | None:
        sched, steps = payload
        bs = self._bs
        finished: list[Request] = []
        caching = self.config.enable_prefix_caching
        spec = self._draft > 0
        for req, n_new in sched.items():
            if steps > 1 or (
                spec and n_new == 1 and req.num_tokens - req.num_computed == 1 and req.num_generated
            ):
                # decodes (a span of ``steps`` for all of them, or one speculative step): each
                # emits ``steps`` tokens, or alpha per step when speculative
                if spec:
                    total = req.spec_credit + steps * self._alpha
                    adv = min(int(total), req.output_len - req.num_generated)
                    req.spec_credit = total - int(total)
                else:
                    adv = steps
                req.num_computed += adv
                req.num_tokens += adv
                req.num_generated += adv
                need = -(-req.num_computed // bs) - req.num_blocks
                if need > 0:
                    self.pool.take(need)
                    req.num_blocks += need
            else:
                req.num_computed += n_new
                if req.num_computed == req.num_tokens:  # the step samples a token
                    req.num_tokens += 1
                    req.num_generated += 1
                    if req.num_generated == 1:
                        req.first_token_ms = now_ms
                if caching and req.held_shared < len(req.shared_keys):
                    self._promote_shared(req)
            if req.num_generated >= req.output_len or (
                self.config.prefill_only and req.num_generated >= 1
            ):
                finished.append(req)
        if finished:
            done = set(finished)
            self.running = [r for r in self.running if r not in done]
            for req in finished:
                self._free(req, keep_private=False)
                req.finish_ms = now_ms
                if self.on_finish is not None:
                    self.on_finish(req, now_ms)
        return self._start_step(now_ms)

    def attach(self, loop: EventLoop) -> None:
        self.loop = loop
