"""Model parsing: bundled configs, local paths, parameter counts against published sizes."""

import json

import pytest

from simulator import ParallelConfig, Precision, enumerate_parallel, list_models, load_model

# published total parameter counts (billions), from the model cards
PUBLISHED_B = {
    "meta-llama/Llama-3.1-8B": 8.0,
    "meta-llama/Llama-3.1-70B": 70.6,
    "meta-llama/Llama-3.1-405B": 405.9,
    "Qwen/Qwen3-32B": 32.8,
    "Qwen/Qwen3-30B-A3B": 30.5,
    "Qwen/Qwen3-235B-A22B": 235.1,
    "mistralai/Mixtral-8x7B-v0.1": 46.7,
    "deepseek-ai/DeepSeek-V3": 671.0,
    "openai/gpt-oss-120b": 116.8,
}


@pytest.mark.parametrize(("name", "billions"), sorted(PUBLISHED_B.items()))
def test_total_params_match_model_cards(name, billions):
    assert load_model(name).total_params / 1e9 == pytest.approx(billions, rel=0.01)


def test_active_params_of_moe_models():
    assert load_model("Qwen/Qwen3-30B-A3B").active_params / 1e9 == pytest.approx(3.3, rel=0.05)
    assert load_model("deepseek-ai/DeepSeek-R1").active_params / 1e9 == pytest.approx(37, rel=0.03)


def test_every_bundled_config_parses():
    names = list_models()
    assert len(names) >= 14
    for name in names:
        spec = load_model(name)
        assert spec.total_params > spec.active_params * 0.99


def test_architecture_families():
    ds = load_model("deepseek-ai/DeepSeek-R1")
    assert ds.is_mla and ds.is_moe and ds.num_dense_layers == 3
    assert ds.kv_elements_per_token_per_layer == 512 + 64
    oss = load_model("openai/gpt-oss-120b")
    assert oss.num_sliding_layers == 18 and oss.sliding_window == 128
    assert not load_model("Qwen/Qwen3-8B").is_moe
    assert load_model("moonshotai/Kimi-K2.5").num_experts == 384  # text_config of a VL wrapper


def test_name_variants_resolve_to_bundled_files():
    a = load_model("nvidia/Llama-3.1-8B-Instruct-FP8")
    b = load_model("meta-llama/Meta-Llama-3.1-8B")
    assert a.num_layers == b.num_layers == 32
    assert load_model("Qwen/Qwen3-235B-A22B-FP8").num_experts == 128


def test_local_path_mistral(tmp_path):
    cfg = {
        "architectures": ["MistralForCausalLM"],
        "hidden_size": 4096,
        "intermediate_size": 14336,
        "num_hidden_layers": 32,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "vocab_size": 32000,
        "sliding_window": 4096,
    }
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    spec = load_model(str(tmp_path))
    assert spec.architecture == "MistralForCausalLM"
    assert spec.num_sliding_layers == 32 and spec.sliding_window == 4096
    assert spec.total_params / 1e9 == pytest.approx(7.24, rel=0.01)


def test_unknown_model_and_architecture_messages(tmp_path):
    with pytest.raises(ValueError, match="unknown model 'nobody/none'"):
        load_model("nobody/none")
    (tmp_path / "config.json").write_text(json.dumps({"architectures": ["BertModel"]}))
    with pytest.raises(ValueError, match="architecture 'BertModel' is not supported"):
        load_model(str(tmp_path / "config.json"))
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_model(str(tmp_path / "bad.json"))


def test_precision_names():
    assert Precision.from_name("fp8").kv_cache == "fp8"
    assert Precision.from_name("nvfp4").gemm == "fp4"
    with pytest.raises(ValueError, match="unknown precision 'fp3'"):
        Precision.from_name("fp3")


def test_parallel_constraints_name_the_offender():
    llama = load_model("meta-llama/Llama-3.1-8B")
    with pytest.raises(ValueError, match="tp=3 does not divide num_attention_heads=32"):
        ParallelConfig(tp=3).validate(llama)
    with pytest.raises(ValueError, match="moe_tp\\*moe_ep must equal"):
        ParallelConfig(tp=2, moe_tp=4, moe_ep=4)
    ds = load_model("deepseek-ai/DeepSeek-V3")
    with pytest.raises(ValueError, match="moe_ep=3 does not divide num_experts=256"):
        ParallelConfig(tp=1, attention_dp=3, moe_ep=3).validate(ds)
    cfg = ParallelConfig(tp=2, attention_dp=4, moe_ep=8)
    assert cfg.moe_tp == 1 and cfg.num_gpus == 8


def test_enumerate_parallel_respects_gpu_count():
    qwen = load_model("Qwen/Qwen3-30B-A3B")
    layouts = enumerate_parallel(qwen, 8)
    assert layouts and all(p.num_gpus <= 8 for p in layouts)
    assert any(p.attention_dp > 1 for p in layouts)
    assert all(p.attention_dp == 1 for p in enumerate_parallel(load_model("Qwen/Qwen3-8B"), 8))


def test_precision_follows_the_checkpoint():
    from simulator import precision_for
    from simulator.models import vllm_env

    oss = load_model("openai/gpt-oss-120b")
    assert oss.weight_dtype == "mxfp4"
    assert precision_for(oss, "bf16", sm_version=90).moe == "mxfp4"
    assert precision_for(oss, "bf16", sm_version=100).moe == "mxfp4_mxfp8"
    # vLLM runs those kernels only when told to: the launch carries the switch
    assert vllm_env(oss, sm_version=100) == {"VLLM_USE_FLASHINFER_MOE_MXFP4_MXFP8": "1"}
    assert vllm_env(oss, sm_version=90) == {}
    ds = load_model("deepseek-ai/DeepSeek-R1")
    assert precision_for(ds, "fp8").moe == "fp8_block" and precision_for(ds, "fp8").gemm == "fp8"
    dense = load_model("Qwen/Qwen3-32B-FP8")
    assert precision_for(dense, "fp8") == Precision.from_name("fp8")
