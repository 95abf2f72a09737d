"""Per-GPU memory model: weights, activations, CUDA graphs, framework reserve -> KV capacity.

The budget follows vLLM's accounting: the engine may use ``gpu_memory_utilization`` of the GPU's
memory; weights, the peak activation of a ``max_num_batched_tokens`` forward pass, CUDA-graph
pools and communication buffers come out of it, and what is left becomes paged KV cache.

Constants (documented assumptions, not fitted): the CUDA context and allocator slack
(:data:`FRAMEWORK_RESERVE_BYTES`, 1 GiB, vLLM's "non-torch memory" on Hopper is 0.5-1.5 GiB);
the NCCL/custom all-reduce buffers (:data:`NCCL_BYTES`, from AIConfigurator's system YAML
``nccl_mem``); CUDA-graph memory per captured batch size (:data:`CUDA_GRAPH_BYTES_PER_SIZE`,
vLLM logs ~0.3-1.5 GiB for its 67 default sizes on 8B-70B models).
"""

from __future__ import annotations

from dataclasses import dataclass

from simulator.models import KV_BYTES, WEIGHT_BYTES, ModelSpec, Precision
from simulator.parallel import ParallelConfig

GIB = 1024**3
FRAMEWORK_RESERVE_BYTES = 1 * GIB
#: NCCL buffers by tensor-parallel width (AIConfigurator h100/h200 system YAML ``nccl_mem``).
NCCL_BYTES = {1: 0, 2: 358_612_992, 4: 411_041_792, 8: 411_041_792}
CUDA_GRAPH_BYTES_PER_SIZE = 12 * 1024**2
#: vLLM's default CUDA-graph capture sizes (V1): 1, 2, 4, then multiples of 8 up to 512.
DEFAULT_CUDA_GRAPH_SIZES: tuple[int, ...] = (1, 2, 4, *range(8, 513, 8))


@dataclass(frozen=True)
class MemoryBreakdown:
    """Memory of one GPU of a worker, in bytes, and the KV capacity it leaves.

    Attributes
    ----------
    capacity_bytes : float
        GPU memory.
    budget_bytes : float
        ``capacity_bytes * gpu_memory_utilization``.
    weights_bytes, activation_bytes, cuda_graph_bytes, comm_bytes, reserve_bytes : float
        The non-KV consumers.
    kv_cache_bytes : float
        What is left for KV (may be negative when infeasible).
    kv_bytes_per_token : float
        KV bytes one token costs on this GPU (its layers and heads).
    kv_capacity_tokens : int
        Tokens the KV cache holds (per attention-DP replica).
    block_size : int
        Tokens per KV block.
    """

    capacity_bytes: float
    budget_bytes: float
    weights_bytes: float
    activation_bytes: float
    cuda_graph_bytes: float
    comm_bytes: float
    reserve_bytes: float
    kv_cache_bytes: float
    kv_bytes_per_token: float
    kv_capacity_tokens: int
    block_size: int

    @property
    def kv_capacity_blocks(self) -> int:
        return self.kv_capacity_tokens // self.block_size

    @property
    def feasible(self) -> bool:
        return self.kv_capacity_tokens >= self.block_size

    def reason(self) -> str:
        """Why the configuration does not fit (empty string when it does)."""
        if self.feasible:
            return ""
        used = (
            self.weights_bytes
            + self.activation_bytes
            + self.cuda_graph_bytes
            + self.comm_bytes
            + self.reserve_bytes
        )
        return (
            f"does not fit in GPU memory: weights {self.weights_bytes / GIB:.1f} GiB + "
            f"activations {self.activation_bytes / GIB:.1f} GiB + CUDA graphs "
            f"{self.cuda_graph_bytes / GIB:.1f} GiB + buffers "
            f"{(self.comm_bytes + self.reserve_bytes) / GIB:.1f} GiB = {used / GIB:.1f} GiB per "
            f"GPU, budget {self.budget_bytes / GIB:.1f} GiB "
            f"({self.capacity_bytes / GIB:.0f} GiB x gpu_memory_utilization); no room for KV cache"
        )

    def as_dict(self) -> dict[str, float]:
        return {
            "weights_gib": self.weights_bytes / GIB,
            "activation_gib": self.activation_bytes / GIB,
            "cuda_graph_gib": self.cuda_graph_bytes / GIB,
            "comm_gib": self.comm_bytes / GIB,
            "reserve_gib": self.reserve_bytes / GIB,
            "kv_cache_gib": self.kv_cache_bytes / GIB,
            "kv_capacity_tokens": float(self.kv_capacity_tokens),
        }


def weight_bytes_per_gpu(model: ModelSpec, parallel: ParallelConfig, precision: Precision) -> float:
    """Weights one GPU holds (its pipeline stage; attention split by ``tp``, experts by
    ``moe_tp * moe_ep``; embeddings and LM head in bf16 split by ``tp``)."""
    gemm_b = WEIGHT_BYTES[precision.gemm]
    moe_b = WEIGHT_BYTES[precision.moe]
    layers = model.num_layers / parallel.pp
    attn = model.attention_params_per_layer / parallel.tp * gemm_b
    if model.is_moe:
        moe_layers = model.num_moe_layers / parallel.pp
        dense_layers = model.num_dense_layers / parallel.pp
        experts = (
            model.num_experts * model.expert_params / (parallel.moe_tp * parallel.moe_ep) * moe_b
        )
        shared = model.shared_expert_params_per_layer / parallel.tp * moe_b
        router = model.hidden_size * model.num_experts * 2.0
        ffn = moe_layers * (experts + shared + router)
        ffn += dense_layers * model.dense_ffn_params_per_layer / parallel.tp * gemm_b
    else:
        ffn = layers * model.dense_ffn_params_per_layer / parallel.tp * gemm_b
    # first stage holds the embedding, last the LM head; size for the larger (both when pp=1)
    embed = model.vocab_size * model.hidden_size * 2.0 / parallel.tp
    embed *= 2 if (parallel.pp == 1 and not model.tie_word_embeddings) else 1
    return layers * attn + ffn + embed


def draft_layer_bytes(model: ModelSpec, parallel: ParallelConfig, precision: Precision) -> float:
    """Weights of one multi-token-prediction module on one GPU: a decoder layer (the target
    model's mean layer) plus its projection of the embedding and hidden state (2h x h)."""
    embed = model.vocab_size * model.hidden_size * 2.0 / parallel.tp
    embed *= 2 if (parallel.pp == 1 and not model.tie_word_embeddings) else 1
    body = weight_bytes_per_gpu(model, parallel, precision) - embed
    proj = 2 * model.hidden_size * model.hidden_size / parallel.tp * WEIGHT_BYTES[precision.gemm]
    return body / (model.num_layers / parallel.pp) + proj


def kv_bytes_per_token(model: ModelSpec, parallel: ParallelConfig, precision: Precision) -> float:
    """KV bytes one token costs on one GPU (sliding-window layers excluded: their cache is
    bounded by the window, counted per sequence by :func:`sliding_kv_bytes_per_seq`)."""
    per_layer = (
        model.kv_elements_per_token_per_layer
        if model.is_mla
        else 2 * parallel.kv_heads_per_gpu(model) * model.head_dim
    )
    layers = model.num_full_attention_layers / parallel.pp
    return layers * per_layer * KV_BYTES[precision.kv_cache]


def sliding_kv_bytes_per_seq(
    model: ModelSpec, parallel: ParallelConfig, precision: Precision
) -> float:
    """KV bytes a sequence holds in sliding-window layers (bounded by the window)."""
    if not model.num_sliding_layers:
        return 0.0
    per_layer = 2 * parallel.kv_heads_per_gpu(model) * model.head_dim
    return (
        model.num_sliding_layers
        / parallel.pp
        * per_layer
        * model.sliding_window
        * KV_BYTES[precision.kv_cache]
    )


def activation_bytes(
    model: ModelSpec, parallel: ParallelConfig, max_num_batched_tokens: int, max_num_seqs: int
) -> float:
    """Peak activation of a ``max_num_batched_tokens`` forward pass on one GPU (bf16 hidden
    states, QKV, the widest FFN intermediate) plus fp32 logits of ``max_num_seqs`` rows."""
    h = model.hidden_size
    qkv = (model.num_heads + 2 * parallel.kv_heads_per_gpu(model) * parallel.tp) * model.head_dim
    qkv = qkv / parallel.tp
    if model.is_moe:
        inter = max(
            model.experts_per_token * model.moe_intermediate_size * 2 / parallel.moe_tp,
            model.intermediate_size * 2 / parallel.tp if model.num_dense_layers else 0,
        )
    else:
        inter = model.intermediate_size * 2 / parallel.tp
    per_token = (4 * h + qkv + inter) * 2.0
    logits = max_num_seqs * model.vocab_size / parallel.tp * 4.0
    return max_num_batched_tokens * per_token + logits


def memory_breakdown(
    model: ModelSpec,
    parallel: ParallelConfig,
    precision: Precision,
    *,
    capacity_bytes: float,
    gpu_memory_utilization: float = 0.9,
    max_num_batched_tokens: int = 8192,
    max_num_seqs: int = 256,
    cuda_graph_sizes: tuple[int, ...] | None = DEFAULT_CUDA_GRAPH_SIZES,
    block_size: int = 16,
    draft_layers: int = 0,
) -> MemoryBreakdown:
    """Account one GPU's memory and derive the KV-cache capacity.

    Parameters
    ----------
    model, parallel, precision
        The deployment.
    capacity_bytes : float
        GPU memory (``HardwareSpec.mem_capacity_bytes``).
    gpu_memory_utilization : float
        Fraction of memory the engine may use, in (0, 1].
    max_num_batched_tokens, max_num_seqs : int
        Scheduler limits that size activations and logits.
    cuda_graph_sizes : tuple of int or None
        Captured decode batch sizes (``None``: eager, no graph memory).
    block_size : int
        Tokens per KV block.
    draft_layers : int
        Multi-token-prediction modules loaded for speculative decoding (each adds a layer's
        weights, see :func:`draft_layer_bytes`, and a layer's KV per token).

    Returns
    -------
    MemoryBreakdown
    """
    if not 0 < gpu_memory_utilization <= 1:
        raise ValueError(f"gpu_memory_utilization must be in (0, 1], got {gpu_memory_utilization}")
    if max_num_batched_tokens < 1 or max_num_seqs < 1 or block_size < 1:
        raise ValueError("max_num_batched_tokens, max_num_seqs and block_size must be >= 1")
    budget = capacity_bytes * gpu_memory_utilization
    weights = weight_bytes_per_gpu(model, parallel, precision)
    if draft_layers < 0:
        raise ValueError(f"draft_layers must be >= 0, got {draft_layers}")
    weights += draft_layers * draft_layer_bytes(model, parallel, precision)
    act = activation_bytes(model, parallel, max_num_batched_tokens, max_num_seqs)
    graphs = CUDA_GRAPH_BYTES_PER_SIZE * len(cuda_graph_sizes) if cuda_graph_sizes else 0.0
    comm = float(NCCL_BYTES.get(parallel.tp * parallel.attention_dp, NCCL_BYTES[8]))
    reserve = float(FRAMEWORK_RESERVE_BYTES)
    kv = budget - weights - act - graphs - comm - reserve
    per_token = kv_bytes_per_token(model, parallel, precision)
    if draft_layers:
        layers = model.num_full_attention_layers / parallel.pp
        per_token *= 1 + draft_layers / layers
    sliding = sliding_kv_bytes_per_seq(model, parallel, precision)
    usable = kv - sliding * max_num_seqs
    tokens = int(usable // per_token) if usable > 0 else 0
    tokens -= tokens % block_size
    return MemoryBreakdown(
        capacity_bytes=capacity_bytes,
        budget_bytes=budget,
        weights_bytes=weights,
        activation_bytes=act,
        cuda_graph_bytes=graphs,
        comm_bytes=comm,
        reserve_bytes=reserve,
        kv_cache_bytes=kv,
        kv_bytes_per_token=per_token,
        kv_capacity_tokens=max(tokens, 0),
        block_size=block_size,
    )
