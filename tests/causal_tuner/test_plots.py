"""Plot helpers write their PNG without switching the caller's matplotlib backend."""

import matplotlib
import numpy as np
import pandas as pd

from causal_tuner.tuning_benchmark import plot_regret


def test_plot_regret_writes_a_png_and_keeps_the_backend(tmp_path):
    rng = np.random.default_rng(0)
    rows = pd.DataFrame(
        [
            {"policy": p, "seed": s, "round": r, "regret": float(rng.uniform(0, 1))}
            for p in ("ba-ucb", "ucb1")
            for s in range(3)
            for r in range(20)
        ]
    )
    before = matplotlib.get_backend()
    matplotlib.use("svg")
    try:
        plot_regret(rows, tmp_path / "regret.png", title="t")
        assert matplotlib.get_backend() == "svg"
    finally:
        matplotlib.use(before)
    assert (tmp_path / "regret.png").stat().st_size > 5000
