"""Price one engine step of a deployment from measured kernel latencies.

:class:`AnalyticalStepModel` implements the :class:`~simulator.batch.StepCostModel` contract.
A step's cost is the sum of its primitives (:mod:`simulator.ops`) priced by a perfdb database,
plus the engine's per-step CPU overhead, plus kernel-launch gaps when the step runs eagerly.

Speed: the serving engine calls :meth:`AnalyticalStepModel.step_time_ms` once per step, so
nothing per call touches pandas or builds op objects. Costs are tabulated lazily on fixed
geometric grids and interpolated: token-count-dependent work (GEMMs, MoE, collectives,
element-wise) on a grid of token counts, decode attention on (batch size, mean KV length), and
prefill attention on (new tokens, cached tokens). Grid points are priced the first time a query
falls next to them and then memoised.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Any

import numpy as np

from perfdb.ops import GemmOp
from simulator.batch import BatchShape
from simulator.memory import DEFAULT_CUDA_GRAPH_SIZES, MemoryBreakdown, memory_breakdown
from simulator.models import ModelSpec, Precision, load_model, precision_for
from simulator.ops import OpCall, attention_ops, decompose_step, token_ops
from simulator.parallel import ParallelConfig

BACKENDS = ("vllm", "sglang", "trtllm")


@dataclass(frozen=True)
class EngineOverhead:
    """Engine costs outside the GPU kernels.

    Parameters
    ----------
    step_ms : float
        CPU time per step that the GPU waits for (scheduling, input preparation, sampling,
        output processing) beyond what overlaps with the previous step.
    eager_kernel_us : float
        Launch gap per kernel when a step runs without CUDA graphs.
    kernel_scale : float
        Multiplier on the summed kernel times: how the engine's own kernels and overlap
        compare with the measured primitives (1 = as measured).
    ttft_ms : float
        Fixed time to first token outside the engine steps (HTTP front end, tokenisation,
        request admission, returning the first token).
    prefill_scale : float
        Multiplier on the engine-step part of the time to first token (prefill service,
        queueing behind other prefills, the closed-loop burst) in the analytical estimates.
        ``kernel_scale`` is fitted on TPOT, i.e. on memory-bound decode steps; prefill is
        compute bound (large GEMMs, context attention) and its engine path (chunk scheduling,
        first-token sampling and streaming) departs from perfdb's isolated kernels by a
        different factor. 1 = as the decode-fitted step model says.
    prefill_step_scale : float
        Multiplier on the prefill part of a step's kernel time (the step's time less that of
        its decodes alone) when steps are priced one by one (:meth:`AnalyticalStepModel.step_time_ms`,
        the serving engine's path). The engine's counterpart of ``prefill_scale``: the
        analytical estimates apply ``prefill_scale`` to their whole TTFT and leave this at 1.
    """

    step_ms: float = 0.0
    eager_kernel_us: float = 4.0
    kernel_scale: float = 1.0
    ttft_ms: float = 0.0
    prefill_scale: float = 1.0
    prefill_step_scale: float = 1.0

    def __post_init__(self) -> None:
        if (
            self.step_ms < 0
            or self.eager_kernel_us < 0
            or self.ttft_ms < 0
            or not self.kernel_scale > 0
            or not self.prefill_scale > 0
            or not self.prefill_step_scale > 0
        ):
            raise ValueError(
                "EngineOverhead values must be >= 0 (kernel_scale, prefill_scale, "
                f"prefill_step_scale > 0), got {self}"
            )


#: Per-backend engine overhead. ``step_ms``, ``kernel_scale``, ``ttft_ms`` and
#: ``prefill_scale`` are fitted by ``benchmarks/fidelity.py --calibrate`` (grid search) on the
#: calibration half of silicon_dev.csv (ids whose SHA-1 is even); RESULTS.md reports the fit
#: and the held-out error. The TTFT constants (``ttft_ms``, ``prefill_scale``) were refitted
#: alone (``--calibrate ttft``) after the closed-loop queue-wait fix, which moved TTFT only,
#: and again after each of three pricing changes (gpt-oss experts on Blackwell as mxfp4 x mxfp8
#: under vLLM; TensorRT-LLM's fused input quantization, :func:`fused_quant_roles`; attention
#: over a cached prefix priced as the prefill of equal work, ``perfdb``), and once more after
#: the fidelity benchmark gave each row the lengths its benchmark client sent and the model
#: priced the asynchronous scheduler's one-step lag (``BatchingConfig.async_scheduling``), and
#: after SGLang's receive interval and the end of its lockstep for varied output lengths, and
#: after the MTP rows ran speculative decoding and TensorRT-LLM's rows its recipes' batching
#: delays (TensorRT-LLM's constants moved). Since then ``ttft_ms`` is fitted on the InferenceX
#: rows of the calibration half (its client against the engine's own server on one node), the
#: rows of other sources getting their own fixed TTFT in the benchmark
#: (``benchmarks/fidelity.py``'s ``OTHER_SOURCE_TTFT_MS``): the fixed part belongs to the client
#: and front end, the product default being the direct client of InferenceX's harness. All of
#: them (and the queue constants) were refitted together (``--calibrate``) after TensorRT-LLM's
#: per-tensor fp8 GEMMs traded the table's dynamic input quantization for the static one
#: (:data:`TRTLLM_DYNAMIC_INPUT_QUANT`), which moved TPOT: TensorRT-LLM's ``step_ms`` went from
#: 0.5 to 0 and its ``kernel_scale`` from 0.9 to 1.
#: ``eager_kernel_us`` is a documented assumption (PyTorch eager launch rate on a modern host
#: CPU, ~4 us per kernel).
DEFAULT_OVERHEAD: dict[str, EngineOverhead] = {
    "vllm": EngineOverhead(step_ms=0.0, kernel_scale=1.1, ttft_ms=20.0, prefill_scale=0.85),
    "sglang": EngineOverhead(step_ms=0.5, kernel_scale=0.8, ttft_ms=100.0, prefill_scale=1.15),
    "trtllm": EngineOverhead(step_ms=0.0, kernel_scale=1.0, ttft_ms=30.0, prefill_scale=0.75),
}

#: The serving engine's own ``(kernel_scale, prefill_step_scale)`` per backend, replacing the
#: analytical estimates' ``kernel_scale`` when steps are priced one by one (``Deployment.replica``:
#: ``causal-tuner replay`` and the engine benchmarks). The tuning scenarios' simulated world keeps
#: the analytical constants: with these its regret ratios all still passed, but BA-UCB's final
#: config fell outside 3% of the oracle in some seeds of (b), (e) and (f) (benchmarks/RESULTS.md). The analytical constants above are fitted against a
#: closed-form queue; the engine simulates the queue, so its counterparts are fitted for it:
#: ``benchmarks/engine_fidelity.py --calibrate`` on the calibration half of silicon_dev.csv, the
#: grid point (analytical ``kernel_scale`` -0.2..+0.3 by 0.1, prefill step scale 0.8..1.4 by 0.1)
#: minimising median TTFT APE (with the best additive front ends) + median TPOT APE per backend
#: (vLLM 11.6 + 7.5 at 1.0 / 1.3 against 14.0 + 7.2 at its analytical 1.1 / 1.0; figures in
#: benchmarks/RESULTS.md).
ENGINE_STEP_SCALES: dict[str, tuple[float, float]] = {
    "vllm": (1.0, 1.3),
    "sglang": (1.0, 1.0),
    "trtllm": (1.0, 1.0),
}


def engine_overhead(backend: str) -> EngineOverhead:
    """The engine overhead a backend's replicas are priced with: :data:`DEFAULT_OVERHEAD` with
    the engine's own :data:`ENGINE_STEP_SCALES`."""
    kernel, prefill = ENGINE_STEP_SCALES[backend]
    return replace(DEFAULT_OVERHEAD[backend], kernel_scale=kernel, prefill_step_scale=prefill)


@dataclass(frozen=True)
class InputQuantKernel:
    """A kernel that quantizes a GEMM's bf16 input to fp8 before the GEMM: a launch plus one
    memory-bound pass (read 2 bytes, write 1 per input element) at a fraction of the datasheet
    bandwidth."""

    launch_us: float
    bandwidth_fraction: float

    def ms(self, m: int, k: int, mem_bw_bytes_s: float) -> float:
        return self.launch_us / 1e3 + 3.0 * m * k / (self.bandwidth_fraction * mem_bw_bytes_s) * 1e3


#: The input-quantization kernel that the perfdb fp8 GEMM tables include (AIConfigurator's
#: collectors time the engines' linear modules on a bf16 input) and that a serving path which
#: fuses the quantization elsewhere does not run, so the step model takes it off those GEMMs'
#: prices (never more than half of one; :func:`fused_quant_roles` says which GEMMs). Fitted by
#: ``benchmarks/fp8_input_quant.py`` on bare fp8 GEMMs measured on an H200, checked on an H100
#: (``benchmarks/RESULTS.md``).
FUSED_INPUT_QUANT = InputQuantKernel(2.23, 0.33)

#: The input quantization inside the bundled TensorRT-LLM fp8 GEMM tables. AIConfigurator's
#: collector (``collector/trtllm/collect_gemm.py``) loads a weight and a weight scale but no input
#: scale, so TensorRT-LLM's ``FP8QDQLinearMethod`` quantizes each bf16 input dynamically
#: (``quantize_e4m3_per_tensor``: an amax pass, then the quantization). A served checkpoint with
#: calibrated input scales (ModelOpt's per-tensor fp8, e.g. ``nvidia/Llama-3.3-70B-Instruct-FP8``
#: of InferenceX's Llama-70B runs) quantizes statically (``static_quantize_e4m3_per_tensor``,
#: priced as :data:`FUSED_INPUT_QUANT`) or not at all where the quantization is fused. Fitted by
#: ``benchmarks/fp8_input_quant.py`` on the TensorRT-LLM table minus the bare fp8 GEMMs measured
#: on an H200, checked on an H100 (``benchmarks/RESULTS.md``).
TRTLLM_DYNAMIC_INPUT_QUANT = InputQuantKernel(9.39, 0.40)

#: Decoder-layer classes of TensorRT-LLM's PyTorch backend that fuse the all-reduce, residual
#: add, RMSNorm and the next GEMM's fp8/nvfp4 input quantization into one kernel
#: (``LlamaDecoderLayer``: registered for these architectures).
_TRTLLM_FUSED_NORM_QUANT = frozenset({"LlamaForCausalLM", "MistralForCausalLM"})


def fused_quant_roles(
    backend: str, model: ModelSpec, parallel: ParallelConfig
) -> frozenset[str] | None:
    """The GEMM roles (``OpCall`` names) whose fp8 input quantization the backend fuses away;
    ``None`` means every fp8 GEMM.

    * vLLM: every one (its compiled graphs fuse the quantization into the preceding norm or
      activation: ``fuse_norm_quant`` / ``fuse_act_quant``).
    * TensorRT-LLM (PyTorch backend, read in its source): the attention kernel writes the fp8
      input of ``o_proj`` itself (``out_scale``) for every model; ``LlamaDecoderLayer`` also
      fuses all-reduce + residual + RMSNorm + quantization before ``qkv_proj`` and (without
      attention DP) ``gate_up_proj``, when TP > 1 and ``hidden_size > 4096`` (its
      accuracy guard). ``down_proj`` quantizes its own input.
    * SGLang: none modelled.
    """
    if backend == "vllm":
        return None
    if backend != "trtllm":
        return frozenset()
    roles = {"o_proj"}
    if model.architecture in _TRTLLM_FUSED_NORM_QUANT and model.hidden_size > 4096:
        if parallel.tp > 1:
            roles.add("qkv_proj")
            if parallel.attention_dp == 1:
                roles.add("gate_up_proj")
    return frozenset(roles)


def trtllm_static_input_scales(backend: str, model: ModelSpec) -> bool:
    """Whether the deployment's per-tensor fp8 GEMMs quantize their inputs with the checkpoint's
    static scales where the bundled TensorRT-LLM table quantized dynamically
    (:data:`TRTLLM_DYNAMIC_INPUT_QUANT`): TensorRT-LLM serving a per-tensor fp8 (ModelOpt)
    checkpoint. A block-fp8 checkpoint (DeepSeek style) quantizes dynamically when served too."""
    return backend == "trtllm" and model.weight_dtype != "fp8_block"


def _geometric_grid(limit: int, ratio: float, exact_below: int = 16) -> np.ndarray:
    """Integers 1..exact_below, then a geometric progression up to at least ``limit``."""
    pts = list(range(1, exact_below + 1))
    x = float(exact_below)
    while pts[-1] < limit:
        x *= ratio
        pts.append(max(pts[-1] + 1, round(x)))
    return np.asarray(pts, dtype=np.int64)


TOKEN_GRID = _geometric_grid(1 << 20, 1.08)
KV_GRID = np.concatenate([[0], _geometric_grid(1 << 21, 1.15, exact_below=8)])
# plain lists: bisect on a list is several times faster than np.searchsorted on a scalar
_TOKEN_LIST = [int(x) for x in TOKEN_GRID]
_KV_LIST = [int(x) for x in KV_GRID]
_GRIDS = {id(TOKEN_GRID): _TOKEN_LIST, id(KV_GRID): _KV_LIST}


@lru_cache(maxsize=16)
def _load_db(system: str, backend: str, version: str | None) -> Any:
    import perfdb

    return perfdb.load_system(system, backend=backend, version=version)


def _bracket(grid: np.ndarray, x: float) -> tuple[int, int, float]:
    """Indices of the grid points around ``x`` and the interpolation weight of the upper one."""
    points = _GRIDS[id(grid)]
    hi = bisect.bisect_left(points, x)
    if hi <= 0:
        return 0, 0, 0.0
    if hi >= len(points):
        raise ValueError(f"{x} is beyond the largest tabulated size {points[-1]}")
    grid = points
    lo = hi - 1
    g_lo, g_hi = grid[lo], grid[hi]
    if x == g_hi:
        return hi, hi, 0.0
    return lo, hi, float((x - g_lo) / (g_hi - g_lo))


class AnalyticalStepModel:
    """Step-time model of one deployment (model, system, parallel layout, precision, backend).

    Parameters
    ----------
    model : ModelSpec
        The architecture.
    parallel : ParallelConfig
        Parallel layout of one worker (validated against the model).
    precision : Precision
        Numeric formats.
    db : perfdb database
        Anything with ``spec`` (a ``perfdb.HardwareSpec``) and ``latency(op) -> (ms, source)``.
    backend : str
        ``"vllm"``, ``"sglang"`` or ``"trtllm"`` (selects the engine overhead).
    overhead : EngineOverhead or None
        Overrides the backend's calibrated overhead.

    Examples
    --------
    >>> import numpy as np
    >>> from simulator.batch import BatchShape
    >>> m = AnalyticalStepModel.from_names(model="meta-llama/Llama-3.1-8B", system="h100_sxm")
    >>> decode = BatchShape(decode_context_tokens=np.full(32, 1024), cuda_graph_batch=32)
    >>> 5 < m.step_time_ms(decode) < 40
    True
    """

    def __init__(
        self,
        model: ModelSpec,
        parallel: ParallelConfig,
        precision: Precision,
        db: Any,
        *,
        backend: str = "vllm",
        overhead: EngineOverhead | None = None,
    ) -> None:
        if backend not in BACKENDS:
            raise ValueError(f"unknown backend {backend!r}; choose from {', '.join(BACKENDS)}")
        parallel.validate(model)
        spec = db.spec
        if "fp4" in (precision.gemm, precision.moe) and getattr(spec, "sm_version", 0) < 100:
            raise ValueError(
                f"fp4 precision needs a Blackwell GPU (sm_version >= 100); {spec.name} has "
                f"sm_version {spec.sm_version}"
            )
        if parallel.tp * parallel.attention_dp > spec.gpus_per_node:
            raise ValueError(
                f"tp*attention_dp={parallel.tp * parallel.attention_dp} exceeds the "
                f"{spec.gpus_per_node} GPUs of one {spec.name} node (collectives are modelled "
                "over NVLink only)"
            )
        self.model = model
        self.parallel = parallel
        self.precision = precision
        self.db = db
        self.spec = spec
        self.backend = backend
        self.overhead = overhead if overhead is not None else DEFAULT_OVERHEAD[backend]
        self._op_ms: dict[Any, float] = {}
        self._fused_roles = fused_quant_roles(backend, model, parallel)
        self._fused_ms: dict[Any, float] = {}
        self._trtllm_static_scales = trtllm_static_input_scales(backend, model)
        self._token_ms: dict[int, float] = {}
        self._kernels_per_step = 0.0
        self._lm_ms: dict[int, float] = {}
        self._decode_ms: dict[tuple[int, int], float] = {}
        self._prefill_ms: dict[tuple[int, int], float] = {}
        self._sources: dict[str, int] = {}
        self._mixed_ms: dict[tuple[int, int, int, int, bool, int], float] = {}

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_names(
        cls,
        model: str = "meta-llama/Llama-3.1-8B",
        system: str = "h100_sxm",
        *,
        tp: int = 1,
        pp: int = 1,
        ep: int = 1,
        attention_dp: int = 1,
        dtype: str = "bf16",
        kv_cache_dtype: str | None = None,
        backend: str = "vllm",
        version: str | None = None,
        overhead: EngineOverhead | None = None,
    ) -> AnalyticalStepModel:
        """Build from names: a bundled model id or config path, a perfdb system, a layout.

        ``ep`` is the expert-parallel width of MoE layers (``moe_tp = tp * attention_dp / ep``).
        ``dtype`` is a precision name, adjusted to the checkpoint by
        :func:`~simulator.models.precision_for`; ``kv_cache_dtype`` overrides the KV format.
        """
        spec = load_model(model)
        parallel = ParallelConfig(tp=tp, pp=pp, attention_dp=attention_dp, moe_ep=ep)
        if backend not in BACKENDS:
            raise ValueError(f"unknown backend {backend!r}; choose from {', '.join(BACKENDS)}")
        db = _load_db(system, backend, version)
        precision = precision_for(spec, dtype, sm_version=getattr(db.spec, "sm_version", 90))
        if kv_cache_dtype is not None:
            precision = Precision(precision.gemm, precision.moe, kv_cache_dtype)
        return cls(spec, parallel, precision, db, backend=backend, overhead=overhead)

    def with_overhead(self, overhead: EngineOverhead) -> AnalyticalStepModel:
        """A copy with another engine overhead that shares this model's kernel-price caches."""
        if not self._kernels_per_step:
            # the clone shares the price caches, so it may never miss one and count kernels
            calls = token_ops(self.model, self.parallel, self.precision, 1, 1)
            self._kernels_per_step = sum(c.count for c in calls)
        clone = AnalyticalStepModel.__new__(AnalyticalStepModel)
        clone.__dict__.update(self.__dict__)
        clone.overhead = overhead
        clone._mixed_ms = {}
        return clone

    # ------------------------------------------------------------------ pricing primitives
    def _price_many(self, ops: list[Any]) -> None:
        """Price the ops not yet priced, in one vectorized perfdb call per op type."""
        todo = list(dict.fromkeys(op for op in ops if op not in self._op_ms))
        if not todo:
            return
        if hasattr(self.db, "latencies"):
            priced = self.db.latencies(todo)
        else:
            priced = [self.db.latency(op) for op in todo]
        for op, (ms, source) in zip(todo, priced, strict=True):
            ms = float(ms)
            if not math.isfinite(ms) or ms < 0:
                raise ValueError(f"perfdb returned latency {ms} for {op}")
            self._op_ms[op] = ms
            key = str(source).split(":")[0]
            self._sources[key] = self._sources.get(key, 0) + 1

    def _price(self, op: Any) -> float:
        ms = self._op_ms.get(op)
        if ms is None:
            self._price_many([op])
            ms = self._op_ms[op]
        return ms

    def _call_ms(self, call: OpCall) -> float:
        """One call's price: its op's, with the fp8 input quantization the table times replaced
        by the one the served engine runs (none where the role fuses it)."""
        op = call.op
        if not (isinstance(op, GemmOp) and op.dtype == "fp8"):
            return self._price(op)
        fused = self._fused_roles is None or call.name in self._fused_roles
        if not (fused or self._trtllm_static_scales):
            return self._price(op)
        key = (op, fused)
        ms = self._fused_ms.get(key)
        if ms is None:
            raw = self._price(op)
            bw = self.spec.mem_bw_bytes_s
            if self._trtllm_static_scales:
                timed = TRTLLM_DYNAMIC_INPUT_QUANT.ms(op.m, op.k, bw)
                served = 0.0 if fused else FUSED_INPUT_QUANT.ms(op.m, op.k, bw)
            else:
                timed, served = FUSED_INPUT_QUANT.ms(op.m, op.k, bw), 0.0
            ms = self._fused_ms[key] = max(raw - timed + served, raw / 2)
        return ms

    def _price_calls(self, calls: list[OpCall], *, skip: frozenset[str] = frozenset()) -> float:
        return sum(c.count * self._call_ms(c) for c in calls if c.name not in skip)

    @staticmethod
    def _block(points: list[int], x: int, floor: int) -> list[int]:
        """Grid points in ``[x/2, max(2x, floor)]``: priced together on a first miss (queries
        cluster, and one vectorized perfdb call is far cheaper than many single ones)."""
        lo, hi = x / 2, max(2 * x, floor)
        return [p for p in points if lo <= p <= hi] or [x]

    def _token_point(self, tokens: int) -> float:
        ms = self._token_ms.get(tokens)
        if ms is None:
            block = [t for t in self._block(_TOKEN_LIST, tokens, 32768) if t not in self._token_ms]
            if tokens not in block:
                block.append(tokens)
            per_point = {
                t: token_ops(self.model, self.parallel, self.precision, t, 1) for t in block
            }
            self._price_many([c.op for calls in per_point.values() for c in calls])
            for t, calls in per_point.items():
                self._token_ms[t] = self._price_calls(calls, skip=frozenset({"lm_head"}))
                if not self._kernels_per_step:
                    self._kernels_per_step = sum(c.count for c in calls)
            ms = self._token_ms[tokens]
        return ms

    def token_time_ms(self, num_tokens: float) -> float:
        """Token-count-dependent work of one pipeline stage (no attention, no LM head)."""
        lo, hi, w = _bracket(TOKEN_GRID, num_tokens)
        a = self._token_point(int(TOKEN_GRID[lo]))
        return a if w == 0.0 else a + w * (self._token_point(int(TOKEN_GRID[hi])) - a)

    def _lm_point(self, rows: int) -> float:
        ms = self._lm_ms.get(rows)
        if ms is None:
            block = [r for r in self._block(_TOKEN_LIST, rows, 64) if r not in self._lm_ms]
            if rows not in block:
                block.append(rows)
            per_point = {
                r: [
                    c
                    for c in token_ops(self.model, self.parallel, self.precision, 1, r)
                    if c.name == "lm_head"
                ]
                for r in block
            }
            self._price_many([c.op for calls in per_point.values() for c in calls])
            for r, calls in per_point.items():
                self._lm_ms[r] = self._price_calls(calls)
            ms = self._lm_ms[rows]
        return ms

    def lm_head_time_ms(self, rows: float) -> float:
        lo, hi, w = _bracket(TOKEN_GRID, max(rows, 1))
        a = self._lm_point(int(TOKEN_GRID[lo]))
        return a if w == 0.0 else a + w * (self._lm_point(int(TOKEN_GRID[hi])) - a)

    def _decode_point(self, batch: int, kv: int) -> float:
        key = (batch, kv)
        ms = self._decode_ms.get(key)
        if ms is None:
            # price a 2-D block of (batch, KV) grid points around the miss at once
            block = {
                (b, k)
                for b in self._block(_TOKEN_LIST, batch, 8)
                for k in self._block(_KV_LIST, kv, 16)
            }
            block = [p for p in block if p not in self._decode_ms] + [key]
            per_point = {}
            for b, k in dict.fromkeys(block):
                shape = BatchShape(decode_context_tokens=np.full(b, max(k, 1), dtype=np.int64))
                per_point[(b, k)] = attention_ops(self.model, self.parallel, self.precision, shape)
            self._price_many([c.op for calls in per_point.values() for c in calls])
            for point, calls in per_point.items():
                self._decode_ms[point] = self._price_calls(calls)
            ms = self._decode_ms[key]
        return ms

    def decode_attention_ms(self, batch_size: float, mean_kv_tokens: float) -> float:
        """Decode attention of one stage for ``batch_size`` sequences at a mean KV length."""
        if batch_size <= 0:
            return 0.0
        b0, b1, wb = _bracket(TOKEN_GRID, batch_size)
        k0, k1, wk = _bracket(KV_GRID, max(mean_kv_tokens, 1.0))
        gb, gk = TOKEN_GRID, KV_GRID
        f00 = self._decode_point(int(gb[b0]), int(gk[k0]))
        f01 = f00 if wk == 0.0 else self._decode_point(int(gb[b0]), int(gk[k1]))
        low = f00 + wk * (f01 - f00)
        if wb == 0.0:
            return low
        f10 = self._decode_point(int(gb[b1]), int(gk[k0]))
        f11 = f10 if wk == 0.0 else self._decode_point(int(gb[b1]), int(gk[k1]))
        return low + wb * (f10 + wk * (f11 - f10) - low)

    def _prefill_point(self, new: int, ctx: int) -> float:
        key = (new, ctx)
        ms = self._prefill_ms.get(key)
        if ms is None:
            block = {
                (n, c)
                for n in self._block(_TOKEN_LIST, new, 8)
                for c in self._block(_KV_LIST, ctx, 16)
            }
            block = [p for p in block if p not in self._prefill_ms] + [key]
            per_point = {}
            for n, c in dict.fromkeys(block):
                shape = BatchShape(
                    prefill_new_tokens=np.array([n], dtype=np.int64),
                    prefill_context_tokens=np.array([c], dtype=np.int64),
                )
                per_point[(n, c)] = attention_ops(self.model, self.parallel, self.precision, shape)
            self._price_many([c.op for calls in per_point.values() for c in calls])
            for point, calls in per_point.items():
                self._prefill_ms[point] = self._price_calls(calls)
            ms = self._prefill_ms[key]
        return ms

    def prefill_attention_ms(self, new_tokens: float, context_tokens: float = 0.0) -> float:
        """Prefill attention of one stage for one sequence's chunk."""
        if new_tokens <= 0:
            return 0.0
        n0, n1, wn = _bracket(TOKEN_GRID, new_tokens)
        c0, c1, wc = _bracket(KV_GRID, context_tokens)
        gn, gc = TOKEN_GRID, KV_GRID
        f00 = self._prefill_point(int(gn[n0]), int(gc[c0]))
        f01 = f00 if wc == 0.0 else self._prefill_point(int(gn[n0]), int(gc[c1]))
        low = f00 + wc * (f01 - f00)
        if wn == 0.0:
            return low
        f10 = self._prefill_point(int(gn[n1]), int(gc[c0]))
        f11 = f10 if wc == 0.0 else self._prefill_point(int(gn[n1]), int(gc[c1]))
        return low + wn * (f10 + wc * (f11 - f10) - low)

    def prefetch(
        self,
        token_counts: list[float] = (),
        decode_points: list[tuple[float, float]] = (),
        prefill_points: list[tuple[float, float]] = (),
    ) -> None:
        """Price, in one vectorized perfdb call per op type, every grid point that queries at
        these token counts, (decode batch, mean KV) and (prefill chunk, context) pairs will
        touch. Optional: it only makes later queries cheaper (the search uses it)."""

        def corners(grid: np.ndarray, x: float) -> set[int]:
            lo, hi, _ = _bracket(grid, max(x, 1))
            return {_GRIDS[id(grid)][lo], _GRIDS[id(grid)][hi]}

        tokens = {t for x in token_counts for t in corners(TOKEN_GRID, x)} - set(self._token_ms)
        decode = {
            (b, k)
            for bx, kx in decode_points
            for b in corners(TOKEN_GRID, bx)
            for k in corners(KV_GRID, kx)
        } - set(self._decode_ms)
        prefill = set()
        for nx, cx in prefill_points:
            c_lo, c_hi, _ = _bracket(KV_GRID, cx)
            for n in corners(TOKEN_GRID, nx):
                prefill |= {(n, _KV_LIST[c_lo]), (n, _KV_LIST[c_hi])}
        prefill -= set(self._prefill_ms)
        token_calls = {
            t: token_ops(self.model, self.parallel, self.precision, t, 1) for t in tokens
        }
        attn_calls = {}
        for b, k in decode:
            shape = BatchShape(decode_context_tokens=np.full(b, max(k, 1), dtype=np.int64))
            attn_calls[("d", b, k)] = attention_ops(
                self.model, self.parallel, self.precision, shape
            )
        for n, c in prefill:
            shape = BatchShape(
                prefill_new_tokens=np.array([n], dtype=np.int64),
                prefill_context_tokens=np.array([c], dtype=np.int64),
            )
            attn_calls[("p", n, c)] = attention_ops(
                self.model, self.parallel, self.precision, shape
            )
        self._price_many(
            [c.op for calls in (*token_calls.values(), *attn_calls.values()) for c in calls]
        )
        for t, calls in token_calls.items():
            self._token_ms[t] = self._price_calls(calls, skip=frozenset({"lm_head"}))
            if not self._kernels_per_step:
                self._kernels_per_step = sum(c.count for c in calls)
        for (kind, a, b), calls in attn_calls.items():
            target = self._decode_ms if kind == "d" else self._prefill_ms
            target[(a, b)] = self._price_calls(calls)

    # ------------------------------------------------------------------ the contract
    def stage_time_ms(self, batch: BatchShape) -> float:
        """GPU time of one pipeline stage for ``batch`` (kernels only, no engine overhead)."""
        dec = batch.decode_context_tokens
        n_dec = len(dec)
        new = batch.prefill_new_tokens
        q = 1 + batch.draft_tokens  # tokens each decode computes (verification of its drafts)
        tokens = int(new.sum()) + n_dec * q if len(new) else n_dec * q
        if tokens < 1:
            raise ValueError("a step must compute at least one token")
        padded = batch.cuda_graph_batch
        if padded is not None and len(new) == 0 and padded >= n_dec:
            tokens = padded * q
        ms = self.token_time_ms(tokens)
        sampled = n_dec * q + len(new)
        ms += self.lm_head_time_ms(sampled)
        if n_dec:
            kv = float(dec.sum()) / n_dec
            ms += self.decode_attention_ms(n_dec, kv)
            if batch.draft_tokens:
                ms += self.draft_ms(n_dec, kv, batch.draft_tokens) / self.parallel.pp
        ctx = batch.prefill_context_tokens
        for i in range(len(new)):
            ms += self.prefill_attention_ms(float(new[i]), float(ctx[i]))
        return ms

    def step_time_ms(self, batch: BatchShape) -> float:
        """Wall time of one step: all pipeline stages in sequence, plus engine overhead and,
        without a CUDA graph, kernel-launch gaps."""
        stage = self.stage_time_ms(batch)
        scale = self.overhead.prefill_step_scale
        if scale != 1.0 and len(batch.prefill_new_tokens):
            decodes = (
                self.stage_time_ms(
                    BatchShape(
                        decode_context_tokens=batch.decode_context_tokens,
                        draft_tokens=batch.draft_tokens,
                    )
                )
                if len(batch.decode_context_tokens)
                else 0.0
            )
            stage = decodes + scale * (stage - decodes)
        ms = stage * self.parallel.pp * self.overhead.kernel_scale
        ms += self.overhead.step_ms
        if batch.cuda_graph_batch is None:
            self.token_time_ms(1)  # ensures the kernel count is known
            ms += self._kernels_per_step * self.parallel.pp * self.overhead.eager_kernel_us / 1e3
        return ms

    # ------------------------------------------------------------------ helpers
    def decode_step_ms(
        self,
        batch_size: int,
        mean_kv_tokens: float,
        *,
        cuda_graphs: bool = True,
        capture_sizes: tuple[int, ...] = DEFAULT_CUDA_GRAPH_SIZES,
        draft_tokens: int = 0,
    ) -> float:
        """A decode-only step of ``batch_size`` sequences at a mean KV length (fast path);
        ``draft_tokens`` > 0 prices a speculative step (see :class:`~simulator.batch.BatchShape`)."""
        padded = None
        if cuda_graphs and capture_sizes:
            sizes = self._sorted_sizes(capture_sizes)
            i = bisect.bisect_left(sizes, batch_size)
            if i < len(sizes):
                padded = sizes[i]
        q = 1 + draft_tokens
        tokens = (padded or batch_size) * q
        ms = (
            self.token_time_ms(tokens)
            + self.lm_head_time_ms(batch_size * q)
            + self.decode_attention_ms(batch_size, mean_kv_tokens)
        )
        if draft_tokens:
            ms += self.draft_ms(batch_size, mean_kv_tokens, draft_tokens) / self.parallel.pp
        ms = ms * self.parallel.pp * self.overhead.kernel_scale + self.overhead.step_ms
        if padded is None:
            self.token_time_ms(1)
            ms += self._kernels_per_step * self.parallel.pp * self.overhead.eager_kernel_us / 1e3
        return ms

    def mixed_step_ms(
        self,
        new_tokens: float,
        context_tokens: float = 0.0,
        decode_batch: float = 0.0,
        decode_kv_tokens: float = 0.0,
        *,
        eager: bool = False,
        draft_tokens: int = 0,
    ) -> float:
        """A step carrying one prefill chunk plus ``decode_batch`` decodes (memoised on
        rounded arguments; the fast path of the analytical estimates). ``eager`` adds kernel
        launch gaps (vLLM V1 otherwise runs mixed steps under piecewise CUDA graphs);
        ``draft_tokens`` makes the decodes speculative."""
        key = (
            round(new_tokens),
            round(context_tokens),
            round(decode_batch),
            round(decode_kv_tokens),
            bool(eager),
            int(draft_tokens),
        )
        ms = self._mixed_ms.get(key)
        if ms is None:
            new, ctx, dec, kv, _, k = key
            stage = self.token_time_ms(new + dec * (1 + k)) + self.lm_head_time_ms(
                1 + dec * (1 + k)
            )
            stage += self.prefill_attention_ms(new, ctx)
            if dec > 0:
                stage += self.decode_attention_ms(dec, kv)
                if k:
                    stage += self.draft_ms(dec, kv, k) / self.parallel.pp
            ms = stage * self.parallel.pp * self.overhead.kernel_scale + self.overhead.step_ms
            if eager:
                kernels = self._kernels_per_step * self.parallel.pp
                ms += kernels * self.overhead.eager_kernel_us / 1e3
            self._mixed_ms[key] = ms
        return ms

    def draft_ms(self, batch_size: float, mean_kv_tokens: float, draft_tokens: int) -> float:
        """Kernel time of the draft head proposing ``draft_tokens`` tokens for ``batch_size``
        decoding sequences (before ``kernel_scale``, one pipeline stage's worth).

        A multi-token-prediction module (DeepSeek-V3's, as vLLM, SGLang and TensorRT-LLM run
        it) is one more decoder layer plus the shared LM head, run once per proposed token, in
        sequence, on one token per sequence. Its layer is priced as the mean layer of the target
        model (its token work and decode attention over the same context, per layer).
        """
        if draft_tokens <= 0 or batch_size <= 0:
            return 0.0
        layers = self.model.num_layers / self.parallel.pp
        per_layer = (
            self.token_time_ms(batch_size) + self.decode_attention_ms(batch_size, mean_kv_tokens)
        ) / layers
        return draft_tokens * (per_layer + self.lm_head_time_ms(batch_size))

    @staticmethod
    @lru_cache(maxsize=32)
    def _sorted_sizes(capture_sizes: tuple[int, ...]) -> list[int]:
        return sorted(int(s) for s in capture_sizes)

    def breakdown_ms(self, batch: BatchShape) -> dict[str, float]:
        """Exact (un-interpolated) per-role cost of one stage: op name -> ms."""
        out: dict[str, float] = {}
        for call in decompose_step(self.model, self.parallel, self.precision, batch):
            out[call.name] = out.get(call.name, 0.0) + call.count * self._call_ms(call)
        return out

    @property
    def source_counts(self) -> dict[str, int]:
        """How many distinct priced shapes came from each perfdb source kind."""
        return dict(self._sources)

    def memory(
        self,
        gpu_memory_utilization: float = 0.9,
        *,
        max_num_batched_tokens: int = 8192,
        max_num_seqs: int = 256,
        cuda_graph_sizes: tuple[int, ...] | None = DEFAULT_CUDA_GRAPH_SIZES,
        block_size: int = 16,
        draft_layers: int = 0,
    ) -> MemoryBreakdown:
        """Per-GPU memory and KV capacity (tokens and blocks per attention-DP rank).

        See :func:`simulator.memory.memory_breakdown`; ``cuda_graph_sizes=None`` means eager,
        ``draft_layers`` counts the MTP modules loaded for speculative decoding.
        """
        return memory_breakdown(
            self.model,
            self.parallel,
            self.precision,
            capacity_bytes=float(self.spec.mem_capacity_bytes),
            gpu_memory_utilization=gpu_memory_utilization,
            max_num_batched_tokens=max_num_batched_tokens,
            max_num_seqs=max_num_seqs,
            cuda_graph_sizes=cuda_graph_sizes,
            block_size=block_size,
            draft_layers=draft_layers,
        )
