"""Tests of structure learning: oracle PC, Meek rules, knowledge, experimental rows, online PC."""

import networkx as nx
import numpy as np
import pytest
from causallearn.graph.Dag import Dag
from causallearn.graph.GraphNode import GraphNode
from causallearn.utils.cit import CIT
from causallearn.utils.DAG2CPDAG import dag2cpdag
from hypothesis import given
from hypothesis import strategies as st

from causal_tuner import (
    PC,
    DSeparationOracle,
    LinearGaussianSEM,
    OnlinePC,
    PartiallyDirectedGraph,
    SufficientStatistics,
    fisher_z_pvalue,
    meek_closure,
    random_er_sem,
)


def causallearn_cpdag(dag: nx.DiGraph) -> np.ndarray:
    """CPDAG from causal-learn's independent dag2cpdag, in our adjacency convention."""
    p = dag.number_of_nodes()
    nodes = [GraphNode(f"X{i}") for i in range(p)]
    reference = Dag(nodes)
    for i, j in dag.edges:
        reference.add_directed_edge(nodes[i], nodes[j])
    g = dag2cpdag(reference).graph
    a = np.zeros((p, p), dtype=np.int8)
    for i in range(p):
        for j in range(p):
            if (g[j, i] == 1 and g[i, j] == -1) or (g[i, j] == -1 and g[j, i] == -1):
                a[i, j] = 1
    return a


dags = st.builds(
    lambda p, degree, seed: random_er_sem(p, min(degree, p - 1), seed=seed).graph,
    st.integers(2, 10),
    st.floats(0.5, 4.0),
    st.integers(0, 2**32 - 1),
)


@given(dag=dags)
def test_cpdag_of_dag_matches_causallearn(dag: nx.DiGraph) -> None:
    np.testing.assert_array_equal(
        PartiallyDirectedGraph.from_dag(dag).adjacency, causallearn_cpdag(dag)
    )


@given(dag=dags)
def test_oracle_pc_recovers_cpdag_exactly(dag: nx.DiGraph) -> None:
    pc = PC(ci_test=DSeparationOracle(dag)).fit()
    np.testing.assert_array_equal(pc.adjacency_, causallearn_cpdag(dag))
    # every separating set really separates
    for pair, found in pc.sepsets_.items():
        i, j = sorted(pair)
        assert found
        for sepset in found:
            assert nx.is_d_separator(dag, {i}, {j}, set(sepset))


@given(dag=dags)
def test_consistent_extension_is_in_the_class(dag: nx.DiGraph) -> None:
    cpdag = PartiallyDirectedGraph.from_dag(dag)
    member = cpdag.to_dag()
    assert nx.is_directed_acyclic_graph(member)
    assert PartiallyDirectedGraph.from_dag(member) == cpdag


def undirected(p: int, edges: list[tuple[int, int]]) -> np.ndarray:
    a = np.zeros((p, p), dtype=bool)
    for i, j in edges:
        a[i, j] = a[j, i] = True
    return a


def test_meek_rules_one_by_one() -> None:
    # R1: 0 -> 1 - 2, 0 and 2 not adjacent => 1 -> 2
    a = undirected(3, [(0, 1), (1, 2)])
    a[1, 0] = False
    out = meek_closure(a)
    assert out[1, 2] and not out[2, 1]
    # R2: 0 -> 1 -> 2 and 0 - 2 => 0 -> 2
    a = undirected(3, [(0, 1), (1, 2), (0, 2)])
    a[1, 0] = a[2, 1] = False
    out = meek_closure(a)
    assert out[0, 2] and not out[2, 0]
    # R3: 0 - 1, 0 - 2, 0 - 3, 1 -> 3 <- 2, 1 and 2 not adjacent => 0 -> 3
    a = undirected(4, [(0, 1), (0, 2), (0, 3), (1, 3), (2, 3)])
    a[3, 1] = a[3, 2] = False
    out = meek_closure(a)
    assert out[0, 3] and not out[3, 0]
    assert out[0, 1] and out[1, 0]  # the rest stays undirected
    # R4: 0 - 3, 0 adj 1 and 2, 1 -> 2 -> 3, 1 and 3 not adjacent => 0 -> 3
    a = undirected(4, [(0, 1), (0, 2), (0, 3), (1, 2), (2, 3)])
    a[2, 1] = a[3, 2] = False
    out = meek_closure(a)
    assert out[0, 3] and not out[3, 0]
    # forbidden orientation is respected
    a = undirected(3, [(0, 1), (1, 2)])
    a[1, 0] = False
    forbidden = np.zeros((3, 3), dtype=bool)
    forbidden[1, 2] = True
    assert meek_closure(a, forbidden)[2, 1]


def test_fisher_z_matches_causallearn() -> None:
    sem = random_er_sem(6, 3.0, seed=4)
    data = sem.sample(500, seed=5)
    reference = CIT(data, "fisherz")
    corr = np.corrcoef(data.T)
    for i, j, cond in [(0, 1, ()), (2, 5, (1,)), (0, 4, (1, 2, 3))]:
        assert fisher_z_pvalue(corr, 500, i, j, cond) == pytest.approx(
            reference(i, j, list(cond)), rel=1e-6, abs=1e-12
        )


def test_pc_on_large_sample_recovers_cpdag() -> None:
    recovered = 0
    for seed in range(5):
        sem = random_er_sem(6, 2.0, seed=seed)
        data = sem.sample(20_000, seed=seed + 100)
        pc = PC(alpha=0.01).fit(data)
        recovered += pc.cpdag_ == PartiallyDirectedGraph.from_dag(sem.graph)
    # weights are >= 0.5 in magnitude, so faithfulness violations are rare; allow one miss
    assert recovered >= 4


def test_pc_input_is_not_mutated_and_is_deterministic() -> None:
    data = random_er_sem(5, 2.0, seed=1).sample(300, seed=2)
    copy = data.copy()
    a = PC().fit(data).adjacency_
    np.testing.assert_array_equal(data, copy)
    np.testing.assert_array_equal(a, PC().fit(data).adjacency_)


def knob_story_sem() -> LinearGaussianSEM:
    # 0 context -> 1 knob -> 2 mediator -> 3 reward, 0 -> 3. The sign of 2 -> 3 keeps the
    # partial correlation of 0 and 2 given 3 away from 0 (+0.62; with +0.7 it would be -0.017,
    # nearly unfaithful, and the collider at 3 would be lost at any practical n).
    weights = np.zeros((4, 4))
    weights[0, 1], weights[1, 2], weights[2, 3], weights[0, 3] = 0.8, 0.9, -0.7, 0.6
    return LinearGaussianSEM(weights=weights, noise_var=np.ones(4))


def test_tiers_orient_edges_that_data_cannot() -> None:
    sem = knob_story_sem()
    data = sem.sample(5000, seed=0)
    plain = PC().fit(data).cpdag_
    # the data orient only the v-structure 0 -> 3 <- 2; the knob chain stays undirected
    assert plain.directed_edges() == [(0, 3), (2, 3)]
    assert plain.undirected_edges() == [(0, 1), (1, 2)]
    tiered = PC(tiers=[[0], [1], [2], [3]]).fit(data).cpdag_
    assert tiered.directed_edges() == [(0, 1), (0, 3), (1, 2), (2, 3)]


def test_forbidden_and_required_edges() -> None:
    sem = knob_story_sem()
    data = sem.sample(5000, seed=0)
    pc = PC(forbidden=[(0, 3), (3, 0)]).fit(data)
    assert not pc.cpdag_.skeleton[0, 3]
    pc = PC(forbidden=[(3, 0)]).fit(data)
    assert (0, 3) in pc.cpdag_.directed_edges()
    pc = PC(required=[(1, 3)]).fit(data)  # not in the true graph, kept anyway
    assert (1, 3) in pc.cpdag_.directed_edges()


def test_interventional_rows_orient_out_of_the_intervened_node() -> None:
    sem = knob_story_sem()
    rng = np.random.default_rng(0)
    obs = sem.sample(3000, seed=rng)
    rows, regimes = [obs], [np.full(3000, -1)]
    for value in (-1.0, 1.0):
        rows.append(sem.sample(1000, seed=rng, interventions={1: value}))
        regimes.append(np.full(1000, 1))
    data, intervened = np.vstack(rows), np.concatenate(regimes)
    pc = PC().fit(data, intervened=intervened)
    truth = PartiallyDirectedGraph.from_dag(sem.graph)
    np.testing.assert_array_equal(pc.cpdag_.skeleton, truth.skeleton)
    assert pc.shifted_[1, 2] and pc.shifted_[1, 3] and not pc.shifted_[1, 0]
    # 1 -> 2 from the experiment, then 2 -> 3 by Meek R1 (1 and 3 not adjacent)
    assert {(1, 2), (2, 3)} <= set(pc.cpdag_.directed_edges())
    assert pc.n_rows_[0] == 3000 and pc.n_rows_[2] == 2000


def test_constant_interventions_do_not_create_spurious_edges() -> None:
    """Pooling do(x_k = v) rows with fixed values naively would correlate everything downstream
    of k; per-regime statistics must not."""
    sem = random_er_sem(6, 1.5, seed=3)
    rng = np.random.default_rng(1)
    rows, regimes = [sem.sample(4000, seed=rng)], [np.full(4000, -1)]
    for node in range(sem.p):
        rows.append(sem.sample(400, seed=rng, interventions={node: 3.0}))
        regimes.append(np.full(400, node))
    pc = PC(alpha=0.001).fit(np.vstack(rows), intervened=np.concatenate(regimes))
    truth = PartiallyDirectedGraph.from_dag(sem.graph)
    np.testing.assert_array_equal(pc.cpdag_.skeleton, truth.skeleton)
    # every shift the test found is a true descendant relation
    descendants = np.zeros((sem.p, sem.p), dtype=bool)
    for k in range(sem.p):
        descendants[k, list(nx.descendants(sem.graph, k))] = True
    assert not np.any(pc.shifted_ & ~descendants)


def test_sufficient_statistics_match_numpy() -> None:
    rng = np.random.default_rng(0)
    data = rng.normal(loc=1e6, scale=2.0, size=(500, 4))  # large offset: stability
    one, many, merged = SufficientStatistics(4), SufficientStatistics(4), SufficientStatistics(4)
    for row in data:
        one.update(row)
    many.update_many(data[:200])
    many.update_many(data[200:])
    half = SufficientStatistics(4)
    half.update_many(data[250:])
    merged.update_many(data[:250])
    merged.merge(half)
    for stat in (one, many, merged):
        assert stat.n_ == 500
        np.testing.assert_allclose(stat.mean_, data.mean(axis=0))
        np.testing.assert_allclose(stat.covariance(), np.cov(data.T), rtol=1e-8)
        np.testing.assert_allclose(stat.correlation(), np.corrcoef(data.T), atol=1e-10)


def test_online_pc_matches_batch_and_rediscovers_on_schedule() -> None:
    sem = random_er_sem(8, 2.0, seed=2)
    data = sem.sample(1000, seed=3)
    online = OnlinePC(rediscover_every=100, change_threshold=np.inf, min_rows=10)
    for row in data:
        online.update(row)
    # first run at row 10, then every 100 rows: 10, 110, ..., 910
    assert online.n_rediscoveries_ == 10
    online.rediscover()
    np.testing.assert_array_equal(online.adjacency_, PC().fit(data).adjacency_)
    batch = OnlinePC().fit(data)
    np.testing.assert_array_equal(batch.adjacency_, online.adjacency_)


def test_online_pc_change_threshold_triggers_early() -> None:
    sem = knob_story_sem()
    online = OnlinePC(rediscover_every=10_000, change_threshold=0.05, min_rows=10)
    online.update_many(sem.sample(200, seed=0))
    before = online.n_rediscoveries_
    # a regime change: a new strong dependence between 0 and 2 moves the pooled correlation
    shifted = sem.sample(400, seed=1)
    shifted[:, 2] += 3.0 * shifted[:, 0]
    for row in shifted:
        online.update(row)
    assert online.n_rediscoveries_ > before
    assert online.cpdag_.skeleton[0, 2]


def test_online_pc_before_min_rows_keeps_everything_adjacent() -> None:
    online = OnlinePC(min_rows=20, tiers=[[0], [1, 2]])
    online.update(np.zeros(3))
    assert online.pc_ is None
    assert online.cpdag_.skeleton.sum() == 6
    assert (0, 1) in online.cpdag_.directed_edges()


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: PC().fit(np.array([[0.0, 1.0], [np.nan, 2.0]] * 3)), r"row 1, column 0"),
        (lambda: PC().fit(np.ones(5)), "2-D"),
        (lambda: PC(alpha=1.5).fit(np.zeros((5, 2))), "alpha"),
        (lambda: PC(required=[(0, 1), (1, 2), (2, 0)]).fit(np.eye(5, 3)), "cycle"),
        (lambda: PC(required=[(0, 7)]).fit(np.eye(5, 3)), "node 7"),
        (lambda: PC(tiers=[[0, 1], [1]]).fit(np.eye(5, 3)), "node 1 is in two tiers"),
        (lambda: PC(required=[(1, 0)], tiers=[[0], [1]]).fit(np.eye(5, 3)), "1 -> 0 is forbidden"),
        (lambda: PC().fit(np.eye(5, 3), intervened=[0, 0, 5, -1, -1]), r"intervened\[2\] = 5"),
        (lambda: PC().fit(np.eye(5, 3), intervened=[0, 0]), "one entry per row"),
        (lambda: PC(ci_test="kci").fit(np.eye(5, 3)), "ci_test"),
        (lambda: PC(ci_test=lambda i, j, s: 1.0).fit(), "n_nodes"),
        (lambda: OnlinePC().update([1.0, np.inf]), r"row 0, column 1"),
        (lambda: OnlinePC(rediscover_every=0).update([1.0, 2.0]), "rediscover_every"),
        (lambda: SufficientStatistics(3).update([1.0, 2.0]), r"shape \(3,\)"),
        (lambda: PartiallyDirectedGraph(np.array([[0, 2], [0, 0]])), r"adjacency\[0, 1\] = 2"),
        (lambda: DSeparationOracle(nx.DiGraph([(0, 1), (1, 0)])), "cycle"),
    ],
)
def test_bad_input(call, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        call()


def test_online_rejects_unknown_intervened_node() -> None:
    online = OnlinePC()
    online.update([0.0, 1.0])
    with pytest.raises(ValueError, match="intervened = 4"):
        online.update([0.0, 1.0], intervened=4)


@given(dag=dags, data=st.data())
def test_oracle_pc_with_true_tiers_is_sound(dag: nx.DiGraph, data) -> None:
    """Tiers taken from the true topological generations, on a random subset of nodes: PC with
    the oracle keeps the true skeleton and never orients an edge against the truth (Meek rules
    with background knowledge are sound); with every node tiered it returns the DAG itself."""
    generations = [sorted(g) for g in nx.topological_generations(dag)]
    keep = data.draw(st.lists(st.booleans(), min_size=len(dag), max_size=len(dag)))
    tiers = [[v for v in g if keep[v]] for g in generations]
    pc = PC(ci_test=DSeparationOracle(dag), tiers=tiers).fit()
    truth = PartiallyDirectedGraph.from_networkx(dag)
    np.testing.assert_array_equal(pc.cpdag_.skeleton, truth.skeleton)
    for i, j in pc.cpdag_.directed_edges():
        assert dag.has_edge(i, j), (i, j)
    # every edge the CPDAG orients stays oriented
    for i, j in PartiallyDirectedGraph.from_dag(dag).directed_edges():
        assert (i, j) in pc.cpdag_.directed_edges()
    full = PC(ci_test=DSeparationOracle(dag), tiers=generations).fit()
    assert full.cpdag_ == truth


@pytest.mark.parametrize("learner", [PC(alpha=0.05, tiers=[[0], [1, 2]]), OnlinePC(min_rows=20)])
def test_learner_conformance(learner) -> None:
    """scikit-learn contract: params round-trip, clone is unfitted, fit does not mutate input,
    same data gives the same graph, and a pickled learner carries its state."""
    import pickle

    from sklearn.base import clone

    data = random_er_sem(5, 2.0, seed=8).sample(400, seed=9)
    copy = data.copy()
    fresh = clone(learner)
    assert fresh.get_params() == learner.get_params()
    assert not hasattr(fresh, "adjacency_")
    first = clone(learner).fit(data)
    np.testing.assert_array_equal(data, copy)
    np.testing.assert_array_equal(first.adjacency_, clone(learner).fit(data).adjacency_)
    restored = pickle.loads(pickle.dumps(first))
    np.testing.assert_array_equal(restored.adjacency_, first.adjacency_)


def test_online_pc_survives_a_restart() -> None:
    """Pickled mid-stream and restored, the online learner ends where an uninterrupted one does."""
    import pickle

    data = random_er_sem(6, 2.0, seed=10).sample(600, seed=11)
    whole = OnlinePC(rediscover_every=50)
    whole.update_many(data[:300])
    resumed = pickle.loads(pickle.dumps(whole))
    for row in data[300:]:
        whole.update(row)
        resumed.update(row)
    np.testing.assert_array_equal(whole.adjacency_, resumed.adjacency_)
    assert whole.n_rediscoveries_ == resumed.n_rediscoveries_
