"""``causal-tuner replay`` end to end, and its clean errors."""

from __future__ import annotations

import pandas as pd
import pytest
from click.testing import CliRunner

from causal_tuner.cli import main
from simulator.cli_replay import parse_config


def test_replay_two_configs_writes_csvs_summary_and_plots(tmp_path):
    out = tmp_path / "out"
    res = CliRunner().invoke(
        main,
        [
            "replay",
            "--trace",
            "azure-conv",
            "--max-requests",
            "400",
            "--rate-scale",
            "3",
            "--config",
            "max_num_seqs=256",
            "--config",
            "max_num_seqs=4,max_num_batched_tokens=2048",
            "--window-s",
            "20",
            "--out",
            str(out),
            "--no-progress",
        ],
    )
    assert res.exit_code == 0, res.output
    summary = pd.read_csv(out / "summary.csv")
    assert summary["config"].tolist() == [
        "max_num_seqs=256",
        "max_num_seqs=4_max_num_batched_tokens=2048",
    ]
    assert (summary["completed"] == 400).all()
    # fewer running sequences: faster tokens, slower first tokens
    assert summary["tpot_ms_p50"].iloc[1] < summary["tpot_ms_p50"].iloc[0]
    assert summary["ttft_ms_p50"].iloc[1] > summary["ttft_ms_p50"].iloc[0]
    for label in summary["config"]:
        req = pd.read_csv(out / f"requests_{label}.csv")
        assert len(req) == 400 and {
            "ttft_ms",
            "tpot_ms",
            "e2e_ms",
            "queue_ms",
            "num_preemptions",
        } <= set(req.columns)
        win = pd.read_csv(out / f"windows_{label}.csv")
        assert {"goodput_tok_s", "kv_usage_frac", "request_rate_rps"} <= set(win.columns)
        assert "vllm:time_to_first_token_seconds" in (out / f"metrics_{label}.prom").read_text()
    for png in ("latency_cdf.png", "throughput.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG"
    assert "max_num_seqs=256" in res.output


def test_replay_a_trace_file_reports_bad_rows(tmp_path):
    trace = tmp_path / "t.csv"
    trace.write_text(
        "arrived_at,num_prefill_tokens,num_decode_tokens\n0.0,100,10\n0.1,oops,5\n0.2,200,20\n"
    )
    res = CliRunner().invoke(
        main, ["replay", "--trace", str(trace), "--out", str(tmp_path / "o"), "--no-progress"]
    )
    assert res.exit_code == 0, res.output
    assert "2 of 3 rows loaded" in res.output and "line 3" in res.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--config", "max_num_sequences=4"], "unknown engine knob 'max_num_sequences'"),
        (["--config", "max_num_seqs=four"], "max_num_seqs"),
        (["--config", "max_num_seqs=0"], "max_num_seqs must be a positive integer"),
        (["--trace", "nope"], "neither a bundled trace"),
        (["--model", "no/such-model"], "no/such-model"),
        (["--config", "gpu_memory_utilization=0.1"], "does not fit"),
        (["--replicas", "0"], "--replicas"),
        (["--config", "speculative_tokens=2"], "ships no multi-token-prediction module"),
    ],
)
def test_replay_user_mistakes_exit_2_with_a_clean_message(tmp_path, args, message):
    res = CliRunner().invoke(
        main, ["replay", "--max-requests", "5", "--out", str(tmp_path), "--no-progress", *args]
    )
    assert res.exit_code == 2
    assert message in res.output
    assert "Traceback" not in res.output


def test_parse_config_types():
    label, kw = parse_config(
        "max_num_seqs=8, enable_chunked_prefill=off,gpu_memory_utilization=0.8,num_kv_blocks=none"
    )
    assert kw == {
        "max_num_seqs": 8,
        "enable_chunked_prefill": False,
        "gpu_memory_utilization": 0.8,
        "num_kv_blocks": None,
    }
    assert "max_num_seqs=8" in label
    assert parse_config("") == ("default", {})
    with pytest.raises(ValueError, match="key=value"):
        parse_config("max_num_seqs")


def test_replay_configs_matches_a_direct_cluster_run_on_the_same_seed():
    from simulator import Cluster, Deployment, EngineConfig, load_trace, replay_configs

    trace = load_trace("azure-conv").head(300).scale_rate(3)
    deployment = Deployment("meta-llama/Llama-3.1-8B", "h100_sxm")
    configs = {"256": EngineConfig(max_num_seqs=256), "4": EngineConfig(max_num_seqs=4)}
    run = replay_configs(trace, deployment, configs, seed=3, window_s=20)
    assert run.summary["config"].tolist() == ["256", "4"]
    assert (run.summary["requests"] == 300).all()
    direct = Cluster([deployment.replica(configs["4"], name="4")]).run(trace, seed=3, label="4")
    pd.testing.assert_frame_equal(run.results["4"].requests, direct.requests)
    assert len(run.windows["256"]) > 0 and "goodput_tok_s" in run.windows["256"]
    # fewer running sequences: slower first tokens under this load
    assert run.summary["ttft_ms_p50"].iloc[1] > run.summary["ttft_ms_p50"].iloc[0]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"replicas": 0}, "replicas must be >= 1"),
        ({"configs": {}}, "at least one"),
        ({"trace": "empty"}, "has no requests to replay"),
    ],
)
def test_replay_configs_rejects_bad_arguments(kwargs, message):
    from simulator import Deployment, EngineConfig, load_trace, replay_configs

    args = {
        "trace": load_trace("azure-conv").head(10),
        "deployment": Deployment("meta-llama/Llama-3.1-8B", "h100_sxm"),
        "configs": {"d": EngineConfig()},
        **kwargs,
    }
    if args["trace"] == "empty":
        args["trace"] = load_trace("azure-conv").head(0)
    with pytest.raises(ValueError, match=message):
        replay_configs(**args)
