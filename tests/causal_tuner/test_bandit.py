"""The SEM bandit environment: correct interventional draws, exact regret, common random numbers."""

import numpy as np
import pytest

from causal_tuner.bandit import SEMBanditEnvironment, make_context, run_policy
from causal_tuner.policies import Arm, make_policy, plus_minus_arms
from causal_tuner.sem import LinearGaussianSEM, random_parallel_sem


def test_observation_satisfies_the_mutilated_structural_equations():
    sem = random_parallel_sem(3, 4, 2, seed=4)
    arms = plus_minus_arms(range(sem.p - 1))
    env = SEMBanditEnvironment(sem, arms, horizon=50, seed=9)
    weights = np.asarray(sem.weights)
    for t, arm in enumerate(arms):
        x = env.observe(arm, t)
        assert x[arm.node] == arm.value
        for k in range(sem.p):
            if k == arm.node:
                continue
            expected = sem.intercepts[k] + x @ weights[:, k] + env.noise[t, k]
            assert x[k] == pytest.approx(expected, abs=1e-9)


def test_means_match_sampling_and_regret_is_exact():
    sem = LinearGaussianSEM(
        weights=np.array([[0, 0.8, 0.5], [0, 0, -1.0], [0, 0, 0]]),
        noise_var=np.ones(3),
        intercepts=np.array([1.0, 0.0, 2.0]),
    )
    arms = plus_minus_arms([0, 1])
    env = SEMBanditEnvironment(sem, arms, horizon=20_000, seed=1)
    # do(X1 = -1): Y = 2 + 0.5 X0 + 1 -> mean 2 + 0.5 + 1 = 3.5 (the best arm).
    assert env.best_arm == Arm(1, -1.0)
    assert env.best_mean == pytest.approx(3.5)
    assert env.regret(env.best_arm) == 0.0
    # do(X0 = 1): Y = 2 + 0.5 - 0.8 = 1.7.
    assert env.regret(Arm(0, 1.0)) == pytest.approx(3.5 - 1.7)
    draws = np.array([env.observe(Arm(0, 1.0), t)[2] for t in range(20_000)])
    assert abs(draws.mean() - 1.7) < 4 * draws.std() / np.sqrt(draws.size)


def test_common_random_numbers_across_policies():
    sem = random_parallel_sem(3, 6, 3, seed=2)
    arms = plus_minus_arms(range(9))
    env = SEMBanditEnvironment(sem, arms, horizon=200, seed=3)
    ctx = make_context(sem, arms, sem.sample(50, seed=4))
    a = run_policy(make_policy("ucb1", ctx), env)
    b = run_policy(make_policy("ba-ucb", ctx), env)
    same = a.arm_ids == b.arm_ids
    assert same.any() and not same.all()
    # Where two policies pull the same arm in the same round, they observe the same reward.
    np.testing.assert_array_equal(a.rewards[same], b.rewards[same])
    assert np.all(a.decision_s >= 0)
    np.testing.assert_allclose(a.cumulative_regret[-1], a.regret.sum())


def test_environment_bad_input():
    sem = random_parallel_sem(2, 2, 2, seed=0)
    arms = plus_minus_arms(range(sem.p - 1))
    with pytest.raises(ValueError, match="reward node 4"):
        SEMBanditEnvironment(sem, (*arms, Arm(4, 1.0)), horizon=5)
    with pytest.raises(ValueError, match=r"not in 0\.\.4"):
        SEMBanditEnvironment(sem, (Arm(7, 1.0),), horizon=5)
    env = SEMBanditEnvironment(sem, arms, horizon=5, seed=0)
    with pytest.raises(ValueError, match="outside the pre-drawn horizon"):
        env.observe(arms[0], 5)
    with pytest.raises(ValueError, match="not one of this environment's arms"):
        env.observe(Arm(0, 2.0), 0)
    ctx = make_context(sem, arms[:2], np.zeros((0, sem.p)))
    with pytest.raises(ValueError, match="arm set differs"):
        run_policy(make_policy("ucb1", ctx), env)
