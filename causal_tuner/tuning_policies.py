"""Policies that choose the next serving config (the tuner's arms are whole configs).

One interface (``STYLE.md`` #1): ``select(candidates, trials, context) -> config`` and
``update(trial)``. ``trials`` is the store's record of finished rounds (the policy's history, so
a restarted daemon rebuilds every policy by replay); ``context`` is the current load.

Registered policies:

* ``ba-ucb``: BA-UCB over configs with the analytical prior (:mod:`causal_tuner.reward_model`);
  index ``mu + c * sqrt(V * log t)``;
* ``ba-ucb-noprior``: the same without the analytical prior (ablation);
* ``ba-ucb-additive``: the same with an additive model of the prior's error, no pairwise
  products of the knobs' features (ablation);
* ``naive``: the same estimator, prior included, but without backdoor adjustment (history
  pooled with experiments, context ignored): the learner confounded history fools;
* ``model-only``: AIConfigurator-style, the analytical argmax, never learns;
* ``ucb1``, ``thompson``, ``epsilon-greedy``, ``random``: configs as independent arms;
* ``tpe``: Optuna's TPE sampler through its ask/tell interface.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

import numpy as np
from scipy.stats import rankdata

from causal_tuner.knobs import KnobSpace
from causal_tuner.objective import Objective
from causal_tuner.reward_model import CausalRewardModel, PriorFn
from causal_tuner.store import FrozenTrial, TrialState

__all__ = [
    "TunerPolicy",
    "available_tuner_policies",
    "make_tuner_policy",
    "register_tuner_policy",
]

SeedLike = int | np.random.Generator | None
_REGISTRY: dict[str, type[TunerPolicy]] = {}


def register_tuner_policy(name: str) -> Callable[[type[TunerPolicy]], type[TunerPolicy]]:
    """Class decorator adding a policy under ``name``."""

    def decorator(cls: type[TunerPolicy]) -> type[TunerPolicy]:
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f"tuner policy {name!r} is already registered")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return decorator


def available_tuner_policies() -> tuple[str, ...]:
    return tuple(sorted(_REGISTRY))


def make_tuner_policy(
    name: str, space: KnobSpace, objective: Objective, **kwargs: Any
) -> TunerPolicy:
    """Build the policy registered as ``name``; unknown names list what exists."""
    if name not in _REGISTRY:
        raise ValueError(
            f"unknown tuner policy {name!r}; available: {', '.join(available_tuner_policies())}"
        )
    return _REGISTRY[name](space, objective, **kwargs)


class TunerPolicy(ABC):
    """Base class: validation, the experiment counter and config keys.

    Parameters
    ----------
    space : KnobSpace
    objective : Objective
    context_keys, mediator_keys : sequence of str
        Tier-0 and tier-2 observation keys.
    prior : PriorFn, optional
        The analytical price of configs (needed by ``ba-ucb``, ``naive``, ``model-only``).
    prior_rel_error : float, optional
        The prior's measured relative error (default: the prior's own, see
        :class:`~causal_tuner.reward_model.CausalRewardModel`).
    seed : int, Generator or None
    """

    name: ClassVar[str] = ""
    needs_prior: ClassVar[bool] = False

    def __init__(
        self,
        space: KnobSpace,
        objective: Objective,
        *,
        context_keys: Sequence[str] = (),
        mediator_keys: Sequence[str] = (),
        prior: PriorFn | None = None,
        prior_rel_error: float | None = None,
        seed: SeedLike = None,
    ) -> None:
        if self.needs_prior and prior is None:
            raise ValueError(f"policy {self.name!r} needs an analytical prior (prior=...)")
        self.space = space
        self.objective = objective
        self.context_keys = tuple(context_keys)
        self.mediator_keys = tuple(mediator_keys)
        self.prior = prior
        self.prior_rel_error = prior_rel_error
        self.seed = seed
        self.rng_ = np.random.default_rng(seed)

    def key(self, config: Mapping) -> tuple[int, ...]:
        return tuple(self.space.knob(n).index(config[n]) for n in self.space.names)

    def select(
        self,
        candidates: Sequence[Mapping],
        trials: Sequence[FrozenTrial],
        context: Mapping[str, float],
    ) -> dict:
        """Choose the next config among ``candidates`` (validated members of the space)."""
        if not candidates:
            raise ValueError("select() needs at least one candidate config")
        cands = [self.space.validate(c) for c in candidates]
        done = [t for t in trials if t.state is TrialState.COMPLETE]
        return dict(cands[int(self._select(cands, done, context))])

    def update(self, trial: FrozenTrial) -> None:  # noqa: B027 - optional hook
        """Absorb a finished trial (only stateful policies such as TPE need it)."""

    @abstractmethod
    def _select(
        self, cands: list[dict], trials: list[FrozenTrial], context: Mapping[str, float]
    ) -> int:
        """Index into ``cands``."""

    @staticmethod
    def _experiments(trials: Sequence[FrozenTrial]) -> list[FrozenTrial]:
        return [t for t in trials if t.source == "experiment"]

    def _argmax(self, scores: np.ndarray) -> int:
        best = np.flatnonzero(
            scores >= np.max(scores) - 1e-12 * max(1.0, abs(float(np.max(scores))))
        )
        return int(best[0]) if len(best) == 1 else int(self.rng_.choice(best))


@register_tuner_policy("ba-ucb")
class BAUCBTuner(TunerPolicy):
    """BA-UCB over configs, anchored on the analytical prior.

    Parameters
    ----------
    exploration : float
        ``c`` in ``mu + c * sqrt(V * log t)``; 1.0 by default (not tuned per scenario).
    rediscover_every : int
        Rounds between structure-learning passes over the history.
    load_window : int
        Windows in the load sample a config is priced over (:meth:`load_sample`): the last
        ``load_window`` since the load last changed (:meth:`load_change`). 50 by default.
    """

    needs_prior: ClassVar[bool] = True
    adjust: ClassVar[bool] = True
    interactions: ClassVar[bool] = True

    def __init__(
        self,
        space,
        objective,
        *,
        exploration: float = 1.0,
        rediscover_every: int = 25,
        load_window: int = 50,
        change_z: float = 5.0,
        min_segment: int = 10,
        **kwargs,
    ):
        super().__init__(space, objective, **kwargs)
        if not (exploration >= 0 and math.isfinite(exploration)):
            raise ValueError(f"exploration must be >= 0, got {exploration!r}")
        if not (isinstance(load_window, int) and load_window >= 1):
            raise ValueError(f"load_window must be a positive integer, got {load_window!r}")
        self.exploration = float(exploration)
        self.rediscover_every = int(rediscover_every)
        self.load_window = load_window
        self.change_z = float(change_z)
        self.min_segment = int(min_segment)
        self.model_ = CausalRewardModel(
            space,
            objective,
            self.context_keys,
            self.mediator_keys,
            prior=self.prior,
            prior_rel_error=self.prior_rel_error,
            adjust=self.adjust,
            interactions=self.interactions,
        )
        self._learned_at: int | None = None
        self.last_estimates_ = None

    def _select(self, cands, trials, context):
        n_exp = len(self._experiments(trials))
        if self._learned_at is None or n_exp - self._learned_at >= self.rediscover_every:
            self.model_.learn_adjustment(trials)
            self._learned_at = n_exp
        est = self.estimates(cands, trials, context)
        self.last_estimates_ = est
        t = n_exp + 1
        index = est.mean + self.exploration * np.sqrt(est.var * math.log(t + 1))
        return self._argmax(index)

    def estimates(
        self,
        cands,
        trials: Sequence[FrozenTrial],
        context: Mapping[str, float],
        *,
        load_window: int | None = None,
        load_slopes: bool = False,
    ):
        """The reward model's estimates of ``cands`` over the load sample, from the history and
        from the experiments since the last change of the load (:meth:`load_change`).

        ``load_window``: windows in the load sample (default ``self.load_window``);
        ``load_slopes``: see :meth:`CausalRewardModel.estimate`."""
        start = self.load_change(trials)
        if start:
            dropped = {t.trial_id for t in self._context_experiments(trials)[:start]}
            trials = [t for t in trials if not (t.source == "experiment" and t.trial_id in dropped)]
        return self.model_.estimate(
            cands,
            trials,
            self.load_sample(trials, context, window=load_window),
            load_slopes=load_slopes,
        )

    def _context_experiments(self, trials: Sequence[FrozenTrial]) -> list[FrozenTrial]:
        """The finished experiments whose observation has every context node, in order."""
        return [
            t
            for t in trials
            if t.source == "experiment"
            and t.state is TrialState.COMPLETE
            and all(k in t.observation for k in self.context_keys)
        ]

    def load_change(self, trials: Sequence[FrozenTrial]) -> int:
        """Index (among the experiments) where the load last changed, or 0.

        The prior carries the load, but its error does not transfer from one workload to
        another (a conversation trace's residuals say little about a code trace's), so after a
        change the experiments before it are set aside. A change is the split of the experiment
        sequence whose two sides differ most in some context node, by the rank-sum
        (Mann-Whitney) z of that node, when the z exceeds ``change_z`` with at least
        ``min_segment`` windows a side. Ranks, not means: window loads are heavy-tailed (a
        bursty window's ``arrival_cv2`` can be 40 times another's), and a short run of
        near-identical windows must not look like a change.
        """
        exps = self._context_experiments(trials)
        n, m = len(exps), self.min_segment
        if n < 2 * m or not self.context_keys:
            return 0
        x = np.array([[float(t.observation[k]) for k in self.context_keys] for t in exps])
        x = x[:, np.all(np.isfinite(x), axis=0)]
        if x.shape[1] == 0:
            return 0
        ranks = np.apply_along_axis(rankdata, 0, x)
        split = np.arange(m, n - m + 1)
        # rank sum of the first `split` windows against its mean and sd under no change
        u = np.cumsum(ranks, axis=0)[split - 1] - (split * (split + 1) / 2.0)[:, None]
        mean = (split * (n - split) / 2.0)[:, None]
        sd = np.sqrt(split * (n - split) * (n + 1) / 12.0)[:, None]
        z = np.max(np.abs(u - mean) / sd, axis=1)
        best = int(np.argmax(z))
        return int(split[best]) if z[best] > self.change_z else 0

    def load_sample(
        self,
        trials: Sequence[FrozenTrial],
        context: Mapping[str, float],
        window: int | None = None,
    ) -> list[dict[str, float]]:
        """The load the next windows will see: the context of the tuner's last ``window``
        (default ``load_window``) windows (a serving load swings from window to window, and a
        config is worth its reward over those swings); ``context`` until the tuner has windows
        of its own.

        The sample is long because one window's load is one draw: with bursty traffic (the
        Azure code trace's windows range from idle to 12 req/s), ten windows are a noisy sample
        of the load to come, and the ranking of the configs near their capacity, whose worth
        depends on the load most, would flip from round to round with it. A change of the
        workload is handled by :meth:`load_change`, which sets the windows before it aside
        (on the tuning benchmark, 50 windows instead of 10 cut BA-UCB's regret in every
        scenario, by 10-50%; benchmarks/RESULTS.md).
        """
        window = self.load_window if window is None else int(window)
        recent = self._context_experiments(trials)[-window:]
        return [{k: float(t.observation[k]) for k in self.context_keys} for t in recent] or [
            dict(context)
        ]


@register_tuner_policy("ba-ucb-noprior")
class BAUCBNoPriorTuner(BAUCBTuner):
    """BA-UCB without the analytical prior (ablation)."""

    needs_prior: ClassVar[bool] = False

    def __init__(self, space, objective, **kwargs):
        kwargs["prior"] = None
        super().__init__(space, objective, **kwargs)


@register_tuner_policy("ba-ucb-additive")
class BAUCBAdditiveTuner(BAUCBTuner):
    """BA-UCB whose model of the prior's error has no pairwise products (ablation)."""

    interactions: ClassVar[bool] = False


@register_tuner_policy("naive")
class NaiveTuner(BAUCBTuner):
    """The same estimator without backdoor adjustment: fooled by confounded history."""

    adjust: ClassVar[bool] = False


@register_tuner_policy("model-only")
class ModelOnlyTuner(TunerPolicy):
    """Take the analytical model's best config at the current load; never learn."""

    needs_prior: ClassVar[bool] = True

    def _select(self, cands, trials, context):
        mean, _ = self.prior(cands, context)
        return self._argmax(np.asarray(mean, dtype=float))


class _IndependentArms(TunerPolicy):
    """Per-config reward statistics from the tuner's own windows."""

    def _stats(self, cands, trials):
        index = {self.key(c): i for i, c in enumerate(cands)}
        n = np.zeros(len(cands))
        s = np.zeros(len(cands))
        ss = np.zeros(len(cands))
        all_rewards = []
        for t in self._experiments(trials):
            r = self.objective.reward(t.observation)
            all_rewards.append(r)
            i = index.get(self.key(t.config))
            if i is not None:
                n[i] += 1
                s[i] += r
                ss[i] += r * r
        pulled = n > 0
        dof = n.sum() - pulled.sum()
        if dof >= 2:
            noise_var = float(np.sum(ss[pulled] - s[pulled] ** 2 / n[pulled]) / dof)
        elif len(all_rewards) >= 2:
            noise_var = float(np.var(all_rewards, ddof=1))
        else:
            noise_var = 1.0
        return n, s, max(noise_var, 1e-12), np.array(all_rewards)

    def _unpulled_first(self, n):
        unpulled = np.flatnonzero(n == 0)
        return int(self.rng_.choice(unpulled)) if len(unpulled) else None


@register_tuner_policy("ucb1")
class UCB1Tuner(_IndependentArms):
    """UCB1 with a variance-scaled bonus: try each config once, then mean + sqrt(2 s^2 log t / n)."""

    def _select(self, cands, trials, context):
        n, s, noise_var, _ = self._stats(cands, trials)
        first = self._unpulled_first(n)
        if first is not None:
            return first
        t = n.sum()
        return self._argmax(s / n + np.sqrt(2.0 * noise_var * math.log(t) / n))


@register_tuner_policy("thompson")
class ThompsonTuner(_IndependentArms):
    """Gaussian Thompson sampling with an empirical-Bayes prior over configs."""

    def _select(self, cands, trials, context):
        n, s, noise_var, rewards = self._stats(cands, trials)
        if len(rewards) < 2:
            return int(self.rng_.integers(len(cands)))
        mu0, tau2 = float(rewards.mean()), float(rewards.var(ddof=1)) + noise_var
        post_prec = 1.0 / tau2 + n / noise_var
        post_mean = (mu0 / tau2 + s / noise_var) / post_prec
        return self._argmax(self.rng_.normal(post_mean, np.sqrt(1.0 / post_prec)))


@register_tuner_policy("epsilon-greedy")
class EpsilonGreedyTuner(_IndependentArms):
    """Explore uniformly with probability ``epsilon``, else the best empirical mean."""

    def __init__(self, space, objective, *, epsilon: float = 0.1, **kwargs):
        super().__init__(space, objective, **kwargs)
        if not 0 <= epsilon <= 1:
            raise ValueError(f"epsilon must be in [0, 1], got {epsilon!r}")
        self.epsilon = float(epsilon)

    def _select(self, cands, trials, context):
        n, s, _, _ = self._stats(cands, trials)
        if self.rng_.random() < self.epsilon or not np.any(n):
            return int(self.rng_.integers(len(cands)))
        return self._argmax(np.where(n > 0, s / np.maximum(n, 1), -np.inf))


@register_tuner_policy("random")
class RandomTuner(TunerPolicy):
    """Uniform over the candidates."""

    def _select(self, cands, trials, context):
        return int(self.rng_.integers(len(cands)))


@register_tuner_policy("tpe")
class TPETuner(TunerPolicy):
    """Optuna's TPE sampler driven by ask/tell; infeasible proposals are told as failed.

    Optuna keeps its own study, so this policy is stateful: :meth:`update` tells it each
    finished experiment (a restart replays the store's trials through ``update``).
    """

    def __init__(self, space, objective, *, n_startup_trials: int = 10, **kwargs):
        super().__init__(space, objective, **kwargs)
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        seed = int(self.rng_.integers(2**31 - 1))
        self._optuna = optuna
        self.study_ = optuna.create_study(
            direction="maximize",
            sampler=optuna.samplers.TPESampler(seed=seed, n_startup_trials=n_startup_trials),
        )
        self._dists = {
            k.name: optuna.distributions.CategoricalDistribution(list(range(len(k.levels))))
            for k in space.knobs
        }
        self._pending: dict[tuple[int, ...], list[Any]] = {}

    def _select(self, cands, trials, context):
        keys = {self.key(c): i for i, c in enumerate(cands)}
        for _ in range(200):
            trial = self.study_.ask(self._dists)
            key = tuple(int(trial.params[n]) for n in self.space.names)
            if key in keys:
                self._pending.setdefault(key, []).append(trial)
                return keys[key]
            self.study_.tell(trial, state=self._optuna.trial.TrialState.FAIL)
        return int(self.rng_.integers(len(cands)))  # TPE keeps proposing infeasible configs

    def update(self, trial: FrozenTrial) -> None:
        if trial.source != "experiment" or trial.state is not TrialState.COMPLETE:
            return
        key = self.key(trial.config)
        pending = self._pending.get(key)
        if pending:
            self.study_.tell(pending.pop(0), self.objective.reward(trial.observation))
        else:  # a replayed or externally chosen trial: add it as a completed Optuna trial
            self.study_.add_trial(
                self._optuna.trial.create_trial(
                    params={n: key[i] for i, n in enumerate(self.space.names)},
                    distributions=self._dists,
                    value=self.objective.reward(trial.observation),
                )
            )
