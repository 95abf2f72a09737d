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
