"""Memory model: weights per GPU, KV bytes per token, capacity and the infeasibility message."""

import pytest

from simulator.memory import GIB, kv_bytes_per_token, memory_breakdown, weight_bytes_per_gpu
from simulator.models import Precision, load_model
from simulator.parallel import ParallelConfig

BF16 = Precision.from_name("bf16")


def test_llama8b_weights_and_kv_per_token():
    llama = load_model("meta-llama/Llama-3.1-8B")
    assert weight_bytes_per_gpu(llama, ParallelConfig(), BF16) / GIB == pytest.approx(14.96, 0.01)
    # 32 layers x 2 (K,V) x 8 heads x 128 x 2 bytes = 128 KiB
    assert kv_bytes_per_token(llama, ParallelConfig(), BF16) == 32 * 2 * 8 * 128 * 2


def test_tp_splits_weights_and_kv_heads():
    llama = load_model("meta-llama/Llama-3.1-70B")
    w1 = weight_bytes_per_gpu(llama, ParallelConfig(tp=1), BF16)
    w4 = weight_bytes_per_gpu(llama, ParallelConfig(tp=4), BF16)
    assert w4 == pytest.approx(w1 / 4, rel=1e-9)
    # 8 KV heads: tp=16 replicates them (one per GPU), it cannot go below one
    kv8 = kv_bytes_per_token(llama, ParallelConfig(tp=8), BF16)
    assert kv_bytes_per_token(llama, ParallelConfig(tp=16), BF16) == kv8


def test_mla_kv_is_latent_and_not_split_by_tp():
    ds = load_model("deepseek-ai/DeepSeek-V3")
    fp8 = Precision.from_name("fp8")
    per_tok = kv_bytes_per_token(ds, ParallelConfig(tp=8), fp8)
    assert per_tok == 61 * 576 * 1
    assert kv_bytes_per_token(ds, ParallelConfig(tp=1), fp8) == per_tok


def test_capacity_shrinks_with_batched_tokens_and_grows_with_fraction():
    llama = load_model("meta-llama/Llama-3.1-8B")
    kw = dict(capacity_bytes=80 * GIB)
    a = memory_breakdown(llama, ParallelConfig(), BF16, max_num_batched_tokens=2048, **kw)
    b = memory_breakdown(llama, ParallelConfig(), BF16, max_num_batched_tokens=32768, **kw)
    c = memory_breakdown(
        llama,
        ParallelConfig(),
        BF16,
        max_num_batched_tokens=2048,
        gpu_memory_utilization=0.95,
        **kw,
    )
    assert a.kv_capacity_tokens > b.kv_capacity_tokens
    assert c.kv_capacity_tokens > a.kv_capacity_tokens
    assert a.kv_capacity_tokens % a.block_size == 0
    eager = memory_breakdown(llama, ParallelConfig(), BF16, cuda_graph_sizes=None, **kw)
    graphs = memory_breakdown(llama, ParallelConfig(), BF16, **kw)
    assert eager.cuda_graph_bytes == 0 < graphs.cuda_graph_bytes
    # capacity ≈ 54 GiB of 128 KiB tokens on an 80 GiB H100 at 0.9
    assert 400_000 < graphs.kv_capacity_tokens < 470_000


def test_infeasible_config_names_the_reason():
    llama = load_model("meta-llama/Llama-3.1-70B")
    b = memory_breakdown(llama, ParallelConfig(tp=1), BF16, capacity_bytes=80 * GIB)
    assert not b.feasible
    assert "does not fit in GPU memory: weights 131.4 GiB" in b.reason()
    with pytest.raises(ValueError, match="gpu_memory_utilization"):
        memory_breakdown(llama, ParallelConfig(), BF16, capacity_bytes=1, gpu_memory_utilization=0)
