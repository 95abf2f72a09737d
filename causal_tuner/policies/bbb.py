"""BBB-UCB: a Bayesian backdoor bandit in the spirit of Huang & Zhou (TMLR 2023).

Their algorithm (BBB-Alg with the UCB criterion), as we implement it for linear Gaussian data:

* for every arm node ``j`` the candidate parent sets are all subsets ``S`` of the other
  non-reward nodes (allowed by the tiers) with ``|S| <= max_in_degree``;
* for every arm ``a = do(X_j = v)`` and set ``S``, a prior ``pi0(mu_a | S)`` is the backdoor OLS
  estimate from the *observational* sample, ``N(b0 + theta v + gamma . mean(S), V)``;
* after each pull of ``a``, every ``pi(mu_a | S)`` is updated conjugately with the reward
  (Gaussian likelihood, noise variance pooled over arms);
* the parent-set posteriors ``P(S = pa(j) | data)`` are computed over DAGs with an order-modular prior (exact dynamic programming over subsets, see
  :func:`order_modular_posteriors`); the local score of ``S`` for ``X_j`` is ``exp(-BIC/2)`` of
  the regression ``X_j ~ 1 + S`` over all rows in which ``X_j`` was not intervened on (our
  choice of marginal-likelihood approximation; with more than 20 nodes, or candidate parents
  that are not arm nodes, each node's scores are normalized alone). Their paper recomputes them
  every round; for the benchmark's budget we recompute them on BA-UCB's rediscovery schedule
  (rows grown by 25%, at least 50), and measure the every-round cost separately;
* the criterion is ``E[mu_a] + c * sqrt(Var[mu_a] * log t)`` under the model-averaged posterior.

Differences from BA-UCB: no structure learning (enumeration of parent sets instead), and the
observational side never absorbs the experimental rows of other arms (only its own pulls).
"""

from __future__ import annotations

from itertools import combinations

import numpy as np

from causal_tuner.estimators import batched_gram_ols
from causal_tuner.policies.base import BanditContext, Policy, SeedLike, register

__all__ = ["BBBUCB", "order_modular_posteriors"]


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
    refresh_min_rows, refresh_growth : int, float
        Recompute the parent-set posteriors once the rows have grown by
        ``max(refresh_min_rows, refresh_growth * rows_at_last_refresh)`` (the schedule BA-UCB
        uses for its structure). ``refresh_min_rows=1, refresh_growth=0`` recomputes them every
        round, as in Huang & Zhou's Algorithm 1; the benchmark reports the cost of both.
    """

    def __init__(
        self,
        context: BanditContext,
        *,
        seed: SeedLike = None,
        c: float = np.sqrt(2),
        max_sets_per_node: int = 5000,
        refresh_min_rows: int = 50,
        refresh_growth: float = 0.25,
    ) -> None:
        super().__init__(context, seed=seed)
        if not np.isfinite(c) or c < 0:
            raise ValueError(f"c must be finite and >= 0, got {c!r}")
        self.c = float(c)
        self.max_sets_per_node = int(max_sets_per_node)
        if int(refresh_min_rows) < 1 or not refresh_growth >= 0:
            raise ValueError(
                "refresh_min_rows must be >= 1 and refresh_growth >= 0, got "
                f"{refresh_min_rows!r}, {refresh_growth!r}"
            )
        self.refresh_min_rows = int(refresh_min_rows)
        self.refresh_growth = float(refresh_growth)
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
        # Parent-set posteriors over DAGs (order-modular, exact by dynamic programming over
        # subsets) need every candidate parent to be a scored node and 2^m subsets in memory.
        bit = {int(j): pos for pos, j in enumerate(self.nodes_)}
        if len(self.nodes_) <= 20 and all(z in bit for s in pair_sets for z in s):
            self.pair_mask_ = np.array(
                [sum(1 << bit[z] for z in s) for s in pair_sets], dtype=np.int64
            )
        else:
            self.pair_mask_ = None
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
        self.n_rows_ = len(ctx.obs_data)
        self.rows_at_refresh_ = -1
        self.n_refreshes_ = 0
        self._maybe_refresh()

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
        self.n_rows_ += 1
        self._maybe_refresh()

    def _maybe_refresh(self) -> None:
        # Decided at update time (not lazily in select), so replaying a history rebuilds
        # exactly the same state.
        grown = self.n_rows_ - self.rows_at_refresh_
        if self.rows_at_refresh_ < 0 or grown >= max(
            self.refresh_min_rows, self.refresh_growth * self.rows_at_refresh_
        ):
            self.weights_ = self.set_weights()
            self.rows_at_refresh_ = self.n_rows_
            self.n_refreshes_ += 1

    def local_log_scores(self) -> np.ndarray:
        """Log local score ``-BIC/2`` of ``X_j ~ 1 + S`` for every (node, set) pair."""
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
        return np.where(np.isfinite(bic), -0.5 * bic, -np.inf)

    def set_weights(self) -> np.ndarray:
        """Posterior probability of every (node, parent set) pair, summing to 1 per node."""
        log_score = self.local_log_scores()
        if self.pair_mask_ is not None:
            return order_modular_posteriors(
                log_score, self.pair_node_, self.pair_mask_, len(self.nodes_)
            )
        return _per_node_posteriors(log_score, self.pair_node_, len(self.nodes_))

    def arm_posteriors(self) -> tuple[np.ndarray, np.ndarray]:
        """Model-averaged posterior mean and variance of every arm's mean reward."""
        if self._cache_t == self.n_updates_:
            return self._cache
        weights = self.weights_
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


def _per_node_posteriors(log_score: np.ndarray, pair_node: np.ndarray, m: int) -> np.ndarray:
    """Fallback: normalize each node's set scores separately (ignores acyclicity)."""
    best = np.full(m, -np.inf)
    np.maximum.at(best, pair_node, log_score)
    best = np.where(np.isfinite(best), best, 0.0)
    w = np.where(np.isfinite(log_score), np.exp(log_score - best[pair_node]), 0.0)
    total = np.bincount(pair_node, w, minlength=m)
    uniform = 1.0 / np.bincount(pair_node, minlength=m)
    return np.where(
        total[pair_node] > 0, w / np.maximum(total[pair_node], 1e-300), uniform[pair_node]
    )


def _subset_sum(log_a: np.ndarray, m: int, supersets: bool = False) -> np.ndarray:
    """Log-space zeta transform over the last axis (size 2^m): sum over subsets (or supersets)."""
    shape = log_a.shape[:-1]
    cube = log_a.reshape(*shape, *([2] * m))
    for axis in range(len(shape), len(shape) + m):
        if supersets:
            cube = np.flip(np.logaddexp.accumulate(np.flip(cube, axis), axis=axis), axis)
        else:
            cube = np.logaddexp.accumulate(cube, axis=axis)
    return cube.reshape(*shape, 1 << m)


def order_modular_posteriors(
    log_score: np.ndarray, pair_node: np.ndarray, pair_mask: np.ndarray, m: int
) -> np.ndarray:
    r"""Exact posterior ``P(pa(j) = S | data)`` over DAGs with an order-modular prior.

    Koivisto & Sood (2004) / Koivisto (2006): with local scores ``beta_j(S)`` (here
    ``exp(-BIC/2)`` of ``X_j ~ 1 + S``), ``alpha_j(U) = sum_{S subset U} beta_j(S)``, forward
    sums ``L(U)`` over orders of ``U`` and backward sums ``R(W)`` over orders of ``W`` after the
    rest, ``P(pa(j) = S) ∝ beta_j(S) sum_{U ⊇ S, j ∉ U} L(U) R(V \ U \ {j})``. Unlike scoring
    each node's regression alone, this respects acyclicity, so a set holding a node's children
    is not preferred just because children predict it. Computed in log space, ``O(m^2 2^m)``.

    Parameters
    ----------
    log_score : numpy.ndarray, shape (n_pairs,)
        Log local score of each (node, set) pair (``-inf``: excluded).
    pair_node : numpy.ndarray of int, shape (n_pairs,)
        Node position (0..m-1) of each pair.
    pair_mask : numpy.ndarray of int, shape (n_pairs,)
        The set as a bitmask over node positions.
    m : int
        Number of nodes.

    Returns
    -------
    numpy.ndarray, shape (n_pairs,)
        Posterior weight of each pair; sums to 1 per node.
    """
    size = 1 << m
    full = size - 1
    best = np.full(m, -np.inf)
    np.maximum.at(best, pair_node, log_score)
    best = np.where(np.isfinite(best), best, 0.0)
    log_beta = np.full((m, size), -np.inf)
    log_beta[pair_node, pair_mask] = log_score - best[pair_node]
    log_alpha = _subset_sum(log_beta, m)
    subsets = np.arange(size)
    popcount = np.zeros(size, dtype=np.int64)
    for b in range(m):
        popcount += (subsets >> b) & 1
    log_l = np.full(size, -np.inf)
    log_r = np.full(size, -np.inf)
    log_l[0] = log_r[0] = 0.0
    with np.errstate(invalid="ignore"):
        for k in range(1, m + 1):
            layer = subsets[popcount == k]
            terms_l = np.full((m, layer.size), -np.inf)
            terms_r = np.full((m, layer.size), -np.inf)
            for j in range(m):
                has = ((layer >> j) & 1).astype(bool)
                prev = layer[has] ^ (1 << j)
                # L(U): j is the last of U, its parents come from U \ {j}.
                terms_l[j, has] = log_alpha[j, prev] + log_l[prev]
                # R(W): j is the first of W, its parents come from everything before W.
                terms_r[j, has] = log_alpha[j, full ^ layer[has]] + log_r[prev]
            log_l[layer] = np.logaddexp.reduce(terms_l, axis=0)
            log_r[layer] = np.logaddexp.reduce(terms_r, axis=0)
        log_gamma = np.full((m, size), -np.inf)
        for j in range(m):
            without = subsets[((subsets >> j) & 1) == 0]
            log_gamma[j, without] = log_l[without] + log_r[full ^ without ^ (1 << j)]
        log_big_gamma = _subset_sum(log_gamma, m, supersets=True)
        log_post = log_score - best[pair_node] + log_big_gamma[pair_node, pair_mask]
        log_post = np.where(np.isfinite(log_post), log_post, -np.inf)
    return _per_node_posteriors(log_post, pair_node, m)
