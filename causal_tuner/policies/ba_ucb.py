"""BA-UCB: backdoor-adjustment UCB over an unknown Gaussian linear DAG (our derivation).

Follows ``DESIGN.md`` ("BA-UCB as we implement it"). For every intervenable node ``j`` and arm
``a = do(X_j = v)``:

1. **Candidate adjustment sets** ``Z_j`` come from the current structure estimate: a CPDAG
   learned by PC from all rows (observational and experimental, with tiers as background
   knowledge), refined by descendants detected in the experiments (a node whose mean moves
   between ``do(X_j = -1)`` and ``do(X_j = +1)`` is a descendant of ``j``), and turned into
   backdoor sets by :func:`causal_tuner.backdoor.adjustment_sets`. Several candidates are kept
   where the CPDAG is ambiguous; their estimates are averaged, weighted by how well each set's
   prediction matches the node's own experiments, with the between-set spread added to the
   variance (model averaging).
2. **Observational estimate.** ``theta_j`` is the OLS coefficient of ``X_j`` in ``Y ~ 1 + X_j +
   Z_j`` over the *valid* rows: the prior sample plus every experimental row ``do(X_a)`` with
   ``a != j`` and ``a`` not on a possible directed path ``j ~> a ~> Y`` (an undirected CPDAG edge
   counts as a possible path both ways: we err towards exclusion). Pooling such rows keeps
   ``theta_j`` consistent (``X_j``'s own mechanism is the same in all of them), but it would bias
   an intercept, so the level comes from the prior observational rows only:
   ``mu_o = mean(Y) + theta_j (v - mean(X_j))`` with variance
   ``Var(Y - theta_j X_j) / n_obs + (v - mean X_j)^2 Var(theta_j)``.
3. **Experimental estimate** from the arm's own pulls: the mean reward, variance
   ``sigma^2 / n_a`` with ``sigma^2`` pooled over arms.
4. **Combination** by inverse variance with the bias guard of :func:`~causal_tuner.estimators.combine`
   (vectorized here).
5. **Index** ``U(a) = mu(a) + c * sqrt(V(a) * log t)``; play the argmax.

Three guards against a wrong structure estimate locking out an arm (an arm whose estimate is
confidently low is never pulled, so no experiment could correct it):

* **Regime gate.** A pooled experimental regime ``do(X_k)`` is kept in ``j``'s fit only while its
  own estimate of ``theta_j`` agrees with the prior sample's (a missed edge ``j -> k -> Y`` makes
  ``do(X_k)`` rows cut part of the effect).
* **Structural alternatives.** Up to ``max_reversals`` of the edges PC directed into ``j`` are
  reversed; each resulting parent set is a hypothesis estimated on the prior sample, and the arm's
  index is the larger of ``U(a)`` and the (experiment-combined) mean under any hypothesis its own
  pulls have not refuted and the main estimate can tell apart.
* **Fresh descendant tests.** Experimental "descendant" evidence is recomputed from all rows at
  every rediscovery at a strict level, never accumulated (accumulated false positives forbid true
  edges for good).

Everything is kept as Gram-matrix sufficient statistics per *regime* (the node intervened on,
or none), so an update is ``O(J p^2)`` and a decision is one batched small solve for all
``(node, adjustment set)`` pairs, whatever the number of rows. Structure is re-learned when the
number of rows has grown by a fraction ``rediscover_growth`` since the last discovery (and by at
least ``rediscover_min_rows``), i.e. a logarithmic number of times.
"""

from __future__ import annotations

import networkx as nx
import numpy as np
from scipy.stats import norm

from causal_tuner.estimators import batched_gram_ols
from causal_tuner.policies.base import BanditContext, Policy, SeedLike, register

__all__ = ["BAUCB", "OracleBAUCB"]


def _reach(adjacency: np.ndarray) -> np.ndarray:
    """Boolean reachability (paths of length >= 1) of a directed adjacency matrix."""
    p = adjacency.shape[0]
    reach = adjacency.astype(bool)
    # Repeated squaring: after k steps paths of length <= 2^k are covered.
    for _ in range(int(np.ceil(np.log2(max(p, 2)))) + 1):
        nxt = reach | ((reach.astype(np.int64) @ reach.astype(np.int64)) > 0)
        if np.array_equal(nxt, reach):
            break
        reach = nxt
    return reach


@register("ba-ucb")
class BAUCB(Policy):
    """BA-UCB with the graph learned online (PC + backdoor sets + experimental descendants).

    Parameters
    ----------
    context : BanditContext
        Arms, reward index, prior observational sample and tiers.
    seed : int, Generator or None
        Source of randomness (BA-UCB itself is deterministic given the data).
    c : float
        Exploration constant of the index (default ``sqrt(2)``, as UCB1).
    alpha : float
        Significance level of PC's Fisher-z tests.
    guard_z : float
        Bias-guard threshold in joint standard deviations.
    descendant_z : float
        |t| threshold for declaring a descendant from the experiments.
    max_sets : int
        Largest number of candidate adjustment sets kept per node.
    rediscover_min_rows, rediscover_growth : int, float
        Re-learn the structure once ``rows >= last + max(min_rows, growth * last)``.
    max_cond_size : int, optional
        Largest conditioning set PC tries (``None``: no limit).
    regime_z, regime_min_rows : float, int
        An experimental regime ``do(X_k)`` with at least ``regime_min_rows`` rows is pooled into
        node ``j``'s observational fit only while its own estimate of ``theta_j`` agrees with the
        prior sample's within ``regime_z`` joint standard deviations (``inf``: never checked).
    max_alternatives : int
        Largest number of structural alternatives kept per node (0: no structural optimism).
    max_reversals : int
        Most edges into a node reversed by one structural alternative.
    refute_z : float
        A structural alternative is refuted once the arm's own mean differs from its prediction
        by more than ``refute_z`` joint standard deviations (lower than ``guard_z``: refuting a
        hypothesis only ends optimism, the main estimate's bias guard still protects the arm).
    refresh_growth : float
        The observational (backdoor) side is recomputed once the rows have grown by this fraction
        since it was last computed (0: every round); the experimental side is always current.
    """

    #: Whether the structure is re-learned online (False: fixed, e.g. the true DAG).
    learns_structure = True

    def __init__(
        self,
        context: BanditContext,
        *,
        seed: SeedLike = None,
        c: float = np.sqrt(2),
        alpha: float = 0.05,
        guard_z: float = 3.0,
        descendant_z: float = 3.5,
        max_sets: int = 8,
        rediscover_min_rows: int = 50,
        rediscover_growth: float = 0.25,
        max_cond_size: int | None = None,
        regime_z: float = 3.0,
        regime_min_rows: int = 10,
        max_alternatives: int = 16,
        max_reversals: int = 2,
        refute_z: float = 2.0,
        refresh_growth: float = 0.02,
    ) -> None:
        super().__init__(context, seed=seed)
        for name, value in (
            ("c", c),
            ("guard_z", guard_z),
            ("descendant_z", descendant_z),
            ("refute_z", refute_z),
            ("rediscover_growth", rediscover_growth),
            ("refresh_growth", refresh_growth),
        ):
            if not np.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be finite and >= 0, got {value!r}")
        for name, value, least in (
            ("max_sets", max_sets, 1),
            ("rediscover_min_rows", rediscover_min_rows, 1),
            ("regime_min_rows", regime_min_rows, 1),
            ("max_alternatives", max_alternatives, 0),
            ("max_reversals", max_reversals, 0),
        ):
            if int(value) < least:
                raise ValueError(f"{name} must be >= {least}, got {value!r}")
        if not 0 < alpha < 1:
            raise ValueError(f"alpha must be in (0, 1), got {alpha!r}")
        if np.isnan(regime_z) or regime_z < 0:
            raise ValueError(f"regime_z must be >= 0 (inf: no check), got {regime_z!r}")
        self.c = float(c)
        self.alpha = float(alpha)
        self.guard_z = float(guard_z)
        self.descendant_z = float(descendant_z)
        self.max_sets = int(max_sets)
        self.rediscover_min_rows = int(rediscover_min_rows)
        self.rediscover_growth = float(rediscover_growth)
        self.max_cond_size = max_cond_size
        self.regime_z = float(regime_z)
        self.regime_min_rows = int(regime_min_rows)
        self.max_alternatives = int(max_alternatives)
        self.max_reversals = int(max_reversals)
        self.refute_z = float(refute_z)
        self.refresh_growth = float(refresh_growth)
        self._init_state()

    # ------------------------------------------------------------------ state
    def _init_state(self) -> None:
        ctx = self.context
        p = ctx.n_nodes
        self.p_ = p
        self.nodes_ = np.array(ctx.arm_nodes, dtype=np.int64)
        self.node_pos_ = {int(j): i for i, j in enumerate(self.nodes_)}
        self.arm_node_pos_ = np.array([self.node_pos_[a.node] for a in ctx.arms], dtype=np.int64)
        self.arm_values_ = np.array([a.value for a in ctx.arms])
        d = p + 1  # z = [1, x]
        self.dim_ = d
        self.n_dummies_ = p  # padding columns so that every (node, set) solve has one shape
        obs = np.column_stack([np.ones(len(ctx.obs_data)), ctx.obs_data])
        # regime r = node intervened on; r = p: no intervention (the prior sample).
        self.regime_grams_ = np.zeros((p + 1, d, d))
        self.regime_grams_[p] = obs.T @ obs
        self.n_obs_ = len(ctx.obs_data)
        self.arm_obs_sums_ = np.zeros((len(ctx.arms), p))
        self.arm_obs_sq_sums_ = np.zeros((len(ctx.arms), p))
        self.n_rows_ = self.n_obs_
        self.rows_at_discovery_ = self.n_obs_
        self.n_discoveries_ = 0
        self.detected_descendants_ = np.zeros((p, p), dtype=bool)
        self._cache_t = -1
        self._set_structure(*self._discover())

    def _regime_statistics(self) -> dict[int, object]:
        """Per-regime :class:`~causal_tuner.structure.SufficientStatistics` from the Gram sums."""
        from causal_tuner.structure import SufficientStatistics

        p = self.p_
        out = {}
        for r in range(p + 1):
            g = self.regime_grams_[r]
            n = round(g[0, 0])
            if n < 1:
                continue
            stat = SufficientStatistics(p)
            mean = g[0, 1:] / n
            stat.n_ = n
            stat.mean_ = mean
            stat.comoment_ = g[1:, 1:] - n * np.outer(mean, mean)
            out[-1 if r == p else r] = stat
        return out

    def _discover(self) -> tuple[list[list[tuple[int, ...]]], np.ndarray]:
        """Return (candidate adjustment sets per arm node, possible-descendant matrix)."""
        from causal_tuner.backdoor import adjustment_sets
        from causal_tuner.structure import PC

        ctx = self.context
        p, y = self.p_, ctx.reward_index
        self._detect_descendants()
        self.n_discoveries_ += 1
        tiers = None
        if ctx.tiers is not None:
            levels = sorted(set(ctx.tiers))
            tiers = [[i for i in range(p) if ctx.tiers[i] == lv] for lv in levels]
        statistics = self._regime_statistics()
        if sum(s.n_ for s in statistics.values()) < 4:
            adjacency = np.ones((p, p), dtype=int) - np.eye(p, dtype=int)
            if tiers is not None:
                tier = np.asarray(ctx.tiers)
                adjacency[tier[:, None] > tier[None, :]] = 0
        else:
            forbidden = [
                (int(k), int(j))
                for j, k in zip(*np.nonzero(self.detected_descendants_), strict=True)
            ]
            pc = PC(
                alpha=self.alpha,
                tiers=tiers,
                forbidden=forbidden,
                max_cond_size=self.max_cond_size,
                shift_alpha=float(2 * norm.sf(self.descendant_z)),
            )
            pc.fit_statistics(statistics, p)
            adjacency = np.asarray(pc.adjacency_, dtype=int).copy()
            self.detected_descendants_ |= np.asarray(pc.shifted_, dtype=bool)
        # Known descendants orient undirected edges j - k into j -> k.
        both = self.detected_descendants_ & (adjacency == 1) & (adjacency.T == 1)
        adjacency[both.T] = 0
        self.adjacency_ = adjacency
        possible = _reach(adjacency) | self.detected_descendants_
        sets: list[list[tuple[int, ...]]] = []
        for j in self.nodes_:
            try:
                found = adjustment_sets(
                    adjacency.astype(np.int8), int(j), y, max_sets=self.max_sets
                )
            except ValueError:
                # The estimated graph is not a valid CPDAG here (e.g. a directed cycle from
                # conflicting orientations): fall back on j's possible parents (adjacent, not
                # known descendants) and the empty set; the experiments weigh them.
                possible_parents = {
                    int(i)
                    for i in np.flatnonzero(adjacency[:, j])
                    if i != y and not self.detected_descendants_[j, i]
                }
                found = [frozenset(possible_parents), frozenset()]
            ok = [
                tuple(sorted(int(z) for z in s))
                for s in found
                if not any(self.detected_descendants_[j, int(z)] for z in s)
            ]
            sets.append(sorted(set(ok)))
        return sets, possible

    def _detect_descendants(self) -> None:
        """Mark k as a descendant of j when X_k's mean differs between j's extreme arms.

        Recomputed from all rows at every discovery (not accumulated: the latest test has the
        most data, and an accumulated union would keep every false positive of every earlier
        test, which then forbids true edges and adjustment sets for good).
        """
        self.detected_descendants_ = np.zeros((self.p_, self.p_), dtype=bool)
        values = self.arm_values_
        for j in self.nodes_:
            ids = np.flatnonzero(self.arm_node_pos_ == self.node_pos_[int(j)])
            lo, hi = ids[np.argmin(values[ids])], ids[np.argmax(values[ids])]
            n_lo, n_hi = self.counts_[lo], self.counts_[hi]
            if lo == hi or n_lo < 3 or n_hi < 3:
                continue
            m_lo = self.arm_obs_sums_[lo] / n_lo
            m_hi = self.arm_obs_sums_[hi] / n_hi
            # Pooled variance: in a linear SEM an atomic intervention moves X_k's mean, not its
            # variance, so both arms share it. (Welch's per-arm variances with 2 degrees of
            # freedom on the rarely pulled side gave false "descendants" at |t| > 3.5.)
            ss_lo = self.arm_obs_sq_sums_[lo] - n_lo * m_lo**2
            ss_hi = self.arm_obs_sq_sums_[hi] - n_hi * m_hi**2
            pooled = (ss_lo + ss_hi) / (n_lo + n_hi - 2)
            se = np.sqrt(np.maximum(pooled * (1 / n_lo + 1 / n_hi), 1e-12))
            t_stat = np.abs(m_hi - m_lo) / se
            found = t_stat > self.descendant_z
            found[j] = False
            self.detected_descendants_[j] |= found

    def _set_structure(self, sets: list[list[tuple[int, ...]]], possible: np.ndarray) -> None:
        p, y = self.p_, self.context.reward_index
        self.adjustment_sets_ = sets
        self.possible_descendants_ = possible
        valid = np.ones((len(self.nodes_), p + 1), dtype=bool)
        for pos, j in enumerate(self.nodes_):
            on_path = possible[j] & (possible[:, y] | (np.arange(p) == y))
            valid[pos, :p] = ~on_path
            valid[pos, j] = False
        self.valid_regimes_ = self._gate_regimes(valid, sets)
        self._set_alternatives(self._alternatives())
        d, k_dum = self.dim_, self.n_dummies_
        grams = np.zeros((len(self.nodes_), d + k_dum, d + k_dum))
        grams[:, :d, :d] = np.einsum(
            "jr,rab->jab", self.valid_regimes_.astype(float), self.regime_grams_
        )
        grams[:, d:, d:] = np.eye(k_dum)
        self.node_grams_ = grams
        pair_node, pair_cols, pair_size = [], [], []
        width = max((len(s) for ss in sets for s in ss), default=0)
        for pos, j in enumerate(self.nodes_):
            for s in sets[pos]:
                cols = [0, 1 + int(j), *(1 + z for z in s)]
                cols += [d + i for i in range(width - len(s))]
                pair_node.append(pos)
                pair_cols.append(cols)
                pair_size.append(len(s))
        self.pair_node_ = np.array(pair_node, dtype=np.int64)
        self.pair_cols_ = np.array(pair_cols, dtype=np.int64).reshape(len(pair_node), 2 + width)
        self.pair_size_ = np.array(pair_size, dtype=np.int64)
        self.arm_pair_mask_ = self.arm_node_pos_[:, None] == self.pair_node_[None, :]
        self.rows_at_discovery_ = self.n_rows_
        self._cache_t = -1
        self._obs_rows = -1

    def _padded_regime_grams(self) -> np.ndarray:
        """Per-regime Gram matrices with the identity dummy block (for batched OLS)."""
        d, k_dum = self.dim_, self.n_dummies_
        grams = np.zeros((self.p_ + 1, d + k_dum, d + k_dum))
        grams[:, :d, :d] = self.regime_grams_
        grams[:, d:, d:] = np.eye(k_dum)
        return grams

    def _gate_regimes(self, valid: np.ndarray, sets: list[list[tuple[int, ...]]]) -> np.ndarray:
        """Drop pooled regimes whose own ``theta_j`` disagrees with the prior sample's.

        The valid-row rule trusts the estimated descendant relation; an edge PC missed (``j ->
        k -> Y`` with ``j - k`` absent) lets ``do(X_k)`` rows, which cut part of ``j``'s effect,
        into ``j``'s fit, and after a few thousand pulls of ``k`` they outweigh the prior sample.
        Within a regime the backdoor coefficient is the same as in the prior sample exactly when
        pooling it is harmless, so each regime with enough rows is compared with the prior
        sample (main adjustment set, z-test on the difference) and excluded when they differ.
        """
        if not np.isfinite(self.regime_z) or self.n_obs_ < 4:
            return valid
        p, d = self.p_, self.dim_
        n_reg = self.regime_grams_[:, 0, 0]
        grams = self._padded_regime_grams()
        width = max((len(ss[0]) for ss in sets if ss), default=0)
        fits_node, fits_regime, fits_cols, fits_k = [], [], [], []
        for pos, j in enumerate(self.nodes_):
            if not sets[pos]:
                continue
            main = sets[pos][0]
            regimes = [r for r in range(p) if valid[pos, r] and n_reg[r] >= self.regime_min_rows]
            if not regimes:
                continue
            for r in [p, *regimes]:
                zs = list(main)
                if r < p and r in zs:
                    g = self.regime_grams_[r]
                    if g[1 + r, 1 + r] / n_reg[r] - (g[0, 1 + r] / n_reg[r]) ** 2 < 1e-9:
                        zs.remove(r)  # X_r is held constant in its own regime: nothing to adjust
                cols = [0, 1 + int(j), *(1 + int(z) for z in zs)]
                cols += [d + i for i in range(2 + width - len(cols))]
                fits_node.append(pos)
                fits_regime.append(r)
                fits_cols.append(cols)
                fits_k.append(2 + len(zs))
        if not fits_node:
            return valid
        regime = np.array(fits_regime)
        coef, inv, sigma2, _ = batched_gram_ols(
            grams,
            np.array(fits_cols, dtype=np.int64),
            1 + self.context.reward_index,
            np.array(fits_k),
            gram_index=regime,
        )
        with np.errstate(all="ignore"):
            theta, var = coef[:, 1], sigma2 * inv[:, 1, 1]
        node = np.array(fits_node)
        ref = {int(nd): i for i, (nd, r) in enumerate(zip(node, regime, strict=True)) if r == p}
        out = valid.copy()
        for i in np.flatnonzero(regime < p):
            o = ref[int(node[i])]
            spread = var[i] + var[o]
            if not (np.isfinite(spread) and spread > 0 and np.isfinite(theta[i] - theta[o])):
                continue
            if abs(theta[i] - theta[o]) > self.regime_z * np.sqrt(spread):
                out[node[i], regime[i]] = False
        return out

    def _alternatives(self) -> list[list[tuple[int, ...]]]:
        """Structural alternatives per arm node: its parent set with some edges reversed.

        PC's orientations are least reliable exactly where it matters: an edge oriented *into*
        ``j`` that truly leaves it puts a child of ``j`` into every adjustment set, the arm's
        estimate is then confidently wrong and, if it is low, the arm is never pulled, so no
        experiment can correct it. Reversing up to ``max_reversals`` of the edges PC directed
        into ``j`` gives ``j``'s parent set under each such re-orientation; each is kept as a
        hypothesis, estimated on the prior sample alone, and the index is optimistic over the
        hypotheses the arm's own pulls have not refuted (see :meth:`arm_indices`). (Undirected
        edges need no alternatives: the CPDAG's candidate sets already cover both directions.)
        Fewest reversals first, at most ``max_alternatives`` per node.
        """
        from itertools import combinations

        y = self.context.reward_index
        adjacency = self.adjacency_
        out = []
        for j in self.nodes_:
            directed = [
                int(i)
                for i in np.flatnonzero(adjacency[:, j] & ~adjacency[j, :].astype(bool))
                if i != y and not self.detected_descendants_[j, i]
            ]
            alts: list[tuple[int, ...]] = []
            for drop in range(1, min(self.max_reversals, len(directed)) + 1):
                for removed in combinations(directed, drop):
                    if len(alts) < self.max_alternatives:
                        alts.append(tuple(z for z in directed if z not in removed))
            out.append(alts)
        return out

    def _set_alternatives(self, alternatives: list[list[tuple[int, ...]]]) -> None:
        """Prior-sample estimates of every arm under every structural alternative."""
        ctx = self.context
        d, y = self.dim_, ctx.reward_index
        n0 = self.n_obs_
        node_pos, cols, k = [], [], []
        width = max((len(s) for alts in alternatives for s in alts), default=0)
        for pos, j in enumerate(self.nodes_):
            for s in alternatives[pos]:
                if n0 <= len(s) + 3:
                    continue
                c = [0, 1 + int(j), *(1 + z for z in s)]
                node_pos.append(pos)
                cols.append(c + [d + i for i in range(2 + width - len(c))])
                k.append(len(c))
        self.alt_arm_ = np.zeros(0, dtype=np.int64)
        self.alt_mean_ = np.zeros(0)
        self.alt_var_ = np.zeros(0)
        if not node_pos:
            return
        grams = self._padded_regime_grams()[self.p_ :]
        coef, inv, sigma2, _ = batched_gram_ols(
            grams,
            np.array(cols, dtype=np.int64),
            1 + y,
            np.array(k),
            gram_index=np.zeros(len(cols), dtype=np.int64),
        )
        with np.errstate(all="ignore"):
            theta, theta_var = coef[:, 1], sigma2 * inv[:, 1, 1]
        node_pos = np.array(node_pos)
        # One entry per (arm, alternative) of that arm's node.
        arm_idx, fit_idx = np.nonzero(self.arm_node_pos_[:, None] == node_pos[None, :])
        mean, var = self._arm_prediction(arm_idx, theta[fit_idx], theta_var[fit_idx])
        ok = np.isfinite(mean) & np.isfinite(var) & (var > 0)
        self.alt_arm_ = arm_idx[ok]
        self.alt_mean_ = mean[ok]
        self.alt_var_ = var[ok]

    def _arm_prediction(
        self, arm_idx: np.ndarray, theta: np.ndarray, theta_var: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """``E[Y | do(X_j = v)]`` of arms ``arm_idx`` from effects ``theta`` of their nodes.

        The level comes from the prior sample: ``mean(Y) + theta (v - mean X_j)``, with variance
        ``Var(Y - theta X_j) / n_obs + (v - mean X_j)^2 Var(theta)``.
        """
        g = self.regime_grams_[self.p_]
        n0 = g[0, 0]
        means = g[0, 1:] / n0
        cov = (g[1:, 1:] - n0 * np.outer(means, means)) / (n0 - 1)
        y = self.context.reward_index
        j = self.nodes_[self.arm_node_pos_[arm_idx]]
        resid = cov[y, y] - 2 * theta * cov[j, y] + theta**2 * cov[j, j]
        gap = self.arm_values_[arm_idx] - means[j]
        return means[y] + theta * gap, np.maximum(resid, 0.0) / n0 + gap**2 * theta_var

    # ------------------------------------------------------------------ updates
    def _observe(self, idx: int, obs: np.ndarray) -> None:
        node = self.context.arms[idx].node
        z = np.concatenate([[1.0], obs])
        zz = np.outer(z, z)
        d = self.dim_
        self.regime_grams_[node] += zz
        mask = self.valid_regimes_[:, node]
        self.node_grams_[mask, :d, :d] += zz
        self.arm_obs_sums_[idx] += obs
        self.arm_obs_sq_sums_[idx] += obs * obs
        self.n_rows_ += 1
        grown = self.n_rows_ - self.rows_at_discovery_
        if self.learns_structure and grown >= max(
            self.rediscover_min_rows, self.rediscover_growth * self.rows_at_discovery_
        ):
            self._set_structure(*self._discover())

    # ------------------------------------------------------------------ estimates
    def effect_estimates(self) -> tuple[np.ndarray, np.ndarray]:
        """Per arm node: backdoor estimate of ``theta_j`` and its variance (``inf``: none)."""
        n_nodes = len(self.nodes_)
        theta = np.zeros(n_nodes)
        var = np.full(n_nodes, np.inf)
        m = len(self.pair_node_)
        if m == 0:
            return theta, var
        y_col = 1 + self.context.reward_index
        k = 2 + self.pair_size_
        coef, inv, sigma2, _ = batched_gram_ols(
            self.node_grams_, self.pair_cols_, y_col, k, gram_index=self.pair_node_
        )
        pair_theta = coef[:, 1]
        with np.errstate(all="ignore"):
            pair_var = sigma2 * inv[:, 1, 1]
        ok = self.node_grams_[self.pair_node_, 0, 0] > k + 1
        ok &= np.isfinite(pair_theta) & np.isfinite(pair_var) & (pair_var > 0)
        log_w = np.where(ok, self._set_log_evidence(pair_theta, pair_var), -np.inf)
        nodes = self.pair_node_[ok]
        best = np.full(n_nodes, -np.inf)
        np.maximum.at(best, nodes, log_w[ok])
        w = np.exp(log_w[ok] - best[nodes])
        total = np.bincount(nodes, w, minlength=n_nodes)
        has = total > 0
        mean = np.bincount(nodes, w * pair_theta[ok], minlength=n_nodes)
        second = np.bincount(nodes, w * (pair_var[ok] + pair_theta[ok] ** 2), minlength=n_nodes)
        theta[has] = mean[has] / total[has]
        var[has] = np.maximum(second[has] / total[has] - theta[has] ** 2, 0.0)
        var[has] = np.maximum(
            var[has], np.bincount(nodes, w * pair_var[ok], minlength=n_nodes)[has] / total[has]
        )
        with np.errstate(invalid="ignore"):  # -inf - -inf where masked out by ``ok``
            self.set_weights_ = np.where(ok, np.exp(log_w - best[self.pair_node_]), 0.0)
        return theta, var

    def _set_log_evidence(self, pair_theta: np.ndarray, pair_var: np.ndarray) -> np.ndarray:
        """Log-likelihood of each candidate set's predictions given its node's experiments.

        Where the CPDAG leaves several adjustment sets, their estimates of ``theta_j`` differ;
        the rounds that pulled ``do(X_j = v)`` measure ``E[Y | do(X_j = v)]`` directly, so each
        set is weighted by how well ``mean(Y) + theta_s (v - mean X_j)`` predicts those means
        (Gaussian likelihood with the prediction's and the experiment's variances; equal
        weights before any pull). This is model averaging with experimental evidence.
        """
        n = self.counts_
        g = self.regime_grams_[self.p_]
        n0 = g[0, 0]
        if n0 < 1 or not np.any(n > 0):
            return np.zeros_like(pair_theta)
        means = g[0, 1:] / n0
        pulled = np.flatnonzero(n > 0)
        mask = self.arm_pair_mask_[pulled]
        j = self.nodes_[self.arm_node_pos_[pulled]]
        gap = (self.arm_values_[pulled] - means[j])[:, None]
        exp_mean = (self.reward_sums_[pulled] / n[pulled])[:, None]
        pred = means[self.context.reward_index] + pair_theta[None, :] * gap
        var = gap**2 * pair_var[None, :] + (self.pooled_noise_var() / n[pulled])[:, None]
        with np.errstate(invalid="ignore", divide="ignore"):
            ll = -0.5 * (exp_mean - pred) ** 2 / var - 0.5 * np.log(var)
        return np.where(mask, ll, 0.0).sum(axis=0)

    def _observational_side(self) -> tuple[np.ndarray, np.ndarray]:
        """Backdoor estimate of every arm's mean and its variance (``inf``: none).

        A function of the Gram statistics, which move by ``O(1/n)`` per row: it is recomputed
        when the rows have grown by a fraction ``refresh_growth`` since the last time (and after
        every structure change), not every round. The experimental side is always current.
        """
        grown = self.n_rows_ - self._obs_rows
        fresh = self._obs_rows >= 0 and self.refresh_growth > 0
        if fresh and grown < max(1.0, self.refresh_growth * self._obs_rows):
            return self._obs_side
        ctx = self.context
        k = len(ctx.arms)
        obs_mean = np.zeros(k)
        obs_var = np.full(k, np.inf)
        if self.n_obs_ >= 3:
            theta, theta_var = self.effect_estimates()
            arms = np.arange(k)
            pos = self.arm_node_pos_
            obs_mean, obs_var = self._arm_prediction(arms, theta[pos], theta_var[pos])
            obs_mean = np.where(np.isfinite(obs_var), obs_mean, 0.0)
        self._obs_side = (obs_mean, obs_var)
        self._obs_rows = self.n_rows_
        return self._obs_side

    def arm_estimates(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Combined mean and variance per arm, and whether the observational side was used."""
        if self._cache_t == self.n_updates_:
            return self._cache
        obs_mean, obs_var = self._observational_side()
        self._noise_var = self.pooled_noise_var()
        n = self.counts_
        exp_ok = n > 0
        exp_mean = np.where(exp_ok, self.reward_sums_ / np.maximum(n, 1), 0.0)
        exp_var = np.where(exp_ok, self._noise_var / np.maximum(n, 1), np.inf)
        obs_ok = np.isfinite(obs_var) & (obs_var > 0)
        conflict = (
            obs_ok
            & exp_ok
            & (np.abs(obs_mean - exp_mean) > self.guard_z * np.sqrt(obs_var + exp_var))
        )
        obs_ok &= ~conflict
        with np.errstate(divide="ignore"):
            prec = np.where(obs_ok, 1.0 / obs_var, 0.0) + np.where(exp_ok, 1.0 / exp_var, 0.0)
            weighted = np.where(obs_ok, obs_mean / obs_var, 0.0) + np.where(
                exp_ok, exp_mean / exp_var, 0.0
            )
            var = np.where(prec > 0, 1.0 / np.maximum(prec, 1e-300), np.inf)
            mean = np.where(prec > 0, weighted / np.maximum(prec, 1e-300), 0.0)
        self._cache = (mean, var, obs_ok)
        self._obs_cache = (obs_mean, obs_var)
        self._cache_t = self.n_updates_
        return self._cache

    def arm_indices(self) -> np.ndarray:
        """The UCB index of every arm: optimistic over unrefuted structural hypotheses.

        The main estimate (:meth:`arm_estimates`) gives ``mu + c sqrt(V log t)``; each
        structural alternative (:meth:`_alternatives`), combined with the arm's own pulls the
        same way, gives another, unless the pulls refute it (the bias guard's test): a refuted
        hypothesis is dropped rather than replaced by the experiments alone, so arms whose
        alternatives are all refuted are indexed by the main estimate as before. ``inf`` for an
        arm with no estimate at all.
        """
        mean, var, _ = self.arm_estimates()
        t = max(self.n_updates_ + 1, 2)
        log_t = np.log(t)
        with np.errstate(invalid="ignore"):
            index = np.where(np.isfinite(var), mean + self.c * np.sqrt(var * log_t), np.inf)
        a = self.alt_arm_
        if a.size:
            n = self.counts_[a]
            pulled = n > 0
            ev = np.where(pulled, self._noise_var / np.maximum(n, 1), np.inf)
            em = np.where(pulled, self.reward_sums_[a] / np.maximum(n, 1), 0.0)
            am, av = self.alt_mean_, self.alt_var_
            refuted = pulled & (np.abs(am - em) > self.refute_z * np.sqrt(av + ev))
            om, ov = self._obs_cache
            om, ov = om[a], ov[a]
            # An alternative the main estimate cannot tell apart adds nothing but width.
            refuted |= np.isfinite(ov) & (np.abs(am - om) <= self.guard_z * np.sqrt(av + ov))
            prec = 1.0 / av + np.where(pulled, 1.0 / ev, 0.0)
            m = (am / av + np.where(pulled, em / ev, 0.0)) / prec
            # The hypothesis itself is the optimism: its statistical width is the main index's
            # (adding it again would explore every arm that has an alternative for nothing).
            alt_index = np.where(refuted, -np.inf, m)
            np.maximum.at(index, a, alt_index)
        return index

    def _select(self, ids: np.ndarray) -> int:
        index = self.arm_indices()[ids]
        unknown = np.isposinf(index)
        if unknown.any():
            return int(ids[np.flatnonzero(unknown)[0]])
        return int(ids[self._argmax(index)])


@register("oracle-ba-ucb")
class OracleBAUCB(BAUCB):
    """BA-UCB given the true DAG (``context.true_graph``): ``Z_j`` = true parents of ``j``.

    The valid-row rule uses the true descendant relation; no structure learning.
    """

    learns_structure = False

    def __init__(self, context: BanditContext, *, seed: SeedLike = None, **params) -> None:
        if context.true_graph is None:
            raise ValueError("oracle-ba-ucb needs context.true_graph (the true DAG)")
        super().__init__(context, seed=seed, **params)

    def _discover(self) -> tuple[list[list[tuple[int, ...]]], np.ndarray]:
        graph = self.context.true_graph
        p = self.p_
        adjacency = nx.to_numpy_array(graph, nodelist=range(p), weight=None, dtype=int)
        self.adjacency_ = adjacency
        sets = [[tuple(sorted(int(i) for i in graph.predecessors(int(j))))] for j in self.nodes_]
        return sets, _reach(adjacency)

    def _alternatives(self) -> list[list[tuple[int, ...]]]:
        return [[] for _ in self.nodes_]  # the true graph leaves no structural doubt

    def _gate_regimes(self, valid: np.ndarray, sets: list[list[tuple[int, ...]]]) -> np.ndarray:
        return valid  # the true descendant relation already decides which rows are valid
