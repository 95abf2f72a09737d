"""Decompose one engine step of a model under a parallel layout into priced primitives.

Every :class:`OpCall` names one kernel shape on ONE GPU and how many times a step calls it on
that GPU (its pipeline stage's layers). The step's work splits in two:

* :func:`token_ops`: everything whose shape depends only on the number of tokens in the step
  (projection GEMMs, MoE, collectives, element-wise kernels, embedding, LM head);
* :func:`attention_ops`: attention, whose cost depends on every sequence's KV length.

Conventions (our choices, stated so they can be checked):

* With attention data parallelism, a :class:`~simulator.batch.BatchShape` is the batch of ONE
  attention-DP rank; ranks are assumed balanced, so an MoE layer sees ``dp`` times its tokens,
  gathered by an all-gather and returned by a reduce-scatter over the stage's GPUs.
* Tensor parallelism adds one all-reduce after attention and one after the feed-forward block
  (when ``tp > 1``); pipeline parallelism one activation send per stage boundary.
* An MLA layer is one ``MLAContextOp``/``MLAGenerationOp`` (the measured module includes its
  projections and output projection, as vLLM's MLA wrapper does).
* Element-wise work per layer (2 RMSNorms, rotary, SiLU-and-mul, 2 residual adds) is four
  bandwidth-priced kernels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from perfdb.ops import (
    AllGatherOp,
    AllReduceOp,
    ContextAttentionOp,
    ElementwiseOp,
    GemmOp,
    GenerationAttentionOp,
    MemoryOp,
    MLAContextOp,
    MLAGenerationOp,
    MoEOp,
    P2POp,
    ReduceScatterOp,
)
from simulator.batch import BatchShape
from simulator.models import ModelSpec, Precision
from simulator.parallel import ParallelConfig

ACT_BYTES = 2  # bf16 activations
#: Our precision names -> perfdb dtype names for MoE kernels (mxfp4 experts run w4a16).
MOE_DTYPE = {"mxfp4": "w4a16_mxfp4", "mxfp4_mxfp8": "w4a8_mxfp4_mxfp8"}
ELEMENTWISE_KERNELS_PER_LAYER = 4


@dataclass(frozen=True)
class OpCall:
    """One primitive and how many times a step runs it on one GPU.

    Attributes
    ----------
    name : str
        Role in the model (``"qkv_proj"``, ``"moe"``, ``"tp_allreduce"``...).
    op : perfdb op
        The per-GPU shape.
    count : float
        Calls per step on that GPU.
    """

    name: str
    op: object
    count: float


@dataclass(frozen=True)
class LayerCounts:
    """How many layers of each kind one pipeline stage holds."""

    layers: float
    dense_ffn_layers: float
    moe_layers: float
    full_attention_layers: float
    sliding_layers: float

    @classmethod
    def of(cls, model: ModelSpec, parallel: ParallelConfig) -> LayerCounts:
        pp = parallel.pp
        dense = model.num_dense_layers if model.is_moe else model.num_layers
        return cls(
            layers=model.num_layers / pp,
            dense_ffn_layers=dense / pp,
            moe_layers=model.num_moe_layers / pp,
            full_attention_layers=model.num_full_attention_layers / pp,
            sliding_layers=model.num_sliding_layers / pp,
        )


def token_ops(
    model: ModelSpec,
    parallel: ParallelConfig,
    precision: Precision,
    num_tokens: int,
    num_sampled: int,
) -> list[OpCall]:
    """Ops whose shape depends only on the step's token count.

    Parameters
    ----------
    model, parallel, precision
        The deployment.
    num_tokens : int
        Tokens computed in the step on one attention-DP rank (prefill chunks plus decodes).
    num_sampled : int
        Sequences that produce a token this step (LM-head rows).

    Returns
    -------
    list of OpCall
    """
    if num_tokens < 1:
        raise ValueError(f"num_tokens must be >= 1, got {num_tokens}")
    t = int(num_tokens)
    h = model.hidden_size
    tp = parallel.tp
    counts = LayerCounts.of(model, parallel)
    gemm_dtype = precision.gemm
    calls: list[OpCall] = []
    act_bytes = t * h * ACT_BYTES

    if not model.is_mla:
        kv_heads = parallel.kv_heads_per_gpu(model)
        qkv_n = (model.num_heads // tp + 2 * kv_heads) * model.head_dim
        calls.append(OpCall("qkv_proj", GemmOp(t, qkv_n, h, gemm_dtype), counts.layers))
        o_k = model.num_heads // tp * model.head_dim
        calls.append(OpCall("o_proj", GemmOp(t, h, o_k, gemm_dtype), counts.layers))
    if tp > 1:
        calls.append(OpCall("attn_allreduce", AllReduceOp(act_bytes, tp, "bf16"), counts.layers))
        if model.qk_norm_across_heads:  # the q and k variances, one fp32 each per token
            calls.append(
                OpCall("qk_norm_allreduce", AllReduceOp(t * 2 * 4, tp, "bf16"), counts.layers)
            )

    if counts.dense_ffn_layers:
        inter = model.intermediate_size // tp
        calls.append(
            OpCall("gate_up_proj", GemmOp(t, 2 * inter, h, gemm_dtype), counts.dense_ffn_layers)
        )
        calls.append(OpCall("down_proj", GemmOp(t, h, inter, gemm_dtype), counts.dense_ffn_layers))
        if tp > 1:
            calls.append(
                OpCall("ffn_allreduce", AllReduceOp(act_bytes, tp, "bf16"), counts.dense_ffn_layers)
            )
    if counts.moe_layers:
        dp = parallel.attention_dp
        width = tp * dp
        moe_tokens = t * dp
        calls.append(OpCall("router", GemmOp(t, model.num_experts, h, "bf16"), counts.moe_layers))
        calls.append(
            OpCall(
                "moe",
                MoEOp(
                    num_tokens=moe_tokens,
                    hidden_size=h,
                    inter_size=model.moe_intermediate_size,
                    topk=model.experts_per_token,
                    num_experts=model.num_experts,
                    moe_tp_size=parallel.moe_tp,
                    moe_ep_size=parallel.moe_ep,
                    dtype=MOE_DTYPE.get(precision.moe, precision.moe),
                    distribution="power_law_1.01",
                ),
                counts.moe_layers,
            )
        )
        if model.shared_expert_intermediate_size:
            sh = model.shared_expert_intermediate_size // tp
            shared_dtype = (
                precision.moe if precision.moe in ("bf16", "fp8", "fp8_block", "fp4") else "bf16"
            )
            calls.append(
                OpCall("shared_gate_up", GemmOp(t, 2 * sh, h, shared_dtype), counts.moe_layers)
            )
            calls.append(OpCall("shared_down", GemmOp(t, h, sh, shared_dtype), counts.moe_layers))
        if dp > 1:
            gathered = moe_tokens * h * ACT_BYTES
            calls.append(
                OpCall("moe_allgather", AllGatherOp(gathered, width, "bf16"), counts.moe_layers)
            )
            calls.append(
                OpCall(
                    "moe_reducescatter", ReduceScatterOp(gathered, width, "bf16"), counts.moe_layers
                )
            )
        elif tp > 1:
            calls.append(
                OpCall("moe_allreduce", AllReduceOp(act_bytes, tp, "bf16"), counts.moe_layers)
            )

    inter_local = (
        model.experts_per_token * model.moe_intermediate_size // max(parallel.moe_tp, 1)
        if model.is_moe
        else model.intermediate_size // tp
    )
    elementwise_bytes = t * (8 * h + 3 * inter_local) * ACT_BYTES
    calls.append(
        OpCall(
            "elementwise",
            ElementwiseOp(max(1, elementwise_bytes // ELEMENTWISE_KERNELS_PER_LAYER)),
            counts.layers * ELEMENTWISE_KERNELS_PER_LAYER,
        )
    )
    calls.append(OpCall("embedding", MemoryOp(act_bytes, act_bytes), 1 / parallel.pp))
    calls.append(
        OpCall(
            "lm_head",
            GemmOp(max(1, int(num_sampled)), -(-model.vocab_size // tp), h, "bf16"),
            1 / parallel.pp,
        )
    )
    if parallel.pp > 1:
        calls.append(OpCall("pp_send", P2POp(act_bytes), (parallel.pp - 1) / parallel.pp))
    return calls


def attention_ops(
    model: ModelSpec, parallel: ParallelConfig, precision: Precision, batch: BatchShape
) -> list[OpCall]:
    """Attention of one step: one context op per prefilling sequence, one generation op for
    all decoding sequences (at their mean KV length: decode attention is bandwidth-bound, so
    its cost follows the total KV read).

    Parameters
    ----------
    model, parallel, precision
        The deployment.
    batch : BatchShape
        The step's work on one attention-DP rank.
    """
    counts = LayerCounts.of(model, parallel)
    heads = model.num_heads // parallel.tp
    kv = precision.kv_cache
    calls: list[OpCall] = []
    new = np.asarray(batch.prefill_new_tokens, dtype=np.int64)
    ctx = np.asarray(batch.prefill_context_tokens, dtype=np.int64)
    dec = np.asarray(batch.decode_context_tokens, dtype=np.int64)
    kinds = [(counts.full_attention_layers, 0), (counts.sliding_layers, model.sliding_window)]
    for n_new, n_ctx in zip(new, ctx, strict=True):
        if n_new < 1:
            continue
        if model.is_mla:
            op = MLAContextOp(1, int(n_new), heads, int(n_ctx), kv, precision.gemm)
            calls.append(OpCall("mla_context", op, counts.layers))
            continue
        for n_layers, window in kinds:
            if n_layers:
                op = ContextAttentionOp(
                    1,
                    int(n_new),
                    heads,
                    parallel.kv_heads_per_gpu(model),
                    model.head_dim,
                    int(n_ctx),
                    "bf16",
                    kv,
                    window,
                )
                calls.append(OpCall("context_attention", op, n_layers))
    if len(dec):
        mean_kv = max(1, round(float(dec.mean())))
        if model.is_mla:
            op = MLAGenerationOp(len(dec), mean_kv, heads, kv, precision.gemm)
            calls.append(OpCall("mla_generation", op, counts.layers))
        else:
            for n_layers, window in kinds:
                if n_layers:
                    op = GenerationAttentionOp(
                        len(dec),
                        mean_kv,
                        heads,
                        parallel.kv_heads_per_gpu(model),
                        model.head_dim,
                        "bf16",
                        kv,
                        window,
                    )
                    calls.append(OpCall("generation_attention", op, n_layers))
    return calls


def decompose_step(
    model: ModelSpec, parallel: ParallelConfig, precision: Precision, batch: BatchShape
) -> list[OpCall]:
    """Every primitive one GPU runs in one engine step (see the module notes).

    Examples
    --------
    >>> import numpy as np
    >>> from simulator.models import load_model, Precision
    >>> from simulator.parallel import ParallelConfig
    >>> batch = BatchShape(decode_context_tokens=np.array([100, 300]))
    >>> calls = decompose_step(load_model("meta-llama/Llama-3.1-8B"), ParallelConfig(tp=2),
    ...                        Precision(), batch)
    >>> sorted({c.name for c in calls})[:3]
    ['attn_allreduce', 'down_proj', 'elementwise']
    """
    if batch.num_tokens < 1:
        raise ValueError("the batch has no tokens to compute")
    sampled = len(batch.decode_context_tokens) + len(batch.prefill_new_tokens)
    calls = token_ops(model, parallel, precision, batch.num_tokens, sampled)
    return calls + attention_ops(model, parallel, precision, batch)
