"""Trace loaders: bundled traces equal the shared originals; bad rows are counted, never lost."""

from __future__ import annotations

import gzip

import numpy as np
import pandas as pd
import pytest

from simulator import Trace, load_trace
from simulator.traces import BUNDLED_TRACES, detect_format, shared_block_keys


@pytest.mark.parametrize(
    ("name", "rows"),
    [
        ("azure-conv", 19366),
        ("azure-code", 8819),
        ("mooncake-conv", 12031),
        ("mooncake-synthetic", 3993),
        ("vidur-conv", 19366),
        ("vidur-code", 8819),
    ],
)
def test_bundled_traces_load_completely(name, rows):
    trace = load_trace(name)
    assert len(trace) == rows
    assert trace.report.rows_read == rows and trace.report.num_bad == 0
    assert trace.arrival_ms[0] == 0.0 and np.all(np.diff(trace.arrival_ms) >= 0)


def test_bundled_files_are_the_shared_originals(shared_data):
    for name, (file_name, _) in BUNDLED_TRACES.items():
        original = shared_data / "traces" / file_name.removesuffix(".gz")
        with gzip.open(load_trace.__globals__["DATA_DIR"] / file_name, "rb") as fh:
            assert fh.read() == original.read_bytes(), name


def test_azure_and_vidur_versions_of_the_conv_trace_agree(shared_data):
    azure = load_trace(shared_data / "traces" / "AzureLLMInferenceTrace_conv.csv")
    vidur = load_trace(shared_data / "traces" / "vidur_splitwise_conv.csv")
    np.testing.assert_array_equal(azure.prompt_tokens, vidur.prompt_tokens)
    np.testing.assert_array_equal(azure.output_tokens, vidur.output_tokens)
    # Vidur re-times the trace; the spans agree to within a second over ~58 minutes
    assert abs(azure.duration_ms - vidur.duration_ms) < 1000.0


def test_azure_bad_rows_are_counted_with_line_numbers(tmp_path):
    path = tmp_path / "azure.csv"
    path.write_text(
        "TIMESTAMP,ContextTokens,GeneratedTokens\n"
        "2023-11-16 18:15:46.6805900,374,44\n"
        "not a time,10,10\n"
        "2023-11-16 18:15:47.0000000,-5,10\n"
        "2023-11-16 18:15:45.0000000,100,x\n"
        "2023-11-16 18:15:48.5000000,200,20\n"
        "2023-11-16 18:15:48.0000000,300,30"  # no trailing newline, out of order
    )
    trace = load_trace(path)
    rep = trace.report
    assert rep.rows_read == 6 and rep.num_bad == 3 and rep.rows_loaded == 3
    assert [line for line, _ in rep.bad_rows] == [3, 4, 5]
    assert "TIMESTAMP" in rep.bad_rows[0][1] and "ContextTokens" in rep.bad_rows[1][1]
    assert rep.reordered == 1
    assert trace.prompt_tokens.tolist() == [374, 300, 200]
    np.testing.assert_allclose(trace.arrival_ms, [0.0, 1319.41, 1819.41])
    assert "3 bad rows" in rep.summary()


def test_mooncake_and_vidur_bad_rows(tmp_path):
    moon = tmp_path / "m.jsonl"
    moon.write_text(
        '{"timestamp": 0, "input_length": 600, "output_length": 5, "hash_ids": [1, 2]}\n'
        "{broken json\n"
        '{"timestamp": 10, "input_length": 0, "output_length": 5, "hash_ids": []}\n'
        "\n"
        '{"timestamp": 20, "input_length": 100, "output_length": 7, "hash_ids": [3]}\n'
    )
    trace = load_trace(moon)
    assert len(trace) == 2 and trace.report.num_bad == 3
    assert trace.hash_ids == ((1, 2), (3,))
    vid = tmp_path / "v.csv"
    vid.write_text(
        "arrived_at,num_prefill_tokens,num_decode_tokens\n0.0,10,5\nNaN,1,1\n0.5,2.5,1\n1.0,3,4\n"
    )
    trace = load_trace(vid)
    assert trace.report.num_bad == 2 and trace.arrival_ms.tolist() == [0.0, 1000.0]


def test_unknown_trace_and_format_errors_are_clear(tmp_path):
    with pytest.raises(ValueError, match="neither a bundled trace"):
        load_trace("no-such-trace")
    odd = tmp_path / "odd.csv"
    odd.write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="cannot tell the trace format"):
        detect_format(odd)
    missing = tmp_path / "azure.csv"
    missing.write_text("TIMESTAMP,ContextTokens\n2023-11-16 18:15:46,3\n")
    with pytest.raises(ValueError, match="missing column"):
        load_trace(missing, fmt="azure")


def test_time_and_rate_scaling_head_between_and_tile():
    trace = load_trace("azure-code")
    assert trace.scale_time(2.0).duration_ms == pytest.approx(2 * trace.duration_ms)
    assert trace.scale_rate(4.0).mean_rate_rps == pytest.approx(4 * trace.mean_rate_rps)
    head = trace.head(100)
    assert len(head) == 100 and head.prompt_tokens.tolist() == trace.prompt_tokens[:100].tolist()
    part = trace.between(200_000.0, 260_000.0)
    inside = (trace.arrival_ms >= 200_000.0) & (trace.arrival_ms < 260_000.0)
    assert len(part) == inside.sum() > 0
    assert part.arrival_ms.min() >= 0 and part.arrival_ms.max() < 60_000.0
    big = trace.tile(20_000)
    assert len(big) == 20_000 and np.all(np.diff(big.arrival_ms) >= 0)
    assert big.mean_rate_rps == pytest.approx(trace.mean_rate_rps, rel=0.01)
    with pytest.raises(ValueError, match="rate scale"):
        trace.scale_rate(0.0)


def test_tiled_mooncake_copies_do_not_share_prefix_blocks():
    trace = load_trace("mooncake-synthetic").head(50)
    big = trace.tile(100)
    first = {h for hs in big.hash_ids[:50] for h in hs}
    second = {h for hs in big.hash_ids[50:] for h in hs}
    assert not first & second


def test_trace_validation_names_the_problem():
    with pytest.raises(ValueError, match="non-decreasing"):
        Trace([5.0, 1.0], [1, 1], [1, 1])
    with pytest.raises(ValueError, match=">= 1"):
        Trace([0.0], [0], [1])
    with pytest.raises(ValueError, match="equal lengths"):
        Trace([0.0, 1.0], [1], [1, 1])
    with pytest.raises(ValueError, match="hash_ids"):
        Trace([0.0], [1], [1], hash_ids=((1,), (2,)))


def test_shared_block_keys_map_512_token_hashes_onto_kv_blocks():
    keys = shared_block_keys((7, 8), 512, prompt_tokens=1100, block_size=256)
    assert keys == ((7, 0), (7, 1), (8, 0), (8, 1))  # 4 full 256-token blocks in 1100 tokens
    assert shared_block_keys((7, 8, 9, 10), 512, 2100, 1024) == ((8, 0), (10, 0))
    assert len(shared_block_keys((1,), 512, 600, 16)) == 32  # hashes cover only 512 tokens
    with pytest.raises(ValueError, match="divide"):
        shared_block_keys((1,), 512, 600, 48)


def test_to_frame_round_trip():
    trace = Trace([0.0, 2.0], [3, 4], [5, 6], priority=[1, 0])
    frame = trace.to_frame()
    assert isinstance(frame, pd.DataFrame) and frame["priority"].tolist() == [1, 0]
