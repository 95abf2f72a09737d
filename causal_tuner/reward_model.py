"""The causal reward model behind the tuner's BA-UCB: effects of configs, adjusted for load.

One round is one window of serving (``DESIGN.md``). Its observation has four tiers: context
(load), knobs (the config), mediators (engine state) and the reward. This module estimates, for
every feasible config ``c`` and the *current* context ``w``, the expected reward
``mu(c, w) = E[Y | do(config = c), w]`` with a variance, from three sources:

* **prior** — the analytical model's price ``pi(c, w)`` with a variance from its measured error;
* **history** — recorded windows (``source == "history"``) in which knobs may have been set
  *because of* load (an autoscaler); valid only after backdoor adjustment;
* **experiments** — the tuner's own windows, in which the knobs have no parents.

Estimation (our derivation, following ``DESIGN.md`` steps 1-5):

1. Structure: PC (``causal_tuner.structure.PC``) with tiered background knowledge over
   ``[context, knobs, mediators, reward]`` on the history rows. The adjustment set ``Z`` is the
   union, over knobs, of the first backdoor set that ``causal_tuner.backdoor.adjustment_sets``
   returns (restricted to context: the other knobs are in the regression anyway). Context nodes
   that the graph makes parents of the reward join ``Z`` too: they cannot open a backdoor path
   (tier 0) and they cut variance. With too little history, ``Z`` is every context node, which
   is always a valid set under the tiers (no context node is a descendant of a knob).
2. The reward's deviation from the prior, ``r = Y - pi(c, w)``, is regressed on
   ``[1, phi(c), Z - z_now]`` (history rows; experimental rows need no adjustment and are
   regressed on ``[1, phi(c)]``) where ``phi`` is the knob encoding (:meth:`KnobSpace.encode`,
   which lets a linear model express any per-level effect). The intercept is free (it absorbs
   an error the prior makes on every config alike); the knob coefficients get a Gaussian prior
   ``N(0, tau^2 / K)`` for K knobs, where ``tau`` is the prior's error on one config's reward.
   ``tau`` starts at ``prior_rel_error * scale`` (the analytical model's measured error) and is
   updated by empirical Bayes from the spread of the tuner's per-config residuals (a
   pseudo-count of two configs keeps the measured value until data says otherwise): an
   accurate prior thus earns a tight band and little exploration, a biased one a wide band.
   Mediators never enter (they would cut the effect being estimated).
3. The fit is done twice, on history rows (observational) and on experimental rows; each gives
   ``mu_o(c), V_o(c)`` and ``mu_e(c), V_e(c)``.
4. Per config, the two are combined by inverse variance, unless they disagree beyond their
   joint confidence (``|mu_o - mu_e| > guard_z * sqrt(V_o + V_e)``): then the observational side
   is dropped for that config (a wrong adjustment set must not lock in a bad arm).
5. Interactions the additive encoding cannot express are caught by a per-config random effect
   ``u_c ~ N(0, tau^2 / 2)`` (steps 2 and 5 are one linear mixed model), shrunk towards each config's own mean residual, so the estimate of a
   config that is pulled often converges to its true mean whatever the encoding misses.

The ``adjust=False`` variant is the *naive learner*: it regresses on the knobs alone and is
fooled by confounded history; it exists to show that the adjustment matters.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import networkx as nx
import numpy as np

from causal_tuner.backdoor import adjustment_sets
from causal_tuner.knobs import KnobSpace
from causal_tuner.objective import Objective
from causal_tuner.store import FrozenTrial, TrialState
from causal_tuner.structure import PC

__all__ = ["CausalRewardModel", "ConfigEstimates", "PriorFn"]

#: ``prior(configs, context) -> (mean reward per config, variance per config)``.
PriorFn = Callable[[Sequence[Mapping], Mapping[str, float]], tuple[np.ndarray, np.ndarray]]


@dataclass(frozen=True)
class ConfigEstimates:
    """Estimated reward of each candidate config at the current context."""

    mean: np.ndarray
    var: np.ndarray
    observational_dropped: np.ndarray  # bool per config: the bias guard fired
    adjustment: tuple[str, ...]  # the context nodes adjusted for


class CausalRewardModel:
    """Backdoor-adjusted, prior-anchored estimates of every config's reward.

    Parameters
    ----------
    space : KnobSpace
    objective : Objective
    context_keys : sequence of str
        Tier-0 observation keys (load).
    mediator_keys : sequence of str
        Tier-2 observation keys (engine state); used only for structure learning.
    prior : PriorFn, optional
        The analytical price of configs at a context; ``None`` means a flat prior (mean 0, the
        knob coefficients then get a vague prior).
    prior_rel_error : float, optional
        Relative error of the prior's reward, measured (see ``causal_tuner.prior``); sets the
        prior variance of the knob effects. Default: the prior's ``rel_error`` attribute, else
        ``causal_tuner.prior.PRIOR_REL_ERROR``.
    adjust : bool
        ``False`` gives the naive learner (no context in the regression, history pooled).
    guard_z : float
        Bias-guard threshold in joint standard deviations.
    pc_alpha : float
        Significance level of PC's Fisher-z tests.
    min_history_for_structure : int
        Fewer history rows than this: adjust for every context node instead of learning.
    interactions : bool
        Model the prior's error with the knobs' pairwise products as well as their per-level
        features (:meth:`KnobSpace.encode_many`), so that an error the prior makes only for two
        knobs' levels together need not be charged to every config with one of them. Every
        feature, per-level or product, gets the same prior variance (the knob effects' total
        stays ``tau^2 / 2``); an untried combination of tried levels keeps a band of its own.
    """

    def __init__(
        self,
        space: KnobSpace,
        objective: Objective,
        context_keys: Sequence[str],
        mediator_keys: Sequence[str] = (),
        *,
        prior: PriorFn | None = None,
        prior_rel_error: float | None = None,
        adjust: bool = True,
        guard_z: float = 3.0,
        pc_alpha: float = 0.01,
        min_history_for_structure: int = 30,
        interactions: bool = True,
    ) -> None:
        if prior_rel_error is None:
            # the prior's own measured error (AnalyticalPrior.rel_error), else the calibrated
            # default of causal_tuner.prior
            from causal_tuner.prior import PRIOR_REL_ERROR

            prior_rel_error = getattr(prior, "rel_error", PRIOR_REL_ERROR)
        if not (prior_rel_error > 0 and math.isfinite(prior_rel_error)):
            raise ValueError(f"prior_rel_error must be > 0, got {prior_rel_error!r}")
        self.space = space
        self.objective = objective
        self.context_keys = tuple(context_keys)
        self.mediator_keys = tuple(mediator_keys)
        self.prior = prior
        self.prior_rel_error = float(prior_rel_error)
        self.adjust = adjust
        self.guard_z = float(guard_z)
        self.pc_alpha = float(pc_alpha)
        self.min_history_for_structure = int(min_history_for_structure)
        self.interactions = bool(interactions)
        self.adjustment_: tuple[str, ...] = self.context_keys if adjust else ()
        self.graph_: nx.DiGraph | None = None
        self._prior_cache: dict[tuple[str, int], float] = {}
        self._phi_last: tuple[tuple, np.ndarray] | None = None

    # ------------------------------------------------------------------ structure
    def learn_adjustment(self, history: Sequence[FrozenTrial]) -> tuple[str, ...]:
        """Step 1: the context nodes to adjust for, learned from history rows."""
        if not self.adjust:
            self.adjustment_ = ()
            return self.adjustment_
        rows = [t for t in history if t.source == "history" and t.state is TrialState.COMPLETE]
        if len(rows) < self.min_history_for_structure or not self.context_keys:
            self.adjustment_ = self.context_keys
            return self.adjustment_
        knob_names = list(self.space.names)
        nodes = [*self.context_keys, *knob_names, *self.mediator_keys, "reward"]
        data = np.array(
            [
                [
                    *(float(t.observation[k]) for k in self.context_keys),
                    *(self._knob_number(name, t.config[name]) for name in knob_names),
                    *(float(t.observation[k]) for k in self.mediator_keys),
                    self.objective.reward(t.observation),
                ]
                for t in rows
            ]
        )
        keep = np.nanstd(data, axis=0) > 1e-12  # constant columns carry no information
        if not keep[-1]:
            self.adjustment_ = self.context_keys
            return self.adjustment_
        cols = np.flatnonzero(keep)
        names = [nodes[i] for i in cols]
        tiers = [
            [i for i, n in enumerate(names) if n in self.context_keys],
            [i for i, n in enumerate(names) if n in knob_names],
            [i for i, n in enumerate(names) if n in self.mediator_keys],
            [len(names) - 1],
        ]
        pc = PC(alpha=self.pc_alpha, tiers=[t for t in tiers if t]).fit(data[:, cols])
        adj = np.asarray(pc.adjacency_)
        graph = nx.DiGraph()
        graph.add_nodes_from(range(len(names)))
        for i, j in zip(*np.nonzero(adj), strict=True):
            if adj[j, i] == 0:
                graph.add_edge(int(i), int(j))
        self.graph_ = nx.relabel_nodes(graph, dict(enumerate(names)))
        reward = len(names) - 1
        chosen: set[str] = set()
        context_idx = set(tiers[0])
        for knob in tiers[1]:
            sets = adjustment_sets(pc.cpdag_, knob, reward)
            if sets:
                chosen |= {names[z] for z in sets[0] if z in context_idx}
        # outcome predictors among the context (never colliders here: tier 0 has no knob parents)
        chosen |= {names[z] for z in context_idx if adj[z, reward] and not adj[reward, z]}
        self.adjustment_ = tuple(k for k in self.context_keys if k in chosen)
        return self.adjustment_

    def _knob_number(self, name: str, value: object) -> float:
        knob = self.space.knob(name)
        return float(value) if knob.ordered else float(knob.index(value))

    # ------------------------------------------------------------------ estimation
    def _prior_mean_var(
        self, configs: Sequence[Mapping], context: Mapping[str, float]
    ) -> tuple[np.ndarray, np.ndarray]:
        if self.prior is None:
            return np.zeros(len(configs)), np.full(len(configs), np.inf)
        mean, var = self.prior(configs, context)
        mean = np.asarray(mean, dtype=float)
        var = np.asarray(var, dtype=float)
        if mean.shape != (len(configs),) or var.shape != (len(configs),):
            raise ValueError("prior must return one mean and one variance per config")
        if not (np.all(np.isfinite(mean)) and np.all(var > 0)):
            raise ValueError("prior returned a non-finite mean or a non-positive variance")
        return mean, var

    def _fit(
        self,
        trials: Sequence[FrozenTrial],
        keys: list[tuple],
        z_now: np.ndarray,
        scale: float,
        tau: float,
        adjusted: bool,
        base: np.ndarray | None = None,
        load_now: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray] | None:
        """Posterior mean and variance of every config's reward deviation from the prior.

        A linear mixed model with known variances: ``r_i = b0 + phi(c_i) beta + u_{c_i}
        [+ gamma (z_i - z_now)] + e_i`` with ``beta ~ N(0, tau^2 / (2 k))`` per coefficient
        (``k`` the mean number of active features), ``u_c ~ N(0, tau^2 / 2)`` and a vague prior
        on ``b0`` and ``gamma``; ``phi`` holds the per-level features and, with
        ``interactions``, their pairwise products. The noise variance is the residual variance
        of the saturated model (one mean per config, plus the context terms), i.e. the
        within-config spread.

        ``base``: per-config prior to deviate from, instead of the prior at each row's context.

        ``load_now``: the context nodes' mean over the load to come. With it, each config with
        enough windows (:meth:`_load_slopes`) also gets a slope of its deviation on each context
        node, ``s_ck ~ N(0, tau^2 / (2 K))`` per standardized node (``K`` nodes), centred at
        ``load_now``, so that its deviation is carried to the load to come along its slope.

        ``adjusted``: include the adjustment set (observational rows). Experimental rows need
        no adjustment (the tuner set the knobs) and the prior already carries the load, so they
        are fitted on the config alone: a linear load term fitted across saturated and
        unsaturated configs would only add bias.
        """
        if not trials:
            return None
        n_cfg = len(keys)
        index = {k: i for i, k in enumerate(keys)}
        ctx_keys = self.adjustment_ if adjusted else ()
        y = np.array([self.objective.reward(t.observation) for t in trials])
        cfg_idx = np.array([index[self._key(t.config)] for t in trials])
        # deviation from the prior at each window's own load; ``base`` (the naive learner):
        # from the prior at the load to come, whatever load the window had
        r = y - (
            base[cfg_idx] if base is not None else np.array([self._prior_at(t) for t in trials])
        )
        phi_all = self._phi_cache(keys)
        onehot = np.zeros((len(trials), n_cfg))
        onehot[np.arange(len(trials)), cfg_idx] = 1.0
        z = np.array([[float(t.observation[k]) for k in ctx_keys] for t in trials]).reshape(
            len(trials), len(ctx_keys)
        )
        zc = z - z_now if adjusted else z
        slopes = self._load_slopes(trials, onehot, load_now)
        x = np.hstack([np.ones((len(trials), 1)), phi_all[cfg_idx], zc, onehot, slopes])
        k_phi = phi_all.shape[1]
        # noise: per-config residual variance of the saturated model (config means + load
        # terms), shrunk towards the pooled value. Serving windows are heteroscedastic: a
        # config on the edge of overload swings between fine and saturated windows, a
        # comfortable one barely moves, and a pooled variance would misjudge both.
        sat = np.hstack([onehot[:, np.unique(cfg_idx)], zc, slopes])
        coef_sat, *_ = np.linalg.lstsq(sat, r, rcond=None)
        resid = r - sat @ coef_sat
        noise_c = self._noise_per_config(
            resid, cfg_idx, n_cfg, len(trials) - np.linalg.matrix_rank(sat), scale
        )
        w = 1.0 / noise_c[cfg_idx]
        active = max(float(np.mean(np.sum(phi_all**2, axis=1))), 1.0)
        prec = np.concatenate(
            [
                [1e-8 / scale**2],
                np.full(k_phi, 2.0 * active / tau**2),
                np.full(len(ctx_keys), 1e-8),
                np.full(n_cfg, 2.0 / tau**2),
                np.full(slopes.shape[1], 2.0 * (slopes.shape[1] // n_cfg) / tau**2),
            ]
        )
        xw = x * w[:, None]
        post = x.T @ xw + np.diag(prec)
        # the one-hot columns sum to the intercept, so the posterior precision can be close to
        # singular when tau is large; the pseudo-inverse of this symmetric matrix is the stable
        # choice (it equals the inverse whenever that exists)
        cov = np.linalg.pinv(post, hermitian=True)
        coef = cov @ (xw.T @ r)
        # prediction for each config at z_now: b0 + phi beta + u_c (the load terms and the
        # slopes are zero there: they are centred at the load to come)
        xc = np.hstack(
            [
                np.ones((n_cfg, 1)),
                phi_all,
                np.zeros((n_cfg, len(ctx_keys))),
                np.eye(n_cfg),
                np.zeros((n_cfg, slopes.shape[1])),
            ]
        )
        mean = xc @ coef
        var = np.einsum("ij,jk,ik->i", xc, cov, xc)
        return mean, var

    def _load_slopes(
        self, trials: Sequence[FrozenTrial], onehot: np.ndarray, load_now: np.ndarray | None
    ) -> np.ndarray:
        """Per-config load-slope columns ``onehot_c * (w_k - load_now_k) / sd_k``, for every
        context node ``k`` that varies over ``trials``; none without ``load_now``.

        Only configs with at least ``K + 2`` windows get slopes (``K`` slopes, the config's own
        offset, and one window to spare for its noise): with fewer, the slopes of a config
        would be fitted through its few windows exactly."""
        if load_now is None or not trials:
            return np.zeros((len(trials), 0))
        w = np.array(
            [[float(t.observation.get(k, np.nan)) for k in self.context_keys] for t in trials]
        ).reshape(len(trials), len(self.context_keys))
        sd = np.std(w, axis=0)
        keep = np.isfinite(sd) & (sd > 1e-12) & np.isfinite(load_now)
        wc = (w[:, keep] - load_now[keep]) / sd[keep]
        enough = onehot.sum(axis=0) >= wc.shape[1] + 2
        return ((onehot * enough)[:, :, None] * wc[:, None, :]).reshape(len(trials), -1)

    @staticmethod
    def _noise_per_config(
        resid: np.ndarray, cfg_idx: np.ndarray, n_cfg: int, dof: int, scale: float, nu0: float = 3.0
    ) -> np.ndarray:
        """Each config's window-to-window variance, shrunk towards the pooled one with ``nu0``
        pseudo-observations (configs seen once get the pooled value)."""
        floor = (0.005 * scale) ** 2
        ss = np.bincount(cfg_idx, weights=resid**2, minlength=n_cfg)
        n = np.bincount(cfg_idx, minlength=n_cfg).astype(float)
        pooled = float(ss.sum()) / dof if dof >= 2 else (0.05 * scale) ** 2
        pooled = max(pooled, floor)
        return np.maximum((nu0 * pooled + ss) / (nu0 + np.maximum(n - 1.0, 0.0)), floor)

    def _configs_of(self, keys: list[tuple]) -> list[dict]:
        return [
            {n: self.space.knob(n).levels[i] for n, i in zip(self.space.names, key, strict=True)}
            for key in keys
        ]

    def _phi_cache(self, keys: list[tuple]) -> np.ndarray:
        """Features of ``keys``' configs; the last set is kept (both fits of an estimate, and
        round after round, ask for the same configs)."""
        tag = (self.interactions, tuple(keys))
        if self._phi_last is None or self._phi_last[0] != tag:
            phi = self.space.encode_many(self._configs_of(keys), pairs=self.interactions)
            self._phi_last = (tag, phi)
        return self._phi_last[1]

    def _prior_at(self, trial: FrozenTrial) -> float:
        """The prior's price of a finished trial's config at that trial's own context (cached:
        a finished trial never changes)."""
        if self.prior is None:
            return 0.0
        key = (trial.source, trial.trial_id)
        if key not in self._prior_cache:
            ctx = {
                k: float(trial.observation[k]) for k in self.context_keys if k in trial.observation
            }
            mean, _ = self.prior([trial.config], ctx)
            self._prior_cache[key] = float(np.asarray(mean)[0])
        return self._prior_cache[key]

    def estimate(
        self,
        configs: Sequence[Mapping],
        trials: Sequence[FrozenTrial],
        context: Mapping[str, float] | Sequence[Mapping[str, float]],
        *,
        load_slopes: bool = False,
    ) -> ConfigEstimates:
        """Steps 2-5 for every config in ``configs`` at ``context``.

        Parameters
        ----------
        configs : sequence of mapping
            Candidate configs (feasible members of the space).
        trials : sequence of FrozenTrial
            Completed rounds (experiment and history sources).
        context : mapping, or sequence of mappings
            The load to come: one context (e.g. the forecast of the next window's), or a sample
            of contexts (e.g. the recent windows'). With a sample the estimate is the reward
            averaged over it, ``sum_w P(w) E[Y | do(c), w]`` (the backdoor formula over the
            load): the prior is not linear in the load, so pricing a config at the mean load
            is not its mean reward over windows whose load swings.
        load_slopes : bool
            Let the prior's error on a config vary linearly with the load: per-config slopes on
            the context nodes, fitted on the tuner's own windows of that config (only configs
            with enough of them, :meth:`_load_slopes`). Without them, a deviation learned on a
            config's windows is carried unchanged to the load to come, so a config tried mostly
            in light windows, where the prior is right, keeps the prior's overprice of it in
            heavy ones. The slopes add ``K`` parameters per config, which a config tried a few
            times cannot pin down: the tuner uses them only to judge the config it keeps, beside
            the flat model (``TuningSession.best_config``), not to explore.
        """
        contexts = [context] if isinstance(context, Mapping) else list(context)
        if not contexts:
            raise ValueError("estimate() needs a context or a non-empty sample of contexts")
        for ctx in contexts:
            missing = [k for k in self.context_keys if k not in ctx]
            if missing:
                raise ValueError(
                    f"context lacks {missing}; the model needs {list(self.context_keys)}"
                )
        done = [t for t in trials if t.state is TrialState.COMPLETE]
        priced = [self._prior_mean_var(configs, ctx) for ctx in contexts]
        pi = np.mean([m for m, _ in priced], axis=0)
        pi_var = np.mean([v for _, v in priced], axis=0)
        flat = self.prior is None
        if flat:
            rewards = [self.objective.reward(t.observation) for t in done]
            scale = float(np.std(rewards)) + float(np.mean(np.abs(rewards))) if rewards else 1.0
        else:
            # the prior's own error on one config sets the scale: a prior that prices every
            # config at zero (all overloaded, by the model) must not claim a zero-width band
            scale = float(np.sqrt(np.median(pi_var))) / self.prior_rel_error
            scale = max(scale, float(np.median(np.abs(pi))))
        scale = max(scale, 1e-9)
        z_now = np.array([np.mean([float(ctx[k]) for ctx in contexts]) for k in self.adjustment_])
        keys = [self._key(c) for c in configs]
        known = set(keys)
        extra = sorted({self._key(t.config) for t in done} - known)
        all_keys = keys + extra  # trials of configs no longer offered still inform the fit

        history = [t for t in done if t.source == "history"]
        experiments = [t for t in done if t.source == "experiment"]
        naive_base = None
        if not self.adjust:
            # the naive learner pools everything and ignores the load: every window is compared
            # with the prior's price at the load to come, as if each had been served under it
            history, experiments = [*history, *experiments], []
            if not flat:  # the candidates are priced above; only configs no longer offered
                more = self._configs_of(extra)
                naive_base = np.concatenate(
                    [pi, np.mean([self._prior_mean_var(more, c)[0] for c in contexts], axis=0)]
                    if more
                    else [pi]
                )

        tau = self._prior_deviation_sd(experiments, scale, flat)
        fit_o = self._fit(history, all_keys, z_now, scale, tau, adjusted=True, base=naive_base)
        load_now = (
            np.array([np.mean([float(ctx[k]) for ctx in contexts]) for k in self.context_keys])
            if load_slopes
            else None
        )
        fit_e = self._fit(
            experiments, all_keys, z_now, scale, tau, adjusted=False, load_now=load_now
        )
        n = len(configs)
        dropped = np.zeros(n, dtype=bool)
        if fit_o is None and fit_e is None:
            mean = pi.copy()
            var = pi_var if not flat else np.full(n, scale**2 * 100.0)
        elif fit_e is None or fit_o is None:
            dev, dvar = fit_o if fit_e is None else fit_e
            mean, var = pi + dev[:n], dvar[:n]
        else:
            mu_o, v_o = pi + fit_o[0][:n], fit_o[1][:n]
            mu_e, v_e = pi + fit_e[0][:n], fit_e[1][:n]
            dropped = np.abs(mu_o - mu_e) > self.guard_z * np.sqrt(v_o + v_e)
            w_o = np.where(dropped, 0.0, 1.0 / v_o)
            w_e = 1.0 / v_e
            var = 1.0 / (w_o + w_e)
            mean = var * (w_o * mu_o + w_e * mu_e)
        return ConfigEstimates(
            mean=mean, var=var, observational_dropped=dropped, adjustment=self.adjustment_
        )

    def _prior_deviation_sd(
        self, experiments: Sequence[FrozenTrial], scale: float, flat: bool
    ) -> float:
        """``tau``: the prior's error on one config's reward (measured, then empirical Bayes)."""
        tau0 = (10.0 if flat else self.prior_rel_error) * scale
        if flat:
            return tau0
        groups: dict[tuple, list[float]] = {}
        for t in experiments:
            r = self.objective.reward(t.observation) - self._prior_at(t)
            groups.setdefault(self._key(t.config), []).append(r)
        m = len(groups)
        if m < 2:
            return tau0
        means = np.array([np.mean(g) for g in groups.values()])
        counts = np.array([len(g) for g in groups.values()], dtype=float)
        cfg_idx = np.concatenate([np.full(len(g), i) for i, g in enumerate(groups.values())])
        resid = np.concatenate([np.asarray(g) - np.mean(g) for g in groups.values()])
        noise_c = self._noise_per_config(resid, cfg_idx, m, int(counts.sum() - m), scale)
        tau_hat2 = max(float(np.var(means, ddof=1)) - float(np.mean(noise_c / counts)), 0.0)
        pseudo = 2.0
        tau2 = (pseudo * tau0**2 + (m - 1) * tau_hat2) / (pseudo + m - 1)
        return math.sqrt(max(tau2, (0.005 * scale) ** 2))

    def _key(self, config: Mapping) -> tuple:
        return tuple(self.space.knob(n).index(config[n]) for n in self.space.names)
