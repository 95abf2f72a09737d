"""The policy interface: arms, the bandit context, the history, the base class and the registry.

A policy never owns the loop (``STYLE.md`` #1): the caller asks ``select(arms, history) -> Arm``,
applies the arm, and tells ``update(arm, obs)`` with the full observed vector of that round.
Randomness is injected (``seed``); learned state ends in ``_``. Every policy registered with
:func:`register` is run through the shared conformance suite in the tests.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import ClassVar

import networkx as nx
import numpy as np

__all__ = [
    "Arm",
    "BanditContext",
    "History",
    "Policy",
    "SeedLike",
    "available_policies",
    "get_policy_class",
    "make_policy",
    "plus_minus_arms",
    "register",
]

SeedLike = int | np.random.Generator | None


@dataclass(frozen=True, order=True)
class Arm:
    """An atomic intervention ``do(X_node = value)``.

    Parameters
    ----------
    node : int
        Index of the intervened variable.
    value : float
        The value it is set to.
    """

    node: int
    value: float

    def __post_init__(self) -> None:
        if isinstance(self.node, bool) or not isinstance(self.node, int | np.integer):
            raise ValueError(f"Arm.node must be an int, got {self.node!r}")
        if int(self.node) < 0:
            raise ValueError(f"Arm.node must be >= 0, got {self.node}")
        try:
            value = float(self.value)
        except (TypeError, ValueError):
            raise ValueError(f"Arm.value must be a number, got {self.value!r}") from None
        if not np.isfinite(value):
            raise ValueError(f"Arm.value must be finite, got {self.value!r}")
        object.__setattr__(self, "node", int(self.node))
        object.__setattr__(self, "value", value)

    def __str__(self) -> str:
        return f"do(X{self.node}={self.value:g})"


def plus_minus_arms(nodes: Sequence[int], magnitude: float = 1.0) -> tuple[Arm, ...]:
    """The arms ``do(X_j = -magnitude)`` and ``do(X_j = +magnitude)`` for every node ``j``."""
    return tuple(Arm(int(j), s * magnitude) for j in nodes for s in (-1.0, 1.0))


@dataclass(frozen=True, eq=False)
class BanditContext:
    """What a policy may know before the first round.

    Parameters
    ----------
    n_nodes : int
        Number of observed variables ``p`` (an observation is a vector of length ``p``).
    reward_index : int
        Index of the reward variable; no arm may intervene on it.
    arms : tuple of Arm
        The full arm set (distinct).
    obs_data : numpy.ndarray, shape (n_obs, p)
        The prior observational sample (may have zero rows). Copied and made read-only.
    tiers : tuple of int, optional
        Tier of each node for structure learning (edges only from lower to equal-or-higher tiers).
    true_graph : networkx.DiGraph, optional
        The true DAG, for oracle baselines only (oracle BA-UCB, CN-UCB).
    max_in_degree : int
        Bound on the number of parents, used by methods that enumerate parent sets (BBB-UCB).
    """

    n_nodes: int
    reward_index: int
    arms: tuple[Arm, ...]
    obs_data: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    tiers: tuple[int, ...] | None = None
    true_graph: nx.DiGraph | None = None
    max_in_degree: int = 3

    def __post_init__(self) -> None:
        p = self.n_nodes
        if isinstance(p, bool) or not isinstance(p, int | np.integer) or p < 2:
            raise ValueError(f"n_nodes must be an int >= 2, got {p!r}")
        if not isinstance(self.reward_index, int | np.integer) or not 0 <= self.reward_index < p:
            raise ValueError(f"reward_index={self.reward_index!r} is not a node in 0..{p - 1}")
        arms = tuple(self.arms)
        if not arms:
            raise ValueError("arms must not be empty")
        for arm in arms:
            if not isinstance(arm, Arm):
                raise ValueError(f"arms must be Arm objects, got {arm!r}")
            if arm.node >= p:
                raise ValueError(f"arm {arm} intervenes on node {arm.node}, not in 0..{p - 1}")
            if arm.node == self.reward_index:
                raise ValueError(f"arm {arm} intervenes on the reward node {self.reward_index}")
        if len(set(arms)) != len(arms):
            dup = next(a for a in arms if arms.count(a) > 1)
            raise ValueError(f"arms must be distinct, {dup} repeats")
        object.__setattr__(self, "arms", arms)
        data = np.array(self.obs_data, dtype=float, copy=True)
        if data.size == 0:
            data = np.zeros((0, p))
        if data.ndim != 2 or data.shape[1] != p:
            raise ValueError(f"obs_data must have shape (n_obs, {p}), got {data.shape}")
        if not np.all(np.isfinite(data)):
            row, col = np.argwhere(~np.isfinite(data))[0]
            raise ValueError(f"obs_data[{row}, {col}] is not finite ({data[row, col]})")
        data.setflags(write=False)
        object.__setattr__(self, "obs_data", data)
        if self.tiers is not None:
            tiers = tuple(int(t) for t in self.tiers)
            if len(tiers) != p:
                raise ValueError(f"tiers must have {p} entries, got {len(tiers)}")
            object.__setattr__(self, "tiers", tiers)
        if self.true_graph is not None:
            graph = self.true_graph
            if set(graph.nodes) != set(range(p)):
                raise ValueError(
                    f"true_graph must have nodes 0..{p - 1}, got {sorted(graph.nodes)}"
                )
            if not nx.is_directed_acyclic_graph(graph):
                raise ValueError(f"true_graph is not acyclic: cycle {nx.find_cycle(graph)}")
        if int(self.max_in_degree) < 0:
            raise ValueError(f"max_in_degree must be >= 0, got {self.max_in_degree!r}")

    @property
    def arm_nodes(self) -> tuple[int, ...]:
        """The distinct intervened nodes, sorted."""
        return tuple(sorted({a.node for a in self.arms}))


class History:
    """Append-only record of the rounds played: ``(arm, observation)`` pairs.

    Policies read it; only the loop appends. Observations are stored read-only.
    """

    def __init__(self) -> None:
        self._arms: list[Arm] = []
        self._observations: list[np.ndarray] = []

    def append(self, arm: Arm, observation: np.ndarray) -> None:
        """Record one round."""
        obs = np.array(observation, dtype=float, copy=True)
        obs.setflags(write=False)
        self._arms.append(arm)
        self._observations.append(obs)

    def __len__(self) -> int:
        return len(self._arms)

    def __getitem__(self, i: int) -> tuple[Arm, np.ndarray]:
        return self._arms[i], self._observations[i]

    def __iter__(self) -> Iterator[tuple[Arm, np.ndarray]]:
        return zip(self._arms, self._observations, strict=True)


class Policy(ABC):
    """Base class of a bandit policy over a :class:`BanditContext`.

    Subclasses implement :meth:`_select` and optionally
    :meth:`_observe`. The base keeps per-arm pull counts and reward sums, validates every input
    and never mutates what it is given.

    Parameters
    ----------
    context : BanditContext
        The arms, the reward index and the prior data.
    seed : int, numpy.random.Generator or None
        Source of randomness (ties and stochastic choices).
    """

    #: Registry name, set by :func:`register`.
    name: ClassVar[str] = ""
    #: Whether different seeds give different trajectories on the same environment.
    stochastic: ClassVar[bool] = False

    def __init__(self, context: BanditContext, *, seed: SeedLike = None) -> None:
        if not isinstance(context, BanditContext):
            raise ValueError(f"context must be a BanditContext, got {type(context).__name__}")
        self.context = context
        self.seed = seed
        self.rng_ = np.random.default_rng(seed)
        self.arm_index_ = {arm: i for i, arm in enumerate(context.arms)}
        k = len(context.arms)
        self.counts_ = np.zeros(k, dtype=np.int64)
        self.reward_sums_ = np.zeros(k)
        self.reward_sq_sums_ = np.zeros(k)
        self.n_updates_ = 0
        self._last_arms: tuple | None = None
        self._last_ids = np.zeros(0, dtype=np.int64)
        y_obs = context.obs_data[:, context.reward_index]
        #: Reward variance used before the policy's own pulls can estimate it.
        self.fallback_var_ = float(y_obs.var(ddof=1)) if y_obs.size >= 2 else 1.0

    # ---------------------------------------------------------------- validation
    def _arm_id(self, arm: object) -> int:
        if not isinstance(arm, Arm):
            raise ValueError(f"expected an Arm, got {arm!r}")
        idx = self.arm_index_.get(arm)
        if idx is None:
            if arm.node == self.context.reward_index:
                raise ValueError(f"arm {arm} intervenes on the reward node {arm.node}")
            values = sorted(a.value for a in self.context.arms if a.node == arm.node)
            if not values:
                raise ValueError(f"arm {arm}: node {arm.node} has no arms in this policy")
            raise ValueError(
                f"arm {arm}: value {arm.value:g} is not in node {arm.node}'s set {values}"
            )
        return idx

    def _check_obs(self, obs: object) -> np.ndarray:
        vec = np.asarray(obs, dtype=float)
        p = self.context.n_nodes
        if vec.shape != (p,):
            raise ValueError(f"observation must have shape ({p},), got {vec.shape}")
        if not np.all(np.isfinite(vec)):
            j = int(np.flatnonzero(~np.isfinite(vec))[0])
            raise ValueError(f"observation[{j}] is not finite ({vec[j]})")
        return vec

    # ---------------------------------------------------------------- interface
    def select(self, arms: Sequence[Arm], history: History | Sequence | None = None) -> Arm:
        """Choose the next arm among ``arms`` (a subset of the context's arm set).

        Parameters
        ----------
        arms : sequence of Arm
            The arms available this round.
        history : History, optional
            The rounds played so far (read only; the policy's state comes from :meth:`update`).

        Returns
        -------
        Arm
            A member of ``arms``.
        """
        # The loop usually passes the same arm tuple every round: validate it once.
        if arms is self._last_arms and len(arms) == self._last_ids.size:
            ids = self._last_ids
        else:
            ids = np.array([self._arm_id(a) for a in arms], dtype=np.int64)
            if isinstance(arms, tuple):
                self._last_arms, self._last_ids = arms, ids
        if ids.size == 0:
            raise ValueError("select() needs at least one arm")
        if history is not None and len(history) != self.n_updates_:
            raise ValueError(
                f"history has {len(history)} rounds but the policy was updated {self.n_updates_} "
                "times; replay the history through update() first"
            )
        choice = int(self._select(ids))
        return self.context.arms[choice]

    def update(self, arm: Arm, obs: np.ndarray) -> None:
        """Absorb one round: the arm pulled and the full observed vector of all nodes."""
        idx = self._arm_id(arm)
        vec = self._check_obs(obs)
        if vec[arm.node] != arm.value:
            raise ValueError(
                f"observation[{arm.node}] = {vec[arm.node]:g} but arm {arm} set it to {arm.value:g}"
            )
        reward = vec[self.context.reward_index]
        self.counts_[idx] += 1
        self.reward_sums_[idx] += reward
        self.reward_sq_sums_[idx] += reward * reward
        self.n_updates_ += 1
        self._observe(idx, vec)

    def replay(self, history: History) -> None:
        """Rebuild state from a history (``update`` on every recorded round)."""
        for arm, obs in history:
            self.update(arm, obs)

    # ---------------------------------------------------------------- helpers
    @abstractmethod
    def _select(self, ids: np.ndarray) -> int:
        """Return the chosen arm id among ``ids`` (indices into ``context.arms``)."""

    def _observe(self, idx: int, obs: np.ndarray) -> None:  # noqa: B027 - optional hook
        """Hook for subclasses (``obs`` already validated); the base keeps reward sums."""

    def _argmax(self, scores: np.ndarray) -> int:
        """Index of the largest score; ties go to the first (deterministic policies)."""
        return int(np.argmax(scores))

    def pooled_noise_var(self) -> float:
        """Within-arm reward variance pooled over arms (fallback before enough repeats)."""
        n = self.counts_
        pulled = n > 0
        dof = int(n.sum() - pulled.sum())
        if dof < 2:
            return self.fallback_var_
        rss = self.reward_sq_sums_[pulled] - self.reward_sums_[pulled] ** 2 / n[pulled]
        return max(float(rss.sum()) / dof, 1e-12)

    def mean_rewards(self) -> np.ndarray:
        """Empirical mean reward per arm (``nan`` for unpulled arms)."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(
                self.counts_ > 0, self.reward_sums_ / np.maximum(self.counts_, 1), np.nan
            )


_REGISTRY: dict[str, type[Policy]] = {}


def register(name: str) -> Callable[[type[Policy]], type[Policy]]:
    """Class decorator adding a policy to the registry under ``name``."""

    def decorator(cls: type[Policy]) -> type[Policy]:
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f"policy name {name!r} is already registered")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return decorator


def available_policies() -> tuple[str, ...]:
    """Names of all registered policies, sorted."""
    return tuple(sorted(_REGISTRY))


def get_policy_class(name: str) -> type[Policy]:
    """The policy class registered as ``name``."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(
            f"unknown policy {name!r}; available: {', '.join(available_policies())}"
        ) from None


def make_policy(name: str, context: BanditContext, *, seed: SeedLike = None, **params) -> Policy:
    """Build the registered policy ``name`` with hyper-parameters ``params``."""
    return get_policy_class(name)(context, seed=seed, **params)
