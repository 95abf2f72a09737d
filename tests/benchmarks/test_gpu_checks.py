"""The step model against the kernels and decoder steps measured on a lent H200.

The measurements are committed (``benchmarks/results/gpu_collect_h200``,
``benchmarks/results/gpu_eager_step_h200``); these tests rerun the two analysis scripts on them,
so a change to perfdb or the step model that moves its prices away from what the GPU measured
fails here, without a GPU.
"""

import importlib.util
import sys
from pathlib import Path

import pandas as pd

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"


def _load(name: str):
    if str(BENCH) not in sys.path:
        sys.path.insert(0, str(BENCH))
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_collected_h200_gemms_agree_with_the_bundled_table_and_repeat(tmp_path, capsys):
    check = _load("collector_check")
    src = BENCH / "results" / "gpu_collect_h200"
    assert check.main([str(src), "--out", str(tmp_path), "--no-results"]) == 0
    text = capsys.readouterr().out
    assert "| gemm bf16 | 225 |" in text
    df = pd.read_csv(tmp_path / "collector_check.csv")
    bf16 = df[df.op == "gemm bf16"]
    ratio = (bf16.latency_ms_graphs_seed0 / bf16.latency_ms_bundled).median()
    assert 0.9 < ratio < 1.1  # cuBLAS bf16 GEMMs: measured here vs AIConfigurator's table
    spread = (bf16.latency_ms_graphs_seed1 / bf16.latency_ms_graphs_seed0 - 1).abs().median()
    assert spread < 0.05
    fp8 = df[df.op == "gemm fp8"]
    # _scaled_mm skips the activation quantization the bundled vLLM fp8 timings include
    assert (fp8.latency_ms_graphs_seed0 / fp8.latency_ms_bundled).median() < 0.9
    assert (tmp_path / "collector_check.png").stat().st_size > 10_000


def test_step_model_gemm_sums_match_the_composed_decoder_steps(capsys):
    check = _load("eager_step_check")
    assert check.main(["--no-results"]) == 0
    text = capsys.readouterr().out
    line = next(ln for ln in text.splitlines() if ln.startswith("Composition:"))
    gemm = float(line.split("GEMM: model / step median ")[1].split(" ")[0])
    attention = float(line.split("attention: median ")[1].split(" ")[0])
    assert 0.9 < gemm < 1.1
    assert 0.7 < attention < 1.2
    # the step model keeps the additive eager term the check compared
    assert "additive (4 us)" in text


def test_collected_h200_moe_layers_bound_the_bundled_tables_from_above(tmp_path, capsys):
    """The grouped-GEMM MoE layer measured on the H200 is slower than every engine's bundled
    fused-MoE time and above the bandwidth floor; the bundled times are above the floor too."""
    check = _load("moe_check")
    src = BENCH / "results" / "gpu_moe_h200"
    assert check.main([str(src), "--out", str(tmp_path), "--no-results"]) == 0
    assert "| seed 1 / seed 0 (graphs) | 49 |" in capsys.readouterr().out
    df = pd.read_csv(tmp_path / "moe_check.csv")
    meas = df.latency_ms_moe_graphs_seed0
    assert (df.latency_ms_moe_graphs_seed1 / meas - 1).abs().median() < 0.05
    for backend in ("vllm", "sglang", "trtllm"):
        assert (meas / df[backend]).quantile(0.1) > 1.0
        assert (df[backend] / df.floor_ms).min() > 1.0
    assert (meas / df.floor_ms).min() > 1.0


def test_moe_floor_counts_the_experts_balanced_routing_reaches():
    check = _load("moe_check")
    bw = 1e12
    # one token reaches topk experts; many tokens reach all of them
    one = check.floor_ms(1, 1024, 512, 2, 8, 1, "bf16", bw)
    many = check.floor_ms(10_000, 1024, 512, 2, 8, 1, "bf16", bw)
    per_expert = 3 * 1024 * 512 * 2 / bw * 1e3
    assert abs(one - 2 * per_expert) / one < 0.01
    assert abs(many - 8 * per_expert - 10_000 * 1024 * 4 / bw * 1e3) / many < 0.01


def test_engine_step_noise_is_the_fit_of_the_gpu_step_timings(capsys):
    """The engine's default per-step CV is what step_noise_check fits on the committed H200
    step timings; the steps are stable within a block and drift little between blocks."""
    check = _load("step_noise_check")
    from simulator.engine import DEFAULT_STEP_NOISE_CV

    assert check.main(["--no-write"]) == 0
    text = capsys.readouterr().out
    fitted = float(text.split("Fit (median case CV of the `_fit` run): **")[1].split("*")[0])
    assert round(fitted, 4) == DEFAULT_STEP_NOISE_CV
    steps = pd.read_csv(BENCH / "results" / "gpu_step_noise" / "llama8b_fit.csv")
    table = check.case_table(steps)
    assert len(table) == 6 and (table.block_drift_cv < table.cv).all()


def test_step_noise_cv_reads_independent_jitter_back(tmp_path):
    """A synthetic run of lognormal step times with CV 0.02 is read back as about 0.02."""
    check = _load("step_noise_check")
    import numpy as np

    rng = np.random.default_rng(0)
    n = 3 * 2000
    wall = 10.0 * np.exp(0.02 * rng.standard_normal(n))
    steps = pd.DataFrame(
        {
            "kind": "decode",
            "size": 8,
            "mode": "graph",
            "block": np.repeat([0, 1, 2], 2000),
            "wall_ms": wall,
            "gpu_ms": wall,
        }
    )
    row = check.case_table(steps).iloc[0]
    assert abs(row.cv - 0.02) < 0.002 and abs(row.lag1) < 0.1


def test_equal_work_prefix_pricing_against_gpu_chunk_timings(capsys):
    """perfdb's equal-work pricing of a chunk over a cached prefix lands near the chunk's
    measured time (FlashAttention on the H200), where ignoring the prefix or re-prefilling the
    whole sequence misses by far."""
    check = _load("prefix_attention_check")
    assert check.main(["--no-write"]) == 0
    text = capsys.readouterr().out
    line = next(ln for ln in text.splitlines() if ln.startswith("Over all"))
    med = {
        key: float(line.split(f"{key} ")[1].split(" ")[0])
        for key in ("equal work", "prefix ignored", "whole c + p")
    }
    assert 0.9 < med["equal work"] < 1.25
    assert med["prefix ignored"] < 0.6 and med["whole c + p"] > 1.5
