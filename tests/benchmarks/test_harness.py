"""What the fidelity benchmarks assume each silicon_dev.csv row ran (benchmarks/harness.py)."""

import importlib.util
from pathlib import Path

import pandas as pd
import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "harness.py"
spec = importlib.util.spec_from_file_location("harness", SCRIPT)
harness = importlib.util.module_from_spec(spec)
spec.loader.exec_module(harness)

INFERENCEX = "source_file=2026-03-25.csv; model=DeepSeek-R1; silicon_concurrency=16"
DB_DUMP = (
    "db-dump/2026-04-27; config_id=733; silicon_concurrency=128; "
    "measured=2026-04-17T00:00:00.000Z; workflow_run_id=758; vllm/vllm-openai:v0.19.0-cu130"
)
GAP = "source_file=/x/aic-auto-gap-analysis/data/h200_sxm/vllm/0.12.0/Q.csv; silicon_concurrency=4"


def row(source, backend="vllm", version="0.19.0", isl=1024, osl=8192):
    return pd.Series(
        {
            "silicon_data_source": source,
            "backend": backend,
            "backend_version": version,
            "isl": isl,
            "osl": osl,
        }
    )


def test_inferencex_rows_get_the_clients_length_range_others_the_nominal_lengths():
    r = row(INFERENCEX)
    assert harness.is_inferencex(r)
    assert harness.length_range(r, "isl") == (819, 1024)
    assert harness.length_range(r, "osl") == (6553, 8192)
    mean, p90 = harness.mean_and_p90(r, "isl")
    assert mean == pytest.approx(921.5) and p90 == pytest.approx(819 + 0.9 * 205)
    assert harness.is_inferencex(row(DB_DUMP))
    g = row(GAP, isl=1000, osl=100)
    assert not harness.is_inferencex(g)
    assert harness.mean_and_p90(g, "osl") == (100.0, 100.0)


@pytest.mark.parametrize(
    "backend, version, expected",
    [
        ("vllm", "0.12.0", False),
        ("vllm", "0.11.2", False),
        ("vllm", "0.14.0", True),
        ("vllm", "0.19.0", True),
        ("vllm", "nightly-5b8c30d62b754b57", True),
        ("vllm", float("nan"), True),
        ("sglang", "0.5.6.post2", True),
        ("trtllm", "1.0.0rc3", True),
    ],
)
def test_async_scheduling_follows_each_engines_default(backend, version, expected):
    assert harness.async_scheduling(row(GAP, backend, version)) is expected


def test_recipe_knobs_follow_the_documented_recipes():
    def dsr1(system, concurrency):
        return pd.Series(
            {
                "silicon_data_source": INFERENCEX,
                "backend": "sglang",
                "mode": "agg",
                "system": system,
                "model_path": "deepseek-ai/DeepSeek-R1",
                "attention_dp_size": 1.0,
                "gemm_quant_mode": "nvfp4",
                "tp_size": 8.0,
                "concurrency": concurrency,
            }
        )

    assert harness.scheduler_recv_interval(dsr1("b200_sxm", 64)) == 30
    assert harness.scheduler_recv_interval(dsr1("b200_sxm", 8)) == 10
    assert harness.scheduler_recv_interval(dsr1("h200_sxm", 64)) == 1
    minimax = {**row(INFERENCEX, isl=1024).to_dict(), "model_path": "MiniMaxAI/MiniMax-M2.5"}
    assert harness.max_num_batched_tokens(pd.Series({**minimax, "system": "b200_sxm"})) == 2048
    assert harness.max_num_batched_tokens(pd.Series({**minimax, "system": "h200_sxm"})) == 8192
    kimi = {**minimax, "system": "b200_sxm", "model_path": "moonshotai/Kimi-K2.5"}
    assert harness.max_num_batched_tokens(pd.Series({**kimi, "gemm_quant_mode": "nvfp4"})) == 2048
    assert harness.max_num_batched_tokens(pd.Series({**kimi, "gemm_quant_mode": "int4_wo"})) == 8192


def test_b200_tensorrt_llm_deepseek_rows_on_the_mtp_image_ran_mtp():
    def trt(version, model="deepseek-ai/DeepSeek-R1", system="b200_sxm", dp=1.0, src=INFERENCEX):
        r = row(src, backend="trtllm", version=version)
        r["mode"], r["system"], r["model_path"], r["attention_dp_size"] = "agg", system, model, dp
        return r

    # InferenceX's dsr1-*-b200-trt-mtp configs: 1.2.0rc6.post3, MTP 3 (1 with attention DP)
    assert harness.speculative_tokens(trt("1.2.0rc6.post3")) == 3
    assert harness.speculative_tokens(trt("1.2.0rc6.post3", dp=8.0)) == 1
    # its non-MTP configs run .post2; H200 shares one image between both (undecidable)
    assert harness.speculative_tokens(trt("1.2.0rc6.post2")) == 0
    assert harness.speculative_tokens(trt("1.1.0rc2.post2", system="h200_sxm")) == 0
    assert harness.speculative_tokens(trt("1.2.0rc6.post3", model="openai/gpt-oss-120b")) == 0
    assert harness.speculative_tokens(trt("1.2.0rc6.post3", src=GAP)) == 0


def test_tensorrt_llm_batching_delays_follow_the_recipes():
    def trt(model, isl=1024, osl=1024, tp=2, dp=1.0, conc=64, version="1.2.0rc6.post2", **kw):
        r = row(INFERENCEX, backend="trtllm", version=version, isl=isl, osl=osl)
        r["mode"], r["model_path"], r["tp_size"], r["attention_dp_size"] = "agg", model, tp, dp
        r["concurrency"], r["system"], r["precision"] = conc, "b200_sxm", "fp8"
        for k, v in kw.items():
            r[k] = v
        return r

    llama = "meta-llama/Llama-3.1-70B"
    assert harness.batch_wait(trt(llama)) == (20, 0.9)
    assert harness.batch_wait(trt(llama, tp=8)) == (0, 0.0)
    assert harness.batch_wait(trt(llama, osl=8192)) == (0, 0.0)
    assert harness.max_num_batched_tokens(trt(llama)) == 16384
    assert harness.max_num_batched_tokens(trt(llama, precision="fp4")) == 2048
    assert harness.max_num_batched_tokens(trt(llama, osl=8192, system="h200_sxm")) == 9216
    r1 = "deepseek-ai/DeepSeek-R1"
    assert harness.batch_wait(trt(r1, tp=8)) == (40, 0.8)
    assert harness.batch_wait(trt(r1, tp=8, conc=32)) == (0, 0.0)
    assert harness.batch_wait(trt(r1, tp=8, version="1.2.0rc6.post3")) == (0, 0.0)
    assert harness.attention_dp_balance(trt(r1, tp=1, dp=8.0)) == 60
    assert harness.attention_dp_balance(trt("openai/gpt-oss-120b", tp=1, dp=4.0)) == 50
    assert harness.attention_dp_balance(trt(r1, tp=8)) == 0
