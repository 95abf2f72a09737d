"""A tiny run of benchmarks/structure_learning.py: our PC is not worse than causal-learn's."""

import importlib.util
import sys
from pathlib import Path

import numpy as np

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "structure_learning.py"


def load_benchmark():
    # run as a script, its folder is on sys.path (for the shared results_md helpers)
    if str(SCRIPT.parent) not in sys.path:
        sys.path.insert(0, str(SCRIPT.parent))
    spec = importlib.util.spec_from_file_location("structure_learning_bench", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_tiny_benchmark_shd_not_worse_than_causallearn() -> None:
    bench = load_benchmark()
    frame = bench.run_batch(["er", "parallel"], [8], [300], seeds=5, alpha=0.01)
    assert len(frame) == 2 * 5 * 2  # families x seeds x methods, same samples for both
    summary = bench.summarize(frame)
    for row in summary.itertuples():
        # fixed seeds: mean SHD at most 0.5 above causal-learn's (it is equal in practice)
        assert row.ours_shd <= row.cl_shd + 0.5, row
        assert row.ours_skeleton_f1 >= row.cl_skeleton_f1 - 0.05, row
    ours = frame[frame.method == "causal_tuner.PC"].sort_values(["family", "seed"])
    assert np.all(ours.shd >= 0) and ours.skeleton_f1.between(0, 1).all()


def test_benchmark_cli_rejects_bad_arguments(capsys) -> None:
    bench = load_benchmark()
    assert bench.main(["--seeds", "1", "--no-results", "--no-online"]) == 2
    assert "--seeds must be >= 2" in capsys.readouterr().err
    assert bench.main(["--alpha", "2", "--no-results", "--no-online"]) == 2


def test_tiny_experimental_rows_help_orientation() -> None:
    """Per-regime use of do() rows orients more of the true DAG than observational rows alone."""
    bench = load_benchmark()
    frame = bench.run_experimental(seeds=3, p=8, n_obs=300, n_per_node=60)
    mean = frame.groupby(["design", "method"]).shd_vs_dag.mean()
    for design in ("do(+-1)", "do(+2)"):
        assert mean[(design, "per-regime (ours)")] < mean[(design, "observational rows only")]
