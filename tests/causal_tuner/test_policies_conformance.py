"""Conformance suite: every registered policy is discovered and run through the same checks."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from causal_tuner.bandit import SEMBanditEnvironment, make_context, run_policy
from causal_tuner.policies import (
    Arm,
    BanditContext,
    History,
    available_policies,
    get_policy_class,
    make_policy,
    plus_minus_arms,
)
from causal_tuner.sem import random_parallel_sem

ALL = available_policies()


def _problem(seed=0, n_obs=40, horizon=60):
    sem = random_parallel_sem(2, 3, 2, seed=seed)
    arms = plus_minus_arms(range(sem.p - 1))
    env = SEMBanditEnvironment(sem, arms, horizon, seed=seed + 1)
    obs = sem.sample(n_obs, seed=seed + 2)
    return sem, env, make_context(sem, arms, obs)


def test_registry_has_every_policy_of_the_issue():
    expected = {
        "ba-ucb",
        "oracle-ba-ucb",
        "bbb-ucb",
        "cn-ucb",
        "ucb1",
        "thompson",
        "epsilon-greedy",
        "random",
    }
    assert expected <= set(ALL)
    with pytest.raises(ValueError, match="unknown policy 'nope'"):
        get_policy_class("nope")


@pytest.mark.parametrize("name", ALL)
def test_select_returns_member_and_does_not_mutate_inputs(name):
    _, env, ctx = _problem()
    obs_before = ctx.obs_data.copy()
    policy = make_policy(name, ctx, seed=1)
    history = History()
    subset = list(env.arms[2:7])
    for t in range(40):
        arms_before = list(subset)
        arm = policy.select(subset, history)
        assert arm in subset
        assert subset == arms_before
        obs = env.observe(arm, t)
        obs_copy = obs.copy()
        policy.update(arm, obs)
        np.testing.assert_array_equal(obs, obs_copy)
        history.append(arm, obs)
    np.testing.assert_array_equal(ctx.obs_data, obs_before)
    assert policy.n_updates_ == len(history) == 40
    assert policy.counts_.sum() == 40
    assert policy.counts_[[ctx.arms.index(a) for a in env.arms[:2]]].sum() == 0


@pytest.mark.parametrize("name", ALL)
def test_same_seed_same_trajectory_and_stochastic_policies_vary(name):
    _, env, ctx = _problem(seed=3)
    a = run_policy(make_policy(name, ctx, seed=7), env)
    b = run_policy(make_policy(name, ctx, seed=7), env)
    np.testing.assert_array_equal(a.arm_ids, b.arm_ids)
    np.testing.assert_array_equal(a.rewards, b.rewards)
    if get_policy_class(name).stochastic:
        c = run_policy(make_policy(name, ctx, seed=8), env)
        assert not np.array_equal(a.arm_ids, c.arm_ids)


@pytest.mark.parametrize("name", ALL)
def test_replay_rebuilds_the_same_state(name):
    _, env, ctx = _problem(seed=5)
    policy = make_policy(name, ctx, seed=2)
    history = History()
    for t in range(30):
        arm = policy.select(env.arms, history)
        obs = env.observe(arm, t)
        policy.update(arm, obs)
        history.append(arm, obs)
    rebuilt = make_policy(name, ctx, seed=2)
    rebuilt.replay(history)
    np.testing.assert_array_equal(rebuilt.counts_, policy.counts_)
    np.testing.assert_allclose(rebuilt.reward_sums_, policy.reward_sums_)
    if not get_policy_class(name).stochastic:
        assert rebuilt.select(env.arms, history) == policy.select(env.arms, history)
    with pytest.raises(ValueError, match="replay the history"):
        rebuilt.select(env.arms, History())


@pytest.mark.parametrize("name", ALL)
def test_bad_inputs_name_the_offender(name):
    _, env, ctx = _problem()
    policy = make_policy(name, ctx, seed=0)
    obs = env.observe(env.arms[0], 0)
    with pytest.raises(ValueError, match="reward node"):
        policy.update(Arm(ctx.reward_index, 1.0), obs)
    with pytest.raises(ValueError, match=r"value 0.5 is not in node 0's set \[-1.0, 1.0\]"):
        policy.update(Arm(0, 0.5), obs)
    with pytest.raises(ValueError, match=r"value 0\.5"):
        policy.select([Arm(0, 0.5)])
    bad = obs.copy()
    bad[2] = np.nan
    with pytest.raises(ValueError, match=r"observation\[2\] is not finite"):
        policy.update(env.arms[0], bad)
    bad[2] = np.inf
    with pytest.raises(ValueError, match=r"observation\[2\]"):
        policy.update(env.arms[0], bad)
    with pytest.raises(ValueError, match="shape"):
        policy.update(env.arms[0], obs[:-1])
    with pytest.raises(ValueError, match="at least one arm"):
        policy.select([])
    assert policy.n_updates_ == 0  # nothing was absorbed by the failed calls


def test_context_validation():
    sem = random_parallel_sem(2, 2, 2, seed=0)
    arms = plus_minus_arms(range(sem.p - 1))
    with pytest.raises(ValueError, match=r"intervenes on the reward node 4"):
        BanditContext(sem.p, 4, (*arms, Arm(4, 1.0)))
    with pytest.raises(ValueError, match=r"obs_data\[1, 0\] is not finite"):
        data = np.zeros((3, sem.p))
        data[1, 0] = np.nan
        BanditContext(sem.p, 4, arms, obs_data=data)
    with pytest.raises(ValueError, match="repeats"):
        BanditContext(sem.p, 4, (arms[0], arms[0]))
    with pytest.raises(ValueError, match=r"Arm\.value must be finite"):
        Arm(0, np.inf)
    with pytest.raises(ValueError, match=r"needs context\.true_graph"):
        make_policy("oracle-ba-ucb", BanditContext(sem.p, 4, arms))


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 1000), name=st.sampled_from(ALL), n_obs=st.sampled_from([0, 5, 50]))
def test_random_problems_always_return_members(seed, name, n_obs):
    _, env, ctx = _problem(seed=seed, n_obs=n_obs, horizon=25)
    result = run_policy(make_policy(name, ctx, seed=seed), env)
    assert result.arm_ids.min() >= 0 and result.arm_ids.max() < len(env.arms)
    assert np.all(result.regret >= 0)
