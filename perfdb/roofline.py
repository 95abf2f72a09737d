"""Speed-of-light (roofline) time of each op, vectorized over shapes.

``roofline_ms = max(flops / tensor_flops[dtype], bytes / mem_bw)`` for compute kernels and
``bytes / link_bw`` (with the ring-algorithm factor) for collectives: the time the op would take
at 100% of the datasheet rate. Measured latencies are stored against it as an efficiency
(``roofline / measured``), which is what the interpolator moves through the grid and holds
constant outside it.

With no measurement at all an op costs ``DEFAULT_LAUNCH_MS + roofline / DEFAULT_EFFICIENCY``,
two constants per op type fitted (robust least squares on log latency) to every row of the
h100_sxm / vLLM 0.24.0 tables and checked on h200_sxm and b200_sxm; the fit and its error are
reproduced by ``python3 benchmarks/perfdb_accuracy.py --fit-fallback`` (figures in
``benchmarks/RESULTS.md``). It is a coarse prior (median error 10-60% by op type), used only where
no table exists.

Shapes are per-GPU. Element counts follow the op docstrings in :mod:`perfdb.ops`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np

from perfdb.ops import DTYPE_BYTES
from perfdb.specs import HardwareSpec

#: Fraction of the roofline reached when an op has no measured table at all (fitted on
#: h100_sxm / vLLM 0.24.0, see the module docstring).
DEFAULT_EFFICIENCY: dict[str, float] = {
    "gemm": 0.654,
    "context_attention": 0.307,
    "generation_attention": 0.558,
    "moe": 0.527,
    "mla_context": 0.455,
    "mla_generation": 0.798,
    "mla_bmm": 0.894,
    "all_reduce": 0.641,
    "all_gather": 0.545,
    "reduce_scatter": 0.526,
    "all_to_all": 0.565,
    "p2p": 1.0,  # already an effective (empirical latency + bandwidth) model
    "elementwise": 1.0,  # already uses the empirical bandwidth factor
    "memory": 1.0,
}

#: Fixed per-call cost (ms) added when an op has no measured table (fitted with the above).
DEFAULT_LAUNCH_MS: dict[str, float] = {
    "gemm": 0.0109,
    "context_attention": 0.0142,
    "generation_attention": 0.0139,
    "moe": 0.0523,
    "mla_context": 0.1023,
    "mla_generation": 0.1011,
    "mla_bmm": 0.0036,
    "all_reduce": 0.0113,
    "all_gather": 0.0087,
    "reduce_scatter": 0.0082,
    "all_to_all": 0.0086,
}

# DeepSeek-V3 MLA geometry (the only MLA tables measured).
_MLA_HIDDEN, _MLA_Q_LORA, _MLA_KV_LORA, _MLA_NOPE, _MLA_ROPE, _MLA_V = 7168, 1536, 512, 128, 64, 128

Cols = Mapping[str, np.ndarray | float | int | str]


def _f(cols: Cols, name: str) -> np.ndarray:
    return np.asarray(cols[name], dtype=np.float64)


def _b(dtype: object) -> float:
    return DTYPE_BYTES[str(dtype)]


def _ms(flops: np.ndarray, bytes_: np.ndarray, flops_s: float, bw: float) -> np.ndarray:
    return np.maximum(flops / flops_s, bytes_ / bw) * 1e3


def _gemm(spec: HardwareSpec, c: Cols) -> np.ndarray:
    m, n, k = _f(c, "m"), _f(c, "n"), _f(c, "k")
    wb = _b(c["dtype"])
    bytes_ = (m * k + k * n) * wb + m * n * 2.0
    return _ms(2.0 * m * n * k, bytes_, spec.flops_for(str(c["dtype"])), spec.mem_bw_bytes_s)


def _attended_keys(isl: np.ndarray, prefix: np.ndarray, window: np.ndarray) -> np.ndarray:
    """Sum over the ``isl`` new queries of the keys each attends to (causal, optional window)."""
    full = isl * prefix + isl * (isl + 1.0) / 2.0
    w = np.where(window > 0, window, np.inf)
    t = np.clip(w - prefix, 0.0, isl)  # queries whose causal span fits inside the window
    t = np.where(np.isfinite(t), t, isl)
    windowed = t * prefix + t * (t + 1.0) / 2.0 + (isl - t) * np.where(np.isfinite(w), w, 0.0)
    return np.where(window > 0, windowed, full)


def _context_attention(spec: HardwareSpec, c: Cols) -> np.ndarray:
    b, isl, h = _f(c, "batch_size"), _f(c, "isl"), _f(c, "num_heads")
    kvh, d = _f(c, "num_kv_heads"), _f(c, "head_dim")
    prefix = _f(c, "prefix_len") if "prefix_len" in c else np.zeros_like(b)
    window = _f(c, "window_size") if "window_size" in c else np.zeros_like(b)
    keys = _attended_keys(isl, prefix, window)
    flops = 4.0 * b * h * d * keys
    kv_tokens = isl + prefix
    bytes_ = b * isl * h * d * 2.0 * 2.0 + b * kv_tokens * kvh * d * 2.0 * _b(c["kv_dtype"])
    return _ms(flops, bytes_, spec.flops_for(str(c["dtype"])), spec.mem_bw_bytes_s)


def _generation_attention(spec: HardwareSpec, c: Cols) -> np.ndarray:
    b, kv, h = _f(c, "batch_size"), _f(c, "kv_len"), _f(c, "num_heads")
    kvh, d = _f(c, "num_kv_heads"), _f(c, "head_dim")
    window = _f(c, "window_size") if "window_size" in c else np.zeros_like(b)
    kv = np.where(window > 0, np.minimum(kv, window), kv)
    flops = 4.0 * b * h * d * kv
    bytes_ = b * kv * kvh * d * 2.0 * _b(c["kv_dtype"]) + b * h * d * 2.0 * 2.0
    return _ms(flops, bytes_, spec.flops_for(str(c["dtype"])), spec.mem_bw_bytes_s)


def _moe(spec: HardwareSpec, c: Cols) -> np.ndarray:
    t, hid, inter = _f(c, "num_tokens"), _f(c, "hidden_size"), _f(c, "inter_size")
    topk, e = _f(c, "topk"), _f(c, "num_experts")
    tp, ep = _f(c, "moe_tp_size"), _f(c, "moe_ep_size")
    local_assignments = t * topk / ep  # expected token-expert pairs landing on this GPU
    inter_local = inter / tp
    flops = 2.0 * local_assignments * hid * inter_local * 3.0  # gate, up, down
    experts_touched = np.minimum(e / ep, np.maximum(local_assignments, 1.0))
    weight_bytes = experts_touched * 3.0 * hid * inter_local * _b(c["dtype"])
    act_bytes = local_assignments * (hid * 2.0 * 2.0 + inter_local * 2.0 * 3.0)
    return _ms(
        flops, weight_bytes + act_bytes, spec.flops_for(str(c["dtype"])), spec.mem_bw_bytes_s
    )


def _mla_proj(tokens: np.ndarray, h: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """FLOPs and weight elements of the MLA projections (q_a, q_b, kv_a, kv_b, o) per call."""
    qk = _MLA_NOPE + _MLA_ROPE
    weights = (
        _MLA_HIDDEN * _MLA_Q_LORA
        + _MLA_Q_LORA * h * qk
        + _MLA_HIDDEN * (_MLA_KV_LORA + _MLA_ROPE)
        + _MLA_KV_LORA * h * (_MLA_NOPE + _MLA_V)
        + h * _MLA_V * _MLA_HIDDEN
    )
    return 2.0 * tokens * weights, weights


def _mla_context(spec: HardwareSpec, c: Cols) -> np.ndarray:
    b, isl, h = _f(c, "batch_size"), _f(c, "isl"), _f(c, "num_heads")
    prefix = _f(c, "prefix_len") if "prefix_len" in c else np.zeros_like(b)
    tokens = b * isl
    proj_flops, weights = _mla_proj(tokens, h)
    keys = _attended_keys(isl, prefix, np.zeros_like(b))
    attn_flops = 2.0 * b * h * (_MLA_NOPE + _MLA_ROPE + _MLA_V) * keys
    gb = _b(c["gemm_dtype"])
    bytes_ = weights * gb + tokens * _MLA_HIDDEN * 2.0 * 2.0
    bytes_ = bytes_ + b * (isl + prefix) * (_MLA_KV_LORA + _MLA_ROPE) * _b(c["kv_dtype"])
    rate = spec.flops_for(str(c["gemm_dtype"]))
    return _ms(
        proj_flops + attn_flops * rate / spec.flops_for("bf16"), bytes_, rate, spec.mem_bw_bytes_s
    )


def _mla_generation(spec: HardwareSpec, c: Cols) -> np.ndarray:
    b, kv, h = _f(c, "batch_size"), _f(c, "kv_len"), _f(c, "num_heads")
    proj_flops, weights = _mla_proj(b, h)
    latent = _MLA_KV_LORA + _MLA_ROPE
    attn_flops = 2.0 * b * h * (latent + _MLA_KV_LORA) * kv
    bytes_ = weights * _b(c["gemm_dtype"]) + b * kv * latent * _b(c["kv_dtype"])
    rate = spec.flops_for(str(c["gemm_dtype"]))
    return _ms(
        proj_flops + attn_flops * rate / spec.flops_for("bf16"), bytes_, rate, spec.mem_bw_bytes_s
    )


def _mla_bmm(spec: HardwareSpec, c: Cols) -> np.ndarray:
    t, h = _f(c, "num_tokens"), _f(c, "num_heads")
    flops = 2.0 * t * h * _MLA_NOPE * _MLA_KV_LORA
    bytes_ = (
        h * _MLA_NOPE * _MLA_KV_LORA * _b(c["dtype"]) + t * h * (_MLA_NOPE + _MLA_KV_LORA) * 2.0
    )
    return _ms(flops, bytes_, spec.flops_for(str(c["dtype"])), spec.mem_bw_bytes_s)


def _link_bw(spec: HardwareSpec, num_gpus: np.ndarray) -> np.ndarray:
    return np.where(
        num_gpus <= spec.gpus_per_node, spec.nvlink_bw_bytes_s, spec.internode_bw_bytes_s
    )


def _collective(
    factor: Callable[[np.ndarray], np.ndarray],
) -> Callable[[HardwareSpec, Cols], np.ndarray]:
    def price(spec: HardwareSpec, c: Cols) -> np.ndarray:
        size, n = _f(c, "message_bytes"), _f(c, "num_gpus")
        return factor(n) * size / _link_bw(spec, n) * 1e3

    return price


def _p2p(spec: HardwareSpec, c: Cols) -> np.ndarray:
    size = _f(c, "message_bytes")
    inter = np.asarray(c.get("inter_node", False), dtype=bool)
    bw = np.where(inter, spec.internode_bw_bytes_s, spec.nvlink_bw_bytes_s)
    return (spec.p2p_latency_s + size / bw) * 1e3


def _memory_time(spec: HardwareSpec, bytes_: np.ndarray) -> np.ndarray:
    return (spec.launch_latency_s + bytes_ / (spec.mem_bw_bytes_s * spec.mem_bw_efficiency)) * 1e3


def _elementwise(spec: HardwareSpec, c: Cols) -> np.ndarray:
    return _memory_time(spec, _f(c, "bytes_moved"))


def _memory(spec: HardwareSpec, c: Cols) -> np.ndarray:
    return _memory_time(spec, _f(c, "bytes_read") + _f(c, "bytes_written"))


ROOFLINES: dict[str, Callable[[HardwareSpec, Cols], np.ndarray]] = {
    "gemm": _gemm,
    "context_attention": _context_attention,
    "generation_attention": _generation_attention,
    "moe": _moe,
    "mla_context": _mla_context,
    "mla_generation": _mla_generation,
    "mla_bmm": _mla_bmm,
    "all_reduce": _collective(lambda n: 2.0 * (n - 1.0) / n),
    "all_gather": _collective(lambda n: (n - 1.0) / n),
    "reduce_scatter": _collective(lambda n: (n - 1.0) / n),
    "all_to_all": _collective(lambda n: (n - 1.0) / n),
    "p2p": _p2p,
    "elementwise": _elementwise,
    "memory": _memory,
}

#: Op types priced from the spec alone (no measured table exists for them).
SPEC_PRICED: frozenset[str] = frozenset({"p2p", "elementwise", "memory"})


def roofline_ms(spec: HardwareSpec, op_type: str, cols: Cols) -> np.ndarray:
    """Speed-of-light time in ms of ``op_type`` for arrays of shapes.

    Parameters
    ----------
    spec : HardwareSpec
        The GPU.
    op_type : str
        A key of :data:`ROOFLINES`.
    cols : mapping
        Op field name -> array (numeric fields) or scalar (dtype fields).

    Returns
    -------
    numpy.ndarray
        Positive times in milliseconds.
    """
    return ROOFLINES[op_type](spec, cols)


_COLLECTIVE_OPS = frozenset({"all_reduce", "all_gather", "reduce_scatter", "all_to_all"})


def reference_ms(spec: HardwareSpec, op_type: str, cols: Cols) -> np.ndarray:
    """The time measured latencies are expressed against: a fixed per-call floor + roofline.

    The floor is the spec's launch latency for kernels and its point-to-point latency for
    collectives (an alpha-beta model). Interpolating ``log(latency / reference)`` rather than
    against the bare roofline keeps the ratio flat in both the latency-bound and the
    throughput-bound regime: in leave-one-out on h100_sxm it cut collective errors from 8.7% to
    3.1% median and the context-attention extrapolation over heads from 12.7% to 5.5%, with
    GEMM unchanged (``benchmarks/RESULTS.md``).
    """
    floor = spec.p2p_latency_s if op_type in _COLLECTIVE_OPS else spec.launch_latency_s
    return roofline_ms(spec, op_type, cols) + floor * 1e3


def fallback_ms(spec: HardwareSpec, op_type: str, cols: Cols) -> np.ndarray:
    """Latency with no measurement at all: fitted launch cost + roofline / fitted efficiency."""
    base = roofline_ms(spec, op_type, cols)
    if op_type in SPEC_PRICED:
        return base
    return DEFAULT_LAUNCH_MS[op_type] + base / DEFAULT_EFFICIENCY[op_type]
