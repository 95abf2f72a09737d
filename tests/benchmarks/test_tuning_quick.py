"""The tuning benchmark's relative claims on a small, fixed-seed version of scenario (e).

Scenario (e) is the causal one: 500 (here 200) recorded windows in which an autoscaler raised
max_num_seqs with load. The reward is minus TTFT p90, which load worsens, so the naive learner
reads "fewer sequences, faster first tokens" from them; at the load to come the few-sequence
configs queue, and backdoor adjustment for the load must not be fooled. Small pools and few windows keep this
under a minute; the full benchmark is ``benchmarks/tuning_regret.py``.
"""

from dataclasses import replace

import numpy as np
import pytest

from causal_tuner.tuning_benchmark import SCENARIOS, build_scenario, run_scenario, summarize


@pytest.fixture(scope="module")
def quick_e():
    base = SCENARIOS["e"]
    scenario = replace(base, history=replace(base.history, n_windows=200), rounds=60, pool_size=3)
    return build_scenario(scenario, progress=False)


@pytest.mark.slow
def test_backdoor_adjustment_beats_the_naive_learner_and_ucb1(quick_e):
    truth = quick_e.oracle(0)
    # the knobs matter in this scenario: the median config's TTFT is over twice the best's
    assert np.median(truth) < 2.0 * truth.max() < 0, truth
    rows, finals = run_scenario(
        quick_e, ("ba-ucb", "naive", "ucb1"), seeds=range(3), progress=False
    )
    summary = summarize(rows, finals).set_index("policy")
    final = finals.groupby("policy")["final_true_reward"].mean()
    assert final["ba-ucb"] > final["naive"], final
    assert summary.loc["ba-ucb", "cum_regret"] < summary.loc["ucb1", "cum_regret"], summary
    assert summary.loc["ba-ucb", "cum_regret"] < summary.loc["naive", "cum_regret"], summary


@pytest.mark.slow
def test_same_seed_same_trajectory(quick_e):
    a, _ = run_scenario(quick_e, ("ba-ucb", "tpe"), seeds=[5], rounds=15, progress=False)
    b, _ = run_scenario(quick_e, ("ba-ucb", "tpe"), seeds=[5], rounds=15, progress=False)
    assert a["config"].tolist() == b["config"].tolist()
    c, _ = run_scenario(quick_e, ("tpe",), seeds=[6], rounds=15, progress=False)
    assert c["config"].tolist() != b[b.policy == "tpe"]["config"].tolist()
