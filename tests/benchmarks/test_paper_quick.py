"""Quick mode of the paper reproduction, as a test of the relative claims on fixed seeds.

Smaller than :data:`causal_tuner.paper_benchmark.QUICK` (T = 600, n_obs in {10, 320}, 10 graphs)
so that it fits the CI budget; the full figures are in benchmarks/RESULTS.md.
"""

from dataclasses import replace

import pytest

from causal_tuner.paper_benchmark import QUICK, acceptance, run_benchmark, summarize

CONFIG = replace(QUICK, horizon=600, n_obs_values=(10, 320), n_graphs=10, seed=0)


@pytest.fixture(scope="module")
def quick_runs():
    return run_benchmark(CONFIG, progress=False).runs


@pytest.mark.slow
def test_every_policy_ran_on_every_task(quick_runs):
    assert len(quick_runs) == len(CONFIG.policies) * CONFIG.n_graphs * len(CONFIG.n_obs_values)
    assert (quick_runs.regret_T >= 0).all()
    summary = summarize(quick_runs)
    random = summary[summary.policy == "random"].regret_T.min()
    # Every learning policy beats uniform random play on average.
    assert (summary[summary.policy != "random"].regret_T < random).all()


@pytest.mark.slow
def test_relative_claims_hold_in_quick_mode(quick_runs):
    acc = acceptance(quick_runs)
    assert acc["ba_over_ucb1"] <= 0.25
    assert acc["advantage_grows_ok"]
    assert acc["oracle_over_ucb1"] <= acc["ba_over_ucb1"] + 0.05
    assert acc["ba_below_cn_ucb_ok"]
