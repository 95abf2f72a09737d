"""The ask/tell tuning session: the one loop the daemon, benchmarks, replay and notebooks drive.

``ask()`` returns the config to serve the next window with; ``tell(trial_id, observation)``
records what that window showed. History lives in the store, so a session reopened on the same
SQLite file continues where the last one stopped: trials a killed process left RUNNING are
marked FAILED, and the policy is rebuilt by replaying the finished trials.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from tqdm.auto import tqdm

from causal_tuner.knobs import KnobSpace
from causal_tuner.objective import Objective
from causal_tuner.reward_model import PriorFn
from causal_tuner.store import FrozenTrial, InMemoryStore, TrialState, TrialStore
from causal_tuner.tuning_policies import TunerPolicy, make_tuner_policy

__all__ = ["Environment", "Trial", "TuningSession"]

#: Tier-0 and tier-2 keys of ``simulator.metrics.WindowObservation`` (the defaults).
DEFAULT_CONTEXT_KEYS = (
    "request_rate_rps",
    "mean_prompt_tokens",
    "mean_output_tokens",
    "prefix_hit_ratio",
    "arrival_cv2",
)
DEFAULT_MEDIATOR_KEYS = (
    "mean_running_batch",
    "mean_waiting",
    "kv_usage_frac",
    "preemptions_per_s",
    "mean_step_time_ms",
    "mean_tokens_per_step",
)


@dataclass(frozen=True)
class Trial:
    """What ``ask`` hands out: serve the next window with ``config``, then ``tell(trial_id, ...)``."""

    trial_id: int
    config: Mapping[str, Any]


class Environment(Protocol):
    """Something that serves one window under a config and reports the window's observation."""

    def observe(self, config: Mapping[str, Any], round_index: int) -> Mapping[str, float]:
        """Apply ``config`` (restarting the engine if needed), serve one window, observe it."""
        ...


class TuningSession:
    """Ask/tell over a knob space, with a durable store and a pluggable policy.

    Parameters
    ----------
    space : KnobSpace
    objective : Objective
    policy : str or TunerPolicy
        A registered name (``causal_tuner.tuning_policies``) or an instance.
    store : TrialStore, optional
        Defaults to an in-memory store; pass a ``SQLiteStore`` to survive restarts.
    prior : PriorFn, optional
        The analytical price of configs (see ``causal_tuner.prior``).
    prior_rel_error : float, optional
        The prior's measured relative error (default: the prior's own ``rel_error``).
    context_keys, mediator_keys : sequence of str
        Observation keys of tiers 0 and 2.
    seed : int, Generator or None
    policy_params : mapping, optional
        Extra keyword arguments for the policy.
    context_smoothing : float
        Weight of the newest window in the load forecast (:meth:`current_context`).
    """

    def __init__(
        self,
        space: KnobSpace,
        objective: Objective | None = None,
        policy: str | TunerPolicy = "ba-ucb",
        *,
        store: TrialStore | None = None,
        prior: PriorFn | None = None,
        prior_rel_error: float | None = None,
        context_keys: Sequence[str] = DEFAULT_CONTEXT_KEYS,
        mediator_keys: Sequence[str] = DEFAULT_MEDIATOR_KEYS,
        seed: int | np.random.Generator | None = None,
        policy_params: Mapping[str, Any] | None = None,
        context_smoothing: float = 0.3,
    ) -> None:
        if not 0 < context_smoothing <= 1:
            raise ValueError(f"context_smoothing must be in (0, 1], got {context_smoothing!r}")
        self.context_smoothing = float(context_smoothing)
        self._last_context: dict[str, float] = {}
        self.space = space
        self.objective = objective or Objective()
        self.store = store if store is not None else InMemoryStore()
        self.context_keys = tuple(context_keys)
        self.mediator_keys = tuple(mediator_keys)
        if isinstance(policy, TunerPolicy):
            self.policy = policy
        else:
            self.policy = make_tuner_policy(
                policy,
                space,
                self.objective,
                context_keys=self.context_keys,
                mediator_keys=self.mediator_keys,
                prior=prior,
                prior_rel_error=prior_rel_error,
                seed=seed,
                **dict(policy_params or {}),
            )
        self._candidates = list(space.grid())
        if not self._candidates:
            raise ValueError("the knob space has no feasible config")
        self._recover()

    # ------------------------------------------------------------------ durability
    def _recover(self) -> None:
        """Fail trials a dead process left running; replay finished ones into the policy."""
        for t in self.store.trials([TrialState.RUNNING]):
            self.store.finish_trial(
                t.trial_id, TrialState.FAILED, note="interrupted: the tuner stopped mid-window"
            )
        for t in self.store.trials([TrialState.COMPLETE]):
            self.policy.update(t)

    # ------------------------------------------------------------------ ask / tell
    @property
    def candidates(self) -> list[dict]:
        """Every feasible config of the space."""
        return list(self._candidates)

    def current_context(self) -> dict[str, float]:
        """The load expected in the next window: an exponentially weighted mean of the recent
        windows' context (weight ``context_smoothing`` on the newest), so that one window's
        sampling noise does not swing the forecast while a real shift still shows within a few
        windows."""
        rows = [
            t.observation
            for t in self.store.trials([TrialState.COMPLETE])
            if all(k in t.observation for k in self.context_keys)
        ][-50:]
        if not rows:
            return {}
        a = self.context_smoothing
        ctx = {k: float(rows[0][k]) for k in self.context_keys}
        for obs in rows[1:]:
            for k in self.context_keys:
                ctx[k] = (1 - a) * ctx[k] + a * float(obs[k])
        return ctx

    def ask(self, context: Mapping[str, float] | None = None) -> Trial:
        """Choose the config for the next window and record a RUNNING trial.

        Parameters
        ----------
        context : mapping, optional
            The load expected in the next window; defaults to the latest window's.
        """
        if context is not None:
            self._last_context = dict(context)
        # the load forecast from finished windows; before any (or when every window so far
        # failed) the last context given explicitly
        ctx = (
            dict(context)
            if context is not None
            else self.current_context() or dict(self._last_context)
        )
        trials = self.store.trials([TrialState.COMPLETE])
        if not ctx and self.context_keys and getattr(self.policy, "needs_prior", False):
            raise ValueError(
                "no context yet: pass ask(context={...}) with "
                f"{list(self.context_keys)} for the first window, or add history first"
            )
        config = self.policy.select(self._candidates, trials, ctx)
        trial = self.store.create_trial(config, source="experiment")
        return Trial(trial.trial_id, dict(trial.config))

    def tell(
        self,
        trial_id: int,
        observation: Mapping[str, float] | None,
        *,
        failed_reason: str | None = None,
    ) -> FrozenTrial:
        """Record the window of a trial; ``observation=None`` (with a reason) marks it FAILED.

        A malformed observation (missing reward or context, non-finite values) marks the trial
        FAILED with the reason and raises nothing: a bad scrape must not stop the tuner or
        corrupt its history.
        """
        trial = self.store.get_trial(trial_id)
        if trial.state.is_finished:
            raise ValueError(f"trial {trial_id} was already told ({trial.state.value})")
        if observation is None:
            return self.store.finish_trial(
                trial_id, TrialState.FAILED, note=failed_reason or "no observation"
            )
        problem = self._check_observation(observation)
        if problem:
            return self.store.finish_trial(trial_id, TrialState.FAILED, note=problem)
        done = self.store.finish_trial(trial_id, TrialState.COMPLETE, self._clean(observation))
        self.policy.update(done)
        return done

    def _check_observation(self, observation: Mapping[str, float]) -> str | None:
        try:
            self.objective.reward(observation)
        except (ValueError, TypeError) as err:
            return f"bad observation: {err}"
        missing = [k for k in self.context_keys if k not in observation]
        if missing:
            return f"bad observation: lacks context {missing}"
        for k in (*self.context_keys, self.objective.reward_key):
            if not math.isfinite(float(observation[k])):
                return f"bad observation: {k} is not finite"
        return None

    @staticmethod
    def _clean(observation: Mapping[str, float]) -> dict[str, float]:
        """Finite numeric fields only (NaN percentiles of an empty window are left out)."""
        out = {}
        for k, v in observation.items():
            if isinstance(v, bool) or not isinstance(v, int | float | np.floating | np.integer):
                continue
            if math.isfinite(float(v)):
                out[k] = float(v)
        return out

    def add_history(self, rows: Iterable[tuple[Mapping[str, Any], Mapping[str, float]]]) -> int:
        """Import recorded windows ``(config, observation)`` as ``source="history"``.

        Rows whose config is outside the space or whose observation is malformed are counted
        and reported in the ``ValueError``, never dropped silently; valid rows are kept.
        """
        added, bad = 0, []
        for i, (config, observation) in enumerate(rows):
            try:
                config = self.space.validate(config)
            except ValueError as err:
                bad.append(f"row {i}: {err}")
                continue
            problem = self._check_observation(observation)
            if problem:
                bad.append(f"row {i}: {problem}")
                continue
            t = self.store.add_completed(config, self._clean(observation), source="history")
            self.policy.update(t)
            added += 1
        if bad:
            shown = "; ".join(bad[:5])
            raise ValueError(f"{len(bad)} history rows rejected ({added} added): {shown}")
        return added

    # ------------------------------------------------------------------ results
    def experiments(self) -> list[FrozenTrial]:
        return [t for t in self.store.trials([TrialState.COMPLETE]) if t.source == "experiment"]

    def best_config(self, z: float = 1.0, load_window: int | None = None) -> dict:
        """The config the tuner would keep.

        With a reward model (BA-UCB and its variants): the largest lower confidence bound,
        ``mean - z * sd``, so that a config is kept for what the tuner knows of it, not for
        what it hopes (an untried config's estimate is the prior's). The estimate averages over
        the loads of the last ``load_window`` windows since the load last changed (default:
        the policy's own sample, :meth:`causal_tuner.tuning_policies.BAUCBTuner.load_sample`).

        It is the equal-weight average of two models of how the prior's error on a config
        depends on the load: flat (the error learned on the config's windows holds at the load
        to come) and sloped (it moves linearly with the load, fitted per config:
        ``CausalRewardModel.estimate(..., load_slopes=True)``). The mean is the average of the
        two; the variance is their average plus the spread of their means, so a config the two
        models disagree on is kept only if both rate it. Neither alone is safe: the flat model
        keeps a config tried mostly in light windows at the prior's overprice of it in heavy
        ones, the sloped one can carry a config tried a few times far along its slope.

        Otherwise the best mean reward over the tuner's own windows.
        """
        model = getattr(self.policy, "model_", None)
        trials = self.store.trials([TrialState.COMPLETE])
        ctx = self.current_context()
        if model is not None and ctx:
            flat, sloped = (
                self.policy.estimates(
                    self._candidates, trials, ctx, load_window=load_window, load_slopes=slopes
                )
                for slopes in (False, True)
            )
            mean = (flat.mean + sloped.mean) / 2.0
            var = (flat.var + sloped.var) / 2.0 + (sloped.mean - flat.mean) ** 2 / 4.0
            return dict(self._candidates[int(np.argmax(mean - z * np.sqrt(var)))])
        means: dict[tuple, list[float]] = {}
        configs: dict[tuple, dict] = {}
        for t in self.experiments():
            key = self.policy.key(t.config)
            means.setdefault(key, []).append(self.objective.reward(t.observation))
            configs[key] = dict(t.config)
        if not means:
            return self.space.default_config()
        best = max(means, key=lambda k: float(np.mean(means[k])))
        return configs[best]

    def run(
        self,
        environment: Environment,
        n_rounds: int,
        *,
        first_context: Mapping[str, float] | None = None,
        progress: bool = True,
    ) -> list[FrozenTrial]:
        """Convenience loop: ``n_rounds`` of ask, observe, tell.

        A window the environment fails to serve (an exception from ``observe``) is told as
        FAILED with the error message, and the loop goes on.
        """
        out = []
        for i in tqdm(
            range(int(n_rounds)),
            desc=f"tuning ({getattr(self.policy, 'name', '')})",
            disable=not progress,
        ):
            ctx = None
            if i == 0 and first_context is not None and not self.current_context():
                ctx = first_context
            trial = self.ask(ctx)
            round_index = sum(t.source == "experiment" for t in self.store.trials()) - 1
            try:
                obs = environment.observe(trial.config, round_index)
            except Exception as err:  # the environment is the outside world: record, go on
                out.append(
                    self.tell(trial.trial_id, None, failed_reason=f"{type(err).__name__}: {err}")
                )
                continue
            out.append(self.tell(trial.trial_id, obs))
        return out
