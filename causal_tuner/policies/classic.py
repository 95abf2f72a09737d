"""Standard (non-causal) bandit baselines and CN-UCB.

All index policies share the form ``mean + c * sqrt(V * log t)`` with ``V = sigma^2 / n_a`` and
``sigma^2`` the within-arm reward variance pooled over arms (UCB1 scaled to Gaussian rewards of
unknown variance; ``c = sqrt(2)`` is UCB1's constant). Every arm is pulled once before any index
is used (in arm order among those not yet pulled).
"""

from __future__ import annotations

import numpy as np

from causal_tuner.policies.base import BanditContext, Policy, SeedLike, register

__all__ = ["CNUCB", "UCB1", "EpsilonGreedy", "GaussianThompson", "RandomPolicy"]


def _check_positive(name: str, value: float, allow_zero: bool = False) -> float:
    value = float(value)
    if not np.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        raise ValueError(f"{name} must be {'>=' if allow_zero else '>'} 0, got {value!r}")
    return value


@register("ucb1")
class UCB1(Policy):
    """UCB1 for Gaussian rewards: ``mean_a + c * sigma * sqrt(log t / n_a)``.

    Parameters
    ----------
    context : BanditContext
    seed : int, Generator or None
    c : float
        Exploration constant (default ``sqrt(2)``).
    """

    def __init__(self, context: BanditContext, *, seed: SeedLike = None, c: float = np.sqrt(2)):
        super().__init__(context, seed=seed)
        self.c = _check_positive("c", c, allow_zero=True)

    def _candidate_ids(self, ids: np.ndarray) -> np.ndarray:
        return ids

    def _select(self, ids: np.ndarray) -> int:
        ids = self._candidate_ids(ids)
        unpulled = ids[self.counts_[ids] == 0]
        if unpulled.size:
            return int(unpulled[0])
        n = self.counts_[ids]
        mean = self.reward_sums_[ids] / n
        t = self.n_updates_ + 1
        bonus = self.c * np.sqrt(self.pooled_noise_var() * np.log(t) / n)
        return int(ids[self._argmax(mean + bonus)])


@register("cn-ucb")
class CNUCB(UCB1):
    """UCB restricted to arms on the true parents of the reward (needs ``context.true_graph``).

    As used as a baseline in the causal-bandit literature: the reward's parents are assumed
    known, and only interventions on them are played. When no available arm is on a parent,
    all available arms are used.
    """

    def __init__(self, context: BanditContext, *, seed: SeedLike = None, c: float = np.sqrt(2)):
        super().__init__(context, seed=seed, c=c)
        if context.true_graph is None:
            raise ValueError("cn-ucb needs context.true_graph (the true DAG)")
        parents = set(context.true_graph.predecessors(context.reward_index))
        self.parent_arm_mask_ = np.array([a.node in parents for a in context.arms])

    def _candidate_ids(self, ids: np.ndarray) -> np.ndarray:
        restricted = ids[self.parent_arm_mask_[ids]]
        return restricted if restricted.size else ids


@register("thompson")
class GaussianThompson(Policy):
    """Gaussian Thompson sampling: draw ``N(mean_a, sigma^2 / n_a)`` per arm, play the largest.

    ``sigma^2`` is the pooled within-arm variance (flat prior on the mean; each arm pulled once
    first).
    """

    stochastic = True

    def _select(self, ids: np.ndarray) -> int:
        unpulled = ids[self.counts_[ids] == 0]
        if unpulled.size:
            return int(unpulled[0])
        n = self.counts_[ids]
        mean = self.reward_sums_[ids] / n
        draws = mean + np.sqrt(self.pooled_noise_var() / n) * self.rng_.standard_normal(ids.size)
        return int(ids[self._argmax(draws)])


@register("epsilon-greedy")
class EpsilonGreedy(Policy):
    """Epsilon-greedy: a uniformly random arm with probability ``epsilon``, else the best mean.

    Parameters
    ----------
    epsilon : float
        Exploration probability in ``[0, 1]`` (default 0.1).
    """

    stochastic = True

    def __init__(self, context: BanditContext, *, seed: SeedLike = None, epsilon: float = 0.1):
        super().__init__(context, seed=seed)
        epsilon = float(epsilon)
        if not 0 <= epsilon <= 1:
            raise ValueError(f"epsilon must be in [0, 1], got {epsilon!r}")
        self.epsilon = epsilon

    def _select(self, ids: np.ndarray) -> int:
        unpulled = ids[self.counts_[ids] == 0]
        if unpulled.size:
            return int(unpulled[0])
        if self.rng_.random() < self.epsilon:
            return int(ids[self.rng_.integers(ids.size)])
        return int(ids[self._argmax(self.reward_sums_[ids] / self.counts_[ids])])


@register("random")
class RandomPolicy(Policy):
    """Uniformly random arm every round (the no-learning reference)."""

    stochastic = True

    def _select(self, ids: np.ndarray) -> int:
        return int(ids[self.rng_.integers(ids.size)])
