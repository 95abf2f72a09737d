"""Tests of the Gaussian linear SEM and its random generators."""

import networkx as nx
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from causal_tuner import LinearGaussianSEM, random_er_sem, random_parallel_sem


def chain_sem() -> LinearGaussianSEM:
    # 0 -> 1 -> 2 and 0 -> 2: total effect of 0 on 2 is 0.5 * -0.8 + 0.7 = 0.3
    weights = np.zeros((3, 3))
    weights[0, 1], weights[1, 2], weights[0, 2] = 0.5, -0.8, 0.7
    return LinearGaussianSEM(
        weights=weights, noise_var=np.array([1.0, 0.5, 0.25]), intercepts=[1.0, 2.0, 3.0]
    )


def test_total_effect_is_sum_over_paths() -> None:
    sem = chain_sem()
    assert sem.total_effect(0, 2) == pytest.approx(0.5 * -0.8 + 0.7)
    assert sem.total_effect(2, 0) == pytest.approx(0.0)
    np.testing.assert_allclose(np.diag(sem.total_effects()), 1.0)


def test_interventional_mean_by_hand() -> None:
    sem = chain_sem()
    # do(x1 = 4): x0 keeps mean 1, x2 = 3 + 0.7 * 1 - 0.8 * 4
    np.testing.assert_allclose(sem.interventional_mean({1: 4.0}), [1.0, 4.0, 3.0 + 0.7 - 3.2])
    # observational: x1 = 2 + 0.5 * 1, x2 = 3 + 0.7 * 1 - 0.8 * 2.5
    np.testing.assert_allclose(sem.interventional_mean(), [1.0, 2.5, 1.7])


def test_structure_accessors() -> None:
    sem = chain_sem()
    assert sem.p == 3
    assert sem.parents(2) == (0, 1)
    assert sem.children(0) == (1, 2)
    assert sem.topological_order() == (0, 1, 2)
    graph = sem.graph
    assert set(graph.edges) == {(0, 1), (1, 2), (0, 2)}
    assert graph.edges[1, 2]["weight"] == pytest.approx(-0.8)
    assert not sem.weights.flags.writeable


@pytest.mark.parametrize("seed", [0, 1])
def test_sample_mean_and_covariance_converge(seed: int) -> None:
    sem = random_er_sem(6, 2.0, seed=seed)
    n = 200_000
    data = sem.sample(n, seed=seed + 10)
    cov = sem.covariance()
    sd = np.sqrt(np.diag(cov))
    # 6 standard errors of each mean; covariance entries within 6 SE (var of x_i x_j <= 2 s_i^2 s_j^2)
    np.testing.assert_array_less(
        np.abs(data.mean(axis=0) - sem.interventional_mean()), 6 * sd / np.sqrt(n)
    )
    se_cov = np.sqrt(2.0) * np.outer(sd, sd) / np.sqrt(n)
    np.testing.assert_array_less(np.abs(np.cov(data.T) - cov), 6 * se_cov)


@pytest.mark.parametrize("seed", [0, 3])
def test_interventional_mean_matches_monte_carlo(seed: int) -> None:
    sem = random_parallel_sem(3, 6, 3, seed=seed)
    rng = np.random.default_rng(seed)
    node = int(rng.integers(sem.p - 1))
    value = float(rng.choice([-1.0, 1.0]))
    n = 100_000
    data = sem.sample(n, seed=rng, interventions={node: value})
    assert np.all(data[:, node] == value)
    sd = np.sqrt(np.diag(sem.covariance({node: value})))
    exact = sem.interventional_mean({node: value})
    np.testing.assert_array_less(np.abs(data.mean(axis=0) - exact), 6 * sd / np.sqrt(n) + 1e-12)
    # the mean of the reward moves by the total effect times the shift of the intervened node
    base = sem.interventional_mean({node: 0.0})
    assert exact[-1] - base[-1] == pytest.approx(sem.total_effect(node, sem.p - 1) * value)


def test_sampling_is_seeded() -> None:
    sem = random_er_sem(8, 3.0, seed=5)
    np.testing.assert_array_equal(sem.sample(50, seed=1), sem.sample(50, seed=1))
    assert not np.array_equal(sem.sample(50, seed=1), sem.sample(50, seed=2))
    gen_a, gen_b = np.random.default_rng(9), np.random.default_rng(9)
    np.testing.assert_array_equal(sem.sample(20, seed=gen_a), sem.sample(20, seed=gen_b))


def test_generators_are_seeded() -> None:
    a, b, c = (random_parallel_sem(3, 6, 3, seed=s) for s in (4, 4, 5))
    np.testing.assert_array_equal(a.weights, b.weights)
    np.testing.assert_array_equal(a.noise_var, b.noise_var)
    assert not np.array_equal(a.weights, c.weights)
    e1, e2 = random_er_sem(12, 2.0, seed=np.random.default_rng(3)), random_er_sem(12, 2.0, seed=3)
    np.testing.assert_array_equal(e1.weights, e2.weights)


@given(p=st.integers(1, 25), degree=st.floats(0.0, 4.0), seed=st.integers(0, 2**32 - 1))
def test_er_sem_properties(p: int, degree: float, seed: int) -> None:
    degree = min(degree, p - 1)
    sem = random_er_sem(p, degree, seed=seed)
    assert nx.is_directed_acyclic_graph(sem.graph)
    nonzero = np.abs(sem.weights[sem.weights != 0])
    assert np.all((nonzero >= 0.5) & (nonzero <= 1.0))
    assert np.all((sem.noise_var >= 0.5) & (sem.noise_var <= 1.0))


def test_er_expected_degree() -> None:
    degrees = [
        2 * np.count_nonzero(random_er_sem(30, 3.0, seed=s).weights) / 30 for s in range(200)
    ]
    # mean degree over 200 graphs: each graph's mean degree has sd about 0.3
    assert np.mean(degrees) == pytest.approx(3.0, abs=0.15)


@given(
    p1=st.integers(1, 5),
    p2=st.integers(0, 15),
    max_in=st.integers(1, 4),
    seed=st.integers(0, 2**32 - 1),
    normalize=st.booleans(),
)
def test_parallel_sem_properties(p1: int, p2: int, max_in: int, seed: int, normalize: bool) -> None:
    sem = random_parallel_sem(p1, p2, max_in, seed=seed, normalize=normalize)
    graph = sem.graph
    reward = sem.p - 1
    assert sem.p == p1 + p2 + 1
    assert nx.is_directed_acyclic_graph(graph)
    assert nx.is_weakly_connected(graph)
    assert len(sem.parents(reward)) == p1
    assert sem.children(reward) == ()
    assert all(graph.in_degree(j) <= max_in for j in range(reward))
    assert sem.names is not None and sem.names[-1] == "Y"
    if normalize:
        np.testing.assert_allclose(np.diag(sem.covariance()), 1.0)


@given(seed=st.integers(0, 2**32 - 1))
def test_normalized_keeps_dag_and_standardizes(seed: int) -> None:
    sem = random_er_sem(8, 3.0, seed=seed)
    norm = sem.normalized()
    np.testing.assert_array_equal(norm.weights != 0, sem.weights != 0)
    np.testing.assert_allclose(np.diag(norm.covariance()), 1.0)
    # correlations are scale-free, so they are unchanged
    cov, cov_n = sem.covariance(), norm.covariance()
    sd = np.sqrt(np.diag(cov))
    np.testing.assert_allclose(cov / np.outer(sd, sd), cov_n, atol=1e-10)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"weights": np.zeros((2, 3)), "noise_var": np.ones(2)}, "square"),
        (
            {"weights": np.array([[0, 1.0, 0], [0, 0, 1], [1, 0, 0]]), "noise_var": np.ones(3)},
            r"cycle 0 -> 1 -> 2 -> 0",
        ),
        ({"weights": np.array([[0, np.nan], [0, 0]]), "noise_var": np.ones(2)}, r"weights\[0, 1\]"),
        ({"weights": np.array([[1.0]]), "noise_var": np.ones(1)}, "self-loop at node 0"),
        ({"weights": np.zeros((2, 2)), "noise_var": np.array([1.0, 0.0])}, r"noise_var\[1\]"),
        ({"weights": np.zeros((2, 2)), "noise_var": np.ones(3)}, "noise_var must have shape"),
        (
            {"weights": np.zeros((2, 2)), "noise_var": np.ones(2), "intercepts": [0, np.inf]},
            r"intercepts\[1\]",
        ),
        (
            {"weights": np.zeros((2, 2)), "noise_var": np.ones(2), "names": ("a", "a")},
            "'a' repeats",
        ),
    ],
)
def test_bad_sem_raises(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        LinearGaussianSEM(**kwargs)


def test_bad_calls_raise() -> None:
    sem = chain_sem()
    with pytest.raises(ValueError, match="intervened node 7"):
        sem.sample(5, seed=0, interventions={7: 1.0})
    with pytest.raises(ValueError, match="node 1 is not finite"):
        sem.interventional_mean({1: np.nan})
    with pytest.raises(ValueError, match="n must be"):
        sem.sample(-1)
    with pytest.raises(ValueError, match="effect 3"):
        sem.total_effect(0, 3)
    with pytest.raises(ValueError, match="expected_degree"):
        random_er_sem(5, 7.0)
    with pytest.raises(ValueError, match="weight_range"):
        random_er_sem(5, 1.0, weight_range=(1.0, 0.5))
    with pytest.raises(ValueError, match="max_in_degree"):
        random_parallel_sem(2, 3, 0)
    with pytest.raises(ValueError, match="n_reward_parents"):
        random_parallel_sem(0, 3, 2)
