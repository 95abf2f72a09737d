"""The causal-bandit environment over a linear Gaussian SEM, and the run loop.

Common random numbers: an :class:`SEMBanditEnvironment` pre-draws the exogenous noise of every
round, so any two policies that pull the same arm at round ``t`` see the same observation, and
policies differ only through their choices. Regret is *pseudo*-regret: the gap between the exact
interventional means (from the SEM's total effects) of the best arm and the pulled one.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from causal_tuner.policies import Arm, BanditContext, History, Policy
from causal_tuner.sem import LinearGaussianSEM

__all__ = ["RunResult", "SEMBanditEnvironment", "make_context", "run_policy"]


class SEMBanditEnvironment:
    """Arms ``do(X_j = v)`` on an SEM with pre-drawn per-round noise.

    Parameters
    ----------
    sem : LinearGaussianSEM
        The true model.
    arms : sequence of Arm
        Interventions available (none may touch the reward).
    horizon : int
        Number of rounds whose noise is pre-drawn.
    reward_index : int, optional
        The reward node (default: the last node).
    seed : int, Generator or None
        Source of the noise draws.

    Examples
    --------
    >>> from causal_tuner.sem import random_parallel_sem
    >>> from causal_tuner.policies import plus_minus_arms
    >>> sem = random_parallel_sem(3, 6, 3, seed=0)
    >>> env = SEMBanditEnvironment(sem, plus_minus_arms(range(9)), horizon=10, seed=1)
    >>> obs = env.observe(env.arms[0], 0)
    >>> obs.shape, float(obs[0])
    ((10,), -1.0)
    """

    def __init__(
        self,
        sem: LinearGaussianSEM,
        arms: Sequence[Arm],
        horizon: int,
        reward_index: int | None = None,
        seed: int | np.random.Generator | None = None,
    ) -> None:
        if not isinstance(sem, LinearGaussianSEM):
            raise ValueError(f"sem must be a LinearGaussianSEM, got {type(sem).__name__}")
        p = sem.p
        reward_index = p - 1 if reward_index is None else int(reward_index)
        if not 0 <= reward_index < p:
            raise ValueError(f"reward_index={reward_index} is not a node in 0..{p - 1}")
        if int(horizon) < 1:
            raise ValueError(f"horizon must be >= 1, got {horizon!r}")
        arms = tuple(arms)
        if not arms:
            raise ValueError("arms must not be empty")
        for arm in arms:
            if not isinstance(arm, Arm):
                raise ValueError(f"arms must be Arm objects, got {arm!r}")
            if not 0 <= arm.node < p:
                raise ValueError(f"arm {arm} intervenes on node {arm.node}, not in 0..{p - 1}")
            if arm.node == reward_index:
                raise ValueError(f"arm {arm} intervenes on the reward node {reward_index}")
        self.sem = sem
        self.arms = arms
        self.horizon = int(horizon)
        self.reward_index = reward_index
        self.arm_index = {a: i for i, a in enumerate(arms)}
        rng = np.random.default_rng(seed)
        self.noise = rng.standard_normal((self.horizon, p)) * np.sqrt(sem.noise_var)
        self.noise.setflags(write=False)
        weights = np.asarray(sem.weights)
        intercepts = np.asarray(sem.intercepts)
        self._noise_maps: dict[int, np.ndarray] = {}
        self._offsets = np.zeros((len(arms), p))
        means = np.zeros(len(arms))
        for i, arm in enumerate(arms):
            j = arm.node
            if j not in self._noise_maps:
                cut = weights.copy()
                cut[:, j] = 0.0
                total = np.linalg.inv(np.eye(p) - cut)
                noise_map = total.copy()
                noise_map[j, :] = 0.0  # X_j's own noise is removed by the intervention
                self._noise_maps[j] = noise_map
            base = intercepts.copy()
            base[j] = arm.value
            self._offsets[i] = np.linalg.solve((np.eye(p) - _cut(weights, j)).T, base)
            means[i] = sem.interventional_mean({j: arm.value})[reward_index]
        #: Exact ``E[Y | do(arm)]`` per arm, the best value, and per-arm gaps.
        self.arm_means = means
        self.best_mean = float(means.max())
        self.gaps = self.best_mean - means

    @property
    def best_arm(self) -> Arm:
        """An arm with the largest exact mean reward."""
        return self.arms[int(np.argmax(self.arm_means))]

    def observe(self, arm: Arm, t: int) -> np.ndarray:
        """The full observed vector of round ``t`` under ``arm`` (same noise for every policy)."""
        idx = self.arm_index.get(arm)
        if idx is None:
            raise ValueError(f"arm {arm} is not one of this environment's arms")
        if not 0 <= t < self.horizon:
            raise ValueError(f"round {t} outside the pre-drawn horizon 0..{self.horizon - 1}")
        obs = self.noise[t] @ self._noise_maps[arm.node] + self._offsets[idx]
        obs[arm.node] = arm.value
        return obs

    def regret(self, arm: Arm) -> float:
        """Pseudo-regret of one pull of ``arm``."""
        return float(self.gaps[self.arm_index[arm]])


def _cut(weights: np.ndarray, j: int) -> np.ndarray:
    cut = np.array(weights)
    cut[:, j] = 0.0
    return cut


@dataclass(frozen=True, eq=False)
class RunResult:
    """One policy's trajectory on one environment.

    Attributes
    ----------
    arm_ids : numpy.ndarray of int, shape (T,)
        Index into ``env.arms`` of the arm pulled each round.
    rewards : numpy.ndarray, shape (T,)
    regret : numpy.ndarray, shape (T,)
        Per-round pseudo-regret.
    decision_s : numpy.ndarray, shape (T,)
        Wall time of ``select`` + ``update`` per round, in seconds.
    """

    arm_ids: np.ndarray
    rewards: np.ndarray
    regret: np.ndarray
    decision_s: np.ndarray

    @property
    def cumulative_regret(self) -> np.ndarray:
        """Cumulative pseudo-regret after each round."""
        return np.cumsum(self.regret)


def run_policy(
    policy: Policy, env: SEMBanditEnvironment, horizon: int | None = None, keep_history: bool = True
) -> RunResult:
    """Drive ``policy`` on ``env`` for ``horizon`` rounds through ``select``/``update``.

    Parameters
    ----------
    policy : Policy
        A fresh policy whose context uses the environment's arms.
    env : SEMBanditEnvironment
    horizon : int, optional
        Rounds to play (default: the environment's horizon).
    keep_history : bool
        Pass a growing :class:`History` to ``select`` (the ask/tell contract); disable only to
        measure the policy's own cost.

    Returns
    -------
    RunResult
    """
    horizon = env.horizon if horizon is None else int(horizon)
    if not 1 <= horizon <= env.horizon:
        raise ValueError(f"horizon must be in 1..{env.horizon}, got {horizon}")
    arms = env.arms
    if set(arms) != set(policy.context.arms):
        raise ValueError("the policy's arm set differs from the environment's")
    arm_ids = np.zeros(horizon, dtype=np.int64)
    rewards = np.zeros(horizon)
    regret = np.zeros(horizon)
    decision_s = np.zeros(horizon)
    history = History() if keep_history else None
    clock = time.perf_counter
    for t in range(horizon):
        start = clock()
        arm = policy.select(arms, history)
        mid = clock()
        obs = env.observe(arm, t)
        resume = clock()
        policy.update(arm, obs)
        decision_s[t] = (mid - start) + (clock() - resume)
        if history is not None:
            history.append(arm, obs)
        idx = env.arm_index[arm]
        arm_ids[t] = idx
        rewards[t] = obs[env.reward_index]
        regret[t] = env.gaps[idx]
    return RunResult(arm_ids, rewards, regret, decision_s)


def make_context(
    sem: LinearGaussianSEM,
    arms: Sequence[Arm],
    obs_data: np.ndarray,
    reward_index: int | None = None,
    max_in_degree: int = 3,
) -> BanditContext:
    """A :class:`BanditContext` for an SEM benchmark: reward in the last tier, true DAG attached.

    The tiers say only that the reward has no children (it is the outcome); the true graph is
    used by the oracle baselines alone.
    """
    p = sem.p
    reward_index = p - 1 if reward_index is None else int(reward_index)
    tiers = tuple(1 if i == reward_index else 0 for i in range(p))
    return BanditContext(
        n_nodes=p,
        reward_index=reward_index,
        arms=tuple(arms),
        obs_data=obs_data,
        tiers=tiers,
        true_graph=sem.graph,
        max_in_degree=max_in_degree,
    )
