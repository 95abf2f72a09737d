"""Backdoor adjustment sets from a DAG or a CPDAG.

A set ``Z`` satisfies the backdoor criterion for the effect of ``X`` on ``Y`` in a DAG when no
member of ``Z`` is a descendant of ``X`` and ``Z`` d-separates ``X`` from ``Y`` in the graph with
``X``'s outgoing edges removed (Pearl, 2009); then ``E[Y | do(X = x)]`` is identified by adjusting
for ``Z``, and in a linear SEM the coefficient of ``X`` in the OLS regression of ``Y`` on
``[1, X, Z]`` is the total effect of ``X`` on ``Y``.

Graphs accepted by :func:`adjustment_sets` and :func:`find_adjustment`:

* a ``networkx.DiGraph`` (a DAG; nodes may be any hashable labels);
* a :class:`~causal_tuner.structure.PartiallyDirectedGraph` (what :class:`~causal_tuner.PC`
  returns as ``cpdag_``), or its ``(p, p)`` 0/1 adjacency matrix (``adjacency_``), with int nodes.

DAG: the first set is ``parents(X)`` (always valid when ``Y`` is not a parent of ``X``), then
other valid sets (the empty set, a minimal separator from networkx, ``parents(Y)`` outside the
descendants of ``X``), each checked with :func:`is_backdoor_set`.

CPDAG: where ``X`` has undirected neighbours its parent set is ambiguous. As in IDA (Maathuis,
Kalisch & Buehlmann, 2009) each locally consistent parent set ``pa = definite parents | S`` is a
candidate, for every subset ``S`` of the undirected neighbours such that orienting ``S -> X`` and
``X -> (rest)`` creates no new v-structure at ``X`` (every member of ``S`` adjacent to every
other member of ``pa``). Each candidate is then validated with :func:`is_backdoor_set` on a DAG
that extends the CPDAG with those local orientations (Dor-Tarsi; if the estimated graph has no
consistent extension, its directed part plus an acyclic orientation of the rest is used).
Candidates that contain ``Y`` mean ``Y -> X`` in some member of the equivalence class; there the
effect is zero and no adjustment set exists, so they are counted, not returned.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Hashable, Iterable
from dataclasses import dataclass

import networkx as nx
import numpy as np

from causal_tuner.structure import PartiallyDirectedGraph, meek_closure

__all__ = [
    "AdjustmentResult",
    "adjustment_sets",
    "find_adjustment",
    "is_backdoor_set",
]


def _check_dag(graph: object) -> nx.DiGraph:
    if not isinstance(graph, nx.DiGraph):
        raise ValueError(f"graph must be a networkx.DiGraph, got {type(graph).__name__}")
    if nx.is_directed_acyclic_graph(graph):
        return graph
    try:
        cycle = nx.find_cycle(graph)
    except nx.NetworkXNoCycle:
        return graph
    path = " -> ".join(str(u) for u, _ in cycle)
    raise ValueError(f"graph is not acyclic: cycle {path} -> {cycle[0][0]}")


def _check_pair(graph: nx.DiGraph, treatment: Hashable, outcome: Hashable) -> None:
    for what, node in (("treatment", treatment), ("outcome", outcome)):
        if node not in graph:
            raise ValueError(f"{what} {node!r} is not a node of the graph")
    if treatment == outcome:
        raise ValueError(f"treatment and outcome are the same node ({treatment!r})")


def is_backdoor_set(
    graph: nx.DiGraph, treatment: Hashable, outcome: Hashable, adjustment: Iterable[Hashable]
) -> bool:
    """Whether ``adjustment`` satisfies the backdoor criterion for ``treatment -> outcome``.

    Parameters
    ----------
    graph : networkx.DiGraph
        The DAG.
    treatment, outcome : node
        Distinct nodes of ``graph``.
    adjustment : iterable of nodes
        Candidate adjustment set (must not contain ``treatment`` or ``outcome``).

    Returns
    -------
    bool
        True when no member is a descendant of ``treatment`` and the set d-separates
        ``treatment`` and ``outcome`` once ``treatment``'s outgoing edges are removed.

    Raises
    ------
    ValueError
        If the graph is cyclic, a node is unknown, ``treatment == outcome``, or the set contains
        the treatment or the outcome.

    Examples
    --------
    >>> import networkx as nx
    >>> g = nx.DiGraph([("Z", "X"), ("Z", "Y"), ("X", "Y")])
    >>> is_backdoor_set(g, "X", "Y", {"Z"}), is_backdoor_set(g, "X", "Y", set())
    (True, False)
    """
    graph = _check_dag(graph)
    _check_pair(graph, treatment, outcome)
    z = set(adjustment)
    for node in z:
        if node not in graph:
            raise ValueError(f"adjustment node {node!r} is not a node of the graph")
    if treatment in z or outcome in z:
        raise ValueError("the adjustment set must not contain the treatment or the outcome")
    if z & nx.descendants(graph, treatment):
        return False
    cut = graph.copy()
    cut.remove_edges_from(list(graph.out_edges(treatment)))
    return bool(nx.is_d_separator(cut, {treatment}, {outcome}, z))


@dataclass(frozen=True)
class AdjustmentResult:
    """Adjustment sets for one (treatment, outcome) pair.

    Attributes
    ----------
    treatment, outcome : node
    sets : tuple of frozenset
        Valid adjustment sets, the preferred one first (``parents(treatment)`` in a DAG; the
        candidate parent sets, smallest first, in a CPDAG).
    causal_path : {"yes", "no", "possible"}
        Whether the outcome is a descendant of the treatment: "yes" along directed edges, "no"
        when not even a possibly-directed path (directed or undirected edges, never against an
        arrow) exists, "possible" otherwise. With "no" the total effect is zero.
    n_zero_effect_candidates : int
        Locally consistent parent sets of the treatment that contain the outcome (CPDAG only):
        in those members of the equivalence class ``outcome -> treatment`` and the effect is 0.
    ambiguous : bool
        True when the treatment has undirected neighbours (several candidate parent sets).
    """

    treatment: Hashable
    outcome: Hashable
    sets: tuple[frozenset, ...]
    causal_path: str
    n_zero_effect_candidates: int = 0
    ambiguous: bool = False

    @property
    def effect_is_zero(self) -> bool:
        """True when the outcome cannot be a descendant of the treatment (effect 0)."""
        return self.causal_path == "no"


def _as_pdag(graph: object) -> PartiallyDirectedGraph | None:
    if isinstance(graph, PartiallyDirectedGraph):
        return graph
    if isinstance(graph, np.ndarray):
        return PartiallyDirectedGraph(graph)
    return None


def find_adjustment(
    graph: nx.DiGraph | PartiallyDirectedGraph | np.ndarray,
    treatment: Hashable,
    outcome: Hashable,
    max_sets: int = 8,
) -> AdjustmentResult:
    """Candidate backdoor adjustment sets, each validated, with a note on the causal path.

    Parameters
    ----------
    graph : networkx.DiGraph, PartiallyDirectedGraph or ndarray
        A DAG, or a CPDAG (see the module docstring for the conventions).
    treatment, outcome : node
        Distinct nodes.
    max_sets : int
        Most sets returned (>= 1).

    Returns
    -------
    AdjustmentResult

    Raises
    ------
    ValueError
        On a cyclic graph, an unknown node, ``treatment == outcome`` or ``max_sets < 1``.
    """
    if isinstance(max_sets, bool) or not isinstance(max_sets, int) or max_sets < 1:
        raise ValueError(f"max_sets must be an int >= 1, got {max_sets!r}")
    pdag = _as_pdag(graph)
    if pdag is not None:
        if pdag.is_fully_directed:
            dag = pdag.to_networkx()
            _check_dag(dag)
            return _dag_sets(dag, treatment, outcome, max_sets)
        return _cpdag_sets(pdag, treatment, outcome, max_sets)
    dag = _check_dag(graph)
    return _dag_sets(dag, treatment, outcome, max_sets)


def adjustment_sets(
    graph: nx.DiGraph | PartiallyDirectedGraph | np.ndarray,
    treatment: Hashable,
    outcome: Hashable,
    max_sets: int = 8,
) -> list[frozenset]:
    """Valid backdoor adjustment sets for ``treatment -> outcome``, preferred first.

    A shortcut for ``find_adjustment(...).sets`` as a list; see :func:`find_adjustment` for the
    causal-path note (``effect_is_zero``) and the CPDAG candidates. An empty list means no
    backdoor set exists (in a DAG: the outcome is a parent of the treatment, so the effect is 0).

    Examples
    --------
    >>> import networkx as nx
    >>> g = nx.DiGraph([(0, 1), (0, 2), (1, 2), (3, 1)])
    >>> adjustment_sets(g, 1, 2)
    [frozenset({0, 3}), frozenset({0})]
    """
    return list(find_adjustment(graph, treatment, outcome, max_sets).sets)


def _dag_sets(
    dag: nx.DiGraph, treatment: Hashable, outcome: Hashable, max_sets: int
) -> AdjustmentResult:
    _check_pair(dag, treatment, outcome)
    descendants = nx.descendants(dag, treatment)
    path = "yes" if outcome in descendants else "no"
    parents = frozenset(dag.predecessors(treatment))
    if outcome in parents:
        return AdjustmentResult(treatment, outcome, (), "no", n_zero_effect_candidates=1)
    candidates: list[frozenset] = [parents, frozenset()]
    cut = dag.copy()
    cut.remove_edges_from(list(dag.out_edges(treatment)))
    allowed = set(dag.nodes) - descendants - {treatment, outcome}
    minimal = nx.find_minimal_d_separator(cut, {treatment}, {outcome}, restricted=allowed)
    if minimal is not None:
        candidates.append(frozenset(minimal))
    candidates.append(frozenset(set(dag.predecessors(outcome)) & allowed))
    candidates.append(frozenset(parents | (set(dag.predecessors(outcome)) & allowed)))
    sets: list[frozenset] = []
    for z in candidates:
        if z not in sets and is_backdoor_set(dag, treatment, outcome, z):
            sets.append(z)
        if len(sets) == max_sets:
            break
    return AdjustmentResult(treatment, outcome, tuple(sets), path)


def _possible_path(pdag: PartiallyDirectedGraph, treatment: int, outcome: int) -> str:
    directed = pdag.to_networkx()
    if outcome in nx.descendants(directed, treatment):
        return "yes"
    possible = nx.DiGraph()
    possible.add_nodes_from(range(pdag.p))
    possible.add_edges_from((int(i), int(j)) for i, j in np.argwhere(pdag.adjacency))
    return "possible" if outcome in nx.descendants(possible, treatment) else "no"


def _extension(a: np.ndarray) -> nx.DiGraph:
    """A DAG extending the PDAG ``a`` after Meek closure (cached: the bandit asks for every arm
    of the same graph, and most arms leave the graph unchanged). Do not mutate the result."""
    a = np.ascontiguousarray(a, dtype=bool)
    return _extension_cached(a.tobytes(), a.shape[0])


@functools.lru_cache(maxsize=128)
def _extension_cached(key: bytes, p: int) -> nx.DiGraph:
    a = np.frombuffer(key, dtype=bool).reshape(p, p)
    return _extension_of(meek_closure(a))


def _extension_of(a: np.ndarray) -> nx.DiGraph:
    """Dor-Tarsi extension of ``a``, else its directed part plus an acyclic orientation."""
    try:
        return PartiallyDirectedGraph(a.astype(np.int8)).to_dag()
    except ValueError:
        pass
    directed = a & ~a.T
    graph = nx.DiGraph()
    graph.add_nodes_from(range(a.shape[0]))
    graph.add_edges_from((int(i), int(j)) for i, j in np.argwhere(directed))
    try:
        order = {v: k for k, v in enumerate(nx.topological_sort(graph))}
    except nx.NetworkXUnfeasible:
        raise ValueError("the directed part of the graph has a cycle") from None
    for i, j in np.argwhere(np.triu(a & a.T)):
        i, j = int(i), int(j)
        graph.add_edge(*((i, j) if order[i] < order[j] else (j, i)))
    return graph


def _cpdag_sets(
    pdag: PartiallyDirectedGraph, treatment: Hashable, outcome: Hashable, max_sets: int
) -> AdjustmentResult:
    p = pdag.p
    for what, node in (("treatment", treatment), ("outcome", outcome)):
        if isinstance(node, bool) or not isinstance(node, int | np.integer) or not 0 <= node < p:
            raise ValueError(f"{what} {node!r} is not a node (nodes are 0..{p - 1})")
    x, y = int(treatment), int(outcome)
    if x == y:
        raise ValueError(f"treatment and outcome are the same node ({x})")
    _check_dag(pdag.to_networkx())
    path = _possible_path(pdag, x, y)
    skeleton = pdag.skeleton
    definite = set(pdag.parents(x))
    siblings = list(pdag.siblings(x))
    # Subsets of siblings that keep pa(x) free of new v-structures: cliques in the sibling
    # subgraph whose members are all adjacent to the definite parents; smallest first.
    sib_graph = nx.Graph()
    sib_graph.add_nodes_from(s for s in siblings if all(skeleton[s, d] for d in definite))
    sib_graph.add_edges_from(
        (s, t) for s, t in itertools.combinations(sib_graph.nodes, 2) if skeleton[s, t]
    )
    subsets: list[tuple[int, ...]] = [()]
    subsets += [tuple(sorted(c)) for c in nx.enumerate_all_cliques(sib_graph)]
    sets: list[frozenset] = []
    n_zero = 0
    base = pdag.adjacency.astype(bool)
    for subset in subsets:
        parents = frozenset(definite | set(subset))
        if y in parents:
            n_zero += 1
            continue
        a = base.copy()
        for s in siblings:
            if s in subset:
                a[x, s] = False  # s -> x
            else:
                a[s, x] = False  # x -> s
        extension = _extension(a)
        if parents != frozenset(extension.predecessors(x)):
            continue  # the local orientation did not survive (invalid estimated graph)
        if is_backdoor_set(extension, x, y, parents):
            sets.append(parents)
        if len(sets) == max_sets:
            break
    return AdjustmentResult(x, y, tuple(sets), path, n_zero, ambiguous=bool(siblings))
