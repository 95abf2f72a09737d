"""BBB-UCB: a Bayesian backdoor bandit in the spirit of Huang & Zhou (TMLR 2023).

Their algorithm (BBB-Alg with the UCB criterion), as we implement it for linear Gaussian data:

* for every arm node ``j`` the candidate parent sets are all subsets ``S`` of the other
  non-reward nodes (allowed by the tiers) with ``|S| <= max_in_degree``;
* for every arm ``a = do(X_j = v)`` and set ``S``, a prior ``pi0(mu_a | S)`` is the backdoor OLS
  estimate from the *observational* sample, ``N(b0 + theta v + gamma . mean(S), V)``;
* after each pull of ``a``, every ``pi(mu_a | S)`` is updated conjugately with the reward
  (Gaussian likelihood, noise variance pooled over arms);
* the parent-set posteriors ``P(S = pa(j) | data)`` are recomputed every round from all rows in
  which ``X_j`` was not intervened on, with a BIC approximation of the marginal likelihood of
  ``X_j ~ 1 + S`` (uniform prior over the sets);
* the criterion is ``E[mu_a] + c * sqrt(Var[mu_a] * log t)`` under the model-averaged posterior.

Differences from BA-UCB: no structure learning (enumeration of parent sets instead), and the
observational side never absorbs the experimental rows of other arms (only its own pulls).
"""

from __future__ import annotations

from itertools import combinations

import numpy as np

from causal_tuner.estimators import batched_gram_ols
from causal_tuner.policies.base import BanditContext, Policy, SeedLike, register

__all__ = ["BBBUCB"]


@register("bbb-ucb")
class BBBUCB(Policy):
    """Bayesian backdoor UCB with model averaging over candidate parent sets.

    Parameters
    ----------
    context : BanditContext
        Arms, reward index, observational sample, tiers and ``max_in_degree``.
    seed : int, Generator or None
    c : float
        Exploration constant (default ``sqrt(2)``).
    max_sets_per_node : int
        Refuse contexts where the enumeration would exceed this many sets per node (the method
        is exponential in ``max_in_degree``).
    """

    def __init__(
        self,
        context: BanditContext,
        *,
        seed: SeedLike = None,
        c: float = np.sqrt(2),
        max_sets_per_node: int = 5000,
    ) -> None:
        super().__init__(context, seed=seed)
        if not np.isfinite(c) or c < 0:
            raise ValueError(f"c must be finite and >= 0, got {c!r}")
        self.c = float(c)
        self.max_sets_per_node = int(max_sets_per_node)
        self._init_state()

    def _init_state(self) -> None:
        ctx = self.context
        p, y = ctx.n_nodes, ctx.reward_index
        tiers = ctx.tiers or (0,) * p
        self.nodes_ = np.array(ctx.arm_nodes, dtype=np.int64)
        node_pos = {int(j): i for i, j in enumerate(self.nodes_)}
        self.arm_node_pos_ = np.array([node_pos[a.node] for a in ctx.arms], dtype=np.int64)
        d_max = int(ctx.max_in_degree)
        pair_node, pair_sets = [], []
        for pos, j in enumerate(self.nodes_):
            others = [i for i in range(p) if i not in (j, y) and tiers[i] <= tiers[j]]
            sets = [s for size in range(d_max + 1) for s in combinations(others, size)]
            if len(sets) > self.max_sets_per_node:
                raise ValueError(
                    f"bbb-ucb would enumerate {len(sets)} parent sets for node {j} "
                    f"(> max_sets_per_node={self.max_sets_per_node}); lower max_in_degree"
                )
            pair_node += [pos] * len(sets)
            pair_sets += sets
        width = max(len(s) for s in pair_sets)
        d = p + 1
        self.dim_ = d
        self.width_ = width
        self.pair_node_ = np.array(pair_node, dtype=np.int64)
        self.pair_size_ = np.array([len(s) for s in pair_sets], dtype=np.int64)
        # Regression of X_j on [1, S] (parent-set score) and of Y on [1, X_j, S] (prior).
        self.score_cols_ = np.array(
            [[0, *(1 + z for z in s), *(d + i for i in range(width - len(s)))] for s in pair_sets],
            dtype=np.int64,
        ).reshape(len(pair_sets), 1 + width)
        self.prior_cols_ = np.array(
            [
                [0, 1 + int(self.nodes_[pos]), *(1 + z for z in s)]
                + [d + i for i in range(width - len(s))]
                for pos, s in zip(pair_node, pair_sets, strict=True)
            ],
            dtype=np.int64,
        ).reshape(len(pair_sets), 2 + width)
        obs = np.column_stack([np.ones(len(ctx.obs_data)), ctx.obs_data])
        g0 = np.zeros((d + width, d + width))
        g0[:d, :d] = obs.T @ obs
        g0[d:, d:] = np.eye(width)
        self.regime_grams_ = np.zeros((p + 1, d + width, d + width))
        self.regime_grams_[p] = g0
        self.total_gram_ = g0.copy()
        self.prior_mean_, self.prior_var_ = self._priors(g0)
        with np.errstate(divide="ignore"):
            self.prior_prec_ = np.where(np.isfinite(self.prior_var_), 1.0 / self.prior_var_, 0.0)
        self.arm_pair_mask_ = self.pair_node_[None, :] == self.arm_node_pos_[:, None]
        self.score_target_ = 1 + self.nodes_[self.pair_node_]
        self._cache_t = -1

    def _priors(self, g0: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Backdoor OLS priors per (arm, set): shapes (n_arms, n_pairs)."""
        ctx = self.context
        n_pairs = len(self.pair_node_)
        arm_values = np.array([a.value for a in ctx.arms])
        mean = np.zeros((len(ctx.arms), n_pairs))
        var = np.full((len(ctx.arms), n_pairs), np.inf)
        n0 = g0[0, 0]
        k = 2 + self.pair_size_
        if n0 < 3:
            return mean, var
        coef, inv, sigma2, _ = batched_gram_ols(
            g0[None], self.prior_cols_, 1 + ctx.reward_index, k, gram_index=np.zeros(n_pairs, int)
        )
        d = self.dim_
        means = g0[0, 1:d] / n0
        cov = (g0[1:d, 1:d] - n0 * np.outer(means, means)) / (n0 - 1)
        ok = (n0 > k + 1) & np.isfinite(sigma2)
        z_cols = self.prior_cols_[:, 2:] - 1  # node indices; dummies map beyond p
        is_real = z_cols < ctx.n_nodes
        z_idx = np.where(is_real, z_cols, 0)
        z_mean = np.where(is_real, means[z_idx], 0.0)
        gamma = np.where(is_real, coef[:, 2:], 0.0)
        z_cov = np.where(
            is_real[:, :, None] & is_real[:, None, :],
            cov[z_idx[:, :, None], z_idx[:, None, :]],
            0.0,
        )
        z_term = np.einsum("mi,mij,mj->m", gamma, z_cov, gamma) / n0
        for a, value in enumerate(arm_values):
            sel = self.pair_node_ == self.arm_node_pos_[a]
            cvec = np.concatenate(
                [np.ones((n_pairs, 1)), np.full((n_pairs, 1), value), z_mean], axis=1
            )
            m = np.einsum("mi,mi->m", cvec, coef)
            v = sigma2 * np.einsum("mi,mij,mj->m", cvec, inv, cvec) + z_term
            use = sel & ok & np.isfinite(v) & (v > 0)
            mean[a, use] = m[use]
            var[a, use] = v[use]
        return mean, var

    def _observe(self, idx: int, obs: np.ndarray) -> None:
        node = self.context.arms[idx].node
        z = np.concatenate([[1.0], obs])
        zz = np.outer(z, z)
        d = self.dim_
        self.regime_grams_[node, :d, :d] += zz
        self.total_gram_[:d, :d] += zz

    def set_weights(self) -> np.ndarray:
        """Posterior probability of every (node, parent set) pair, summing to 1 per node."""
        # Rows valid for X_j's mechanism: all rows except those that intervened on j.
        grams = self.total_gram_[None] - self.regime_grams_[self.nodes_]
        grams[:, self.dim_ :, self.dim_ :] = np.eye(self.width_)
        k = 1 + self.pair_size_
        _, _, _, rss = batched_gram_ols(
            grams, self.score_cols_, self.score_target_, k, gram_index=self.pair_node_
        )
        n = grams[self.pair_node_, 0, 0]
        with np.errstate(divide="ignore", invalid="ignore"):
            bic = n * np.log(np.maximum(rss, 1e-300) / np.maximum(n, 1)) + k * np.log(
                np.maximum(n, 2)
            )
        bic = np.where(np.isfinite(bic) & (n > k + 1), bic, np.inf)
        n_nodes = len(self.nodes_)
        best = np.full(n_nodes, np.inf)
        np.minimum.at(best, self.pair_node_, bic)
        best = np.where(np.isfinite(best), best, 0.0)
        w = np.where(np.isfinite(bic), np.exp(-0.5 * (bic - best[self.pair_node_])), 0.0)
        total = np.bincount(self.pair_node_, w, minlength=n_nodes)
        # A node with no scorable set gets uniform weights.
        uniform = 1.0 / np.bincount(self.pair_node_, minlength=n_nodes)
        return np.where(
            total[self.pair_node_] > 0,
            w / np.maximum(total[self.pair_node_], 1e-300),
            uniform[self.pair_node_],
        )

    def arm_posteriors(self) -> tuple[np.ndarray, np.ndarray]:
        """Model-averaged posterior mean and variance of every arm's mean reward."""
        if self._cache_t == self.n_updates_:
            return self._cache
        weights = self.set_weights()
        sigma2 = self.pooled_noise_var()
        n = self.counts_[:, None].astype(float)
        sums = self.reward_sums_[:, None]
        prior_prec = self.prior_prec_
        prec = prior_prec + n / sigma2
        with np.errstate(divide="ignore", invalid="ignore"):
            post_var = np.where(prec > 0, 1.0 / prec, np.inf)
            post_mean = np.where(
                prec > 0, (prior_prec * self.prior_mean_ + sums / sigma2) * post_var, 0.0
            )
        w = np.where(self.arm_pair_mask_, weights[None, :], 0.0)
        unknown = ((w > 0) & ~np.isfinite(post_var)).any(axis=1)
        pv = np.where(w > 0, post_var, 0.0)
        pm = np.where(w > 0, post_mean, 0.0)
        mean = (w * pm).sum(axis=1)
        second = (w * (pv + pm**2)).sum(axis=1)
        var = np.maximum(second - mean**2, (w * pv).sum(axis=1) * 1e-9)
        mean = np.where(unknown, 0.0, mean)
        var = np.where(unknown, np.inf, var)
        self._cache = (mean, var)
        self._cache_t = self.n_updates_
        return self._cache

    def _select(self, ids: np.ndarray) -> int:
        mean, var = self.arm_posteriors()
        mean, var = mean[ids], var[ids]
        unknown = ~np.isfinite(var)
        if unknown.any():
            return int(ids[np.flatnonzero(unknown)[0]])
        t = max(self.n_updates_ + 1, 2)
        return int(ids[self._argmax(mean + self.c * np.sqrt(var * np.log(t)))])
