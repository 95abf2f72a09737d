"""Causal structure learning: the PC algorithm, batch and online, with background knowledge.

Graph representation
--------------------
A learned structure is a :class:`PartiallyDirectedGraph` (a CPDAG when it comes from PC): a
``(p, p)`` 0/1 matrix ``a`` with ``a[i, j] = 1, a[j, i] = 0`` for a directed edge ``i -> j``,
``a[i, j] = a[j, i] = 1`` for an undirected edge ``i - j`` and ``a[i, j] = a[j, i] = 0`` for no
edge. :func:`causal_tuner.backdoor.adjustment_sets` accepts it directly.

Conditional-independence tests
------------------------------
``ci_test="fisher_z"``: Fisher's z test of a partial correlation, computed from a precomputed
correlation matrix (the partial correlation of ``i, j`` given ``S`` from the inverse of the
``(|S| + 2)``-square submatrix). A callable ``ci_test(i, j, S) -> p_value`` can be used instead,
e.g. :class:`DSeparationOracle` (p-value 1 when d-separated, else 0), with which PC recovers the
CPDAG of the true DAG exactly.

Experimental rows (our choice, documented here)
-----------------------------------------------
Rows are grouped into regimes: observational rows (``intervened = -1``) and, for each node ``k``,
the rows that intervened on ``k`` (``do(x_k)``: ``x_k``'s mechanism is cut, every other equation
is unchanged). Each regime keeps its own sufficient statistics, centred on its own mean.

* CI tests: a test of ``i`` and ``j`` given ``S`` uses the observational regime and every regime
  ``do(x_k)`` with ``k`` not in ``{i, j} | S``. In such a regime the data follow the DAG with
  ``k``'s incoming edges cut; d-separation in the true DAG implies d-separation there, so the
  null hypothesis holds in every regime used, and an adjacent pair stays dependent in all of
  them. Per-regime Fisher z statistics are combined as ``sum z_r^2 ~ chi2(R)`` (signs may differ
  between regimes). Regimes that intervene on ``i``, ``j`` or a member of ``S`` are left out:
  there the cut mechanism would hide a parent of the intervened node. A test with no regime
  large enough (``n_r - |S| - 3 < 1``) returns p = 0 (dependent: the edge is kept, erring
  towards a denser graph and larger adjustment sets rather than a missed confounder).
* Orientation: in ``do(x_k)`` rows, ``x_k`` has no parents, so a variable that is dependent on
  ``x_k`` there is a descendant of ``k``. When the intervened values vary, this is a Fisher z test
  of the marginal correlation in that regime; when they are constant, a Welch test of the shift
  of the mean against the observational rows. A significant shift of an adjacent ``j`` orients
  ``k -> j``. Only positive evidence is used: a shift that is not detected orients nothing, and
  when both directions are detected the edge is left as the data and Meek rules make it.
  The evidence matrix is exposed as ``shifted_`` for callers that need descendant relations.

Orientation order: background knowledge (required edges, tiers, forbidden directions) and the
interventional evidence first; then unshielded colliders ``i -> k <- j`` from the separating
sets, a triple being oriented only when neither of its edges already points out of ``k``
(causal-learn's default ``uc_priority=2``); then Meek's rules R1-R4 to closure, never closing a
directed cycle.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

import networkx as nx
import numpy as np
from scipy import special
from scipy import stats as sps
from sklearn.base import BaseEstimator

__all__ = [
    "PC",
    "DSeparationOracle",
    "OnlinePC",
    "PartiallyDirectedGraph",
    "SufficientStatistics",
    "edge_scores",
    "fisher_z_pvalue",
    "meek_closure",
    "structural_hamming_distance",
]

CITest = Callable[[int, int, tuple[int, ...]], float]


# ============================================================================ graphs
def _check_int_node(node: object, p: int, what: str = "node") -> int:
    if isinstance(node, bool) or not isinstance(node, int | np.integer):
        raise ValueError(f"{what} must be an int node index, got {node!r}")
    if not 0 <= int(node) < p:
        raise ValueError(f"{what} {node} is not a node (nodes are 0..{p - 1})")
    return int(node)


def dag_to_matrix(dag: nx.DiGraph) -> np.ndarray:
    """0/1 adjacency matrix of a DAG whose nodes are ``0..p-1``; ``ValueError`` otherwise.

    Raises
    ------
    ValueError
        If ``dag`` is not a ``networkx.DiGraph``, its nodes are not ``0..p-1``, or it has a
        cycle (the cycle is named).
    """
    if not isinstance(dag, nx.DiGraph):
        raise ValueError(f"expected a networkx.DiGraph, got {type(dag).__name__}")
    p = dag.number_of_nodes()
    bad = [n for n in dag.nodes if isinstance(n, bool) or not isinstance(n, int | np.integer)]
    bad += [n for n in dag.nodes if n not in bad and not 0 <= n < p]
    if bad:
        raise ValueError(f"DAG nodes must be the ints 0..{p - 1}; node {bad[0]!r} is not")
    _check_acyclic(dag)
    matrix = np.zeros((p, p), dtype=np.int8)
    for i, j in dag.edges:
        matrix[i, j] = 1
    return matrix


def _check_acyclic(graph: nx.DiGraph, what: str = "graph") -> None:
    if nx.is_directed_acyclic_graph(graph):
        return
    try:
        cycle = nx.find_cycle(graph)
    except nx.NetworkXNoCycle:
        return
    path = " -> ".join(str(u) for u, _ in cycle)
    raise ValueError(f"{what} is not acyclic: cycle {path} -> {cycle[0][0]}")


@dataclass(frozen=True, eq=False)
class PartiallyDirectedGraph:
    """A graph with directed and undirected edges (a PDAG; a CPDAG when it comes from PC).

    Parameters
    ----------
    adjacency : ndarray of shape (p, p)
        0/1 matrix: ``a[i, j] = 1, a[j, i] = 0`` is ``i -> j``; ``a[i, j] = a[j, i] = 1`` is
        ``i - j``; zero diagonal.
    names : tuple of str, optional
        Node names.

    Examples
    --------
    >>> import networkx as nx
    >>> cpdag = PartiallyDirectedGraph.from_dag(nx.DiGraph([(0, 2), (1, 2), (2, 3)]))
    >>> cpdag.directed_edges()
    [(0, 2), (1, 2), (2, 3)]
    >>> PartiallyDirectedGraph.from_dag(nx.DiGraph([(0, 1), (1, 2)])).undirected_edges()
    [(0, 1), (1, 2)]
    """

    adjacency: np.ndarray
    names: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        a = np.asarray(self.adjacency)
        if a.ndim != 2 or a.shape[0] != a.shape[1]:
            raise ValueError(f"adjacency must be a square (p, p) matrix, got shape {a.shape}")
        bad = np.argwhere((a != 0) & (a != 1))
        if bad.size:
            i, j = bad[0]
            raise ValueError(f"adjacency entries must be 0 or 1; adjacency[{i}, {j}] = {a[i, j]}")
        if np.any(np.diag(a)):
            j = int(np.flatnonzero(np.diag(a))[0])
            raise ValueError(f"adjacency has a self-loop at node {j}")
        a = a.astype(np.int8)
        a.setflags(write=False)
        object.__setattr__(self, "adjacency", a)
        if self.names is not None:
            names = tuple(str(n) for n in self.names)
            if len(names) != a.shape[0]:
                raise ValueError(f"names must have {a.shape[0]} entries, got {len(names)}")
            object.__setattr__(self, "names", names)

    @property
    def p(self) -> int:
        """Number of nodes."""
        return int(self.adjacency.shape[0])

    @property
    def directed(self) -> np.ndarray:
        """Boolean matrix, ``[i, j]`` true for a directed edge ``i -> j``."""
        a = self.adjacency.astype(bool)
        return a & ~a.T

    @property
    def undirected(self) -> np.ndarray:
        """Boolean symmetric matrix of undirected edges."""
        a = self.adjacency.astype(bool)
        return a & a.T

    @property
    def skeleton(self) -> np.ndarray:
        """Boolean symmetric matrix of adjacencies (any edge)."""
        a = self.adjacency.astype(bool)
        return a | a.T

    def _nodes(self, row: np.ndarray) -> tuple[int, ...]:
        return tuple(int(i) for i in np.flatnonzero(row))

    def parents(self, j: int) -> tuple[int, ...]:
        """Nodes with a directed edge into ``j``."""
        return self._nodes(self.directed[:, _check_int_node(j, self.p)])

    def children(self, j: int) -> tuple[int, ...]:
        """Nodes with a directed edge out of ``j``."""
        return self._nodes(self.directed[_check_int_node(j, self.p), :])

    def siblings(self, j: int) -> tuple[int, ...]:
        """Nodes joined to ``j`` by an undirected edge."""
        return self._nodes(self.undirected[_check_int_node(j, self.p), :])

    def neighbors(self, j: int) -> tuple[int, ...]:
        """Nodes adjacent to ``j`` by any edge."""
        return self._nodes(self.skeleton[_check_int_node(j, self.p), :])

    def directed_edges(self) -> list[tuple[int, int]]:
        """Directed edges ``(i, j)`` meaning ``i -> j``, sorted."""
        return [(int(i), int(j)) for i, j in np.argwhere(self.directed)]

    def undirected_edges(self) -> list[tuple[int, int]]:
        """Undirected edges ``(i, j)`` with ``i < j``, sorted."""
        return [(int(i), int(j)) for i, j in np.argwhere(np.triu(self.undirected))]

    @property
    def is_fully_directed(self) -> bool:
        """True when no edge is undirected."""
        return not self.undirected.any()

    def to_networkx(self) -> nx.DiGraph:
        """The directed part as a ``networkx.DiGraph`` on all nodes (undirected edges left out)."""
        graph = nx.DiGraph()
        graph.add_nodes_from(range(self.p))
        graph.add_edges_from(self.directed_edges())
        return graph

    def to_dag(self) -> nx.DiGraph:
        """A consistent DAG extension (Dor & Tarsi, 1992): orient the undirected edges without
        creating a cycle or a new v-structure.

        Raises
        ------
        ValueError
            If no consistent extension exists (the graph is not a valid PDAG).
        """
        a = self.adjacency.astype(bool).copy()
        remaining = np.ones(self.p, dtype=bool)
        result = a & ~a.T
        directed = a & ~a.T
        undirected = a & a.T
        while remaining.any():
            # Sinks without undirected edges can all go at once (removing one changes nothing
            # for the others); the rest, one at a time, by the Dor-Tarsi condition.
            sinks = remaining & ~directed[:, remaining].any(axis=1)
            easy = sinks & ~undirected[:, remaining].any(axis=1)
            if easy.any():
                remaining &= ~easy
                continue
            found = None
            for x in np.flatnonzero(sinks):
                out = a[x] & ~a[:, x] & remaining
                if out.any():
                    continue
                sib = a[x] & a[:, x] & remaining
                adj = (a[x] | a[:, x]) & remaining
                ok = True
                for y in np.flatnonzero(sib):
                    others = adj.copy()
                    others[y] = False
                    if not np.all((a[y] | a[:, y])[others]):
                        ok = False
                        break
                if ok:
                    found = int(x)
                    break
            if found is None:
                raise ValueError("the graph has no consistent DAG extension (not a valid PDAG)")
            for y in np.flatnonzero(a[found] & a[:, found] & remaining):
                result[y, found] = True
                result[found, y] = False
            remaining[found] = False
        graph = nx.DiGraph()
        graph.add_nodes_from(range(self.p))
        graph.add_edges_from((int(i), int(j)) for i, j in np.argwhere(result))
        return graph

    @classmethod
    def from_dag(cls, dag: nx.DiGraph) -> PartiallyDirectedGraph:
        """The CPDAG (essential graph) of a DAG on nodes ``0..p-1``: skeleton, v-structures,
        then Meek's rules to closure (Meek, 1995)."""
        matrix = dag_to_matrix(dag).astype(bool)
        skeleton = matrix | matrix.T
        a = skeleton.copy()
        p = matrix.shape[0]
        for k in range(p):
            parents = np.flatnonzero(matrix[:, k])
            for i, j in itertools.combinations(parents, 2):
                if not skeleton[i, j]:
                    a[k, i] = a[k, j] = False
        return cls(meek_closure(a).astype(np.int8))

    @classmethod
    def from_networkx(cls, dag: nx.DiGraph) -> PartiallyDirectedGraph:
        """A DAG on nodes ``0..p-1`` as a fully directed graph (no edge made undirected)."""
        return cls(dag_to_matrix(dag))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, PartiallyDirectedGraph):
            return NotImplemented
        return bool(np.array_equal(self.adjacency, other.adjacency))

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return (
            f"PartiallyDirectedGraph(p={self.p}, directed={int(self.directed.sum())}, "
            f"undirected={int(np.triu(self.undirected).sum())})"
        )


def meek_closure(adjacency: np.ndarray, forbidden: np.ndarray | None = None) -> np.ndarray:
    """Apply Meek's orientation rules R1-R4 until nothing changes.

    Parameters
    ----------
    adjacency : ndarray of shape (p, p)
        0/1 PDAG matrix in the :class:`PartiallyDirectedGraph` convention.
    forbidden : ndarray of shape (p, p), optional
        Boolean; ``forbidden[i, j]`` forbids orienting an undirected edge as ``i -> j``.

    Returns
    -------
    ndarray of shape (p, p), dtype bool
        The oriented matrix (a new array).
    """
    a = np.asarray(adjacency).astype(bool).copy()
    p = a.shape[0]
    if forbidden is None:
        forbidden = np.zeros((p, p), dtype=bool)
    changed = True
    while changed:
        changed = False
        for x, y in np.argwhere(np.triu(a & a.T)):
            for b, c in ((x, y), (y, x)):
                if not (a[b, c] and a[c, b]) or forbidden[b, c]:
                    continue
                if _meek_applies(a, int(b), int(c)) and not _reaches(a, int(c), int(b)):
                    a[c, b] = False
                    changed = True
                    break
    return a


def _reaches(a: np.ndarray, source: int, target: int) -> bool:
    """Whether a directed path ``source ~> target`` exists (orienting ``target -> source``
    would then close a cycle; only possible in an estimated, unfaithful graph)."""
    directed = a & ~a.T
    seen = np.zeros(a.shape[0], dtype=bool)
    frontier = np.zeros(a.shape[0], dtype=bool)
    frontier[source] = True
    while frontier.any():
        seen |= frontier
        frontier = directed[frontier].any(axis=0) & ~seen
        if frontier[target]:
            return True
    return False


def _meek_applies(a: np.ndarray, b: int, c: int) -> bool:
    """Whether one of R1-R4 orients the undirected edge ``b - c`` as ``b -> c``."""
    into_b = a[:, b] & ~a[b, :]  # k -> b
    adj_c = a[:, c] | a[c, :]
    adj_c[c] = True
    # R1: k -> b - c, k and c not adjacent
    if np.any(into_b & ~adj_c):
        return True
    out_b = a[b, :] & ~a[:, b]  # b -> k
    into_c = a[:, c] & ~a[c, :]  # k -> c
    # R2: b -> k -> c
    if np.any(out_b & into_c):
        return True
    und_b = a[b, :] & a[:, b]
    und_b[c] = False
    # R3: b - k -> c and b - l -> c with k, l not adjacent
    ks = np.flatnonzero(und_b & into_c)
    if ks.size >= 2:
        sub = a[np.ix_(ks, ks)] | a[np.ix_(ks, ks)].T
        if np.any(~sub[np.triu_indices(ks.size, 1)]):
            return True
    # R4: b adj k -> l -> c, b adj l, k and c not adjacent
    adj_b = a[b, :] | a[:, b]
    adj_b[c] = False
    ls = np.flatnonzero(adj_b & into_c)
    ks = np.flatnonzero(adj_b & ~adj_c)
    if ls.size and ks.size:
        directed = a & ~a.T
        if np.any(directed[np.ix_(ks, ls)]):
            return True
    return False


def _matrix_of(graph: PartiallyDirectedGraph | np.ndarray) -> np.ndarray:
    if isinstance(graph, PartiallyDirectedGraph):
        return graph.adjacency.astype(bool)
    return PartiallyDirectedGraph(np.asarray(graph)).adjacency.astype(bool)


def structural_hamming_distance(
    estimate: PartiallyDirectedGraph | np.ndarray, truth: PartiallyDirectedGraph | np.ndarray
) -> int:
    """Number of node pairs whose edge differs (missing, extra, or a different orientation).

    Both graphs use the :class:`PartiallyDirectedGraph` convention; ``i -> j``, ``j -> i``,
    ``i - j`` and no edge are four different states of a pair, and each pair that differs
    counts 1 (the CPDAG SHD of Tsamardinos et al., 2006).
    """
    a, b = _matrix_of(estimate), _matrix_of(truth)
    if a.shape != b.shape:
        raise ValueError(f"graphs have different sizes: {a.shape} vs {b.shape}")
    differ = (a != b) | (a.T != b.T)
    return int(np.triu(differ, 1).sum())


def edge_scores(
    estimate: PartiallyDirectedGraph | np.ndarray, truth: PartiallyDirectedGraph | np.ndarray
) -> dict[str, float]:
    """Precision, recall and F1 of the skeleton and of the oriented edge marks.

    Skeleton: over unordered adjacent pairs. Oriented: over ordered pairs ``(i, j)`` with
    ``a[i, j] = 1`` (``i -> j``; an undirected edge counts as both directions), so an edge
    counts as correct only with the same orientation. An empty denominator gives 1.0 when
    both sides are empty and 0.0 otherwise.

    Returns
    -------
    dict
        Keys ``skeleton_precision``, ``skeleton_recall``, ``skeleton_f1``,
        ``oriented_precision``, ``oriented_recall``, ``oriented_f1``.
    """
    a, b = _matrix_of(estimate), _matrix_of(truth)
    if a.shape != b.shape:
        raise ValueError(f"graphs have different sizes: {a.shape} vs {b.shape}")
    out: dict[str, float] = {}
    skel_a, skel_b = np.triu(a | a.T, 1), np.triu(b | b.T, 1)
    for name, est, ref in (("skeleton", skel_a, skel_b), ("oriented", a, b)):
        tp, n_est, n_ref = int((est & ref).sum()), int(est.sum()), int(ref.sum())
        precision = tp / n_est if n_est else float(n_ref == 0)
        recall = tp / n_ref if n_ref else float(n_est == 0)
        total = precision + recall
        out[f"{name}_precision"] = precision
        out[f"{name}_recall"] = recall
        out[f"{name}_f1"] = 2 * precision * recall / total if total else 0.0
    return out


# ============================================================================ statistics
def _as_row(row: object, p: int | None, where: str = "row") -> np.ndarray:
    try:
        x = np.asarray(row, dtype=float)
    except (TypeError, ValueError):
        raise ValueError(f"{where} is not numeric") from None
    if x.ndim != 1 or (p is not None and x.shape[0] != p):
        expect = f"({p},)" if p is not None else "1-D"
        raise ValueError(f"{where} must have shape {expect}, got {x.shape}")
    bad = np.flatnonzero(~np.isfinite(x))
    if bad.size:
        raise ValueError(f"{where}, column {bad[0]} is not finite ({x[bad[0]]})")
    return x


def _as_data(data: object, p: int | None = None) -> np.ndarray:
    try:
        x = np.asarray(data, dtype=float)
    except (TypeError, ValueError):
        raise ValueError("data is not a numeric (n, p) array") from None
    if x.ndim != 2:
        raise ValueError(f"data must be a 2-D (n, p) array, got shape {x.shape}")
    if p is not None and x.shape[1] != p:
        raise ValueError(f"data must have {p} columns, got {x.shape[1]}")
    bad = np.argwhere(~np.isfinite(x))
    if bad.size:
        r, c = bad[0]
        raise ValueError(f"data row {r}, column {c} is not finite ({x[r, c]})")
    return x


def _as_intervened(intervened: object, n: int, p: int) -> np.ndarray:
    if intervened is None:
        return np.full(n, -1, dtype=int)
    arr = np.asarray(intervened)
    if arr.shape != (n,):
        raise ValueError(f"intervened must have shape ({n},) (one entry per row), got {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        if not np.all(np.isfinite(arr)) or np.any(arr != np.round(arr)):
            raise ValueError("intervened must hold integer node indices (-1 = observational)")
    arr = arr.astype(int)
    bad = np.flatnonzero((arr < -1) | (arr >= p))
    if bad.size:
        raise ValueError(
            f"intervened[{bad[0]}] = {arr[bad[0]]} is not a node in 0..{p - 1} or -1 (observational)"
        )
    return arr


class SufficientStatistics:
    """Running count, mean and co-moment matrix of rows: O(p^2) per row, no rows kept.

    Means and centred cross-products are updated with Welford's and Chan's formulas (numerically
    stable equivalents of running sums and raw cross-products).

    Parameters
    ----------
    p : int
        Number of columns.

    Attributes
    ----------
    n_ : int
        Rows seen.
    mean_ : ndarray of shape (p,)
    comoment_ : ndarray of shape (p, p)
        ``sum_r (x_r - mean)(x_r - mean)^T``.
    """

    def __init__(self, p: int) -> None:
        self.p = p
        if isinstance(p, bool) or not isinstance(p, int | np.integer) or p < 1:
            raise ValueError(f"p must be an int >= 1, got {p!r}")
        self.n_ = 0
        self.mean_ = np.zeros(p)
        self.comoment_ = np.zeros((p, p))

    def update(self, row: object) -> None:
        """Add one row (shape ``(p,)``, finite)."""
        x = _as_row(row, self.p)
        self.n_ += 1
        delta = x - self.mean_
        self.mean_ += delta / self.n_
        self.comoment_ += np.outer(delta, x - self.mean_)

    def update_many(self, rows: object) -> None:
        """Add the rows of an ``(m, p)`` array (Chan et al.'s pairwise merge)."""
        x = _as_data(rows, self.p)
        m = x.shape[0]
        if m == 0:
            return
        mean_b = x.mean(axis=0)
        centred = x - mean_b
        self._merge(m, mean_b, centred.T @ centred)

    def merge(self, other: SufficientStatistics) -> None:
        """Add the rows summarized by ``other`` (same ``p``)."""
        if other.p != self.p:
            raise ValueError(f"cannot merge statistics of {other.p} columns into {self.p}")
        if other.n_:
            self._merge(other.n_, other.mean_, other.comoment_)

    def _merge(self, m: int, mean_b: np.ndarray, comoment_b: np.ndarray) -> None:
        n = self.n_
        total = n + m
        delta = mean_b - self.mean_
        self.mean_ = self.mean_ + delta * (m / total)
        self.comoment_ = self.comoment_ + comoment_b + np.outer(delta, delta) * (n * m / total)
        self.n_ = total

    def covariance(self) -> np.ndarray:
        """Unbiased sample covariance (needs ``n_ >= 2``)."""
        if self.n_ < 2:
            raise ValueError(f"covariance needs at least 2 rows, have {self.n_}")
        return self.comoment_ / (self.n_ - 1)

    def correlation(self) -> np.ndarray:
        """Sample correlation; a constant column gets correlation 0 with every other column."""
        if self.n_ < 2:
            raise ValueError(f"correlation needs at least 2 rows, have {self.n_}")
        var = np.diag(self.comoment_).copy()
        scale = np.max(np.abs(self.mean_)) ** 2 + 1.0
        constant = var <= 1e-12 * scale * self.n_
        sd = np.sqrt(np.where(constant, 1.0, var))
        corr = self.comoment_ / np.outer(sd, sd)
        corr[constant, :] = 0.0
        corr[:, constant] = 0.0
        np.fill_diagonal(corr, 1.0)
        return np.clip(corr, -1.0, 1.0)

    def copy(self) -> SufficientStatistics:
        """An independent copy."""
        new = SufficientStatistics(self.p)
        new.n_, new.mean_, new.comoment_ = self.n_, self.mean_.copy(), self.comoment_.copy()
        return new


def fisher_z_pvalue(corr: np.ndarray, n: int, i: int, j: int, cond: Sequence[int] = ()) -> float:
    """Two-sided p-value of Fisher's z test that ``i`` and ``j`` are uncorrelated given ``cond``.

    Parameters
    ----------
    corr : ndarray of shape (p, p)
        Correlation matrix.
    n : int
        Number of rows behind ``corr``.
    i, j : int
        Tested columns.
    cond : sequence of int
        Conditioning columns.

    Returns
    -------
    float
        p-value; 0 when ``n - |cond| - 3 < 1`` (untestable: treated as dependent).
    """
    dof = n - len(cond) - 3
    if dof < 1:
        return 0.0
    idx = [i, j, *cond]
    r = _partial_correlations(corr[np.ix_(idx, idx)][None])[0]
    z = np.arctanh(r) * np.sqrt(dof)
    return float(2.0 * sps.norm.sf(abs(z)))


_R_MAX = 1.0 - 1e-12


def _partial_correlations(subs: np.ndarray) -> np.ndarray:
    """Partial correlation of the first two variables given the rest, for a stack of matrices."""
    try:
        inv = np.linalg.inv(subs)
    except np.linalg.LinAlgError:
        inv = np.linalg.pinv(subs, hermitian=True)
    denom = np.sqrt(np.abs(inv[:, 0, 0] * inv[:, 1, 1]))
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.where(denom > 0, -inv[:, 0, 1] / denom, 0.0)
    r[~np.isfinite(r)] = 0.0
    return np.clip(r, -_R_MAX, _R_MAX)


class _RegimeFisherZ:
    """Fisher z tests pooled over regimes (see the module docstring)."""

    def __init__(self, statistics: Mapping[int, SufficientStatistics]) -> None:
        usable = sorted(k for k, s in statistics.items() if s.n_ >= 4)
        self.regimes = np.array(usable, dtype=int)
        self.position = {k: r for r, k in enumerate(usable) if k >= 0}
        self.n = np.array([statistics[k].n_ for k in usable], dtype=float)
        p = next(iter(statistics.values())).p if statistics else 0
        self.corr = (
            np.stack([statistics[k].correlation() for k in usable])
            if usable
            else np.zeros((0, p, p))
        )
        self._use_by_size: dict[int, np.ndarray] = {}

    @property
    def max_cond_size(self) -> int:
        """Largest conditioning-set size any regime can test."""
        return int(self.n.max()) - 4 if self.n.size else -1

    def pvalue(self, i: int, j: int, cond: tuple[int, ...]) -> float:
        size = len(cond)
        use = self._use_by_size.get(size)
        if use is None:
            use = self._use_by_size[size] = self.n - size - 3 >= 1
        excluded = [self.position[v] for v in (i, j, *cond) if v in self.position]
        if excluded:
            use = use.copy()
            use[excluded] = False
        rows = np.flatnonzero(use)
        if rows.size == 0:
            return 0.0
        corr = self.corr
        if rows.size == 1 and size <= 1:
            m = corr[rows[0]]
            if size == 0:
                r = float(m[i, j])
            else:
                c = cond[0]
                r_ic, r_jc = float(m[i, c]), float(m[j, c])
                denom = math.sqrt(max((1.0 - r_ic * r_ic) * (1.0 - r_jc * r_jc), 0.0))
                r = (float(m[i, j]) - r_ic * r_jc) / denom if denom > 0 else 0.0
            r = min(max(r, -_R_MAX), _R_MAX)
            z = abs(math.atanh(r)) * math.sqrt(self.n[rows[0]] - size - 3)
            return math.erfc(z / math.sqrt(2.0))
        if size == 0:
            r = corr[rows, i, j]
        elif size == 1:
            c = cond[0]
            r_ij, r_ic, r_jc = corr[rows, i, j], corr[rows, i, c], corr[rows, j, c]
            denom = np.sqrt(np.maximum((1.0 - r_ic**2) * (1.0 - r_jc**2), 0.0))
            with np.errstate(divide="ignore", invalid="ignore"):
                r = np.where(denom > 0, (r_ij - r_ic * r_jc) / denom, 0.0)
        else:
            idx = np.array([i, j, *cond])
            r = _partial_correlations(corr[np.ix_(rows, idx, idx)])
        r = np.clip(r, -_R_MAX, _R_MAX)
        stat = float(np.sum(np.arctanh(r) ** 2 * (self.n[rows] - size - 3)))
        return float(special.chdtrc(rows.size, stat))

    def pvalues_marginal(self) -> np.ndarray:
        """All pairwise marginal tests at once: a (p, p) matrix of p-values."""
        p = self.corr.shape[1]
        stat = np.zeros((p, p))
        df = np.zeros((p, p))
        for r, regime, n in zip(self.corr, self.regimes, self.n, strict=True):
            z2 = np.arctanh(np.clip(r, -_R_MAX, _R_MAX)) ** 2 * (n - 3)
            mask = np.ones((p, p), dtype=bool)
            if regime >= 0:
                mask[regime, :] = mask[:, regime] = False
            stat += np.where(mask, z2, 0.0)
            df += mask
        out = np.zeros((p, p))
        has = df > 0
        out[has] = special.chdtrc(df[has], stat[has])
        return out


class DSeparationOracle:
    """A perfect conditional-independence test read from a known DAG.

    Calling it as ``oracle(i, j, S)`` returns 1.0 when ``i`` and ``j`` are d-separated by ``S``
    in the DAG (``networkx.is_d_separator``) and 0.0 otherwise, so any ``alpha`` in (0, 1)
    turns it into exact independence statements. Use it as ``PC(ci_test=oracle).fit()``.

    Parameters
    ----------
    dag : networkx.DiGraph
        A DAG on nodes ``0..p-1``.
    """

    def __init__(self, dag: nx.DiGraph) -> None:
        dag_to_matrix(dag)
        self.dag = nx.DiGraph(dag)
        self.n_nodes = dag.number_of_nodes()

    def __call__(self, i: int, j: int, cond: tuple[int, ...] = ()) -> float:
        return 1.0 if nx.is_d_separator(self.dag, {i}, {j}, set(cond)) else 0.0

    def __repr__(self) -> str:
        return f"DSeparationOracle(n_nodes={self.n_nodes}, edges={self.dag.number_of_edges()})"


# ============================================================================ knowledge
@dataclass(frozen=True)
class _Knowledge:
    forbidden: np.ndarray  # [i, j]: i -> j not allowed
    required: np.ndarray  # [i, j]: i -> j must be present


def _build_knowledge(
    p: int,
    tiers: Sequence[Iterable[int]] | None,
    forbidden: Iterable[tuple[int, int]],
    required: Iterable[tuple[int, int]],
) -> _Knowledge:
    forbid = np.zeros((p, p), dtype=bool)
    tier_of = np.full(p, -1)
    if tiers is not None:
        if isinstance(tiers, str | bytes) or not isinstance(tiers, Sequence):
            raise ValueError(f"tiers must be a list of node lists, got {tiers!r}")
        for t, tier in enumerate(tiers):
            for node in tier:
                node = _check_int_node(node, p, f"tiers[{t}] node")
                if tier_of[node] >= 0:
                    raise ValueError(f"node {node} is in two tiers ({tier_of[node]} and {t})")
                tier_of[node] = t
        in_tier = tier_of >= 0
        later = tier_of[:, None] > tier_of[None, :]
        forbid |= later & in_tier[:, None] & in_tier[None, :]
    for edge in forbidden:
        i, j = _check_edge(edge, p, "forbidden")
        forbid[i, j] = True
    req = np.zeros((p, p), dtype=bool)
    req_graph = nx.DiGraph()
    for edge in required:
        i, j = _check_edge(edge, p, "required")
        if forbid[i, j]:
            raise ValueError(f"required edge {i} -> {j} is forbidden (by tiers or forbidden)")
        req[i, j] = True
        req_graph.add_edge(i, j)
    _check_acyclic(req_graph, "required edges")
    return _Knowledge(forbidden=forbid, required=req)


def _check_edge(edge: object, p: int, what: str) -> tuple[int, int]:
    try:
        i, j = edge  # type: ignore[misc]
    except (TypeError, ValueError):
        raise ValueError(f"{what} edges must be pairs (i, j), got {edge!r}") from None
    i = _check_int_node(i, p, f"{what} edge node")
    j = _check_int_node(j, p, f"{what} edge node")
    if i == j:
        raise ValueError(f"{what} edge ({i}, {j}) is a self-loop")
    return i, j


# ============================================================================ PC
class PC(BaseEstimator):
    """The PC algorithm (stable variant) with background knowledge and experimental rows.

    Parameters
    ----------
    alpha : float
        Significance level of the CI tests, in (0, 1).
    ci_test : "fisher_z" or callable
        ``"fisher_z"`` (partial correlations, regimes as in the module docstring) or a callable
        ``ci_test(i, j, S) -> p_value`` such as :class:`DSeparationOracle`.
    tiers : list of lists of int, optional
        Tiered background knowledge: a node in an earlier tier may cause one in a later tier,
        never the reverse. Nodes in no tier are unconstrained.
    forbidden : iterable of (i, j)
        Forbidden directed edges ``i -> j`` (both directions forbidden: no edge at all).
    required : iterable of (i, j)
        Required directed edges ``i -> j``: never removed, always oriented so.
    max_cond_size : int, optional
        Largest conditioning set tried (``None``: no limit).
    shift_alpha : float, optional
        Significance level of the experimental "shift" tests behind ``shifted_`` (default:
        ``alpha``). A caller that keeps ``shifted_`` as hard knowledge should make it small:
        there are ``p^2`` such tests per fit.

    Attributes
    ----------
    cpdag_ : PartiallyDirectedGraph
        The learned graph.
    adjacency_ : ndarray of shape (p, p)
        ``cpdag_.adjacency`` (int8; ``a[i, j]=1, a[j, i]=0`` is ``i -> j``; both 1 undirected).
    sepsets_ : dict of frozenset({i, j}) -> tuple of tuples of int
        Every set that separated each removed pair: in the level where a pair is removed, all
        conditioning sets of that size are tried from both ends (as causal-learn's stable PC
        does), and an unshielded triple ``i - k - j`` becomes a collider only when ``k`` is in
        none of them.
    n_tests_ : int
        Distinct CI tests run.
    shifted_ : ndarray of shape (p, p), bool
        ``shifted_[k, j]``: rows under ``do(x_k)`` show ``x_j`` depends on ``x_k`` (``j`` is a
        descendant of ``k``). All false without experimental rows.
    n_rows_ : ndarray of shape (p + 1,)
        Rows per regime: entry 0 observational, entry ``k + 1`` intervened on node ``k``.

    Examples
    --------
    >>> import networkx as nx
    >>> dag = nx.DiGraph([(0, 2), (1, 2), (2, 3)])
    >>> PC(ci_test=DSeparationOracle(dag)).fit().cpdag_.directed_edges()
    [(0, 2), (1, 2), (2, 3)]
    """

    def __init__(
        self,
        alpha: float = 0.01,
        ci_test: str | CITest = "fisher_z",
        tiers: Sequence[Iterable[int]] | None = None,
        forbidden: Iterable[tuple[int, int]] = (),
        required: Iterable[tuple[int, int]] = (),
        max_cond_size: int | None = None,
        shift_alpha: float | None = None,
    ) -> None:
        self.alpha = alpha
        self.ci_test = ci_test
        self.tiers = tiers
        self.forbidden = forbidden
        self.required = required
        self.max_cond_size = max_cond_size
        self.shift_alpha = shift_alpha

    def _check_params(self) -> None:
        if not isinstance(self.alpha, float | int) or not 0.0 < float(self.alpha) < 1.0:
            raise ValueError(f"alpha must lie in (0, 1), got {self.alpha!r}")
        if not (self.ci_test == "fisher_z" or callable(self.ci_test)):
            raise ValueError(f"ci_test must be 'fisher_z' or a callable, got {self.ci_test!r}")
        m = self.max_cond_size
        if m is not None and (isinstance(m, bool) or not isinstance(m, int) or m < 0):
            raise ValueError(f"max_cond_size must be None or an int >= 0, got {m!r}")
        a = self.shift_alpha
        if a is not None and (not isinstance(a, float | int) or not 0.0 < float(a) < 1.0):
            raise ValueError(f"shift_alpha must be None or lie in (0, 1), got {a!r}")

    def fit(self, data: object = None, intervened: object = None) -> PC:
        """Learn the structure.

        Parameters
        ----------
        data : array-like of shape (n, p), optional
            Finite data. May be omitted with a callable ``ci_test`` that has an ``n_nodes``
            attribute (e.g. :class:`DSeparationOracle`).
        intervened : array-like of int, shape (n,), optional
            Node intervened on in each row, ``-1`` for observational rows (default: all -1).

        Returns
        -------
        self
        """
        self._check_params()
        if callable(self.ci_test):
            if intervened is not None:
                raise ValueError(
                    "intervened rows need ci_test='fisher_z' (a callable test has no data)"
                )
            if data is None:
                p = getattr(self.ci_test, "n_nodes", None)
                if p is None:
                    raise ValueError("data is required unless ci_test has an n_nodes attribute")
            else:
                p = _as_data(data).shape[1]
            ci_test = self.ci_test
            return self._run(int(p), lambda i, j, s: float(ci_test(i, j, s)), None, None)
        if data is None:
            raise ValueError("data is required with ci_test='fisher_z'")
        x = _as_data(data)
        n, p = x.shape
        if p < 1:
            raise ValueError("data must have at least one column")
        regimes = _as_intervened(intervened, n, p)
        statistics: dict[int, SufficientStatistics] = {}
        for regime in np.unique(regimes):
            stat = SufficientStatistics(p)
            stat.update_many(x[regimes == regime])
            statistics[int(regime)] = stat
        return self.fit_statistics(statistics, p)

    def fit_statistics(self, statistics: Mapping[int, SufficientStatistics], p: int) -> PC:
        """Learn the structure from per-regime sufficient statistics (``ci_test="fisher_z"``).

        Parameters
        ----------
        statistics : mapping {regime: SufficientStatistics}
            Regime ``-1`` holds observational rows, regime ``k`` rows that intervened on node ``k``.
        p : int
            Number of nodes.

        Returns
        -------
        self
        """
        self._check_params()
        if callable(self.ci_test):
            raise ValueError("fit_statistics needs ci_test='fisher_z'")
        for regime, stat in statistics.items():
            if stat.p != p:
                raise ValueError(
                    f"statistics for regime {regime} have {stat.p} columns, expected {p}"
                )
            if regime != -1:
                _check_int_node(regime, p, "regime")
        tester = _RegimeFisherZ(statistics)
        shifted = self._shifted(statistics, p)
        return self._run(p, tester.pvalue, tester, shifted, statistics)

    def _shifted(self, statistics: Mapping[int, SufficientStatistics], p: int) -> np.ndarray:
        shifted = np.zeros((p, p), dtype=bool)
        obs = statistics.get(-1)
        for k, stat in statistics.items():
            if k < 0 or stat.n_ < 4:
                continue
            var_k = stat.comoment_[k, k] / (stat.n_ - 1)
            if var_k > 1e-12 * (1.0 + stat.mean_[k] ** 2):
                corr = stat.correlation()[k]
                z = np.arctanh(np.clip(corr, -_R_MAX, _R_MAX)) * np.sqrt(stat.n_ - 3)
                pvals = 2.0 * sps.norm.sf(np.abs(z))
            elif obs is not None and obs.n_ >= 2:
                var_a = np.diag(stat.comoment_) / (stat.n_ - 1)
                var_b = np.diag(obs.comoment_) / (obs.n_ - 1)
                se = np.sqrt(var_a / stat.n_ + var_b / obs.n_)
                with np.errstate(divide="ignore", invalid="ignore"):
                    t = np.where(se > 0, (stat.mean_ - obs.mean_) / se, 0.0)
                pvals = 2.0 * sps.norm.sf(np.abs(t))
            else:
                continue
            pvals[k] = 1.0
            shifted[k] = pvals < (self.alpha if self.shift_alpha is None else self.shift_alpha)
        return shifted

    def _run(
        self,
        p: int,
        test: CITest,
        tester: _RegimeFisherZ | None,
        shifted: np.ndarray | None,
        statistics: Mapping[int, SufficientStatistics] | None = None,
    ) -> PC:
        knowledge = _build_knowledge(p, self.tiers, self.forbidden, self.required)
        alpha = float(self.alpha)
        required_skeleton = knowledge.required | knowledge.required.T
        adj = ~np.eye(p, dtype=bool) & ~(knowledge.forbidden & knowledge.forbidden.T)
        sepsets: dict[frozenset[int], list[tuple[int, ...]]] = {}
        cache: dict[tuple[int, int, tuple[int, ...]], float] = {}

        def pvalue(i: int, j: int, cond: tuple[int, ...]) -> float:
            key = (i, j, cond) if i < j else (j, i, cond)  # cond comes sorted
            value = cache.get(key)
            if value is None:
                value = cache[key] = test(*key)
            return value

        # level 0 (vectorized for Fisher z)
        if tester is not None:
            marginal = tester.pvalues_marginal()
            for i, j in np.argwhere(np.triu(adj, 1)):
                cache[(int(i), int(j), ())] = float(marginal[i, j])
        max_level = self.max_cond_size
        if tester is not None:
            usable = tester.max_cond_size
            max_level = usable if max_level is None else min(max_level, usable)
        level = 0
        while max_level is None or level <= max_level:
            snapshot = adj.copy()
            any_testable = False
            for i in range(p):
                neighbours = np.flatnonzero(snapshot[i]).tolist()
                for j in neighbours:
                    # PC-stable: a pair adjacent at the start of the level is tested from both
                    # ends, even if the other end already removed it, so that every separating
                    # set of the level is recorded (colliders need k outside all of them) ...
                    if required_skeleton[i, j]:
                        continue
                    candidates = [k for k in neighbours if k != j]
                    if len(candidates) < level:
                        continue
                    any_testable = True
                    # ... and, as in causal-learn's stable PC, every conditioning set of the
                    # level is tried, not just up to the first that separates.
                    for cond in itertools.combinations(candidates, level):
                        if pvalue(i, j, cond) > alpha:
                            adj[i, j] = adj[j, i] = False
                            found = sepsets.setdefault(frozenset((i, j)), [])
                            if cond not in found:
                                found.append(cond)
            if not any_testable:
                break
            level += 1

        a = adj.copy()
        locked = np.zeros((p, p), dtype=bool)  # [i, j]: oriented i -> j by knowledge/experiment

        def orient(i: int, j: int) -> None:
            a[j, i] = False
            locked[i, j] = True

        forbidden = knowledge.forbidden
        for i, j in np.argwhere(np.triu(adj, 1)):
            i, j = int(i), int(j)
            if knowledge.required[i, j] or (forbidden[j, i] and not forbidden[i, j]):
                orient(i, j)
            elif knowledge.required[j, i] or (forbidden[i, j] and not forbidden[j, i]):
                orient(j, i)
        if shifted is not None:
            for i, j in np.argwhere(np.triu(adj, 1)):
                i, j = int(i), int(j)
                if locked[i, j] or locked[j, i]:
                    continue
                if shifted[i, j] and not shifted[j, i]:
                    orient(i, j)
                elif shifted[j, i] and not shifted[i, j]:
                    orient(j, i)

        # unshielded colliders i -> k <- j where k is not in sepset(i, j)
        for k in range(p):
            neighbours = np.flatnonzero(adj[k])
            for i, j in itertools.combinations(neighbours, 2):
                i, j = int(i), int(j)
                if adj[i, j]:
                    continue
                found = sepsets.get(frozenset((i, j)))
                if found is None or any(k in cond for cond in found):
                    continue
                # Priority to colliders already oriented (causal-learn's uc_priority=2): orient
                # the whole triple only if neither edge already points out of k.
                if (a[k, i] and not a[i, k]) or (a[k, j] and not a[j, k]):
                    continue
                if forbidden[i, k] or forbidden[j, k]:
                    continue
                a[k, i] = a[k, j] = False

        oriented = meek_closure(a, forbidden=forbidden)
        self.cpdag_ = PartiallyDirectedGraph(oriented.astype(np.int8))
        self.adjacency_ = self.cpdag_.adjacency
        self.sepsets_ = {pair: tuple(found) for pair, found in sepsets.items()}
        self.n_tests_ = len(cache)
        self.shifted_ = shifted if shifted is not None else np.zeros((p, p), dtype=bool)
        counts = np.zeros(p + 1, dtype=int)
        for regime, stat in (statistics or {}).items():
            counts[regime + 1] = stat.n_
        self.n_rows_ = counts
        return self

    def to_networkx(self) -> nx.DiGraph:
        """The directed part of the learned graph as a ``networkx.DiGraph``."""
        if not hasattr(self, "cpdag_"):
            raise ValueError("PC is not fitted yet; call fit() first")
        return self.cpdag_.to_networkx()


# ============================================================================ online PC
class OnlinePC(BaseEstimator):
    """PC kept current over a stream of rows, from incremental per-regime statistics.

    Each :meth:`update` costs O(p^2) (statistics plus a change check of the pooled correlation
    matrix); the structure is rediscovered (a full :class:`PC` run on the statistics, never on
    stored rows) when ``rediscover_every`` rows have arrived since the last run, or when some
    entry of the pooled correlation matrix moved by more than ``change_threshold`` since then.

    Parameters
    ----------
    alpha, tiers, forbidden, required, max_cond_size
        As in :class:`PC` (Fisher z tests).
    rediscover_every : int
        Rediscover at least every this many rows (>= 1).
    change_threshold : float
        Rediscover early when the pooled correlation matrix moved by more than this (> 0;
        ``inf`` disables the check).
    min_rows : int
        No rediscovery before this many rows (>= 4); until then every pair stays adjacent.

    Attributes
    ----------
    pc_ : PC
        The last fitted PC (``None`` before the first rediscovery).
    adjacency_ : ndarray of shape (p, p)
        The current structure (complete undirected graph, oriented by background knowledge,
        before the first rediscovery).
    cpdag_ : PartiallyDirectedGraph
    shifted_ : ndarray of shape (p, p), bool
    statistics_ : dict {regime: SufficientStatistics}
    n_rows_ : int
    n_rediscoveries_ : int
    """

    def __init__(
        self,
        alpha: float = 0.01,
        tiers: Sequence[Iterable[int]] | None = None,
        forbidden: Iterable[tuple[int, int]] = (),
        required: Iterable[tuple[int, int]] = (),
        max_cond_size: int | None = None,
        rediscover_every: int = 50,
        change_threshold: float = 0.1,
        min_rows: int = 10,
    ) -> None:
        self.alpha = alpha
        self.tiers = tiers
        self.forbidden = forbidden
        self.required = required
        self.max_cond_size = max_cond_size
        self.rediscover_every = rediscover_every
        self.change_threshold = change_threshold
        self.min_rows = min_rows

    def _pc(self) -> PC:
        return PC(
            alpha=self.alpha,
            tiers=self.tiers,
            forbidden=self.forbidden,
            required=self.required,
            max_cond_size=self.max_cond_size,
        )

    def _start(self, p: int) -> None:
        k = self.rediscover_every
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"rediscover_every must be an int >= 1, got {k!r}")
        c = self.change_threshold
        if not isinstance(c, float | int) or not c > 0:
            raise ValueError(f"change_threshold must be > 0, got {c!r}")
        m = self.min_rows
        if isinstance(m, bool) or not isinstance(m, int) or m < 4:
            raise ValueError(f"min_rows must be an int >= 4, got {m!r}")
        pc = self._pc()
        pc._check_params()
        knowledge = _build_knowledge(p, self.tiers, self.forbidden, self.required)
        forbid, req = knowledge.forbidden, knowledge.required
        complete = (~np.eye(p, dtype=bool) & ~(forbid & forbid.T)) | req | req.T
        complete &= ~(forbid & ~forbid.T)  # only j -> i allowed: drop the i -> j half
        complete &= ~req.T
        self.p_ = p
        self.statistics_: dict[int, SufficientStatistics] = {}
        self.pooled_ = SufficientStatistics(p)
        self.pc_: PC | None = None
        self.cpdag_ = PartiallyDirectedGraph(meek_closure(complete, forbid).astype(np.int8))
        self.adjacency_ = self.cpdag_.adjacency
        self.shifted_ = np.zeros((p, p), dtype=bool)
        self.n_rows_ = 0
        self.n_rediscoveries_ = 0
        self.rows_since_rediscovery_ = 0
        self._corr_at_fit: np.ndarray | None = None

    def _regime(self, intervened: object) -> int:
        if isinstance(intervened, bool) or not isinstance(intervened, int | np.integer):
            raise ValueError(f"intervened must be an int node index or -1, got {intervened!r}")
        k = int(intervened)
        if not -1 <= k < self.p_:
            raise ValueError(f"intervened = {k} is not a node in 0..{self.p_ - 1} or -1")
        return k

    def update(self, row: object, intervened: int = -1) -> None:
        """Add one row (``intervened``: the node it intervened on, ``-1`` if observational)."""
        if not hasattr(self, "p_"):
            self._start(_as_row(row, None, "row 0").shape[0])
        x = _as_row(row, self.p_, f"row {self.n_rows_}")
        k = self._regime(intervened)
        self.statistics_.setdefault(k, SufficientStatistics(self.p_)).update(x)
        self.pooled_.update(x)
        self.n_rows_ += 1
        self.rows_since_rediscovery_ += 1
        self._maybe_rediscover()

    def update_many(self, rows: object, intervened: object = None) -> None:
        """Add the rows of an ``(m, p)`` array; then check once whether to rediscover."""
        x = _as_data(rows, getattr(self, "p_", None))
        if not hasattr(self, "p_"):
            self._start(x.shape[1])
        regimes = _as_intervened(intervened, x.shape[0], self.p_)
        for k in np.unique(regimes):
            self.statistics_.setdefault(int(k), SufficientStatistics(self.p_)).update_many(
                x[regimes == k]
            )
        self.pooled_.update_many(x)
        self.n_rows_ += x.shape[0]
        self.rows_since_rediscovery_ += x.shape[0]
        self._maybe_rediscover()

    def fit(self, data: object, intervened: object = None) -> OnlinePC:
        """Reset, add ``data`` and rediscover (if at least ``min_rows`` rows). Returns self."""
        x = _as_data(data)
        self._start(x.shape[1])
        self.update_many(x, intervened)
        if self.n_rows_ >= self.min_rows and self.rows_since_rediscovery_:
            self.rediscover()
        return self

    def _maybe_rediscover(self) -> None:
        if self.n_rows_ < self.min_rows:
            return
        if self._corr_at_fit is None or self.rows_since_rediscovery_ >= self.rediscover_every:
            self.rediscover()
            return
        if np.isfinite(self.change_threshold):
            change = np.max(np.abs(self.pooled_.correlation() - self._corr_at_fit))
            if change > self.change_threshold:
                self.rediscover()

    def rediscover(self) -> None:
        """Run PC on the current statistics now."""
        if not hasattr(self, "p_"):
            raise ValueError("no rows yet: call update() first")
        pc = self._pc().fit_statistics(self.statistics_, self.p_)
        self.pc_ = pc
        self.cpdag_ = pc.cpdag_
        self.adjacency_ = pc.adjacency_
        self.shifted_ = pc.shifted_
        self.n_rediscoveries_ += 1
        self.rows_since_rediscovery_ = 0
        self._corr_at_fit = self.pooled_.correlation() if self.pooled_.n_ >= 2 else None

    def to_networkx(self) -> nx.DiGraph:
        """The directed part of the current graph."""
        if not hasattr(self, "p_"):
            raise ValueError("no rows yet: call update() first")
        return self.cpdag_.to_networkx()
