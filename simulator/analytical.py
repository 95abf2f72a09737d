"""Analytical serving estimates: static batch, aggregated continuous batching, disaggregated.

Given a step-time model (:class:`~simulator.step_time.AnalyticalStepModel`), a workload and the
engine's batching knobs, estimate TTFT, TPOT (mean and p90), request latency, output tokens/s
per GPU and per user, the memory breakdown and whether an SLA holds.

The aggregated and disaggregated modes model the **steady state** of a loaded server, which is
where static-batch estimators go wrong:

* Closed loop (``concurrency=N`` clients, each sending its next request when the previous one
  finishes, the way benchmark harnesses run) or open loop (``request_rate``). In a closed loop
  the arrival rate ``lam`` is solved from ``lam = N / cycle(lam)``; in an open loop it is given.
* Prefills are a queue served by the engine: each takes ``S`` (its chunks at the mixed-step
  time, decode tokens riding along when the backend mixes them), utilisation ``rho = lam * S``
  (per replica), and a request waits ``Wq`` per Kingman's G/G/1 formula with deterministic
  service and an arrival variability ``arrival_cv2`` (1 = Poisson; a closed loop of staggered
  clients is more regular). ``TTFT = Wq + S + half a decode step`` (the request lands mid-step).
* Decode advances one token per step; steps that carry a prefill chunk are longer, and with
  non-mixing schedulers (SGLang's default) decodes stall during prefill steps. ``TPOT`` is the
  time per decode step averaged over that mix; its p90 follows from the Poisson number of
  prefills a request's decode phase overlaps.
* TTFT = ``prefill_scale x (engine part) + ttft_ms`` (both per backend, in
  :class:`~simulator.step_time.EngineOverhead`). The engine part (queueing, prefill service,
  burst) is built from the same step model as TPOT, whose ``kernel_scale`` is fitted on
  memory-bound decode steps; compute-bound prefill departs from perfdb's isolated kernels by
  another factor, so it gets its own scale. Both are applied after the closed loop is solved
  (like the fixed ``ttft_ms``), so they change TTFT only, never TPOT or the arrival rate.
* TTFT p90: the steady state's (the queue wait's p90, 0 with probability ``1 - rho`` and
  exponential otherwise, plus the p90 prompt's service), over a closed-loop run's mixture with
  its burst (:func:`run_ttft_p90`: every request in lockstep, the first of ``rounds`` otherwise),
  with the same ``prefill_scale`` and ``ttft_ms`` as the mean.
* Capacity: running requests are capped by ``max_num_seqs`` and by KV capacity; clients beyond
  that wait in the engine's queue (Little's law).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np

from simulator.batch import DEEPSEEK_MTP_ACCEPTANCE, tokens_per_step
from simulator.memory import DEFAULT_CUDA_GRAPH_SIZES, MemoryBreakdown
from simulator.step_time import AnalyticalStepModel

#: Backends whose scheduler puts prefill chunks and decodes into the same step by default.
MIXED_BATCHING_DEFAULT = {"vllm": True, "trtllm": True, "sglang": False}
#: Default token budget per step (vLLM V1 serve: 8192; SGLang chunked_prefill_size 8192;
#: TensorRT-LLM max_num_tokens 8192).
DEFAULT_MAX_NUM_BATCHED_TOKENS = 8192


def held_prompt_steps(
    model: AnalyticalStepModel,
    batching: BatchingConfig,
    arrivals_per_step: float,
    prompt_tokens: float,
    decode_tokens: float,
) -> float:
    """Mean steps a new prompt is held back on a busy TensorRT-LLM engine by its batching
    delays (see :class:`BatchingConfig`); 0 for other backends and when they are off.

    * Attention-DP balance: a free-running counter of ``attention_dp_balance_iters`` steps
      releases held prompts, so an arrival waits half of it (ranks rarely all hold a prompt at
      once unless arrivals per step are many; that case is not modelled).
    * Batch waiting: the first held prompt opens a window that closes after
      ``batch_wait_iters`` steps, or once enough prompts for ``ratio x budget`` scheduled
      tokens (decodes count theirs) have arrived and fit the budget. Arrivals are spread over
      the window, so its ``1 + a W`` prompts wait ``W (1 + a W / 2) / (1 + a W)`` on average.
    """
    if model.backend != "trtllm":
        return 0.0
    if model.parallel.attention_dp > 1:
        return 0.5 * batching.attention_dp_balance_iters
    window = float(batching.batch_wait_iters)
    if window <= 0:
        return 0.0
    a = max(arrivals_per_step, 0.0)
    budget = batching.max_num_batched_tokens
    target = batching.batch_wait_tokens_ratio * budget - decode_tokens
    if target <= 0:
        return 0.0  # the decodes alone fill the threshold: nothing is held
    prompts = math.ceil(target / max(prompt_tokens, 1.0))
    if a > 0 and prompts * prompt_tokens + decode_tokens <= budget:
        window = min(window, (prompts - 1) / a)
    n = a * window
    return window * (1.0 + n / 2.0) / (1.0 + n)


def draft_layers(model: AnalyticalStepModel, batching: BatchingConfig) -> int:
    """MTP modules the engine loads for ``batching``'s speculative decoding (0 when off).

    Raises
    ------
    ValueError
        If speculative decoding is on and the checkpoint ships no MTP module.
    """
    if not batching.speculative_tokens:
        return 0
    if model.model.mtp_layers < 1:
        raise ValueError(
            f"{model.model.name} ships no multi-token-prediction module "
            "(num_nextn_predict_layers = 0 in its config.json): speculative decoding with "
            f"speculative_tokens={batching.speculative_tokens} needs one"
        )
    return model.model.mtp_layers


@dataclass(frozen=True)
class Workload:
    """Requests offered to the server.

    Parameters
    ----------
    isl, osl : float
        Mean input and output lengths in tokens.
    concurrency : int or None
        Closed loop: number of clients, each with one request in flight.
    request_rate : float or None
        Open loop: requests per second. Exactly one of ``concurrency`` and ``request_rate``.
    isl_p90, osl_p90 : float or None
        90th percentiles of the lengths (default: the means, i.e. fixed lengths).
    """

    isl: float
    osl: float
    concurrency: int | None = None
    request_rate: float | None = None
    isl_p90: float | None = None
    osl_p90: float | None = None

    def __post_init__(self) -> None:
        if not self.isl >= 1 or not self.osl >= 1:
            raise ValueError(f"isl and osl must be >= 1 token, got isl={self.isl}, osl={self.osl}")
        if (self.concurrency is None) == (self.request_rate is None):
            raise ValueError("give exactly one of concurrency (closed loop) and request_rate")
        if self.concurrency is not None and self.concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {self.concurrency}")
        if self.request_rate is not None and not self.request_rate > 0:
            raise ValueError(f"request_rate must be > 0 req/s, got {self.request_rate}")

    @classmethod
    def from_samples(
        cls,
        isl_tokens: np.ndarray,
        osl_tokens: np.ndarray,
        *,
        concurrency: int | None = None,
        request_rate: float | None = None,
    ) -> Workload:
        """Summarise length samples (e.g. a trace) by their means and 90th percentiles."""
        isl_tokens = np.asarray(isl_tokens, dtype=float)
        osl_tokens = np.asarray(osl_tokens, dtype=float)
        if isl_tokens.size == 0 or osl_tokens.size == 0:
            raise ValueError("isl_tokens and osl_tokens must be non-empty")
        return cls(
            isl=float(isl_tokens.mean()),
            osl=float(osl_tokens.mean()),
            concurrency=concurrency,
            request_rate=request_rate,
            isl_p90=float(np.percentile(isl_tokens, 90)),
            osl_p90=float(np.percentile(osl_tokens, 90)),
        )


@dataclass(frozen=True)
class BatchingConfig:
    """The engine's batching knobs (vLLM names).

    Parameters
    ----------
    max_num_seqs : int
        Most requests running at once (per attention-DP replica).
    max_num_batched_tokens : int
        Token budget of one step.
    chunked_prefill : bool
        Split long prompts into ``max_num_batched_tokens`` chunks.
    mixed_batching : bool or None
        Whether prefill chunks share steps with decodes (``None``: the backend's default).
    cuda_graphs : bool
        Decode steps replay captured graphs (padded to capture sizes) instead of running eagerly.
    gpu_memory_utilization : float
        Memory fraction the engine may use.
    async_scheduling : bool
        The scheduler plans step ``k + 1`` while step ``k`` runs (vLLM's ``--async-scheduling``,
        its default in releases after 0.12; SGLang's and TensorRT-LLM's overlap schedulers, on by
        default), so a request that arrives while the engine is busy waits one more step
        before its prefill is scheduled. vLLM turns it off under pipeline parallelism.
    scheduler_recv_interval : int
        SGLang's ``--scheduler-recv-interval``: a busy scheduler takes in new requests only
        every this many decode steps (and right after a prefill step), so an arrival waits
        about half that many decode steps more. SGLang only: vLLM and TensorRT-LLM have no
        such option, and their launch renderings leave it out.
    speculative_tokens : int
        Draft tokens per decode step from the model's multi-token-prediction head (vLLM's
        ``num_speculative_tokens``, SGLang's ``--speculative-num-steps``, TensorRT-LLM's
        ``num_nextn_predict_layers``); 0 turns speculative decoding off. Needs a checkpoint
        that ships an MTP module (``ModelSpec.mtp_layers``).
    draft_acceptance : tuple of float
        Probability that the ``i``-th draft token of a step is accepted (a property of the
        model's draft head and the text, not of the engine): a step emits
        ``1 + sum(draft_acceptance[:k])`` tokens per sequence on average
        (:attr:`tokens_per_step`). Default: DeepSeek-R1's MTP module as TensorRT-LLM measured it
        (:data:`simulator.batch.DEEPSEEK_MTP_ACCEPTANCE`).
    batch_wait_iters, batch_wait_tokens_ratio : int, float
        TensorRT-LLM's ``batch_wait_timeout_iters`` and ``batch_wait_max_tokens_ratio``
        (without attention DP): while requests decode, new prompts are held until the scheduled
        tokens reach ``ratio x max_num_batched_tokens`` or they have waited this many
        iterations (the counter restarts at each release). 0 (its default) waits for nothing;
        a ratio without a timeout never waits. TensorRT-LLM only.
    attention_dp_balance_iters : int
        TensorRT-LLM's ``attention_dp_config`` with ``enable_balance: true``: its
        ``timeout_iters``. While every attention-DP rank decodes and not every rank has a new
        prompt, prompts are held until a counter of iterations reaches this (it restarts at each
        release), so an arrival waits half of it on average. 0 (default): balancing off.
        TensorRT-LLM with attention DP only.
    """

    max_num_seqs: int = 256
    max_num_batched_tokens: int = DEFAULT_MAX_NUM_BATCHED_TOKENS
    chunked_prefill: bool = True
    mixed_batching: bool | None = None
    cuda_graphs: bool = True
    gpu_memory_utilization: float = 0.9
    capture_sizes: tuple[int, ...] = field(default=DEFAULT_CUDA_GRAPH_SIZES, repr=False)
    async_scheduling: bool = True
    scheduler_recv_interval: int = 1
    speculative_tokens: int = 0
    draft_acceptance: tuple[float, ...] = DEEPSEEK_MTP_ACCEPTANCE
    batch_wait_iters: int = 0
    batch_wait_tokens_ratio: float = 0.0
    attention_dp_balance_iters: int = 0

    def __post_init__(self) -> None:
        if self.batch_wait_iters < 0 or self.attention_dp_balance_iters < 0:
            raise ValueError(
                "batch_wait_iters and attention_dp_balance_iters must be >= 0, got "
                f"{self.batch_wait_iters} and {self.attention_dp_balance_iters}"
            )
        if not 0.0 <= self.batch_wait_tokens_ratio <= 1.0:
            raise ValueError(
                f"batch_wait_tokens_ratio must be in [0, 1], got {self.batch_wait_tokens_ratio}"
            )
        if self.speculative_tokens < 0:
            raise ValueError(f"speculative_tokens must be >= 0, got {self.speculative_tokens}")
        if not all(0.0 <= p <= 1.0 for p in self.draft_acceptance):
            raise ValueError(
                f"draft_acceptance entries must be in [0, 1], got {self.draft_acceptance}"
            )
        if self.max_num_seqs < 1:
            raise ValueError(f"max_num_seqs must be >= 1, got {self.max_num_seqs}")
        if self.max_num_batched_tokens < 1:
            raise ValueError(
                f"max_num_batched_tokens must be >= 1, got {self.max_num_batched_tokens}"
            )
        if self.scheduler_recv_interval < 1:
            raise ValueError(
                f"scheduler_recv_interval must be >= 1, got {self.scheduler_recv_interval}"
            )
        if not 0 < self.gpu_memory_utilization <= 1:
            raise ValueError(
                f"gpu_memory_utilization must be in (0, 1], got {self.gpu_memory_utilization}"
            )

    @property
    def tokens_per_step(self) -> float:
        """Tokens a decoding sequence emits per step: 1 without speculative decoding."""
        return tokens_per_step(self.speculative_tokens, self.draft_acceptance)


@dataclass(frozen=True)
class QueueModel:
    """Calibrated queueing constants (see module notes).

    Parameters
    ----------
    arrival_cv2 : float
        Squared coefficient of variation of prefill arrivals in Kingman's formula.
    rounds : float
        Closed-loop benchmarks start all ``N`` clients at once: the first of their ``rounds``
        requests arrive as one burst whose prefills queue behind each other; later rounds are
        in steady state. Mean TTFT = (burst TTFT + (rounds - 1) x steady TTFT) / rounds.
        ``math.inf`` means steady state only.
    prompts : float
        Alternatively, a run sends a fixed number of prompts in total, so a client sends
        ``prompts / N`` requests (see :meth:`rounds_for`).
    """

    arrival_cv2: float = 1.0
    rounds: float = math.inf
    prompts: float = math.inf

    def __post_init__(self) -> None:
        if self.arrival_cv2 < 0:
            raise ValueError(f"arrival_cv2 must be >= 0, got {self.arrival_cv2}")
        if not self.rounds >= 1:
            raise ValueError(f"rounds must be >= 1, got {self.rounds}")
        if not self.prompts >= 1:
            raise ValueError(f"prompts must be >= 1, got {self.prompts}")

    def rounds_for(self, clients: float) -> float:
        """Requests per client in a run: ``rounds``, or ``prompts / clients`` when the run
        sends a fixed number of prompts (whichever is smaller, at least 1)."""
        return max(1.0, min(self.rounds, self.prompts / max(clients, 1.0)))

    def blend(self, burst_ms: float, steady_ms: float, clients: float = 1.0) -> float:
        """Mean TTFT over a run that starts with one burst."""
        rounds = self.rounds_for(clients)
        if math.isinf(rounds):
            return steady_ms
        return (burst_ms + (rounds - 1) * steady_ms) / rounds


#: Fitted by ``benchmarks/fidelity.py --calibrate`` on the calibration half of
#: silicon_dev.csv (SHA-1 of the row id even); held-out error in benchmarks/RESULTS.md.
DEFAULT_QUEUE = QueueModel(arrival_cv2=0.5, rounds=6.0)


@dataclass(frozen=True)
class ServingEstimate:
    """Predicted steady-state behaviour of one configuration under one workload."""

    mode: str
    num_gpus: int
    ttft_ms: float
    ttft_p90_ms: float
    tpot_ms: float
    tpot_p90_ms: float
    request_latency_ms: float
    output_tok_s_per_gpu: float
    output_tok_s_per_user: float
    request_rate_per_s: float
    running_requests: float
    prefill_utilization: float
    memory: MemoryBreakdown | None = None
    details: dict = field(default_factory=dict)

    def meets(self, ttft_ms: float | None = None, tpot_ms: float | None = None) -> bool:
        """Whether the mean TTFT and TPOT meet the given limits (``None``: no limit)."""
        ok = math.isfinite(self.ttft_ms) and math.isfinite(self.tpot_ms)
        if ttft_ms is not None:
            ok = ok and self.ttft_ms <= ttft_ms
        if tpot_ms is not None:
            ok = ok and self.tpot_ms <= tpot_ms
        return ok

    def as_row(self) -> dict:
        row = {
            "mode": self.mode,
            "num_gpus": self.num_gpus,
            "ttft_ms": self.ttft_ms,
            "ttft_p90_ms": self.ttft_p90_ms,
            "tpot_ms": self.tpot_ms,
            "tpot_p90_ms": self.tpot_p90_ms,
            "request_latency_ms": self.request_latency_ms,
            "output_tok_s_per_gpu": self.output_tok_s_per_gpu,
            "output_tok_s_per_user": self.output_tok_s_per_user,
            "request_rate_per_s": self.request_rate_per_s,
            "prefill_utilization": self.prefill_utilization,
        }
        if self.memory is not None:
            row.update({f"mem_{k}": v for k, v in self.memory.as_dict().items()})
        return row


def _kingman_wait(rho: float, service_ms: float, arrival_cv2: float, servers: int = 1) -> float:
    """Mean queueing delay of a G/D/c queue (Kingman / Sakasegawa approximation)."""
    if rho >= 1:
        return math.inf
    if rho <= 0:
        return 0.0
    if servers == 1:
        erlang = rho
    else:  # Sakasegawa's approximation of P(wait) * c for an M/M/c queue
        erlang = rho ** (math.sqrt(2 * (servers + 1)) - 1)
    return erlang / (servers * (1 - rho)) * arrival_cv2 / 2 * service_ms


def _wait_p90(wait_mean: float, rho: float) -> float:
    """p90 of a waiting time that is 0 with probability 1-rho and exponential otherwise."""
    if rho <= 0.1 or wait_mean <= 0:
        return 0.0
    if not math.isfinite(wait_mean):
        return math.inf
    return wait_mean / rho * math.log(10 * rho)


def _chunks(tokens: float, budget: float) -> tuple[int, float]:
    """Number of chunks and the size of the last one."""
    n = max(1, math.ceil(tokens / budget))
    return n, tokens - (n - 1) * budget


def burst_ttfts_ms(
    model: AnalyticalStepModel,
    num_requests: float,
    isl: float,
    token_budget: int,
    *,
    chunked_prefill: bool = True,
    max_running: float = math.inf,
) -> np.ndarray:
    """TTFT of each of ``num_requests`` prompts arriving together at an idle engine, ascending.

    Prefill runs in full steps of ``token_budget`` tokens (whole prompts when chunking is off);
    request ``k`` gets its first token at the end of step ``ceil(k * isl / budget)``. Requests
    beyond ``max_running`` are not modelled separately (they would wait longer still).
    """
    n = max(1, round(min(num_requests, max_running)))
    if chunked_prefill:
        per_step = float(token_budget)
    else:
        per_step = max(1, token_budget // max(int(isl), 1)) * isl
    per_step = min(per_step, n * isl)
    seqs_per_step = per_step / isl
    if isl <= per_step:
        attn = seqs_per_step * model.prefill_attention_ms(isl, 0.0)
    else:
        attn = model.prefill_attention_ms(per_step, isl / 2)
    stage = model.token_time_ms(per_step) + model.lm_head_time_ms(max(seqs_per_step, 1)) + attn
    step = stage * model.parallel.pp * model.overhead.kernel_scale + model.overhead.step_ms
    k = np.arange(1, n + 1)
    return np.ceil(k * isl / per_step - 1e-9) * step


def burst_ttft_ms(*args, **kwargs) -> float:
    """Mean TTFT of prompts arriving together at an idle engine (the mean of
    :func:`burst_ttfts_ms`, same arguments)."""
    return float(burst_ttfts_ms(*args, **kwargs).mean())


def run_ttft_p90(
    burst_ms: np.ndarray, burst_share: float, steady_ms: float, steady_p90_ms: float
) -> float:
    """90th percentile of the TTFT over a run whose requests are a mixture.

    A ``burst_share`` of the requests take the TTFTs ``burst_ms`` (ascending, equally likely);
    the rest the steady state's, a log-normal with mean ``steady_ms`` and 90th percentile
    ``steady_p90_ms`` (a fixed ``steady_ms`` when that p90 is not above it). With a small burst
    share the run's p90 can lie below its mean, which a long burst pulls up.
    """
    if not (math.isfinite(steady_ms) and math.isfinite(steady_p90_ms)):
        return math.inf
    share = min(max(burst_share, 0.0), 1.0) if len(burst_ms) else 0.0
    if share == 0.0:  # the steady state alone: its p90, or its fixed value
        return max(steady_p90_ms, steady_ms)
    mu, sigma = lognormal_from_mean_p90(steady_ms, steady_p90_ms) if steady_ms > 0 else (0.0, 0.0)

    def steady_cdf(x: float) -> float:
        if sigma == 0.0:
            return 1.0 if x >= steady_ms else 0.0
        return 0.5 * math.erfc(-(math.log(x) - mu) / (sigma * math.sqrt(2.0)))

    def cdf(x: float) -> float:
        burst = np.searchsorted(burst_ms, x, side="right") / len(burst_ms) if share else 0.0
        return share * burst + (1.0 - share) * steady_cdf(x)

    steady_top = steady_ms if sigma == 0.0 else math.exp(mu + sigma * 4.3)  # the 1 - 1e-5 point
    hi = max(steady_top, float(burst_ms[-1]) if share else 0.0, 1e-9)
    lo = 0.0
    # the smallest x with cdf(x) >= 0.9, by bisection (the cdf has jumps)
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        if cdf(mid) >= 0.9:
            hi = mid
        else:
            lo = mid
        if hi - lo <= 1e-6 * hi:
            break
    return hi


def estimate_static(
    model: AnalyticalStepModel, batch_size: int, isl: float, osl: float, *, cuda_graphs: bool = True
) -> ServingEstimate:
    """Static batching: ``batch_size`` requests prefilled together, then decoded together.

    TTFT is the one prefill step of the whole batch; TPOT the mean decode step over the KV
    lengths ``isl+1 .. isl+osl``.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    from simulator.batch import BatchShape

    prefill = BatchShape(
        prefill_new_tokens=np.full(batch_size, int(isl), dtype=np.int64),
        prefill_context_tokens=np.zeros(batch_size, dtype=np.int64),
    )
    ttft = model.step_time_ms(prefill)
    kv_points = np.linspace(isl + 1, isl + osl, num=min(8, int(osl)))
    steps = [model.decode_step_ms(batch_size, kv, cuda_graphs=cuda_graphs) for kv in kv_points]
    tpot = float(np.mean(steps)) if osl > 1 else 0.0
    latency = ttft + (osl - 1) * tpot
    gpus = model.parallel.num_gpus
    return ServingEstimate(
        mode="static",
        num_gpus=gpus,
        ttft_ms=ttft,
        ttft_p90_ms=ttft,
        tpot_ms=tpot,
        tpot_p90_ms=float(np.max(steps)) if osl > 1 else 0.0,
        request_latency_ms=latency,
        output_tok_s_per_gpu=batch_size * osl / (latency / 1e3) / gpus,
        output_tok_s_per_user=1e3 / tpot if tpot > 0 else math.inf,
        request_rate_per_s=batch_size / (latency / 1e3),
        running_requests=batch_size,
        prefill_utilization=float("nan"),
    )


@dataclass
class _Replica:
    """Steady-state quantities of one aggregated replica at a trial arrival rate."""

    lam: float  # requests per ms
    ttft: float
    tpot: float
    tpot_p90: float
    ttft_p90: float
    rho: float
    service: float
    decode_batch: float


def _replica_at_rate(
    model: AnalyticalStepModel,
    lam: float,
    running_cap: float,
    isl: float,
    osl: float,
    isl_p90: float,
    batching: BatchingConfig,
    mixed: bool,
    queue: QueueModel,
    tpot_guess: float,
    ahead: float = math.inf,
) -> _Replica:
    """Evaluate one replica at arrival rate ``lam`` (req/ms) given a TPOT guess.

    ``ahead`` (>= 0) bounds how many prefills an arrival can find before it: in a closed loop
    of ``N`` admitted clients, ``N - 1`` (a lone client never queues behind itself); unbounded
    in an open loop.
    """
    decode_phase = max(osl - 1, 0.0)
    # speculative decoding: each step verifies 1 + k tokens per sequence and emits alpha
    k_draft = batching.speculative_tokens
    alpha = batching.tokens_per_step
    # requests in decode: Little's law on the decode phase, capped by the running limit
    d = min(running_cap, lam * decode_phase * tpot_guess)
    kv_mean = isl + osl / 2
    graphs = batching.cuda_graphs
    # a decode step holds at least the request that decodes in it, however light the load
    tau_d = (
        model.decode_step_ms(
            max(round(d), 1),
            kv_mean,
            cuda_graphs=graphs,
            capture_sizes=batching.capture_sizes,
            draft_tokens=k_draft,
        )
        if decode_phase > 0
        else 0.0
    )
    budget = batching.max_num_batched_tokens
    # the requests decoding beside an arrival's prefill: in a closed loop it sees the other
    # clients only (the arrival theorem, N - 1 of N; a lone client's prefill runs alone)
    others = d if math.isinf(ahead) else d * ahead / (ahead + 1.0)
    d_in_mixed = others if mixed else 0.0
    chunk_budget = (
        max(budget - d_in_mixed * (1 + k_draft), 1.0) if batching.chunked_prefill else max(isl, 1.0)
    )

    def prefill_service(tokens: float) -> tuple[float, int]:
        n, last = _chunks(tokens, chunk_budget)
        total = sum(
            model.mixed_step_ms(
                chunk_budget if i < n - 1 else last,
                i * chunk_budget,
                d_in_mixed,
                kv_mean,
                eager=not graphs,
                draft_tokens=k_draft,
            )
            for i in range(n)
        )
        return total, n

    service, n_chunks = prefill_service(isl)
    rho = lam * service
    wait = min(_kingman_wait(rho, service, queue.arrival_cv2), ahead * service)
    # an arrival lands mid-step when other requests are decoding; an asynchronous scheduler
    # has already planned the next step by then, so the arrival also waits that whole step
    # (a mean step: the TPOT times the tokens a step emits)
    busy = others >= 0.5
    half_step = 0.5 * tau_d if busy else 0.0
    if (
        busy
        and batching.async_scheduling
        and not (model.backend == "vllm" and model.parallel.pp > 1)
    ):
        half_step += max(tpot_guess * alpha, tau_d)
    if busy:
        # the next point where the scheduler takes requests in: half a window of decode steps
        half_step += 0.5 * (batching.scheduler_recv_interval - 1) * tau_d
        half_step += tau_d * held_prompt_steps(
            model, batching, lam * tau_d, isl, others * (1 + k_draft)
        )
    ttft = wait + service + half_step
    service_p90, _ = prefill_service(isl_p90) if isl_p90 != isl else (service, n_chunks)
    ttft_p90 = _wait_p90(wait, rho) + service_p90 + half_step
    if d < 0.5 or rho >= 1:
        tpot = tau_d / alpha if rho < 1 else math.inf
        tpot_p90 = tpot
    else:
        # time fractions: prefill steps take rho of the time; each advances decodes only if mixed
        mixed_steps_per_ms = lam * n_chunks if mixed else 0.0
        steps_per_ms = mixed_steps_per_ms + (1 - rho) / tau_d
        tpot = 1.0 / (steps_per_ms * alpha)
        # p90 over requests: prefills overlapping one request's decode phase ~ Poisson
        k_mean = lam * decode_phase * tpot
        # normal approximation of the Poisson 90th percentile (k_mean is usually >> 1)
        k90 = k_mean + 1.2816 * math.sqrt(k_mean)
        per_prefill_ms = service - (n_chunks * tau_d if mixed else 0.0)
        tpot_p90 = tau_d / alpha + max(per_prefill_ms, 0.0) * k90 / max(decode_phase, 1.0)
        tpot_p90 = max(tpot_p90, tpot)
    return _Replica(lam, ttft, tpot, tpot_p90, ttft_p90, rho, service, d)


_Z90 = 1.2815515655446004


#: Relative tolerance of the closed-loop solve: the admitted clients that the solved rate and
#: cycle account for (Little's law, ``lam x cycle``) fall short of them by at most this share.
_LITTLE_TOL = 1e-3
#: Prefill-server utilisation from which a closed loop's clients that the solve leaves unplaced
#: are taken to queue for it (below it a residual is a jump of the step prices, not a queue).
_SATURATED = 0.95


def _queued_wait(clients: float, admitted: float, lam: float) -> float:
    """Time a closed-loop client waits in the engine queue before it is admitted.

    The rate ``lam`` solves ``lam x cycle = admitted``: the admitted clients are in service,
    the other ``clients - admitted`` wait, so Little's law gives ``(clients - admitted) / lam``.
    (Taking ``clients / lam - cycle`` instead turns the bisection's tolerance on ``lam`` into
    a spurious wait of that fraction of a whole request's latency: 0.1% of a 64 s cycle is a
    64 ms wait on a 70 ms TTFT.)
    """
    if lam <= 0 or clients <= admitted:
        return 0.0
    return (clients - admitted) / lam


def lognormal_from_mean_p90(mean: float, p90: float) -> tuple[float, float]:
    """``(mu, sigma)`` of the log-normal with this mean and 90th percentile.

    ``sigma = 0`` when ``p90 <= mean`` (fixed lengths); when no log-normal has both, the widest
    one matching the mean (``sigma`` = the 90th-percentile z-score) is used.
    """
    if not (mean > 0 and math.isfinite(mean)):
        raise ValueError(f"mean must be a positive number, got {mean!r}")
    d = math.log(p90 / mean) if p90 > 0 else -math.inf
    if d <= 0:
        return math.log(mean), 0.0
    # mean = exp(mu + s^2/2), p90 = exp(mu + z s)  =>  s^2/2 - z s + d = 0 (the smaller root)
    s = _Z90 - math.sqrt(max(_Z90**2 - 2.0 * d, 0.0))
    return math.log(mean) - s * s / 2.0, s


def admitted_prompts(isl: float, isl_p90: float, limit: float) -> tuple[float, float, float]:
    """Prompts an engine admits when it rejects those longer than ``limit`` tokens.

    vLLM with chunked prefill off cannot split a prompt over steps, so a prompt longer than
    ``max_num_batched_tokens`` is rejected. With prompt lengths log-normal through the mean and
    the 90th percentile, returns ``(admitted fraction, mean, 90th percentile)`` of the admitted
    prompts (the truncated log-normal; fixed lengths are all admitted or all rejected).
    """
    mu, s = lognormal_from_mean_p90(isl, isl_p90)
    if s == 0.0:
        return (1.0, isl, isl_p90) if isl <= limit else (0.0, isl, isl_p90)
    from scipy.stats import norm

    a = (math.log(limit) - mu) / s
    frac = float(norm.cdf(a))
    if frac >= 1.0 - 1e-9:
        return 1.0, isl, isl_p90
    if frac <= 1e-9:
        return 0.0, isl, isl_p90
    mean = math.exp(mu + s * s / 2.0) * float(norm.cdf(a - s)) / frac
    p90 = math.exp(mu + s * float(norm.ppf(0.9 * frac)))
    return frac, mean, p90


def estimate_aggregated(
    model: AnalyticalStepModel,
    workload: Workload,
    batching: BatchingConfig | None = None,
    *,
    replicas: int = 1,
    queue: QueueModel | None = None,
) -> ServingEstimate:
    """Aggregated continuous batching in steady state (see the module notes).

    Parameters
    ----------
    model : AnalyticalStepModel
        One worker's step model (its attention-DP ranks each hold a share of the load).
    workload : Workload
        Lengths and load (closed-loop concurrency or open-loop rate), for the whole deployment.
    batching : BatchingConfig
        Engine knobs.
    replicas : int
        Identical workers behind a load balancer sharing the load.
    queue : QueueModel
        Queueing constants (default: the calibrated ones).

    Returns
    -------
    ServingEstimate
        Infinite TTFT/TPOT when an open-loop rate exceeds capacity.

    Raises
    ------
    ValueError
        If the configuration does not fit in memory (the message gives the breakdown).
    """
    batching = batching or BatchingConfig()
    queue = queue or DEFAULT_QUEUE
    if replicas < 1:
        raise ValueError(f"replicas must be >= 1, got {replicas}")
    mixed = (
        batching.mixed_batching
        if batching.mixed_batching is not None
        else MIXED_BATCHING_DEFAULT[model.backend]
    )
    mem = model.memory(
        batching.gpu_memory_utilization,
        max_num_batched_tokens=batching.max_num_batched_tokens,
        max_num_seqs=batching.max_num_seqs,
        cuda_graph_sizes=batching.capture_sizes if batching.cuda_graphs else None,
        draft_layers=draft_layers(model, batching),
    )
    if not mem.feasible:
        raise ValueError(
            f"{model.model.name} with {model.parallel.label()} on {model.spec.name}: {mem.reason()}"
        )
    isl, osl = workload.isl, workload.osl
    isl_p90 = workload.isl_p90 or isl
    admitted = 1.0
    if not batching.chunked_prefill:
        # prompts that do not fit one step's token budget are rejected (vLLM cannot serve
        # them unchunked); the rest are what the engine serves
        admitted, isl, isl_p90 = admitted_prompts(isl, isl_p90, batching.max_num_batched_tokens)
        if admitted == 0.0:
            raise ValueError(
                f"every prompt ({workload.isl:.0f} tokens mean) is longer than "
                f"max_num_batched_tokens={batching.max_num_batched_tokens} with chunked "
                "prefill off: the engine would reject them all"
            )
        if workload.request_rate is not None:
            workload = replace(workload, request_rate=workload.request_rate * admitted)
    ranks = replicas * model.parallel.attention_dp
    kv_cap_requests = mem.kv_capacity_tokens / (isl + osl)
    running_cap = max(min(batching.max_num_seqs, kv_cap_requests), 1.0)

    # closed loop: the clients per rank, those admitted, and at most the other admitted ones
    # ahead of an arrival
    closed = workload.concurrency is not None
    clients = workload.concurrency / ranks if closed else math.inf
    in_service = min(clients, running_cap)
    ahead = max(in_service - 1.0, 0.0) if closed else math.inf

    def solve(lam: float, tpot0: float) -> _Replica:
        tpot = tpot0
        rep = None
        for _ in range(30):
            rep = _replica_at_rate(
                model, lam, running_cap, isl, osl, isl_p90, batching, mixed, queue, tpot, ahead
            )
            if not math.isfinite(rep.tpot) or abs(rep.tpot - tpot) <= 1e-3 * max(tpot, 1e-9):
                break
            tpot = 0.5 * (tpot + rep.tpot)
        return rep

    tpot_seed = (
        model.decode_step_ms(
            1,
            isl + osl / 2,
            cuda_graphs=batching.cuda_graphs,
            draft_tokens=batching.speculative_tokens,
        )
        / batching.tokens_per_step
    )
    if workload.request_rate is not None:
        lam = workload.request_rate / 1e3 / ranks
        rep = solve(lam, tpot_seed)
        queued_wait = 0.0
    else:
        # closed loop: lam = clients / cycle(lam), with at most running_cap requests admitted
        lo, hi = 0.0, None
        rep = None
        tpot_guess = tpot_seed
        # upper bound: prefill server saturation
        probe = _replica_at_rate(
            model, 1e-9, running_cap, isl, osl, isl_p90, batching, mixed, queue, tpot_seed, ahead
        )
        hi = 1.0 / probe.service
        accepted = None  # the replica at ``lo``, as solved there
        for _ in range(60):
            mid = 0.5 * (lo + hi)
            rep = solve(mid, tpot_guess)
            if math.isfinite(rep.tpot):
                tpot_guess = rep.tpot
            cycle = rep.ttft + max(osl - 1, 0) * rep.tpot
            if not math.isfinite(cycle) or mid * cycle > in_service:
                hi = mid
            else:
                lo, accepted = mid, rep
                # stop on Little's law, not on the rate: near the prefill server's saturation a
                # rate within 0.2% of the root can leave most clients unaccounted for
                if in_service - mid * cycle <= _LITTLE_TOL * in_service:
                    break
        # keep the solution found at lo: solving again from a later TPOT guess can land on
        # the other side of saturation
        rep = accepted if accepted is not None else solve(lo, tpot_guess)
        lam = rep.lam
        # clients the queue formula leaves unplaced at the bisection's end: at a saturated
        # prefill server the step prices jump with the decode batch (rounded) and the chunk
        # count, so Kingman's wait can jump over the root; the ones left over wait for the
        # server (Little's law again)
        deficit = in_service - lam * (rep.ttft + max(osl - 1, 0) * rep.tpot)
        unplaced = (
            deficit / lam
            if lam > 0 and rep.rho >= _SATURATED and deficit > _LITTLE_TOL * in_service
            else 0.0
        )
        queued_wait = _queued_wait(clients, in_service, lam) + unplaced
    ttft = rep.ttft + queued_wait
    steady_p90 = rep.ttft_p90 + queued_wait
    ttft_p90 = max(steady_p90, ttft)  # no burst: the steady state's p90 (run_ttft_p90)
    if closed:
        bursts = burst_ttfts_ms(
            model,
            clients,
            isl,
            batching.max_num_batched_tokens,
            chunked_prefill=batching.chunked_prefill,
            max_running=running_cap,
        )
        burst = float(bursts.mean())
        # a scheduler that does not mix prefill into decode steps keeps clients whose requests
        # all have the same output length in lockstep (all decode together and finish
        # together), so every round is a burst; output lengths that vary break the lockstep
        fixed_outputs = workload.osl_p90 is None or workload.osl_p90 <= workload.osl
        lockstep = not mixed and fixed_outputs
        share = 1.0 if lockstep else 1.0 / queue.rounds_for(workload.concurrency)
        if burst >= ttft:
            ttft_p90 = run_ttft_p90(bursts, share, ttft, steady_p90)
        ttft = (
            max(burst, ttft)
            if lockstep
            else queue.blend(max(burst, ttft), ttft, workload.concurrency)
        )
    # the fitted scale and fixed part apply to every request, so to the p90 as to the mean
    ttft = ttft * model.overhead.prefill_scale + model.overhead.ttft_ms
    ttft_p90 = ttft_p90 * model.overhead.prefill_scale + model.overhead.ttft_ms
    latency = ttft + max(osl - 1, 0) * rep.tpot
    gpus = model.parallel.num_gpus * replicas
    total_rate = lam * ranks * 1e3  # req/s
    if workload.concurrency is not None and math.isfinite(latency) and latency > 0:
        total_rate = workload.concurrency / (latency / 1e3)  # Little's law over the whole run
    return ServingEstimate(
        mode="agg",
        num_gpus=gpus,
        ttft_ms=ttft,
        ttft_p90_ms=ttft_p90,
        tpot_ms=rep.tpot,
        tpot_p90_ms=rep.tpot_p90,
        request_latency_ms=latency,
        output_tok_s_per_gpu=total_rate * osl / gpus if math.isfinite(latency) else 0.0,
        output_tok_s_per_user=1e3 / rep.tpot if rep.tpot > 0 else math.inf,
        request_rate_per_s=total_rate,
        running_requests=rep.lam * (rep.ttft + max(osl - 1, 0) * rep.tpot) * ranks,
        prefill_utilization=rep.rho,
        memory=mem,
        details={
            "decode_batch_per_rank": rep.decode_batch,
            "mixed_batching": mixed,
            "rejected_fraction": 1.0 - admitted,
        },
    )


def kv_transfer_ms(model: AnalyticalStepModel, isl: float, *, same_node: bool = False) -> float:
    """Time to move one request's KV cache from a prefill worker to a decode worker."""
    m, p = model.model, model.parallel
    from simulator.memory import kv_bytes_per_token

    bytes_total = kv_bytes_per_token(m, replace(p, pp=1), model.precision) * isl
    if not m.is_mla:
        bytes_total *= p.tp  # every TP rank sends its heads' share, in parallel per GPU
        bytes_total /= p.tp
    bw = model.spec.nvlink_bw_bytes_s if same_node else model.spec.internode_bw_bytes_s
    return model.spec.p2p_latency_s * 1e3 + bytes_total / bw * 1e3


def estimate_disaggregated(
    prefill: AnalyticalStepModel,
    decode: AnalyticalStepModel,
    workload: Workload,
    *,
    prefill_workers: int,
    decode_workers: int,
    decode_batching: BatchingConfig | None = None,
    prefill_batching: BatchingConfig | None = None,
    queue: QueueModel | None = None,
) -> ServingEstimate:
    """Disaggregated prefill/decode serving in steady state.

    Prefill workers form a multi-server queue (each serves one request at a time; its TTFT
    adds the KV transfer to a decode worker); decode workers run decode-only steps at the
    batch size Little's law gives. Closed-loop arrival rate solved as in
    :func:`estimate_aggregated`.
    """
    queue = queue or DEFAULT_QUEUE
    decode_batching = decode_batching or BatchingConfig()
    prefill_batching = prefill_batching or BatchingConfig(max_num_seqs=8)
    if prefill_workers < 1 or decode_workers < 1:
        raise ValueError("prefill_workers and decode_workers must be >= 1")
    mems = {}
    for role, m, b in (("prefill", prefill, prefill_batching), ("decode", decode, decode_batching)):
        mem = m.memory(
            b.gpu_memory_utilization,
            max_num_batched_tokens=b.max_num_batched_tokens,
            max_num_seqs=b.max_num_seqs,
            cuda_graph_sizes=b.capture_sizes if b.cuda_graphs else None,
            draft_layers=draft_layers(m, b),
        )
        if not mem.feasible:
            raise ValueError(f"{role} worker {m.parallel.label()}: {mem.reason()}")
        mems[role] = mem
    isl, osl = workload.isl, workload.osl
    isl_p90 = workload.isl_p90 or isl
    p_ranks = prefill_workers * prefill.parallel.attention_dp
    # closed loop: an arrival finds at most the other clients of its prefill rank ahead of it
    ahead = (
        math.inf if workload.concurrency is None else max(workload.concurrency / p_ranks - 1, 0.0)
    )
    d_ranks = decode_workers * decode.parallel.attention_dp
    budget = prefill_batching.max_num_batched_tokens

    def service(tokens: float) -> float:
        n, last = _chunks(tokens, budget)
        return sum(
            prefill.mixed_step_ms(budget if i < n - 1 else last, i * budget) for i in range(n)
        )

    s_p = service(isl)
    s_p90 = service(isl_p90) if isl_p90 != isl else s_p
    transfer = kv_transfer_ms(prefill, isl)
    kv_cap = mems["decode"].kv_capacity_tokens / (isl + osl)
    decode_cap = max(min(decode_batching.max_num_seqs, kv_cap), 1.0)
    kv_mean = isl + osl / 2

    def at_rate(lam_total: float) -> tuple[float, float, float, float, float]:
        lam_p = lam_total / p_ranks
        rho = lam_p * s_p
        wait = min(_kingman_wait(rho, s_p, queue.arrival_cv2), ahead * s_p)
        ttft = wait + s_p + transfer
        # decode batch per rank: Little's law with the decode phase's own step time (a
        # speculative step emits tokens_per_step tokens per sequence)
        k_draft, alpha = decode_batching.speculative_tokens, decode_batching.tokens_per_step
        graphs = decode_batching.cuda_graphs

        def per_token(batch: int) -> float:
            return (
                decode.decode_step_ms(batch, kv_mean, cuda_graphs=graphs, draft_tokens=k_draft)
                / alpha
            )

        tpot = per_token(1)
        for _ in range(30):
            d = min(decode_cap, lam_total / d_ranks * max(osl - 1, 0) * tpot)
            new = per_token(max(round(d), 1))
            if abs(new - tpot) <= 1e-3 * tpot:
                tpot = new
                break
            tpot = 0.5 * (tpot + new)
        return ttft, tpot, rho, wait, d

    if workload.request_rate is not None:
        lam = workload.request_rate / 1e3
        ttft, tpot, rho, wait, d = at_rate(lam)
        queued = 0.0
        if d >= decode_cap and lam / d_ranks * max(osl - 1, 0) * tpot > decode_cap:
            ttft = math.inf  # decode side overloaded
    else:
        clients = workload.concurrency
        lo, hi = 0.0, p_ranks / s_p
        for _ in range(60):
            mid = 0.5 * (lo + hi)
            ttft, tpot, rho, wait, d = at_rate(mid)
            cycle = ttft + max(osl - 1, 0) * tpot
            admitted = min(clients, decode_cap * d_ranks + p_ranks)
            if not math.isfinite(cycle) or mid * cycle > admitted:
                hi = mid
            else:
                lo = mid
                if admitted - mid * cycle <= _LITTLE_TOL * admitted:
                    break
        lam = lo
        ttft, tpot, rho, wait, d = at_rate(lam)
        admitted = min(clients, decode_cap * d_ranks + p_ranks)
        deficit = admitted - lam * (ttft + max(osl - 1, 0) * tpot)
        unplaced = (
            deficit / lam
            if lam > 0 and rho >= _SATURATED and deficit > _LITTLE_TOL * admitted
            else 0.0
        )
        queued = _queued_wait(clients, admitted, lam) + unplaced
    ttft += queued
    steady_p90 = _wait_p90(wait, rho) + s_p90 + transfer + queued
    ttft_p90 = max(steady_p90, ttft)  # no burst: the steady state's p90 (run_ttft_p90)
    if workload.concurrency is not None:
        # a burst of N: each prefill rank serves its share one request after another
        n_p = workload.concurrency / p_ranks
        bursts = np.arange(1, max(round(n_p), 1) + 1) * s_p + transfer
        burst = (n_p + 1) / 2 * s_p + transfer
        if burst >= ttft:
            share = 1.0 / queue.rounds_for(workload.concurrency)
            ttft_p90 = run_ttft_p90(bursts, share, ttft, steady_p90)
        ttft = queue.blend(max(burst, ttft), ttft, workload.concurrency)
    scale, fixed = prefill.overhead.prefill_scale, prefill.overhead.ttft_ms
    ttft, ttft_p90 = ttft * scale + fixed, ttft_p90 * scale + fixed
    latency = ttft + max(osl - 1, 0) * tpot
    gpus = prefill.parallel.num_gpus * prefill_workers + decode.parallel.num_gpus * decode_workers
    rate = lam * 1e3
    if workload.concurrency is not None and math.isfinite(latency) and latency > 0:
        rate = workload.concurrency / (latency / 1e3)  # Little's law over the whole run
    return ServingEstimate(
        mode="disagg",
        num_gpus=gpus,
        ttft_ms=ttft,
        ttft_p90_ms=ttft_p90,
        tpot_ms=tpot,
        tpot_p90_ms=tpot,
        request_latency_ms=latency,
        output_tok_s_per_gpu=rate * osl / gpus if math.isfinite(latency) else 0.0,
        output_tok_s_per_user=1e3 / tpot,
        request_rate_per_s=rate,
        running_requests=lam * latency,
        prefill_utilization=rho,
        memory=mems["decode"],
        details={
            "prefill_memory": mems["prefill"],
            "decode_batch_per_rank": d,
            "kv_transfer_ms": transfer,
        },
    )


#: Exported from :mod:`simulator` under this name (``simulator.Workload`` is the engine's).
AnalyticalWorkload = Workload
