"""Tests of ``causal-tuner discover``: learning a graph and effects from a table."""

import json

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from causal_tuner import LinearGaussianSEM, PartiallyDirectedGraph
from causal_tuner.cli import main
from causal_tuner.discovery import discover

NAMES = ["load", "max_num_seqs", "batch", "goodput"]


def tuner_frame(n: int, seed: int) -> tuple[pd.DataFrame, LinearGaussianSEM]:
    # load -> knob (operators react to load), knob -> batch -> goodput, load -> goodput
    weights = np.zeros((4, 4))
    weights[0, 1], weights[1, 2], weights[2, 3], weights[0, 3] = 0.8, 0.9, -0.7, 0.6
    sem = LinearGaussianSEM(weights=weights, noise_var=np.ones(4), intercepts=[5, 1, 2, 3])
    return pd.DataFrame(sem.sample(n, seed=seed), columns=NAMES), sem


def test_discover_recovers_graph_and_effect() -> None:
    frame, sem = tuner_frame(20_000, seed=0)
    result = discover(
        frame,
        tiers=[["load"], ["max_num_seqs"], ["batch"], ["goodput"]],
        effects=[("max_num_seqs", "goodput")],
    )
    # one tier per node orients every edge: the DAG itself, beyond its CPDAG
    assert result.cpdag == PartiallyDirectedGraph.from_networkx(sem.graph)
    assert PartiallyDirectedGraph.from_dag(sem.graph).undirected_edges()
    _, _, path, zero, estimates = result.effects[0]
    assert path == "yes" and zero == 0
    assert estimates[0].adjustment == ("load",)
    truth = sem.total_effect(1, 3)
    low, high = estimates[0].ci95
    assert low <= truth <= high
    # the naive regression (no adjustment) is confounded by load and misses the truth
    naive = np.polyfit(frame.max_num_seqs, frame.goodput, 1)[0]
    assert not low <= naive <= high


def test_missing_rows_are_dropped_and_counted() -> None:
    frame, _ = tuner_frame(500, seed=1)
    frame.loc[[3, 7], "batch"] = np.nan
    frame.loc[9, "load"] = np.inf
    result = discover(frame)
    assert result.n_rows == 497
    assert result.dropped == {"batch": 2, "load": 1}


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"columns": ["load", "nope"]}, "column 'nope' is not in the table"),
        ({"log_columns": ["batch"]}, "--log column 'batch' has a value <= 0"),
        ({"effects": [("load", "zzz")]}, "effect outcome 'zzz'"),
        ({"tiers": [["load"], ["qq"]]}, "tier column 'qq'"),
        ({"columns": ["load", "tag"]}, "column 'tag' is not numeric"),
    ],
)
def test_bad_input_names_the_offender(kwargs: dict, match: str) -> None:
    frame, _ = tuner_frame(200, seed=2)
    frame["batch"] -= 100.0
    frame["tag"] = "x"
    with pytest.raises(ValueError, match=match):
        discover(frame, **kwargs)


def test_cli_end_to_end(tmp_path) -> None:
    frame, _ = tuner_frame(3000, seed=3)
    csv = tmp_path / "rows.csv"
    frame.to_csv(csv, index=False)
    png, out = tmp_path / "graph.png", tmp_path / "graph.json"
    args = [
        "discover",
        str(csv),
        "--tier",
        "load",
        "--tier",
        "max_num_seqs,batch",
        "--tier",
        "goodput",
        "--effect",
        "max_num_seqs:goodput",
        "--plot",
        str(png),
        "--json",
        str(out),
    ]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "load -> max_num_seqs" in result.output
    assert png.stat().st_size > 1000
    summary = json.loads(out.read_text())
    assert ["load", "max_num_seqs"] in summary["directed_edges"]
    assert summary["effects"][0]["estimates"][0]["adjustment"] == ["load"]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--columns", "load,missing"], "column 'missing' is not in the table"),
        (["--effect", "load-goodput"], "TREATMENT:OUTCOME"),
        (["--forbid", "load"], "must look like A->B"),
        (["--query", "load >>> 3"], "--query"),
        (["--alpha", "3"], "alpha must lie in (0, 1)"),
        (["--plot", "/nonexistent-dir/graph.png"], "cannot write output"),
    ],
)
def test_cli_user_mistakes_exit_2_without_traceback(tmp_path, extra, message) -> None:
    frame, _ = tuner_frame(100, seed=4)
    csv = tmp_path / "rows.csv"
    frame.to_csv(csv, index=False)
    result = CliRunner().invoke(main, ["discover", str(csv), *extra])
    assert result.exit_code == 2
    assert message in result.output
    assert "Traceback" not in result.output


def test_silicon_measurements(shared_data, tmp_path) -> None:
    """Real measured serving results: tiers keep knobs out of the workload's causes."""
    frame = pd.read_csv(shared_data / "validation" / "silicon_dev.csv")
    columns = ["isl", "osl", "batch_size", "tp_size", "silicon_ttft_ms", "silicon_tpot_ms"]
    tiers = [["isl", "osl"], ["batch_size", "tp_size"], ["silicon_ttft_ms", "silicon_tpot_ms"]]
    result = discover(
        frame,
        columns=columns,
        tiers=tiers,
        log_columns=columns,
        effects=[("batch_size", "silicon_tpot_ms")],
    )
    # rows without a batch size (disaggregated deployments) are dropped and reported
    assert result.n_rows + sum(result.dropped.values()) == len(frame)
    assert result.dropped.get("batch_size", 0) > 0
    directed, _ = result.edges()
    tier_of = {c: t for t, tier in enumerate(tiers) for c in tier}
    for a, b in directed:
        assert tier_of[a] <= tier_of[b]
    # batch size drives time per output token (the better-known effect in serving)
    assert ("batch_size", "silicon_tpot_ms") in directed
    estimate = result.effects[0][4][0]
    assert estimate.ci95[0] > 0
