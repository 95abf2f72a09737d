"""AnalyticalStepModel: the StepCostModel contract, interpolation against exact pricing, errors."""

import numpy as np
import pytest

from simulator import AnalyticalStepModel, EngineOverhead
from simulator.batch import BatchShape, StepCostModel


@pytest.fixture(scope="module")
def llama():
    return AnalyticalStepModel.from_names(model="meta-llama/Llama-3.1-8B", system="h100_sxm")


def _decode(n, kv, graph=None):
    return BatchShape(decode_context_tokens=np.full(n, kv, dtype=np.int64), cuda_graph_batch=graph)


def test_implements_the_engine_contract(llama):
    assert isinstance(llama, StepCostModel)
    ms = llama.step_time_ms(_decode(16, 512, graph=16))
    assert np.isfinite(ms) and ms > 0


def test_llama8b_h100_decode_in_published_range(llama):
    # vLLM on one H100 (bf16): ~6-9 ms per decode step at batch 1-32 with short contexts
    assert 5.0 < llama.step_time_ms(_decode(1, 128, graph=1)) < 9.0
    assert 6.0 < llama.step_time_ms(_decode(32, 1024, graph=32)) < 12.0


@pytest.mark.parametrize(("n", "kv"), [(1, 100), (7, 1000), (37, 3000), (100, 777), (250, 5000)])
def test_interpolated_step_matches_exact_op_pricing(llama, n, kv):
    batch = _decode(n, kv, graph=n)
    exact = sum(llama.breakdown_ms(batch).values())
    fast = llama.stage_time_ms(batch)
    assert fast == pytest.approx(exact, rel=0.05)


def test_mixed_step_matches_exact(llama):
    batch = BatchShape(
        prefill_new_tokens=np.array([1500, 300]),
        prefill_context_tokens=np.array([0, 900]),
        decode_context_tokens=np.arange(100, 3100, 100),
    )
    exact = sum(llama.breakdown_ms(batch).values())
    assert llama.stage_time_ms(batch) == pytest.approx(exact, rel=0.08)


def test_monotone_in_batch_kv_and_prefill(llama):
    small, big = _decode(8, 1000, 8), _decode(64, 1000, 64)
    assert llama.step_time_ms(big) > llama.step_time_ms(small)
    assert llama.step_time_ms(_decode(32, 8000, 32)) > llama.step_time_ms(_decode(32, 500, 32))
    prefill = BatchShape(prefill_new_tokens=np.array([4096]), prefill_context_tokens=np.array([0]))
    assert llama.step_time_ms(prefill) > 3 * llama.step_time_ms(_decode(32, 1000, 32))


def test_cuda_graphs_pad_but_avoid_launch_gaps(llama):
    eager = llama.step_time_ms(_decode(30, 1000, graph=None))
    graphed = llama.step_time_ms(_decode(30, 1000, graph=32))
    launch_ms = llama._kernels_per_step * llama.overhead.eager_kernel_us / 1e3
    assert eager - graphed == pytest.approx(launch_ms, rel=0.2)
    # padding to 32 costs at least the 30-sequence work
    assert llama.stage_time_ms(_decode(30, 1000, graph=32)) >= llama.stage_time_ms(
        _decode(30, 1000)
    )


def test_overhead_and_scale_apply(llama):
    tuned = llama.with_overhead(EngineOverhead(step_ms=2.0, kernel_scale=0.5))
    batch = _decode(16, 1000, graph=16)
    assert tuned.step_time_ms(batch) == pytest.approx(0.5 * llama.stage_time_ms(batch) + 2.0)


def test_tensor_parallel_is_faster_per_step():
    tp1 = AnalyticalStepModel.from_names(model="meta-llama/Llama-3.1-70B", system="h200_sxm", tp=4)
    tp2 = AnalyticalStepModel.from_names(model="meta-llama/Llama-3.1-70B", system="h200_sxm", tp=8)
    batch = _decode(32, 2000, graph=32)
    assert tp2.step_time_ms(batch) < tp1.step_time_ms(batch)


def test_moe_and_mla_models_price():
    ds = AnalyticalStepModel.from_names(
        model="deepseek-ai/DeepSeek-R1", system="h200_sxm", tp=1, attention_dp=8, ep=8, dtype="fp8"
    )
    ms = ds.step_time_ms(_decode(32, 2000, graph=32))
    assert 10 < ms < 200
    assert "mla_generation" in ds.breakdown_ms(_decode(4, 100))


def test_memory_info_for_the_engine(llama):
    mem = llama.memory(0.9, max_num_batched_tokens=8192, max_num_seqs=256)
    assert mem.kv_capacity_blocks == mem.kv_capacity_tokens // 16 > 10_000
    assert llama.memory(0.5).kv_capacity_tokens < mem.kv_capacity_tokens


def test_bad_input_names_the_constraint():
    with pytest.raises(ValueError, match="tp=3 does not divide num_attention_heads=32"):
        AnalyticalStepModel.from_names(model="meta-llama/Llama-3.1-8B", system="h100_sxm", tp=3)
    with pytest.raises(ValueError, match="fp4 precision needs a Blackwell GPU"):
        AnalyticalStepModel.from_names(model="Qwen/Qwen3-8B", system="h100_sxm", dtype="fp4")
    with pytest.raises(ValueError, match="unknown backend 'tgi'"):
        AnalyticalStepModel.from_names(model="Qwen/Qwen3-8B", system="h100_sxm", backend="tgi")
    with pytest.raises(ValueError, match="h900"):
        AnalyticalStepModel.from_names(model="Qwen/Qwen3-8B", system="h900")
    with pytest.raises(ValueError, match="exceeds the 8 GPUs"):
        AnalyticalStepModel.from_names(
            model="deepseek-ai/DeepSeek-V3", system="h200_sxm", tp=8, attention_dp=2, ep=16
        )
    with pytest.raises(ValueError, match="at least one token"):
        AnalyticalStepModel.from_names(model="Qwen/Qwen3-8B", system="h100_sxm").step_time_ms(
            BatchShape()
        )


def test_vllm_fp8_gemms_drop_the_fused_input_quantization():
    import perfdb
    from perfdb import GemmOp
    from simulator.ops import OpCall
    from simulator.step_time import FUSED_INPUT_QUANT

    kernel = FUSED_INPUT_QUANT
    db = perfdb.load_system("h200_sxm", backend="vllm")
    vllm = AnalyticalStepModel.from_names("meta-llama/Llama-3.1-70B", "h200_sxm", dtype="fp8")
    sglang = AnalyticalStepModel.from_names(
        "meta-llama/Llama-3.1-70B", "h200_sxm", dtype="fp8", backend="sglang"
    )
    bw = vllm.spec.mem_bw_bytes_s
    for m in (1, 64, 2048, 8192):
        op = GemmOp(m, 8192, 8192, "fp8")
        table = db.latency(op)[0]
        expected = max(table - kernel.ms(m, 8192, bw), table / 2)
        for role in ("qkv_proj", "o_proj", "gate_up_proj", "down_proj"):
            assert vllm._call_ms(OpCall(role, op, 1)) == pytest.approx(expected)
        assert expected < table  # the kernel always costs something
    # the bf16 GEMMs and the other backends' fp8 tables are priced as measured
    bf16 = GemmOp(64, 8192, 8192, "bf16")
    assert vllm._call_ms(OpCall("qkv_proj", bf16, 1)) == pytest.approx(db.latency(bf16)[0])
    sg = perfdb.load_system("h200_sxm", backend="sglang")
    op = GemmOp(64, 8192, 8192, "fp8")
    assert sglang._call_ms(OpCall("qkv_proj", op, 1)) == pytest.approx(sg.latency(op)[0])
    # a launch plus a memory-bound pass: ~2 us at one token, far more at 8192
    assert kernel.ms(1, 8192, bw) == pytest.approx(kernel.launch_us / 1e3, rel=0.01)
    assert kernel.ms(8192, 8192, bw) > 50 * kernel.ms(1, 8192, bw)


def test_tensorrt_llm_fuses_the_input_quantization_where_its_decoder_layers_do():
    from perfdb import GemmOp
    from simulator.ops import OpCall
    from simulator.step_time import fused_quant_roles

    def roles(model, **layout):
        step = AnalyticalStepModel.from_names(
            model, "h200_sxm", dtype="fp8", backend="trtllm", **layout
        )
        return fused_quant_roles("trtllm", step.model, step.parallel)

    # the attention kernel writes o_proj's fp8 input for every model
    assert roles("Qwen/Qwen3-32B", tp=2) == {"o_proj"}
    # LlamaDecoderLayer fuses all-reduce + norm + quant before qkv and gate_up, only under TP
    # and above hidden size 4096
    assert roles("meta-llama/Llama-3.1-70B", tp=4) == {"o_proj", "qkv_proj", "gate_up_proj"}
    assert roles("meta-llama/Llama-3.1-70B", tp=1) == {"o_proj"}
    assert roles("meta-llama/Llama-3.1-8B", tp=2) == {"o_proj"}
    trt = AnalyticalStepModel.from_names(
        "meta-llama/Llama-3.1-70B", "h200_sxm", dtype="fp8", backend="trtllm", tp=4
    )
    op = GemmOp(8, 8192, 8192, "fp8")
    assert trt._call_ms(OpCall("gate_up_proj", op, 1)) < trt._call_ms(OpCall("down_proj", op, 1))
    # the table's dynamic quantization (no input scale in the collector) becomes the static one
    # a ModelOpt fp8 checkpoint's input scale gives, or nothing where the role fuses it
    from simulator.step_time import FUSED_INPUT_QUANT, TRTLLM_DYNAMIC_INPUT_QUANT

    bw = trt.spec.mem_bw_bytes_s
    raw = trt._price(op)
    assert trt._call_ms(OpCall("down_proj", op, 1)) == pytest.approx(
        raw - TRTLLM_DYNAMIC_INPUT_QUANT.ms(8, 8192, bw) + FUSED_INPUT_QUANT.ms(8, 8192, bw)
    )
    assert trt._call_ms(OpCall("gate_up_proj", op, 1)) == pytest.approx(
        max(raw - TRTLLM_DYNAMIC_INPUT_QUANT.ms(8, 8192, bw), raw / 2)
    )
    assert trt._call_ms(OpCall("down_proj", op, 1)) < raw
    # a block-fp8 checkpoint (DeepSeek) quantizes dynamically when served too: no change
    ds = AnalyticalStepModel.from_names(
        "deepseek-ai/DeepSeek-R1", "h200_sxm", dtype="fp8", backend="trtllm", tp=8
    )
    assert ds._call_ms(OpCall("down_proj", op, 1)) == pytest.approx(ds._price(op))


def test_prefill_step_scale_multiplies_only_the_prefill_part_of_a_step(llama):
    scaled = llama.with_overhead(EngineOverhead(prefill_step_scale=1.25))
    base = llama.with_overhead(EngineOverhead())
    decodes = BatchShape(decode_context_tokens=np.full(16, 900, dtype=np.int64))
    mixed = BatchShape(
        prefill_new_tokens=np.array([700], dtype=np.int64),
        prefill_context_tokens=np.array([300], dtype=np.int64),
        decode_context_tokens=np.full(16, 900, dtype=np.int64),
    )
    prompt = BatchShape(
        prefill_new_tokens=np.array([2048], dtype=np.int64),
        prefill_context_tokens=np.array([0], dtype=np.int64),
    )
    assert scaled.step_time_ms(decodes) == pytest.approx(base.step_time_ms(decodes))
    # kernels of the prompt scaled; launch gaps and step overhead not
    grown = base.step_time_ms(prompt) + 0.25 * base.stage_time_ms(prompt)
    assert scaled.step_time_ms(prompt) == pytest.approx(grown, rel=1e-9)
    dec, both = base.stage_time_ms(decodes), base.stage_time_ms(mixed)
    expected = base.step_time_ms(mixed) + 0.25 * (both - dec)
    assert scaled.step_time_ms(mixed) == pytest.approx(expected, rel=1e-9)
    # the analytical estimates' fast path does not use it
    assert scaled.mixed_step_ms(700, 300, 16, 900) == pytest.approx(
        base.mixed_step_ms(700, 300, 16, 900)
    )
    with pytest.raises(ValueError, match="prefill_step_scale"):
        EngineOverhead(prefill_step_scale=0.0)
