"""BA-UCB and BBB-UCB internals checked against the SEM's true effects (the oracle first)."""

import itertools

import networkx as nx
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from causal_tuner.backdoor import is_backdoor_set
from causal_tuner.bandit import SEMBanditEnvironment, make_context, run_policy
from causal_tuner.policies import BAUCB, BBBUCB, OracleBAUCB, plus_minus_arms
from causal_tuner.policies.bbb import _per_node_posteriors, order_modular_posteriors
from causal_tuner.sem import random_parallel_sem


def _setup(seed, n_obs, p_other=6):
    sem = random_parallel_sem(3, p_other, 3, seed=seed)
    arms = plus_minus_arms(range(sem.p - 1))
    ctx = make_context(sem, arms, sem.sample(n_obs, seed=seed + 100))
    return sem, arms, ctx


@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 500))
def test_oracle_effects_converge_to_total_effects(seed):
    sem, _, ctx = _setup(seed, 20_000)
    policy = OracleBAUCB(ctx)
    theta, var = policy.effect_estimates()
    y = sem.p - 1
    for pos, j in enumerate(policy.nodes_):
        truth = sem.total_effect(int(j), y)
        assert abs(theta[pos] - truth) <= 5 * np.sqrt(var[pos]) + 1e-6


def test_oracle_arm_means_match_interventional_means():
    sem, arms, ctx = _setup(7, 20_000)
    policy = OracleBAUCB(ctx)
    mean, var, used_obs = policy.arm_estimates()
    assert used_obs.all()
    for a, arm in enumerate(arms):
        truth = sem.interventional_mean({arm.node: arm.value})[-1]
        assert abs(mean[a] - truth) <= 5 * np.sqrt(var[a])


def test_valid_rows_exclude_mediators_of_the_effect():
    """Rows under do(X_a) are unusable for theta_j when a lies on a path j ~> a ~> Y."""
    sem, _, ctx = _setup(11, 100)
    policy = OracleBAUCB(ctx)
    graph = sem.graph
    y = sem.p - 1
    for pos, j in enumerate(policy.nodes_):
        j = int(j)
        desc = nx.descendants(graph, j)
        for a in range(sem.p - 1):
            on_path = a in desc and y in nx.descendants(graph, a)
            assert policy.valid_regimes_[pos, a] == (not on_path and a != j)
        assert policy.valid_regimes_[pos, sem.p]  # the observational regime


def test_learned_sets_include_a_valid_one_and_experiments_remove_invalid_ones():
    """Observational data leave the CPDAG ambiguous (several candidate sets, some invalid in
    the true DAG); experiments on every arm reveal descendants and prune the invalid ones."""
    sem, arms, ctx = _setup(3, 20_000)
    policy = BAUCB(ctx)
    graph = sem.graph
    y = sem.p - 1

    def validity():
        return [
            [is_backdoor_set(graph, int(j), y, set(s)) for s in policy.adjustment_sets_[pos]]
            for pos, j in enumerate(policy.nodes_)
        ]

    before = validity()
    assert all(any(v) for v in before)  # the true adjustment is always among the candidates
    env = SEMBanditEnvironment(sem, arms, horizon=30 * len(arms), seed=4)
    t = 0
    for _ in range(30):
        for arm in arms:
            policy.update(arm, env.observe(arm, t))
            t += 1
    policy._set_structure(*policy._discover())
    after = validity()
    assert not all(all(v) for v in before)  # this graph is ambiguous from observations alone
    assert all(all(v) and v for v in after)


def test_learned_effects_are_covered_by_their_uncertainty():
    """With much data, theta_j is within its reported uncertainty of the total effect (the
    variance includes the spread between candidate sets where the CPDAG is ambiguous)."""
    sem, _, ctx = _setup(5, 20_000)
    policy = BAUCB(ctx)
    theta, var = policy.effect_estimates()
    y = sem.p - 1
    truths = np.array([sem.total_effect(int(j), y) for j in policy.nodes_])
    ok = np.isfinite(var)
    assert ok.sum() >= len(truths) - 1
    assert np.all(np.abs(theta[ok] - truths[ok]) <= 5 * np.sqrt(var[ok]) + 1e-3)


def test_bias_guard_drops_a_wrong_observational_side():
    """Corrupt the observational estimate of one arm: after pulls, the guard must drop it."""
    sem, arms, ctx = _setup(9, 300)
    env = SEMBanditEnvironment(sem, arms, horizon=400, seed=1)
    policy = OracleBAUCB(ctx, guard_z=3.0, refresh_growth=0.0)  # recompute after the edit
    a = 0
    for t in range(60):
        policy.update(arms[a], env.observe(arms[a], t))
    policy._cache_t = -1
    _, _, used = policy.arm_estimates()
    assert used[a]
    # Shift every stored reward of the prior regime: a grossly biased observational level.
    y = 1 + ctx.reward_index
    g = policy.regime_grams_[sem.p]
    n0 = g[0, 0]
    shift = 50.0
    g[y, y] += 2 * shift * g[0, y] + n0 * shift**2
    g[0, y] += n0 * shift
    g[y, 0] += n0 * shift
    policy._cache_t = -1
    mean_bad, _, used_bad = policy.arm_estimates()
    assert not used_bad[a]  # the pulled arm falls back on its experimental estimate
    assert abs(mean_bad[a] - env.arm_means[a]) < 1.0
    assert used_bad[1:].all()  # unpulled arms cannot be checked, so they keep the prior side


def test_ba_ucb_beats_ucb1_with_much_observational_data():
    regrets = {"ba": [], "ucb1": []}
    from causal_tuner.policies import UCB1

    for seed in range(3):
        sem, arms, ctx = _setup(seed, 320)
        env = SEMBanditEnvironment(sem, arms, horizon=500, seed=seed + 50)
        regrets["ba"].append(run_policy(BAUCB(ctx), env).regret.sum())
        regrets["ucb1"].append(run_policy(UCB1(ctx), env).regret.sum())
    assert np.mean(regrets["ba"]) < 0.5 * np.mean(regrets["ucb1"])


def test_order_modular_posteriors_match_brute_force_over_orders():
    rng = np.random.default_rng(0)
    m, d = 4, 2
    pairs = [
        (j, s)
        for j in range(m)
        for k in range(d + 1)
        for s in itertools.combinations([i for i in range(m) if i != j], k)
    ]
    node = np.array([j for j, _ in pairs])
    mask = np.array([sum(1 << z for z in s) for _, s in pairs])
    log_score = 2.0 * rng.normal(size=len(pairs))
    got = order_modular_posteriors(log_score, node, mask, m)
    beta = {pair: np.exp(v) for pair, v in zip(pairs, log_score, strict=True)}

    def alpha(k, pred):
        return sum(b for (kk, s), b in beta.items() if kk == k and set(s) <= pred)

    expected = np.zeros(len(pairs))
    for order in itertools.permutations(range(m)):
        pred = {order[i]: set(order[:i]) for i in range(m)}
        for idx, (j, s) in enumerate(pairs):
            if set(s) <= pred[j]:
                rest = np.prod([alpha(k, pred[k]) for k in range(m) if k != j])
                expected[idx] += beta[(j, s)] * rest
    for j in range(m):
        expected[node == j] /= expected[node == j].sum()
    np.testing.assert_allclose(got, expected, rtol=1e-9)


def test_bbb_dag_posterior_prefers_true_parents_over_markov_blankets():
    """Scoring each node's regression alone favours sets holding its children; the DAG
    posterior (acyclicity) moves weight back to the true parent sets."""
    on_truth_dag, on_truth_local = [], []
    for seed in range(3):
        sem, _, ctx = _setup(seed, 5_000)
        policy = BBBUCB(ctx)
        weights = policy.set_weights()
        local = _per_node_posteriors(
            policy.local_log_scores(), policy.pair_node_, len(policy.nodes_)
        )
        for pos, j in enumerate(policy.nodes_):
            sel = policy.pair_node_ == pos
            truth = sum(1 << list(policy.nodes_).index(z) for z in sem.parents(int(j)))
            hit = sel & (policy.pair_mask_ == truth)
            np.testing.assert_allclose(weights[sel].sum(), 1.0)
            on_truth_dag.append(weights[hit].sum())
            on_truth_local.append(local[hit].sum())
    assert np.mean(on_truth_dag) > 0.4
    assert np.mean(on_truth_dag) > np.mean(on_truth_local) + 0.1


def test_bbb_refuses_huge_enumerations():
    sem = random_parallel_sem(3, 46, 3, seed=0)
    arms = plus_minus_arms(range(sem.p - 1))
    ctx = make_context(sem, arms, sem.sample(10, seed=0))
    with pytest.raises(ValueError, match="parent sets for node"):
        BBBUCB(ctx)


def test_ba_ucb_parameter_validation():
    _, _, ctx = _setup(0, 20)
    with pytest.raises(ValueError, match="alpha"):
        BAUCB(ctx, alpha=1.5)
    with pytest.raises(ValueError, match="guard_z"):
        BAUCB(ctx, guard_z=-1.0)
    for name, bad in (
        ("refute_z", float("nan")),
        ("refresh_growth", -0.1),
        ("regime_z", float("nan")),
        ("max_reversals", -1),
        ("regime_min_rows", 0),
    ):
        with pytest.raises(ValueError, match=name):
            BAUCB(ctx, **{name: bad})
    BAUCB(ctx, regime_z=float("inf"), max_alternatives=0)  # both switch a guard off


def test_vectorized_combination_matches_estimators_combine():
    """BA-UCB's vectorized step 4 is :func:`causal_tuner.estimators.combine` arm by arm."""
    from causal_tuner.estimators import Estimate, combine

    sem, arms, ctx = _setup(4, 200)
    env = SEMBanditEnvironment(sem, arms, horizon=300, seed=2)
    policy = BAUCB(ctx, guard_z=2.0)
    result = run_policy(policy, env)
    assert result.arm_ids.size == 300
    mean, var, used = policy.arm_estimates()
    theta, theta_var = policy.effect_estimates()
    g = policy.regime_grams_[sem.p]
    n0 = g[0, 0]
    means = g[0, 1:] / n0
    cov = (g[1:, 1:] - n0 * np.outer(means, means)) / (n0 - 1)
    y = ctx.reward_index
    sigma2 = policy.pooled_noise_var()
    for a, arm in enumerate(arms):
        j, pos = arm.node, policy.arm_node_pos_[a]
        th = theta[pos]
        gap = arm.value - means[j]
        resid = cov[y, y] - 2 * th * cov[j, y] + th**2 * cov[j, j]
        obs = Estimate(means[y] + th * gap, resid / n0 + gap**2 * theta_var[pos])
        n = policy.counts_[a]
        exp = Estimate(policy.reward_sums_[a] / n, sigma2 / n, int(n)) if n else None
        expected = combine(obs, exp, guard_z=2.0)
        assert mean[a] == pytest.approx(expected.mean, rel=1e-9, abs=1e-12)
        assert var[a] == pytest.approx(expected.var, rel=1e-9)
        assert used[a] == expected.used_observational


def test_structural_alternatives_reverse_edges_into_the_node_only():
    """Alternatives are the node's directed parents with 1..max_reversals of them removed."""
    _, _, ctx = _setup(3, 320)
    policy = BAUCB(ctx, max_reversals=2)
    adjacency = policy.adjacency_
    for pos, j in enumerate(policy.nodes_):
        directed = {
            int(i)
            for i in np.flatnonzero(adjacency[:, j] & ~adjacency[j, :].astype(bool))
            if i != ctx.reward_index and not policy.detected_descendants_[j, i]
        }
        alts = policy._alternatives()[pos]
        assert len(alts) == len(set(alts))
        for alt in alts:
            assert set(alt) < directed and 1 <= len(directed - set(alt)) <= 2
        n = len(directed)
        assert len(alts) == min(16, n + n * (n - 1) // 2)
    assert all(not alts for alts in OracleBAUCB(ctx)._alternatives())
    assert BAUCB(ctx, max_alternatives=0).alt_arm_.size == 0


def test_regime_gate_drops_a_regime_that_cuts_the_effect():
    """Rows of do(X_k) with k a mediator PC did not see must not enter j's fit."""
    sem, arms, ctx = _setup(9, 300)
    policy = BAUCB(ctx)
    env = SEMBanditEnvironment(sem, arms, horizon=2000, seed=4)
    graph = ctx.true_graph
    y = ctx.reward_index
    # A node j with a child k on a path to Y: the regime do(X_k) cuts part of j's effect.
    pairs = [
        (j, k)
        for j in policy.nodes_
        for k in graph.successors(int(j))
        if k != y and nx.has_path(graph, k, y)
    ]
    te = sem.total_effects()
    # The pair whose mediated part (through k) is largest: cutting it moves theta_j most.
    j, k = max(
        ((int(a), int(b)) for a, b in pairs), key=lambda jk: abs(te[jk[0], jk[1]] * te[jk[1], y])
    )
    assert abs(te[j, k] * te[k, y]) > 0.3
    arm_ids = [i for i, a in enumerate(arms) if a.node == k]
    for t in range(1500):
        i = arm_ids[t % len(arm_ids)]
        policy.update(arms[i], env.observe(arms[i], t))
    pos = policy.node_pos_[j]
    forced = policy.valid_regimes_.copy()
    forced[pos, k] = True  # as if PC had missed the edge j -> k
    gated = policy._gate_regimes(forced, policy.adjustment_sets_)
    assert not gated[pos, k]
    assert not (gated & ~forced).any()  # the gate only removes regimes


def test_known_lockouts_of_the_learned_graph_are_gone():
    """Graphs of the paper benchmark where BA-UCB never pulled the best arm (its node's
    estimated parents included a child, or false "descendants" forbade its true edges)."""
    from causal_tuner.paper_benchmark import FULL, _graph_seeds

    for graph, n_obs in ((30, 320), (43, 160)):
        sem_seq, obs_seq, noise_seq, policy_seq = _graph_seeds(FULL)[graph].spawn(4)
        sem = random_parallel_sem(3, 6, 3, seed=np.random.default_rng(sem_seq))
        arms = plus_minus_arms(range(sem.p - 1))
        obs = sem.sample(320, seed=np.random.default_rng(obs_seq))
        env = SEMBanditEnvironment(sem, arms, 3000, seed=np.random.default_rng(noise_seq))
        ctx = make_context(sem, arms, obs[:n_obs], max_in_degree=3)
        seed = int(policy_seq.generate_state(1)[0])
        best = int(np.argmax(env.arm_means))
        result = run_policy(BAUCB(ctx, seed=seed), env)
        assert np.mean(result.arm_ids == best) > 0.5, (graph, n_obs)
