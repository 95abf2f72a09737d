"""The op vocabulary: one frozen, validated dataclass per priced primitive.

Every op names one kernel call on ONE GPU (per-rank shapes: a tensor-parallel GEMM is described
with its already-sharded ``n`` or ``k``). Sizes are counts (tokens, heads, elements) or bytes, as
the field names say. Dtype strings are normalised to the short names in :data:`DTYPE_BYTES`
(``"bfloat16"`` becomes ``"bf16"``, ``"half"`` becomes ``"fp16"``), so ops built from a Hugging
Face config or from a measured table compare equal.

Examples
--------
>>> from perfdb import GemmOp
>>> GemmOp(m=128, n=4096, k=4096, dtype="bfloat16")
GemmOp(m=128, n=4096, k=4096, dtype='bf16')
>>> GemmOp(m=0, n=1, k=1)
Traceback (most recent call last):
...
ValueError: GemmOp.m must be a positive integer, got 0
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, fields
from typing import ClassVar

#: Bytes per element of each supported dtype (weights/activations as stored).
#: ``fp8_block`` is FP8 with 128x128 block scales (DeepSeek style); ``fp4`` is NVFP4;
#: ``mxfp4`` / ``w4a16_mxfp4`` are 4-bit MX weights (``w4a8_mxfp4_mxfp8`` with fp8
#: activations); ``int4_wo`` / ``int8_wo`` are weight-only integer quantisation.
DTYPE_BYTES: dict[str, float] = {
    "fp32": 4.0,
    "bf16": 2.0,
    "fp16": 2.0,
    "fp8": 1.0,
    "fp8_block": 1.0,
    "int8": 1.0,
    "fp4": 0.5,
    "mxfp4": 0.5,
    "w4a16_mxfp4": 0.5,
    "w4afp8": 0.5,
    "w4a8_mxfp4_mxfp8": 0.5,
    "int4_wo": 0.5,
    "int8_wo": 1.0,
}

#: Spellings used by AIConfigurator tables, PyTorch and Hugging Face configs.
DTYPE_ALIASES: dict[str, str] = {
    "bfloat16": "bf16",
    "float16": "fp16",
    "half": "fp16",
    "float32": "fp32",
    "float": "fp32",
    "float8": "fp8",
    "float8_e4m3fn": "fp8",
    "nvfp4": "fp4",
}

#: MoE token-routing distributions measured in the tables (``uniform`` is an alias of
#: ``balanced``).
MOE_DISTRIBUTIONS: tuple[str, ...] = ("balanced", "power_law_1.01", "power_law_1.2")


def normalize_dtype(dtype: str, *, owner: str = "dtype") -> str:
    """Return the canonical short name of ``dtype``.

    Parameters
    ----------
    dtype : str
        A dtype name such as ``"bf16"``, ``"bfloat16"``, ``"fp8"`` or ``"half"``.
    owner : str
        Name used in the error message (e.g. ``"GemmOp.dtype"``).

    Returns
    -------
    str
        A key of :data:`DTYPE_BYTES`.

    Raises
    ------
    ValueError
        If the dtype is unknown; the message lists the known ones.
    """
    if not isinstance(dtype, str):
        raise ValueError(f"{owner} must be a string, got {dtype!r}")
    key = dtype.strip().lower()
    key = DTYPE_ALIASES.get(key, key)
    if key not in DTYPE_BYTES:
        known = ", ".join(sorted(DTYPE_BYTES))
        raise ValueError(f"{owner}: unknown dtype {dtype!r}; known dtypes: {known}")
    return key


def _positive_int(owner: str, value: object, *, allow_zero: bool = False) -> int:
    if isinstance(value, bool):
        raise ValueError(f"{owner} must be an integer, got {value!r}")
    try:
        as_int = operator.index(value)  # accepts int and numpy integers, rejects floats
    except TypeError:
        if isinstance(value, float) and value.is_integer():
            as_int = int(value)
        else:
            raise ValueError(f"{owner} must be an integer, got {value!r}") from None
    if as_int < 0 or (as_int == 0 and not allow_zero):
        kind = "a non-negative" if allow_zero else "a positive"
        raise ValueError(f"{owner} must be {kind} integer, got {value!r}")
    return int(as_int)


class _OpBase:
    """Shared validation: integer fields positive (or non-negative), dtypes normalised."""

    #: Registry name of the op type (``"gemm"``, ``"context_attention"``, ...).
    op_type: ClassVar[str] = ""
    #: Integer fields that may be zero.
    _zero_ok: ClassVar[frozenset[str]] = frozenset()
    #: String fields holding a dtype.
    _dtype_fields: ClassVar[frozenset[str]] = frozenset()

    def __post_init__(self) -> None:
        cls = type(self).__name__
        for f in fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            owner = f"{cls}.{f.name}"
            if f.name in self._dtype_fields:
                object.__setattr__(self, f.name, normalize_dtype(value, owner=owner))
            elif f.type in ("int", int):
                checked = _positive_int(owner, value, allow_zero=f.name in self._zero_ok)
                object.__setattr__(self, f.name, checked)
        self._check()

    def _check(self) -> None:
        """Cross-field checks; overridden where needed."""


@dataclass(frozen=True, slots=True)
class GemmOp(_OpBase):
    """A dense matrix multiply ``[m, k] x [k, n]`` (``m`` = tokens, ``n`` = output features).

    Parameters
    ----------
    m, n, k : int
        Positive sizes.
    dtype : str
        Compute dtype: ``bf16``, ``fp8`` (per-tensor), ``fp8_block``, ``fp4``, ``int8``, ...
    """

    op_type: ClassVar[str] = "gemm"
    _dtype_fields: ClassVar[frozenset[str]] = frozenset({"dtype"})

    m: int
    n: int
    k: int
    dtype: str = "bf16"


def _check_heads(cls: str, num_heads: int, num_kv_heads: int) -> None:
    if num_kv_heads > num_heads or num_heads % num_kv_heads:
        raise ValueError(
            f"{cls}: num_heads ({num_heads}) must be a multiple of num_kv_heads ({num_kv_heads})"
        )


@dataclass(frozen=True, slots=True)
class ContextAttentionOp(_OpBase):
    """Prefill attention over ``batch_size`` sequences of ``isl`` new tokens each.

    Parameters
    ----------
    batch_size, isl : int
        Sequences in the batch and new (query) tokens per sequence.
    num_heads, num_kv_heads, head_dim : int
        Per-GPU query heads, KV heads (GQA/MQA) and head size.
    prefix_len : int
        Tokens already in the KV cache before these ``isl`` (prefix caching, chunked prefill).
    dtype, kv_dtype : str
        Attention compute dtype and KV-cache dtype.
    window_size : int
        Sliding-window length, 0 for full attention.
    """

    op_type: ClassVar[str] = "context_attention"
    _zero_ok: ClassVar[frozenset[str]] = frozenset({"prefix_len", "window_size"})
    _dtype_fields: ClassVar[frozenset[str]] = frozenset({"dtype", "kv_dtype"})

    batch_size: int
    isl: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    prefix_len: int = 0
    dtype: str = "bf16"
    kv_dtype: str = "bf16"
    window_size: int = 0

    def _check(self) -> None:
        _check_heads(type(self).__name__, self.num_heads, self.num_kv_heads)


@dataclass(frozen=True, slots=True)
class GenerationAttentionOp(_OpBase):
    """Decode attention: one new token per sequence against ``kv_len`` cached tokens.

    Parameters
    ----------
    batch_size, kv_len : int
        Sequences decoding and KV-cache length per sequence.
    num_heads, num_kv_heads, head_dim : int
        Per-GPU query heads, KV heads and head size.
    dtype, kv_dtype : str
        Attention compute dtype and KV-cache dtype.
    window_size : int
        Sliding-window length, 0 for full attention.
    """

    op_type: ClassVar[str] = "generation_attention"
    _zero_ok: ClassVar[frozenset[str]] = frozenset({"window_size"})
    _dtype_fields: ClassVar[frozenset[str]] = frozenset({"dtype", "kv_dtype"})

    batch_size: int
    kv_len: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    dtype: str = "bf16"
    kv_dtype: str = "bf16"
    window_size: int = 0

    def _check(self) -> None:
        _check_heads(type(self).__name__, self.num_heads, self.num_kv_heads)


@dataclass(frozen=True, slots=True)
class MoEOp(_OpBase):
    """A fused mixture-of-experts FFN (router excluded) on one GPU.

    Parameters
    ----------
    num_tokens : int
        Tokens entering the layer on this GPU.
    hidden_size, inter_size : int
        Model hidden size and (full, unsharded) expert intermediate size.
    topk, num_experts : int
        Experts per token and experts in total.
    moe_tp_size, moe_ep_size : int
        Tensor- and expert-parallel degrees of the MoE layer.
    dtype : str
        Expert weight/compute dtype (``bf16``, ``fp8``, ``fp8_block``, ``w4a16_mxfp4``, ...).
    distribution : str
        Routing distribution: ``balanced`` (alias ``uniform``), ``power_law_1.01``,
        ``power_law_1.2``.
    """

    op_type: ClassVar[str] = "moe"
    _dtype_fields: ClassVar[frozenset[str]] = frozenset({"dtype"})

    num_tokens: int
    hidden_size: int
    inter_size: int
    topk: int
    num_experts: int
    moe_tp_size: int = 1
    moe_ep_size: int = 1
    dtype: str = "bf16"
    distribution: str = "uniform"

    def _check(self) -> None:
        dist = self.distribution.strip().lower() if isinstance(self.distribution, str) else None
        dist = "balanced" if dist == "uniform" else dist
        if dist not in MOE_DISTRIBUTIONS:
            raise ValueError(
                f"MoEOp.distribution: unknown {self.distribution!r}; "
                f"known: uniform, {', '.join(MOE_DISTRIBUTIONS)}"
            )
        object.__setattr__(self, "distribution", dist)
        if self.topk > self.num_experts:
            raise ValueError(f"MoEOp.topk ({self.topk}) exceeds num_experts ({self.num_experts})")
        if self.num_experts % self.moe_ep_size:
            raise ValueError(
                f"MoEOp.num_experts ({self.num_experts}) must be divisible by "
                f"moe_ep_size ({self.moe_ep_size})"
            )


@dataclass(frozen=True, slots=True)
class MLAContextOp(_OpBase):
    """DeepSeek multi-head latent attention module, prefill (projections + attention).

    Shapes are DeepSeek-V3's (hidden 7168, q_lora_rank 1536, kv_lora_rank 512, qk_nope 128,
    qk_rope 64, v_head 128), the only MLA geometry measured; ``num_heads`` is per GPU.

    Parameters
    ----------
    batch_size, isl, num_heads : int
        Sequences, new tokens per sequence, per-GPU heads.
    prefix_len : int
        Cached tokens before the new ones.
    kv_dtype, gemm_dtype : str
        KV-cache dtype and dtype of the module's projection GEMMs.
    """

    op_type: ClassVar[str] = "mla_context"
    _zero_ok: ClassVar[frozenset[str]] = frozenset({"prefix_len"})
    _dtype_fields: ClassVar[frozenset[str]] = frozenset({"kv_dtype", "gemm_dtype"})

    batch_size: int
    isl: int
    num_heads: int
    prefix_len: int = 0
    kv_dtype: str = "bf16"
    gemm_dtype: str = "bf16"


@dataclass(frozen=True, slots=True)
class MLAGenerationOp(_OpBase):
    """DeepSeek MLA module, decode: one token per sequence against ``kv_len`` cached tokens.

    Parameters
    ----------
    batch_size, kv_len, num_heads : int
        Sequences, cached tokens per sequence, per-GPU heads.
    kv_dtype, gemm_dtype : str
        KV-cache dtype and dtype of the module's projection GEMMs.
    """

    op_type: ClassVar[str] = "mla_generation"
    _dtype_fields: ClassVar[frozenset[str]] = frozenset({"kv_dtype", "gemm_dtype"})

    batch_size: int
    kv_len: int
    num_heads: int
    kv_dtype: str = "bf16"
    gemm_dtype: str = "bf16"


@dataclass(frozen=True, slots=True)
class MLABmmOp(_OpBase):
    """The absorbed batched matmuls around MLA decode (``pre``: q_nope x W_UK, ``post``: x W_UV).

    Parameters
    ----------
    num_tokens, num_heads : int
        Tokens and per-GPU heads.
    phase : str
        ``"pre"`` or ``"post"``.
    dtype : str
        BMM dtype.
    """

    op_type: ClassVar[str] = "mla_bmm"
    _dtype_fields: ClassVar[frozenset[str]] = frozenset({"dtype"})

    num_tokens: int
    num_heads: int
    phase: str = "pre"
    dtype: str = "bf16"

    def _check(self) -> None:
        if self.phase not in ("pre", "post"):
            raise ValueError(f"MLABmmOp.phase must be 'pre' or 'post', got {self.phase!r}")


@dataclass(frozen=True, slots=True)
class _CollectiveOp(_OpBase):
    """A collective over ``num_gpus`` GPUs of one node; ``message_bytes`` per GPU."""

    _dtype_fields: ClassVar[frozenset[str]] = frozenset({"dtype"})

    message_bytes: int
    num_gpus: int
    dtype: str = "bf16"


@dataclass(frozen=True, slots=True)
class AllReduceOp(_CollectiveOp):
    """All-reduce of ``message_bytes`` per GPU over ``num_gpus`` GPUs.

    Priced as the faster of NCCL and the engine's custom all-reduce where both are measured,
    which is what vLLM does (it uses its custom kernel for small messages when that is faster).
    ``num_gpus == 1`` costs 0 ms.
    """

    op_type: ClassVar[str] = "all_reduce"


@dataclass(frozen=True, slots=True)
class AllGatherOp(_CollectiveOp):
    """NCCL all-gather; ``message_bytes`` is the gathered (output) size per GPU."""

    op_type: ClassVar[str] = "all_gather"


@dataclass(frozen=True, slots=True)
class ReduceScatterOp(_CollectiveOp):
    """NCCL reduce-scatter; ``message_bytes`` is the input size per GPU."""

    op_type: ClassVar[str] = "reduce_scatter"


@dataclass(frozen=True, slots=True)
class AllToAllOp(_CollectiveOp):
    """NCCL all-to-all; ``message_bytes`` is the send size per GPU."""

    op_type: ClassVar[str] = "all_to_all"


@dataclass(frozen=True, slots=True)
class P2POp(_OpBase):
    """Point-to-point send of ``message_bytes`` (pipeline-parallel activations, KV transfer).

    ``inter_node`` selects the inter-node link instead of NVLink. No table measures P2P: it is
    priced from the hardware spec (fixed latency + bytes / link bandwidth).
    """

    op_type: ClassVar[str] = "p2p"

    message_bytes: int
    inter_node: bool = False


@dataclass(frozen=True, slots=True)
class ElementwiseOp(_OpBase):
    """A memory-bound element-wise kernel (activation, residual add, norm, rotary embedding).

    Priced from bandwidth: ``bytes_moved`` / effective HBM bandwidth + a fixed launch latency.
    """

    op_type: ClassVar[str] = "elementwise"

    bytes_moved: int


@dataclass(frozen=True, slots=True)
class MemoryOp(_OpBase):
    """A memory transfer kernel: embedding lookup, KV-cache write or read, copy.

    Priced from bandwidth: (``bytes_read`` + ``bytes_written``) / effective HBM bandwidth + a
    fixed launch latency. One of the two may be zero, not both.
    """

    op_type: ClassVar[str] = "memory"
    _zero_ok: ClassVar[frozenset[str]] = frozenset({"bytes_read", "bytes_written"})

    bytes_read: int
    bytes_written: int = 0

    def _check(self) -> None:
        if self.bytes_read + self.bytes_written == 0:
            raise ValueError("MemoryOp: bytes_read + bytes_written must be positive")


Op = (
    GemmOp
    | ContextAttentionOp
    | GenerationAttentionOp
    | MoEOp
    | MLAContextOp
    | MLAGenerationOp
    | MLABmmOp
    | AllReduceOp
    | AllGatherOp
    | ReduceScatterOp
    | AllToAllOp
    | P2POp
    | ElementwiseOp
    | MemoryOp
)

#: Op type name -> op class, for the vectorized query and for tables on disk.
OP_TYPES: dict[str, type] = {
    cls.op_type: cls
    for cls in (
        GemmOp,
        ContextAttentionOp,
        GenerationAttentionOp,
        MoEOp,
        MLAContextOp,
        MLAGenerationOp,
        MLABmmOp,
        AllReduceOp,
        AllGatherOp,
        ReduceScatterOp,
        AllToAllOp,
        P2POp,
        ElementwiseOp,
        MemoryOp,
    )
}


def op_class(op_type: str | type) -> type:
    """Return the op class for a type name (``"gemm"``) or the class itself.

    Raises
    ------
    ValueError
        If the name is unknown; the message lists the known op types.
    """
    if isinstance(op_type, type) and op_type in OP_TYPES.values():
        return op_type
    if isinstance(op_type, str) and op_type in OP_TYPES:
        return OP_TYPES[op_type]
    raise ValueError(f"unknown op type {op_type!r}; known: {', '.join(OP_TYPES)}")
