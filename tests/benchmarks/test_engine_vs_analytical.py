"""``benchmarks/engine_vs_analytical.py``: the shared and own TTFT errors of the two models."""

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"


def _load():
    if str(BENCH) not in sys.path:
        sys.path.insert(0, str(BENCH))
    spec = importlib.util.spec_from_file_location(
        "engine_vs_analytical", BENCH / "engine_vs_analytical.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _rows(n: int, own: float, seed: int = 0) -> pd.DataFrame:
    """Rows whose two predictions share a log error (sd 0.3) and add their own (sd ``own``)."""
    rng = np.random.default_rng(seed)
    shared = rng.normal(0, 0.3, n)
    truth = rng.uniform(50, 500, n)
    sim = truth * np.exp(shared + rng.normal(0, own, n))
    ana = truth * np.exp(shared + rng.normal(0, own, n))
    return pd.DataFrame(
        {
            "model_path": np.where(np.arange(n) % 2, "a/one", "b/two"),
            "concurrency": np.where(np.arange(n) % 3, 64, 8),
            "silicon_ttft_ms": truth,
            "sim_ttft_ms": sim,
            "our_ttft_ms": ana,
            "sim_ttft_ape": np.abs(sim / truth - 1) * 100,
            "ana_ttft_ape": np.abs(ana / truth - 1) * 100,
            "sim_status": "ok",
            "our_status": "ok",
        }
    )


def test_shared_error_separates_a_shared_from_an_own_error():
    m = _load()
    close = m.shared_error(m.loaded_rows(_rows(3000, own=0.03)))
    apart = m.shared_error(m.loaded_rows(_rows(3000, own=0.3)))
    assert close["n"] == 2000  # concurrency 8 rows are not under load
    assert close["pearson"] > 0.95 and apart["pearson"] < 0.6
    # the spread of the gap is sqrt(2) times the own error's
    assert close["mad_gap"] == pytest.approx(0.03 * np.sqrt(2), rel=0.1)
    assert apart["mad_gap"] == pytest.approx(0.3 * np.sqrt(2), rel=0.1)
    assert close["mad_engine"] == pytest.approx(0.3, rel=0.1)


def test_by_model_counts_rows_and_signs_the_difference():
    m = _load()
    rows = _rows(600, own=0.1)
    rows.loc[rows.model_path == "a/one", "sim_ttft_ape"] = 0.0  # the engine exact on one model
    table = m.by_model(m.loaded_rows(rows))
    assert table.loc["a/one", "diff"] < 0 and table.loc["a/one", "closer"] > 0.9
    assert table["rows"].sum() == 400
    assert list(table.index) == ["a/one", "b/two"]  # sorted by the difference


def test_report_on_the_committed_engine_rows(capsys):
    m = _load()
    rows = BENCH / "out" / "engine_fidelity" / "engine_fidelity_rows.csv"
    assert m.main(["--rows", str(rows), "--no-results"]) == 0
    text = capsys.readouterr().out
    assert "| Pearson correlation of the two models' log errors |" in text
    assert "| openai/gpt-oss-120b |" in text


def test_a_missing_rows_file_is_a_clear_error(tmp_path, capsys):
    m = _load()
    with pytest.raises(SystemExit) as exc:
        m.main(["--rows", str(tmp_path / "none.csv"), "--no-results"])
    assert exc.value.code == 2
    assert "run benchmarks/engine_fidelity.py first" in capsys.readouterr().err


def test_sources_are_named_short_and_grouped():
    m = _load()
    gap = "source_file=/Users/x/aic-auto-gap-analysis/data/h100_sxm/vllm/0.12.0/Qwen_Qwen3-32B.csv"
    assert m.source_name(gap) == "h100_sxm/vllm/0.12.0/Qwen_Qwen3-32B.csv"
    assert m.source_name("db-dump/2026-04-27; config_id=811") == "db-dump/2026-04-27"
    assert m.source_name("source_file=2026-03-25.csv; x=1") == "2026-03-25.csv"
    rows = _rows(40, own=0.1)
    rows["silicon_data_source"] = np.where(np.arange(40) < 10, gap, "db-dump/2026-04-27; id=1")
    rows["sim_tpot_ape"] = 5.0
    rows["ana_tpot_ape"] = 7.0
    rows.loc[0, "our_status"] = "error"  # priced by one model only: left out
    table = m.by_source(rows)
    assert table["rows"].to_dict() == {
        "db-dump/2026-04-27": 30,
        "h100_sxm/vllm/0.12.0/Qwen_Qwen3-32B.csv": 9,
    }
    assert (table["engine_tpot"] == 5.0).all() and (table["analytical_tpot"] == 7.0).all()
