"""Tests of backdoor adjustment: oracle validity on random DAGs/CPDAGs and OLS convergence."""

import networkx as nx
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from causal_tuner import (
    PartiallyDirectedGraph,
    adjustment_sets,
    find_adjustment,
    is_backdoor_set,
    meek_closure,
    random_er_sem,
    random_parallel_sem,
)


def brute_force_backdoor(graph: nx.DiGraph, x: int, y: int, z: set[int]) -> bool:
    """Backdoor criterion by path enumeration (independent of networkx d-separation)."""
    if z & nx.descendants(graph, x):
        return False
    skeleton = graph.to_undirected()
    for path in nx.all_simple_paths(skeleton, x, y):
        if not graph.has_edge(path[1], x):
            continue  # not a backdoor path (does not start with an arrow into x)
        blocked = False
        for a, b, c in zip(path, path[1:], path[2:], strict=False):
            collider = graph.has_edge(a, b) and graph.has_edge(c, b)
            if collider:
                if b not in z and not (nx.descendants(graph, b) & z):
                    blocked = True
                    break
            elif b in z:
                blocked = True
                break
        if not blocked:
            return False
    return True


def test_textbook_confounder() -> None:
    g = nx.DiGraph([("Z", "X"), ("Z", "Y"), ("X", "Y"), ("X", "M"), ("M", "Y")])
    assert is_backdoor_set(g, "X", "Y", {"Z"})
    assert not is_backdoor_set(g, "X", "Y", set())
    assert not is_backdoor_set(g, "X", "Y", {"Z", "M"})  # M is a descendant of X
    assert adjustment_sets(g, "X", "Y")[0] == frozenset({"Z"})


def test_m_bias_collider_is_not_adjusted() -> None:
    # X <- A -> C <- B -> Y: conditioning on the collider C opens the path
    g = nx.DiGraph([("A", "X"), ("A", "C"), ("B", "C"), ("B", "Y"), ("X", "Y")])
    assert is_backdoor_set(g, "X", "Y", set())
    assert not is_backdoor_set(g, "X", "Y", {"C"})
    assert is_backdoor_set(g, "X", "Y", {"C", "A"})
    sets = adjustment_sets(g, "X", "Y")
    assert frozenset() in sets and frozenset({"C"}) not in sets


def test_zero_effect_is_reported() -> None:
    g = nx.DiGraph([(0, 1), (2, 1)])
    result = find_adjustment(g, 0, 2)
    assert result.effect_is_zero and result.causal_path == "no"
    reverse = find_adjustment(nx.DiGraph([(1, 0)]), 0, 1)  # outcome is a parent of treatment
    assert reverse.sets == () and reverse.effect_is_zero


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: is_backdoor_set(nx.DiGraph([(0, 1), (1, 0)]), 0, 1, set()), "cycle"),
        (lambda: adjustment_sets(nx.DiGraph([(0, 1)]), 0, 0), "same node"),
        (lambda: adjustment_sets(nx.DiGraph([(0, 1)]), 0, 5), "outcome 5"),
        (lambda: is_backdoor_set(nx.DiGraph([(0, 1)]), 0, 1, {9}), "adjustment node 9"),
        (lambda: adjustment_sets(np.array([[0, 1], [1, 0]]), 3, 1), "treatment 3"),
        (lambda: adjustment_sets(nx.DiGraph([(0, 1)]), 0, 1, max_sets=0), "max_sets"),
        (lambda: adjustment_sets([[0, 1]], 0, 1), "DiGraph"),
    ],
)
def test_bad_input(call, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        call()


@given(p=st.integers(3, 9), degree=st.floats(1.0, 3.0), seed=st.integers(0, 2**32 - 1))
def test_dag_sets_satisfy_backdoor_criterion(p: int, degree: float, seed: int) -> None:
    graph = random_er_sem(p, min(degree, p - 1), seed=seed).graph
    rng = np.random.default_rng(seed)
    x, y = (int(v) for v in rng.choice(p, size=2, replace=False))
    result = find_adjustment(graph, x, y)
    if y in graph.predecessors(x):
        assert result.sets == () and result.n_zero_effect_candidates == 1
        return
    parents = frozenset(graph.predecessors(x))
    assert result.sets[0] == parents
    for z in result.sets:
        assert is_backdoor_set(graph, x, y, z)
        assert brute_force_backdoor(graph, x, y, set(z))
    assert result.effect_is_zero == (y not in nx.descendants(graph, x))


@given(p=st.integers(3, 9), degree=st.floats(1.0, 3.0), seed=st.integers(0, 2**32 - 1))
def test_cpdag_candidates_contain_true_parents_and_are_valid(
    p: int, degree: float, seed: int
) -> None:
    """IDA property: the true parent set is among the candidates (when it excludes the
    outcome); every candidate is the parent set of the treatment in some DAG of the same Markov
    equivalence class (checked by recomputing that DAG's CPDAG) and is a backdoor set there."""
    graph = random_er_sem(p, min(degree, p - 1), seed=seed).graph
    cpdag = PartiallyDirectedGraph.from_dag(graph)
    rng = np.random.default_rng(seed)
    x, y = (int(v) for v in rng.choice(p, size=2, replace=False))
    result = find_adjustment(cpdag, x, y, max_sets=64)
    parents = frozenset(graph.predecessors(x))
    if y in parents:
        assert result.n_zero_effect_candidates >= 1
    else:
        assert parents in result.sets
    for z in result.sets:
        if cpdag.is_fully_directed:  # the class has one member: the DAG itself
            assert brute_force_backdoor(graph, x, y, set(z))
            continue
        a = cpdag.adjacency.astype(bool).copy()
        for s in cpdag.siblings(x):
            a[x, s] = s not in z
            a[s, x] = s in z
        member = PartiallyDirectedGraph(meek_closure(a).astype(np.int8)).to_dag()
        assert PartiallyDirectedGraph.from_dag(member) == cpdag
        assert frozenset(member.predecessors(x)) == z
        assert brute_force_backdoor(member, x, y, set(z))
    if result.causal_path == "no":
        assert y not in nx.descendants(graph, x)
    if result.causal_path == "yes":
        assert y in nx.descendants(graph, x)
    assert result.ambiguous == bool(cpdag.siblings(x))


def test_ols_on_backdoor_set_converges_to_total_effect() -> None:
    rng = np.random.default_rng(0)
    checked = 0
    for seed in range(8):
        sem = random_parallel_sem(3, 6, 3, seed=seed)
        data = sem.sample(40_000, seed=rng)
        y = sem.p - 1
        for x in range(sem.p - 1):
            for z in adjustment_sets(sem.graph, x, y):
                cols = [x, *sorted(z)]
                design = np.column_stack([np.ones(len(data)), data[:, cols]])
                coef, *_ = np.linalg.lstsq(design, data[:, y], rcond=None)
                resid = data[:, y] - design @ coef
                sigma2 = resid @ resid / (len(data) - design.shape[1])
                se = np.sqrt(sigma2 * np.linalg.inv(design.T @ design)[1, 1])
                assert abs(coef[1] - sem.total_effect(x, y)) < 5 * se + 1e-9
                checked += 1
    assert checked > 100


def test_confounded_naive_regression_is_biased_but_adjusted_is_not() -> None:
    # context -> knob, context -> reward, knob -> reward (the tuner's confounding story)
    from causal_tuner import LinearGaussianSEM

    weights = np.zeros((3, 3))
    weights[0, 1], weights[0, 2], weights[1, 2] = 0.9, 1.0, 0.5
    sem = LinearGaussianSEM(weights=weights, noise_var=np.ones(3))
    data = sem.sample(50_000, seed=1)
    naive = np.polyfit(data[:, 1], data[:, 2], 1)[0]
    (z,) = adjustment_sets(sem.graph, 1, 2, max_sets=1)
    design = np.column_stack([np.ones(len(data)), data[:, [1, *sorted(z)]]])
    adjusted = np.linalg.lstsq(design, data[:, 2], rcond=None)[0][1]
    assert abs(naive - 0.5) > 0.3
    assert adjusted == pytest.approx(0.5, abs=0.03)
