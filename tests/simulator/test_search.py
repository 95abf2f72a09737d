"""Search: Pareto frontier against brute force, SLA pick, CSV/PNG, and the CLI's clean errors."""

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

from causal_tuner.cli import main
from simulator import SearchSpace, pareto_frontier
from simulator.search import search

SMALL = SearchSpace(
    concurrencies=(1, 8, 64), max_num_batched_tokens=(8192,), decode_batches=(8, 64)
)


@given(
    st.lists(
        st.tuples(st.floats(0.1, 100), st.floats(0.1, 100)), min_size=1, max_size=40, unique=True
    )
)
def test_frontier_is_exactly_the_non_dominated_set(points):
    df = pd.DataFrame(points, columns=["tok_s_per_user", "tok_s_per_gpu"])
    front = pareto_frontier(df)
    xs, ys = df["tok_s_per_user"].to_numpy(), df["tok_s_per_gpu"].to_numpy()
    dominated = [
        bool(np.any((xs >= x) & (ys >= y) & ((xs > x) | (ys > y))))
        for x, y in zip(xs, ys, strict=True)
    ]
    expected = set(df.index[~np.array(dominated)])
    # ties on both coordinates collapse to one representative
    assert set(front.index) <= expected
    assert {tuple(r) for r in df.loc[list(expected)].to_numpy()} == {
        tuple(r) for r in front.to_numpy()
    }


@pytest.fixture(scope="module")
def result():
    return search(
        "Qwen/Qwen3-8B",
        "h100_sxm",
        4,
        2000,
        200,
        ttft_ms=1000,
        tpot_ms=20,
        space=SMALL,
        progress=False,
    )


def test_search_covers_modes_and_layouts(result):
    t = result.table
    assert set(t["mode"]) == {"agg", "disagg"}
    assert set(t.loc[t["mode"] == "agg", "tp"]) == {1, 2, 4}
    assert (t["num_gpus"] <= 4).all()
    dis = t[t["mode"] == "disagg"]
    assert ((dis["prefill_workers"] >= 1) & (dis["decode_workers"] >= 1)).all()


def test_best_meets_sla_and_maximises_throughput(result):
    best = result.best
    assert best is not None and best["ttft_ms"] <= 1000 and best["tpot_ms"] <= 20
    ok = result.table[result.table["meets_sla"]]
    assert best["tok_s_per_gpu"] == ok["tok_s_per_gpu"].max()


def test_outputs_written(result, tmp_path):
    result.to_csv(str(tmp_path / "s.csv"))
    result.plot(str(tmp_path / "s.png"), title="t")
    back = pd.read_csv(tmp_path / "s.csv")
    assert len(back) == len(result.table)
    assert (tmp_path / "s.png").stat().st_size > 5000


def test_cli_search_end_to_end(tmp_path):
    runner = CliRunner()
    res = runner.invoke(
        main,
        [
            "search",
            "--model",
            "Qwen/Qwen3-8B",
            "--system",
            "h100_sxm",
            "--gpus",
            "2",
            "--isl",
            "1000",
            "--osl",
            "100",
            "--ttft",
            "2000",
            "--tpot",
            "50",
            "--mode",
            "agg",
            "--out",
            str(tmp_path),
        ],
    )
    assert res.exit_code == 0, res.output
    assert "Pareto frontier" in res.output and "vllm serve Qwen/Qwen3-8B" in res.output
    assert (tmp_path / "search.csv").exists() and (tmp_path / "search.png").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "nobody/x", "--system", "h100_sxm"], "unknown model 'nobody/x'"),
        (["--model", "Qwen/Qwen3-8B", "--system", "h900"], "h900"),
        (["--model", "meta-llama/Llama-3.1-405B", "--system", "h100_sxm"], "does not fit"),
        (["--model", "Qwen/Qwen3-8B", "--system", "h100_sxm", "--dtype", "fp4"], "Blackwell"),
    ],
)
def test_cli_bad_input_exits_2_with_message(args, message, tmp_path):
    base = ["search", "--gpus", "1", "--isl", "100", "--osl", "10", "--out", str(tmp_path)]
    res = CliRunner().invoke(main, base + args)
    assert res.exit_code == 2, res.output
    assert message in res.output and "Traceback" not in res.output


def test_plot_leaves_the_callers_matplotlib_backend_alone(result, tmp_path):
    """A notebook's inline backend (here svg, which no plot of ours selects) survives a plot."""
    import matplotlib

    before = matplotlib.get_backend()
    matplotlib.use("svg")
    try:
        result.plot(str(tmp_path / "s.png"))
        assert matplotlib.get_backend() == "svg"
    finally:
        matplotlib.use(before)
    assert (tmp_path / "s.png").stat().st_size > 5000


def test_launch_config_of_the_best_point_and_a_clear_error_for_a_disaggregated_one():
    from simulator.launch import render_all

    found = search(
        "meta-llama/Llama-3.1-8B",
        "h100_sxm",
        2,
        1024,
        128,
        ttft_ms=1000,
        tpot_ms=20,
        progress=False,
    )
    best = found.best
    assert best is not None and best["mode"] == "agg"
    vllm = render_all(found.launch_config())["vllm"]
    assert vllm.startswith("vllm serve meta-llama/Llama-3.1-8B")
    assert f"--tensor-parallel-size {int(best['tp'])}" in vllm
    assert f"--max-num-seqs {int(best['max_num_seqs'])}" in vllm
    assert f"--max-num-batched-tokens {int(best['max_num_batched_tokens'])}" in vllm
    disagg = found.table[found.table["mode"] == "disagg"].iloc[0]
    with pytest.raises(ValueError, match="prefill worker"):
        found.launch_config(disagg)
