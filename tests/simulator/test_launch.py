"""Launch rendering: flags reflect the config; vLLM's own parser accepts them when available."""

import os
import shlex

import pytest
import yaml

from simulator import (
    BatchingConfig,
    LaunchConfig,
    ParallelConfig,
    check_vllm_args,
    render_all,
    sglang_args,
    vllm_args,
)
from simulator.launch import trtllm_options, vllm_available

DENSE = LaunchConfig(
    "Qwen/Qwen3-32B",
    ParallelConfig(tp=4),
    BatchingConfig(max_num_seqs=128, max_num_batched_tokens=4096, gpu_memory_utilization=0.85),
    dtype="fp8",
    kv_cache_dtype="fp8",
)
WIDE_EP = LaunchConfig(
    "deepseek-ai/DeepSeek-R1",
    ParallelConfig(tp=1, attention_dp=8, moe_ep=8),
    BatchingConfig(max_num_seqs=64, cuda_graphs=False, chunked_prefill=False),
    dtype="fp8",
)


def _flag(args, name):
    return args[args.index(name) + 1]


def test_vllm_flags():
    args = vllm_args(DENSE)
    assert args[0] == "Qwen/Qwen3-32B"
    assert _flag(args, "--tensor-parallel-size") == "4"
    assert _flag(args, "--max-num-seqs") == "128"
    assert _flag(args, "--max-num-batched-tokens") == "4096"
    assert _flag(args, "--kv-cache-dtype") == "fp8"
    assert "--enforce-eager" not in args and "--enable-chunked-prefill" in args
    wide = vllm_args(WIDE_EP)
    assert _flag(wide, "--data-parallel-size") == "8" and "--enable-expert-parallel" in wide
    assert "--enforce-eager" in wide and "--no-enable-chunked-prefill" in wide


def test_the_scheduler_mode_the_model_priced_is_the_one_launched():
    sync = LaunchConfig(
        "Qwen/Qwen3-32B", ParallelConfig(tp=2), BatchingConfig(async_scheduling=False)
    )
    assert "--async-scheduling" in vllm_args(DENSE)
    assert "--no-async-scheduling" in vllm_args(sync)
    # vLLM cannot schedule asynchronously under pipeline parallelism
    staged = LaunchConfig("Qwen/Qwen3-32B", ParallelConfig(tp=2, pp=2), BatchingConfig())
    assert not {"--async-scheduling", "--no-async-scheduling"} & set(vllm_args(staged))
    assert "--disable-overlap-schedule" in sglang_args(sync)
    assert "--disable-overlap-schedule" not in sglang_args(DENSE)
    assert trtllm_options(sync)["disable_overlap_scheduler"] is True
    assert trtllm_options(DENSE)["disable_overlap_scheduler"] is False
    polled = LaunchConfig(
        "Qwen/Qwen3-32B", ParallelConfig(tp=2), BatchingConfig(scheduler_recv_interval=30)
    )
    assert _flag(sglang_args(polled), "--scheduler-recv-interval") == "30"
    assert "--scheduler-recv-interval" not in sglang_args(DENSE)


def test_mtp_speculative_decoding_is_rendered_for_every_engine():
    import json

    mtp = LaunchConfig(
        "deepseek-ai/DeepSeek-R1", ParallelConfig(tp=8), BatchingConfig(speculative_tokens=3)
    )
    spec = json.loads(_flag(vllm_args(mtp), "--speculative-config"))
    assert spec == {"method": "mtp", "num_speculative_tokens": 3}
    sg = sglang_args(mtp)
    assert _flag(sg, "--speculative-algorithm") == "EAGLE"
    assert _flag(sg, "--speculative-num-steps") == "3"
    assert _flag(sg, "--speculative-num-draft-tokens") == "4"
    assert trtllm_options(mtp)["speculative_config"] == {
        "decoding_type": "MTP",
        "num_nextn_predict_layers": 3,
    }
    # TensorRT-LLM's batching delays go to its options only
    delays = LaunchConfig(
        "deepseek-ai/DeepSeek-R1",
        ParallelConfig(tp=1, attention_dp=8, moe_ep=8),
        BatchingConfig(
            batch_wait_iters=20, batch_wait_tokens_ratio=0.9, attention_dp_balance_iters=60
        ),
    )
    opts = trtllm_options(delays)
    assert opts["batch_wait_timeout_iters"] == 20 and opts["batch_wait_max_tokens_ratio"] == 0.9
    assert opts["attention_dp_config"]["timeout_iters"] == 60
    assert "batch_wait_timeout_iters" not in trtllm_options(DENSE)
    # off by default: no flag at all
    assert "--speculative-config" not in vllm_args(DENSE)
    assert "--speculative-algorithm" not in sglang_args(DENSE)
    assert "speculative_config" not in trtllm_options(DENSE)


def test_sglang_counts_all_gpus_in_tp():
    args = sglang_args(WIDE_EP)
    assert _flag(args, "--tp-size") == "8" and _flag(args, "--dp-size") == "8"
    assert "--enable-dp-attention" in args and "--disable-cuda-graph" in args
    assert _flag(args, "--chunked-prefill-size") == "-1"


def test_trtllm_yaml_round_trips():
    opts = yaml.safe_load(render_all(WIDE_EP)["trtllm_yaml"])
    assert opts == trtllm_options(WIDE_EP)
    assert opts["enable_attention_dp"] is True and opts["moe_expert_parallel_size"] == 8
    assert opts["cuda_graph_config"] is None
    dense = trtllm_options(DENSE)
    assert dense["kv_cache_config"]["dtype"] == "fp8"
    assert dense["cuda_graph_config"]["max_batch_size"] == 512


def test_commands_are_shell_safe():
    cmds = render_all(DENSE)
    assert shlex.split(cmds["vllm"])[:3] == ["vllm", "serve", "Qwen/Qwen3-32B"]
    assert cmds["sglang"].startswith("python -m sglang.launch_server --model-path")


def test_vllm_command_carries_the_environment_the_model_priced():
    from dataclasses import replace

    from simulator.models import load_model, vllm_env

    env = vllm_env(load_model("openai/gpt-oss-120b"), sm_version=100)
    words = shlex.split(render_all(replace(DENSE, vllm_env=env))["vllm"])
    assert words[:3] == ["VLLM_USE_FLASHINFER_MOE_MXFP4_MXFP8=1", "vllm", "serve"]
    assert render_all(DENSE)["vllm"].startswith("vllm serve ")


def test_bad_launch_config():
    with pytest.raises(ValueError, match="kv_cache_dtype"):
        LaunchConfig("m", ParallelConfig(), BatchingConfig(), kv_cache_dtype="int2")


VLLM_PYTHON = os.environ.get("VLLM_PYTHON")


@pytest.mark.heavy
@pytest.mark.skipif(
    not (vllm_available() or (VLLM_PYTHON and os.path.exists(VLLM_PYTHON))),
    reason="vLLM not importable (set VLLM_PYTHON to an interpreter that has it)",
)
def test_vllm_parser_accepts_rendered_args():
    parsed = check_vllm_args(vllm_args(DENSE), python=VLLM_PYTHON)
    assert parsed["tensor_parallel_size"] == 4 and parsed["max_num_seqs"] == 128
    assert parsed["max_num_batched_tokens"] == 4096
    wide = check_vllm_args(vllm_args(WIDE_EP), python=VLLM_PYTHON)
    assert wide["enforce_eager"] is True and wide["max_num_seqs"] == 64
    with pytest.raises(ValueError, match="vLLM rejected"):
        check_vllm_args([*vllm_args(DENSE), "--no-such-flag"], python=VLLM_PYTHON)
