"""Op decomposition: shapes under TP/PP/EP/attention-DP, FLOP conservation, attention per sequence."""

import numpy as np
import pytest

from perfdb.ops import GemmOp, MoEOp
from simulator.batch import BatchShape
from simulator.models import Precision, load_model
from simulator.ops import attention_ops, decompose_step, token_ops
from simulator.parallel import ParallelConfig

BF16 = Precision()


def _gemm_flops(calls):
    return sum(2 * c.op.m * c.op.n * c.op.k * c.count for c in calls if isinstance(c.op, GemmOp))


@pytest.mark.parametrize("tp", [1, 2, 4, 8])
def test_dense_gemm_flops_match_active_params_per_token(tp):
    """Sum over GPUs of GEMM FLOPs = 2 x params x tokens (embedding lookup excluded)."""
    llama = load_model("meta-llama/Llama-3.1-70B")
    tokens = 256
    calls = [c for c in token_ops(llama, ParallelConfig(tp=tp), BF16, tokens, tokens)]
    per_gpu = _gemm_flops(calls)
    params_matmul = llama.total_params - llama.vocab_size * llama.hidden_size
    assert per_gpu * tp == pytest.approx(2 * params_matmul * tokens, rel=0.01)


def test_pipeline_splits_layers_and_adds_sends():
    llama = load_model("meta-llama/Llama-3.1-8B")
    one = {c.name: c for c in token_ops(llama, ParallelConfig(pp=1), BF16, 64, 1)}
    four = {c.name: c for c in token_ops(llama, ParallelConfig(pp=4), BF16, 64, 1)}
    assert four["qkv_proj"].count == one["qkv_proj"].count / 4
    assert "pp_send" in four and "pp_send" not in one


def test_tp_allreduce_only_when_sharded():
    llama = load_model("meta-llama/Llama-3.1-8B")
    names1 = {c.name for c in token_ops(llama, ParallelConfig(tp=1), BF16, 8, 8)}
    names2 = {c.name for c in token_ops(llama, ParallelConfig(tp=2), BF16, 8, 8)}
    assert "attn_allreduce" not in names1 and {"attn_allreduce", "ffn_allreduce"} <= names2


def test_moe_with_attention_dp_gathers_tokens():
    ds = load_model("deepseek-ai/DeepSeek-V3")
    par = ParallelConfig(tp=1, attention_dp=8, moe_ep=8)
    calls = {c.name: c for c in token_ops(ds, par, Precision.from_name("fp8"), 100, 100)}
    moe = calls["moe"].op
    assert isinstance(moe, MoEOp)
    assert moe.num_tokens == 800 and moe.moe_ep_size == 8 and moe.moe_tp_size == 1
    assert calls["moe"].count == 58 and calls["gate_up_proj"].count == 3
    assert "moe_allgather" in calls and "moe_reducescatter" in calls
    assert "qkv_proj" not in calls  # MLA projections live in the MLA module op


def test_attention_ops_per_prefill_and_one_decode_op():
    llama = load_model("meta-llama/Llama-3.1-8B")
    batch = BatchShape(
        prefill_new_tokens=np.array([100, 200]),
        prefill_context_tokens=np.array([0, 50]),
        decode_context_tokens=np.array([10, 30, 50]),
    )
    calls = attention_ops(llama, ParallelConfig(tp=2), BF16, batch)
    ctx = [c.op for c in calls if c.name == "context_attention"]
    gen = [c.op for c in calls if c.name == "generation_attention"]
    assert [(o.isl, o.prefix_len) for o in ctx] == [(100, 0), (200, 50)]
    assert len(gen) == 1 and gen[0].batch_size == 3 and gen[0].kv_len == 30
    assert gen[0].num_heads == 16 and gen[0].num_kv_heads == 4


def test_sliding_window_layers_get_their_own_attention_op():
    oss = load_model("openai/gpt-oss-120b")
    batch = BatchShape(decode_context_tokens=np.array([1000]))
    windows = sorted(c.op.window_size for c in attention_ops(oss, ParallelConfig(), BF16, batch))
    assert windows == [0, 128]


def test_decompose_rejects_empty_batch():
    with pytest.raises(ValueError, match="no tokens"):
        decompose_step(load_model("Qwen/Qwen3-8B"), ParallelConfig(), BF16, BatchShape())


def test_minimax_qk_norm_all_reduces_its_variances_under_tp_only():
    """MiniMax-M2 normalises q and k over all heads: under TP the ranks all-reduce two fp32
    variances per token in every layer (vLLM's MiniMaxText01RMSNormTP.forward_qk)."""
    minimax = load_model("MiniMaxAI/MiniMax-M2.5")
    assert minimax.qk_norm_across_heads
    assert not load_model("Qwen/Qwen3-32B").qk_norm_across_heads  # per-head q/k norm
    prec = Precision("fp8", "fp8_block", "fp8")

    def qk(tp):
        calls = token_ops(minimax, ParallelConfig(tp=tp), prec, 64, 64)
        return [c for c in calls if c.name == "qk_norm_allreduce"]

    assert qk(1) == []
    (call,) = qk(4)
    assert call.op.message_bytes == 64 * 2 * 4 and call.op.num_gpus == 4
    assert call.count == minimax.num_layers
