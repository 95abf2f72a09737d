"""The fidelity benchmark's per-row pricing choices (benchmarks/fidelity.py)."""

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCH))
import fidelity  # noqa: E402

INFERENCEX = "source_file=2026-03-25.csv; model=X; silicon_concurrency=8"
GAP = "source_file=/x/aic-auto-gap-analysis/data/h100_sxm/trtllm/1.0.0rc3/L.csv; silicon_concurrency=8"


def row(source, backend="trtllm"):
    return pd.Series(
        {
            "id": "r",
            "silicon_data_source": source,
            "backend": backend,
            "backend_version": "1.0.0rc3",
            "model_path": "meta-llama/Llama-3.1-8B-Instruct",
            "system": "h100_sxm",
            "precision": "fp8",
            "mode": "agg",
            "gemm_quant_mode": "fp8",
            "moe_quant_mode": "fp8",
            "isl": 1024,
            "osl": 256,
            "concurrency": 8,
            "batch_size": 8.0,
            "tp_size": 2.0,
            "pp_size": 1.0,
            "attention_dp_size": 1.0,
            "moe_tp_size": np.nan,
            "moe_ep_size": np.nan,
        }
    )


def test_the_fixed_ttft_is_the_sources_and_nothing_else_moves():
    base = fidelity.Predictor(
        dict(fidelity.DEFAULT_OVERHEAD), fidelity.DEFAULT_QUEUE, other_ttft_ms={"trtllm": 0.0}
    )
    shifted = fidelity.Predictor(
        dict(fidelity.DEFAULT_OVERHEAD), fidelity.DEFAULT_QUEUE, other_ttft_ms={"trtllm": 70.0}
    )
    # a row of another source gets the other source's fixed TTFT: only TTFT moves, by it
    t0, p0 = base.predict(row(GAP))
    t1, p1 = shifted.predict(row(GAP))
    assert t1 - t0 == pytest.approx(70.0) and p1 == p0
    # an InferenceX row keeps the code's constant whatever the other sources get
    # (its lengths differ: InferenceX's client draws them from [0.8 L, L])
    assert base.predict(row(INFERENCEX)) == shifted.predict(row(INFERENCEX))


def test_duplicated_measurements_share_a_key():
    p = pd.DataFrame(
        {"silicon_ttft_ms": [100.123456789, 100.123456789, 100.2], "silicon_tpot_ms": [9.5] * 3}
    )
    key = fidelity._measurement_key(p)
    assert key[0] == key[1] != key[2]
