"""Gaussian linear structural equation models (SEMs) on DAGs.

A linear SEM over ``p`` variables is ``x_j = c_j + sum_i B[i, j] x_i + e_j`` with independent
``e_j ~ N(0, noise_var[j])`` and a weight matrix ``B`` whose support is a DAG (``B[i, j] != 0``
means the edge ``i -> j``). In row-vector form ``x = (c + e) (I - B)^-1``, so the total causal
effect of ``i`` on ``j`` is ``[(I - B)^-1][i, j]``: the sum over directed paths ``i ~> j`` of the
products of their edge weights.

An atomic intervention ``do(x_j = v)`` cuts ``j``'s mechanism: column ``j`` of ``B`` is zeroed,
its noise removed and its intercept set to ``v``; every other equation is unchanged.

The random generators follow the causal-bandit literature: edge weights of magnitude
``U(0.5, 1)`` with a random sign, noise variances ``U(0.5, 1)``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import networkx as nx
import numpy as np

__all__ = [
    "LinearGaussianSEM",
    "random_er_sem",
    "random_parallel_sem",
]

SeedLike = int | np.random.Generator | None


def _readonly(array: np.ndarray) -> np.ndarray:
    array = np.array(array, dtype=float, copy=True)
    array.setflags(write=False)
    return array


@dataclass(frozen=True, eq=False)
class LinearGaussianSEM:
    """A linear SEM with Gaussian noise on a DAG.

    Parameters
    ----------
    weights : ndarray of shape (p, p)
        ``weights[i, j]`` is the coefficient of the edge ``i -> j`` (zero: no edge). Its support
        must be acyclic.
    noise_var : ndarray of shape (p,)
        Variance of each node's independent Gaussian noise; strictly positive.
    intercepts : ndarray of shape (p,), optional
        Constant term of each structural equation (default zeros).
    names : tuple of str, optional
        One name per node, used in messages and by callers; default ``None`` (nodes are ints).

    Raises
    ------
    ValueError
        If ``weights`` is not square, not finite, or has a cycle (the cycle is named); if
        ``noise_var`` or ``intercepts`` has the wrong shape, is not finite, or a noise variance
        is not positive; if ``names`` has the wrong length or repeats a name.

    Examples
    --------
    >>> import numpy as np
    >>> sem = LinearGaussianSEM(weights=np.array([[0.0, 2.0], [0.0, 0.0]]), noise_var=np.ones(2))
    >>> sem.total_effect(0, 1)
    2.0
    >>> sem.interventional_mean({0: 1.5}).tolist()
    [1.5, 3.0]
    """

    weights: np.ndarray
    noise_var: np.ndarray
    intercepts: np.ndarray | None = None
    names: tuple[str, ...] | None = field(default=None)

    def __post_init__(self) -> None:
        weights = np.asarray(self.weights, dtype=float)
        if weights.ndim != 2 or weights.shape[0] != weights.shape[1]:
            raise ValueError(f"weights must be a square (p, p) matrix, got shape {weights.shape}")
        p = weights.shape[0]
        if p == 0:
            raise ValueError("weights must describe at least one node, got shape (0, 0)")
        bad = np.argwhere(~np.isfinite(weights))
        if bad.size:
            i, j = bad[0]
            raise ValueError(f"weights[{i}, {j}] is not finite ({weights[i, j]})")
        if np.any(np.diag(weights) != 0):
            j = int(np.flatnonzero(np.diag(weights))[0])
            raise ValueError(f"weights has a self-loop at node {j} (weights[{j}, {j}] != 0)")
        graph = nx.DiGraph()
        graph.add_nodes_from(range(p))
        graph.add_edges_from(zip(*np.nonzero(weights), strict=True))
        try:
            cycle = nx.find_cycle(graph)
        except nx.NetworkXNoCycle:
            cycle = None
        if cycle is not None:
            path = " -> ".join(str(self._label(u, p)) for u, _ in cycle)
            raise ValueError(
                f"weights are not acyclic: cycle {path} -> {self._label(cycle[0][0], p)}"
            )

        noise_var = np.asarray(self.noise_var, dtype=float)
        if noise_var.shape != (p,):
            raise ValueError(f"noise_var must have shape ({p},), got {noise_var.shape}")
        for j, v in enumerate(noise_var):
            if not np.isfinite(v) or v <= 0:
                raise ValueError(f"noise_var[{j}] must be finite and > 0, got {v}")
        intercepts = np.zeros(p) if self.intercepts is None else np.asarray(self.intercepts, float)
        if intercepts.shape != (p,):
            raise ValueError(f"intercepts must have shape ({p},), got {intercepts.shape}")
        if not np.all(np.isfinite(intercepts)):
            j = int(np.flatnonzero(~np.isfinite(intercepts))[0])
            raise ValueError(f"intercepts[{j}] is not finite ({intercepts[j]})")
        if self.names is not None:
            names = tuple(str(n) for n in self.names)
            if len(names) != p:
                raise ValueError(f"names must have {p} entries, got {len(names)}")
            if len(set(names)) != p:
                dup = next(n for n in names if names.count(n) > 1)
                raise ValueError(f"names must be unique, {dup!r} repeats")
            object.__setattr__(self, "names", names)

        object.__setattr__(self, "weights", _readonly(weights))
        object.__setattr__(self, "noise_var", _readonly(noise_var))
        object.__setattr__(self, "intercepts", _readonly(intercepts))
        order = tuple(int(v) for v in nx.lexicographical_topological_sort(graph))
        object.__setattr__(self, "_order", order)
        object.__setattr__(self, "_graph", graph)

    def _label(self, node: int, p: int | None = None) -> str | int:
        names = self.names
        if names is not None and (p is None or len(names) == p):
            return f"{node} ({names[node]})"
        return int(node)

    # ----------------------------------------------------------------- structure
    @property
    def p(self) -> int:
        """Number of nodes."""
        return int(self.weights.shape[0])

    @property
    def graph(self) -> nx.DiGraph:
        """The DAG as a new ``networkx.DiGraph`` on nodes ``0..p-1`` with ``weight`` edge attributes."""
        graph = nx.DiGraph()
        graph.add_nodes_from(range(self.p))
        for i, j in zip(*np.nonzero(self.weights), strict=True):
            graph.add_edge(int(i), int(j), weight=float(self.weights[i, j]))
        return graph

    def _check_node(self, node: object, what: str = "node") -> int:
        if isinstance(node, bool) or not isinstance(node, int | np.integer):
            raise ValueError(f"{what} must be an int node index, got {node!r}")
        if not 0 <= int(node) < self.p:
            raise ValueError(f"{what} {node} is not a node (the SEM has nodes 0..{self.p - 1})")
        return int(node)

    def parents(self, j: int) -> tuple[int, ...]:
        """Parents of node ``j``, sorted."""
        j = self._check_node(j)
        return tuple(int(i) for i in np.flatnonzero(self.weights[:, j]))

    def children(self, j: int) -> tuple[int, ...]:
        """Children of node ``j``, sorted."""
        j = self._check_node(j)
        return tuple(int(i) for i in np.flatnonzero(self.weights[j, :]))

    def topological_order(self) -> tuple[int, ...]:
        """A topological order of the nodes (lexicographically smallest)."""
        return self._order  # type: ignore[attr-defined]

    # ----------------------------------------------------------------- effects
    def _check_interventions(self, interventions: Mapping[int, float] | None) -> dict[int, float]:
        if interventions is None:
            return {}
        if not isinstance(interventions, Mapping):
            raise ValueError(
                f"interventions must be a mapping {{node: value}}, got {type(interventions).__name__}"
            )
        checked: dict[int, float] = {}
        for node, value in interventions.items():
            node = self._check_node(node, "intervened node")
            try:
                value = float(value)
            except (TypeError, ValueError):
                raise ValueError(
                    f"intervention value for node {node} is not a number: {value!r}"
                ) from None
            if not np.isfinite(value):
                raise ValueError(f"intervention value for node {node} is not finite ({value})")
            checked[node] = value
        return checked

    def _mutilated(
        self, interventions: dict[int, float]
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        weights = np.array(self.weights)
        noise_sd = np.sqrt(self.noise_var)
        intercepts = np.array(self.intercepts)
        for node, value in interventions.items():
            weights[:, node] = 0.0
            noise_sd[node] = 0.0
            intercepts[node] = value
        return weights, noise_sd, intercepts

    def total_effects(self) -> np.ndarray:
        """Matrix ``T = (I - B)^-1`` with ``T[i, j]`` the total effect of ``i`` on ``j`` (``T[i, i] = 1``)."""
        return np.linalg.inv(np.eye(self.p) - self.weights)

    def total_effect(self, i: int, j: int) -> float:
        """Total causal effect of node ``i`` on node ``j``: ``d E[x_j | do(x_i = v)] / dv``."""
        i = self._check_node(i, "cause")
        j = self._check_node(j, "effect")
        return float(self.total_effects()[i, j])

    def interventional_mean(self, interventions: Mapping[int, float] | None = None) -> np.ndarray:
        """Exact ``E[x | do(interventions)]`` (observational mean when ``None``), from ``(I - B')^-1``."""
        checked = self._check_interventions(interventions)
        weights, _, intercepts = self._mutilated(checked)
        return np.linalg.solve((np.eye(self.p) - weights).T, intercepts)

    def covariance(self, interventions: Mapping[int, float] | None = None) -> np.ndarray:
        """Exact covariance of ``x`` (under ``do(interventions)`` if given; intervened nodes are constant)."""
        checked = self._check_interventions(interventions)
        weights, noise_sd, _ = self._mutilated(checked)
        inv = np.linalg.inv(np.eye(self.p) - weights)
        return inv.T @ np.diag(noise_sd**2) @ inv

    # ----------------------------------------------------------------- sampling
    def sample(
        self,
        n: int,
        seed: SeedLike = None,
        interventions: Mapping[int, float] | None = None,
    ) -> np.ndarray:
        """Draw ``n`` independent rows, observationally or under ``do(interventions)``.

        Parameters
        ----------
        n : int
            Number of rows (>= 0).
        seed : int, numpy.random.Generator or None
            Source of randomness; the same int gives the same rows.
        interventions : dict {node: value}, optional
            Atomic interventions: each named node is set to its value exactly, its mechanism cut.

        Returns
        -------
        ndarray of shape (n, p)
        """
        if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 0:
            raise ValueError(f"n must be a non-negative int, got {n!r}")
        checked = self._check_interventions(interventions)
        rng = np.random.default_rng(seed)
        weights, noise_sd, intercepts = self._mutilated(checked)
        noise = rng.standard_normal((int(n), self.p)) * noise_sd
        data = np.empty((int(n), self.p))
        for j in self.topological_order():
            if j in checked:
                data[:, j] = checked[j]
                continue
            parents = np.flatnonzero(weights[:, j])
            data[:, j] = intercepts[j] + noise[:, j]
            if parents.size:
                data[:, j] += data[:, parents] @ weights[parents, j]
        return data

    # ----------------------------------------------------------------- transforms
    def normalized(self) -> LinearGaussianSEM:
        """The same DAG rescaled so that every node has unit observational variance.

        With ``s_j`` the observational standard deviation of ``x_j``, the rescaled variables
        ``x_j / s_j`` follow the SEM with weights ``B[i, j] s_i / s_j``, noise variances
        ``noise_var[j] / s_j^2`` and intercepts ``c_j / s_j``.
        """
        scale = np.sqrt(np.diag(self.covariance()))
        weights = self.weights * scale[:, None] / scale[None, :]
        return LinearGaussianSEM(
            weights=weights,
            noise_var=self.noise_var / scale**2,
            intercepts=self.intercepts / scale,
            names=self.names,
        )

    def __repr__(self) -> str:
        n_edges = int(np.count_nonzero(self.weights))
        return f"LinearGaussianSEM(p={self.p}, edges={n_edges})"


# --------------------------------------------------------------------- generators
def _check_range(name: str, value: Sequence[float], positive: bool) -> tuple[float, float]:
    try:
        low, high = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a pair (low, high), got {value!r}") from None
    if not (np.isfinite(low) and np.isfinite(high)) or low > high or (positive and low <= 0):
        bound = "0 < low <= high" if positive else "low <= high"
        raise ValueError(f"{name} must satisfy {bound} and be finite, got {value!r}")
    return low, high


def _check_count(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return int(value)


def _draw_parameters(
    support: np.ndarray,
    rng: np.random.Generator,
    weight_range: tuple[float, float],
    noise_var_range: tuple[float, float],
) -> tuple[np.ndarray, np.ndarray]:
    p = support.shape[0]
    magnitude = rng.uniform(*weight_range, size=(p, p))
    sign = rng.choice(np.array([-1.0, 1.0]), size=(p, p))
    weights = np.where(support, magnitude * sign, 0.0)
    noise_var = rng.uniform(*noise_var_range, size=p)
    return weights, noise_var


def random_er_sem(
    p: int,
    expected_degree: float,
    seed: SeedLike = None,
    weight_range: tuple[float, float] = (0.5, 1.0),
    noise_var_range: tuple[float, float] = (0.5, 1.0),
    normalize: bool = False,
) -> LinearGaussianSEM:
    """A random Erdos-Renyi DAG SEM.

    A random permutation fixes the causal order; each of the ``p (p - 1) / 2`` pairs is joined,
    from earlier to later in that order, independently with probability
    ``expected_degree / (p - 1)``, so a node's expected number of neighbours (in + out) is
    ``expected_degree``. Weights have magnitude ``U(weight_range)`` and a random sign; noise
    variances are ``U(noise_var_range)``; intercepts are zero.

    Parameters
    ----------
    p : int
        Number of nodes (>= 1).
    expected_degree : float
        Expected number of neighbours of a node, in ``[0, p - 1]``.
    seed : int, numpy.random.Generator or None
        Source of randomness; the same int gives the same SEM.
    weight_range, noise_var_range : (float, float)
        Ranges of the edge-weight magnitudes and the noise variances (both > 0).
    normalize : bool
        Return :meth:`LinearGaussianSEM.normalized` (unit observational variances).

    Returns
    -------
    LinearGaussianSEM

    Examples
    --------
    >>> sem = random_er_sem(10, 2.0, seed=0)
    >>> sem.p, bool((random_er_sem(10, 2.0, seed=0).weights == sem.weights).all())
    (10, True)
    """
    p = _check_count("p", p, 1)
    try:
        degree = float(expected_degree)
    except (TypeError, ValueError):
        raise ValueError(f"expected_degree must be a number, got {expected_degree!r}") from None
    if not np.isfinite(degree) or degree < 0 or degree > max(p - 1, 0):
        raise ValueError(
            f"expected_degree must lie in [0, p - 1] = [0, {p - 1}], got {expected_degree!r}"
        )
    weight_range = _check_range("weight_range", weight_range, positive=True)
    noise_var_range = _check_range("noise_var_range", noise_var_range, positive=True)
    rng = np.random.default_rng(seed)
    prob = degree / (p - 1) if p > 1 else 0.0
    order = rng.permutation(p)
    upper = np.triu(rng.random((p, p)) < prob, k=1)
    support = np.zeros((p, p), dtype=bool)
    # upper[a, b] (a < b in the causal order) becomes the edge order[a] -> order[b].
    support[np.ix_(order, order)] = upper
    weights, noise_var = _draw_parameters(support, rng, weight_range, noise_var_range)
    sem = LinearGaussianSEM(weights=weights, noise_var=noise_var)
    return sem.normalized() if normalize else sem


def random_parallel_sem(
    n_reward_parents: int,
    n_other: int,
    max_in_degree: int,
    seed: SeedLike = None,
    weight_range: tuple[float, float] = (0.5, 1.0),
    noise_var_range: tuple[float, float] = (0.5, 1.0),
    normalize: bool = False,
) -> LinearGaussianSEM:
    """A random DAG terminating in a parallel structure (the causal-bandit benchmark graph).

    ``p = n_reward_parents + n_other + 1`` nodes; the last node (index ``p - 1``, named ``"Y"``)
    is the reward, whose parents are exactly the ``n_reward_parents`` reward parents.

    Construction (in a causal order: the ``n_other`` other nodes, then the reward parents, then
    ``Y``):

    1. every non-reward node at position ``t`` draws ``k ~ U{0, ..., min(max_in_degree, t)}``
       parents uniformly among the non-reward nodes before it, so other nodes form a random DAG
       upstream and reward parents may depend on them and on earlier reward parents;
    2. connectivity: while the graph has more than one weakly connected component, a component
       without a reward parent is joined to the rest by one edge chosen uniformly among those
       that respect the causal order and keep the target's in-degree <= ``max_in_degree`` (such
       an edge always exists: the first node of every component has in-degree 0);
    3. the non-reward nodes are relabelled by a random permutation of ``0..p-2``, so index order
       carries no causal information;
    4. weights, noise variances and (zero) intercepts as in :func:`random_er_sem`.

    The in-degree bound applies to non-reward nodes; ``Y`` has in-degree ``n_reward_parents``.

    Parameters
    ----------
    n_reward_parents : int
        Number of parents of the reward (>= 1).
    n_other : int
        Number of other (non-reward, non-parent) nodes (>= 0).
    max_in_degree : int
        Largest in-degree of a non-reward node (>= 1 when ``n_other > 0``).
    seed, weight_range, noise_var_range, normalize
        As in :func:`random_er_sem`.

    Returns
    -------
    LinearGaussianSEM
        With ``names = ("X0", ..., "X{p-2}", "Y")``.
    """
    p1 = _check_count("n_reward_parents", n_reward_parents, 1)
    p2 = _check_count("n_other", n_other, 0)
    max_in = _check_count("max_in_degree", max_in_degree, 0)
    if max_in == 0 and p2 > 0:
        raise ValueError(
            f"max_in_degree=0 cannot connect n_other={p2} other nodes to the reward; use >= 1"
        )
    weight_range = _check_range("weight_range", weight_range, positive=True)
    noise_var_range = _check_range("noise_var_range", noise_var_range, positive=True)
    rng = np.random.default_rng(seed)
    m = p1 + p2  # non-reward nodes; positions 0..m-1 in causal order, reward parents last
    p = m + 1
    support = np.zeros((p, p), dtype=bool)
    for t in range(1, m):
        k = int(rng.integers(0, min(max_in, t) + 1))
        if k:
            support[rng.choice(t, size=k, replace=False), t] = True
    support[p2:m, m] = True

    while True:
        graph = nx.from_numpy_array(support.astype(int), create_using=nx.DiGraph)
        components = sorted(
            (sorted(c) for c in nx.weakly_connected_components(graph)), key=lambda c: c[0]
        )
        if len(components) == 1:
            break
        lone = next(c for c in components if m not in c)
        members = set(lone)
        in_degree = support[:, :m].sum(axis=0)
        candidates = [
            (u, w)
            for u in range(m)
            for w in range(u + 1, m)
            if ((u in members) != (w in members)) and in_degree[w] < max_in
        ]
        u, w = candidates[int(rng.integers(len(candidates)))]
        support[u, w] = True

    relabel = np.concatenate([rng.permutation(m), [m]])
    shuffled = np.zeros_like(support)
    shuffled[np.ix_(relabel, relabel)] = support
    weights, noise_var = _draw_parameters(shuffled, rng, weight_range, noise_var_range)
    names = (*(f"X{i}" for i in range(m)), "Y")
    sem = LinearGaussianSEM(weights=weights, noise_var=noise_var, names=names)
    return sem.normalized() if normalize else sem
