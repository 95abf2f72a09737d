"""Causal-effect estimators for the bandit: backdoor OLS, experimental means, and their combination.

Three pieces, as in ``DESIGN.md`` ("BA-UCB as we implement it"):

* :func:`backdoor_ols` estimates ``E[Y | do(X = v)]`` from rows where ``X`` was *not* set by us,
  by regressing ``Y`` on ``[1, X, Z]`` for a backdoor set ``Z``;
* :func:`experimental_estimate` estimates the same quantity from the rounds that pulled the arm;
* :func:`combine` joins the two by inverse variance, with a bias guard that drops the
  observational side when the two disagree beyond their joint confidence.

:class:`GramStatistics` holds the sufficient statistics (``sum z z^T`` of ``z = [1, x]``) so
that an update costs ``O(p^2)`` and a refit costs a small solve, whatever the number of rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = [
    "CombinedEstimate",
    "Estimate",
    "GramStatistics",
    "OLSFit",
    "backdoor_ols",
    "batched_gram_ols",
    "combine",
    "experimental_estimate",
]


@dataclass(frozen=True)
class Estimate:
    """A point estimate of an arm's mean reward and the variance of that estimate.

    Parameters
    ----------
    mean : float
        Estimated ``E[Y | do(X = v)]``.
    var : float
        Variance of the estimator (not of the reward); ``inf`` when there is no information.
    n : int
        Number of rows behind the estimate.
    """

    mean: float
    var: float
    n: int = 0

    def __post_init__(self) -> None:
        if not np.isfinite(self.mean):
            raise ValueError(f"Estimate.mean must be finite, got {self.mean!r}")
        if np.isnan(self.var) or self.var < 0:
            raise ValueError(f"Estimate.var must be >= 0 (inf allowed), got {self.var!r}")
        if self.n < 0:
            raise ValueError(f"Estimate.n must be >= 0, got {self.n!r}")

    @property
    def informative(self) -> bool:
        """Whether the estimate carries information (finite variance)."""
        return bool(np.isfinite(self.var))


@dataclass(frozen=True)
class CombinedEstimate(Estimate):
    """An :class:`Estimate` that also says which sources were used.

    Parameters
    ----------
    used_observational : bool
        False when the observational side was absent or dropped by the bias guard.
    used_experimental : bool
        False when no experimental estimate was available.
    """

    used_observational: bool = False
    used_experimental: bool = False


@dataclass(frozen=True)
class OLSFit:
    """Coefficients of an OLS fit and their covariance.

    Parameters
    ----------
    coef : numpy.ndarray
        Coefficients in the order of the design columns (intercept first).
    cov : numpy.ndarray
        ``sigma2 * (X^T X)^-1``.
    sigma2 : float
        Residual variance ``RSS / (n - k)``.
    n : int
        Number of rows.
    """

    coef: np.ndarray
    cov: np.ndarray
    sigma2: float
    n: int


def _check_finite(name: str, array: np.ndarray) -> None:
    if not np.all(np.isfinite(array)):
        bad = np.argwhere(~np.isfinite(array))[0]
        raise ValueError(f"{name} contains NaN or infinite values (first at index {tuple(bad)})")


def backdoor_ols(
    X: np.ndarray,
    y: np.ndarray,
    treatment_col: int,
    adjustment_cols: Sequence[int],
    value: float,
) -> Estimate:
    """Backdoor-adjusted OLS estimate of ``E[Y | do(X_treatment = value)]``.

    Fits ``Y ~ 1 + X_t + Z`` by least squares and returns
    ``b0 + theta * value + gamma . mean(Z)``. Its variance is ``c^T Cov(beta) c`` with
    ``c = [1, value, mean(Z)]`` plus ``gamma^T Cov(mean Z) gamma`` (the uncertainty of the
    adjustment means; treated as independent of ``beta``, which holds exactly when conditioning
    on the regressors).

    Parameters
    ----------
    X : numpy.ndarray, shape (n, p)
        Data rows; ``X_t`` must not have been intervened on in these rows.
    y : numpy.ndarray, shape (n,)
        The outcome.
    treatment_col : int
        Column of the treatment in ``X``.
    adjustment_cols : sequence of int
        Columns of a backdoor adjustment set (may be empty); must not contain the treatment.
    value : float
        The intervention value ``v``.

    Returns
    -------
    Estimate

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> z = rng.normal(size=5000); x = z + rng.normal(size=5000)
    >>> y = 2 * x + 3 * z + 1 + rng.normal(size=5000)
    >>> est = backdoor_ols(np.c_[x, z], y, 0, [1], 1.0)
    >>> bool(abs(est.mean - 3.0) < 0.1)
    True
    """
    X = np.asarray(X, dtype=float)
    y = np.asarray(y, dtype=float)
    if X.ndim != 2:
        raise ValueError(f"X must be 2-D (n, p), got shape {X.shape}")
    if y.shape != (X.shape[0],):
        raise ValueError(f"y must have shape ({X.shape[0]},), got {y.shape}")
    _check_finite("X", X)
    _check_finite("y", y)
    p = X.shape[1]
    if not 0 <= treatment_col < p:
        raise ValueError(f"treatment_col={treatment_col} out of range for {p} columns")
    adjustment = [int(c) for c in adjustment_cols]
    for c in adjustment:
        if not 0 <= c < p:
            raise ValueError(f"adjustment column {c} out of range for {p} columns")
    if treatment_col in adjustment:
        raise ValueError(f"adjustment_cols contains the treatment column {treatment_col}")
    if not np.isfinite(value):
        raise ValueError(f"value must be finite, got {value!r}")
    n = X.shape[0]
    k = 2 + len(adjustment)
    if n <= k:
        raise ValueError(f"backdoor_ols needs more than {k} rows for {k} coefficients, got {n}")
    design = np.column_stack([np.ones(n), X[:, treatment_col], X[:, adjustment]])
    gram = design.T @ design
    fit = _ols_from_gram(gram, design.T @ y, float(y @ y), n)
    z_mean = X[:, adjustment].mean(axis=0)
    z_cov = np.atleast_2d(np.cov(X[:, adjustment], rowvar=False)) / n if adjustment else None
    return _mean_from_fit(fit, value, z_mean, z_cov)


def _ols_from_gram(gram: np.ndarray, xty: np.ndarray, yty: float, n: int) -> OLSFit:
    k = gram.shape[0]
    try:
        inv = np.linalg.inv(gram)
    except np.linalg.LinAlgError as exc:
        raise ValueError("design matrix is singular (collinear columns)") from exc
    coef = inv @ xty
    rss = max(yty - float(coef @ xty), 0.0)
    sigma2 = rss / max(n - k, 1)
    return OLSFit(coef=coef, cov=sigma2 * inv, sigma2=sigma2, n=n)


def _mean_from_fit(
    fit: OLSFit, value: float, z_mean: np.ndarray, z_cov: np.ndarray | None
) -> Estimate:
    c = np.concatenate([[1.0, value], z_mean])
    mean = float(c @ fit.coef)
    var = float(c @ fit.cov @ c)
    if z_cov is not None and len(z_mean):
        gamma = fit.coef[2:]
        var += float(gamma @ z_cov @ gamma)
    return Estimate(mean=mean, var=max(var, 0.0), n=fit.n)


def experimental_estimate(
    rewards: np.ndarray, noise_var: float | None = None, prior_var: float = np.inf
) -> Estimate:
    """The experimental estimate of an arm's mean: the average of its own pulls.

    Parameters
    ----------
    rewards : numpy.ndarray, shape (n,)
        Rewards observed when the arm was pulled.
    noise_var : float, optional
        Reward noise variance to use; defaults to the sample variance (needs ``n >= 2``).
    prior_var : float
        Variance returned with ``mean=0`` when there are no pulls (``inf`` = no information).

    Returns
    -------
    Estimate
        ``mean(rewards)`` with variance ``noise_var / n``.
    """
    rewards = np.asarray(rewards, dtype=float).ravel()
    _check_finite("rewards", rewards)
    n = rewards.size
    if n == 0:
        return Estimate(mean=0.0, var=prior_var, n=0)
    if noise_var is None:
        if n < 2:
            return Estimate(mean=float(rewards[0]), var=np.inf, n=1)
        noise_var = float(rewards.var(ddof=1))
    if noise_var < 0 or not np.isfinite(noise_var):
        raise ValueError(f"noise_var must be finite and >= 0, got {noise_var!r}")
    return Estimate(mean=float(rewards.mean()), var=noise_var / n, n=n)


def combine(obs: Estimate | None, exp: Estimate | None, guard_z: float = 3.0) -> CombinedEstimate:
    """Inverse-variance combination of an observational and an experimental estimate.

    Bias guard: when both are informative and ``|obs.mean - exp.mean| > guard_z *
    sqrt(obs.var + exp.var)``, the observational side is dropped (a wrong adjustment set must not
    lock in a bad arm; the experimental side is unbiased by construction).

    Parameters
    ----------
    obs, exp : Estimate or None
        Either may be missing or uninformative (infinite variance).
    guard_z : float
        Threshold of the bias guard in joint standard deviations; ``inf`` disables it.

    Returns
    -------
    CombinedEstimate
        With ``var=inf`` and ``mean=0`` when neither side carries information.

    Examples
    --------
    >>> combine(Estimate(1.0, 1.0), Estimate(3.0, 1.0)).mean
    2.0
    >>> combine(Estimate(10.0, 0.01), Estimate(0.0, 0.01)).used_observational
    False
    """
    if guard_z <= 0:
        raise ValueError(f"guard_z must be > 0, got {guard_z!r}")
    use_obs = obs is not None and obs.informative and obs.var > 0
    use_exp = exp is not None and exp.informative and exp.var > 0
    if use_obs and use_exp:
        gap = abs(obs.mean - exp.mean)
        if gap > guard_z * np.sqrt(obs.var + exp.var):
            use_obs = False
    if use_obs and use_exp:
        precision = 1.0 / obs.var + 1.0 / exp.var
        mean = (obs.mean / obs.var + exp.mean / exp.var) / precision
        return CombinedEstimate(mean, 1.0 / precision, obs.n + exp.n, True, True)
    if use_obs:
        return CombinedEstimate(obs.mean, obs.var, obs.n, True, False)
    if use_exp:
        return CombinedEstimate(exp.mean, exp.var, exp.n, False, True)
    # A zero-variance side (exact knowledge) wins outright.
    for est, is_obs in ((exp, False), (obs, True)):
        if est is not None and est.var == 0:
            return CombinedEstimate(est.mean, 0.0, est.n, is_obs, not is_obs)
    return CombinedEstimate(0.0, np.inf, 0, False, False)


class GramStatistics:
    """Incremental sufficient statistics ``G = sum z z^T`` with ``z = [1, x]`` for OLS.

    An update adds one outer product (``O(p^2)``); :meth:`ols` solves a ``(k, k)`` system built
    from ``G``, independent of the number of rows seen. Learned state ends in ``_``.

    Parameters
    ----------
    n_features : int
        Number of columns ``p`` of a row.

    Examples
    --------
    >>> rng = np.random.default_rng(1)
    >>> X = rng.normal(size=(500, 3)); X[:, 2] = 0.5 * X[:, 0] - X[:, 1] + 2 + 0.1 * rng.normal(size=500)
    >>> g = GramStatistics(3); g.update_many(X)
    >>> np.round(g.ols([0, 1], 2).coef, 1).tolist()
    [2.0, 0.5, -1.0]
    """

    def __init__(self, n_features: int) -> None:
        if int(n_features) < 1:
            raise ValueError(f"n_features must be >= 1, got {n_features!r}")
        self.n_features = int(n_features)
        self.gram_ = np.zeros((self.n_features + 1, self.n_features + 1))

    @property
    def n_(self) -> int:
        """Number of rows absorbed."""
        return round(self.gram_[0, 0])

    def _augment(self, rows: np.ndarray) -> np.ndarray:
        rows = np.asarray(rows, dtype=float)
        if rows.ndim == 1:
            rows = rows[None, :]
        if rows.ndim != 2 or rows.shape[1] != self.n_features:
            raise ValueError(f"rows must have {self.n_features} columns, got shape {rows.shape}")
        _check_finite("row", rows)
        return np.column_stack([np.ones(rows.shape[0]), rows])

    def update(self, row: np.ndarray) -> None:
        """Absorb one row (shape ``(p,)``)."""
        z = self._augment(row)[0]
        self.gram_ += np.outer(z, z)

    def update_many(self, rows: np.ndarray) -> None:
        """Absorb many rows (shape ``(n, p)``)."""
        z = self._augment(rows)
        self.gram_ += z.T @ z

    def mean(self) -> np.ndarray:
        """Column means of the rows absorbed."""
        n = self.gram_[0, 0]
        if n == 0:
            raise ValueError("no rows absorbed yet")
        return self.gram_[0, 1:] / n

    def covariance(self) -> np.ndarray:
        """Sample covariance (``ddof=1``) of the rows absorbed."""
        n = self.gram_[0, 0]
        if n < 2:
            raise ValueError("covariance needs at least 2 rows")
        m = self.mean()
        return (self.gram_[1:, 1:] - n * np.outer(m, m)) / (n - 1)

    def ols(self, cols: Sequence[int], target: int) -> OLSFit:
        """OLS of column ``target`` on ``[1, cols]`` over all rows absorbed."""
        cols = [int(c) for c in cols]
        for c in [*cols, target]:
            if not 0 <= c < self.n_features:
                raise ValueError(f"column {c} out of range for {self.n_features} features")
        if target in cols:
            raise ValueError(f"target column {target} is also a regressor")
        n = self.n_
        if n <= len(cols) + 1:
            raise ValueError(f"OLS with {len(cols) + 1} coefficients needs more rows, got {n}")
        idx = [0, *(c + 1 for c in cols)]
        g = self.gram_
        return _ols_from_gram(g[np.ix_(idx, idx)], g[idx, target + 1], g[target + 1, target + 1], n)

    def backdoor(
        self, treatment: int, adjustment: Sequence[int], target: int, value: float
    ) -> Estimate:
        """:func:`backdoor_ols` computed from the statistics instead of the rows."""
        adjustment = [int(c) for c in adjustment]
        if treatment in adjustment:
            raise ValueError(f"adjustment set contains the treatment {treatment}")
        fit = self.ols([treatment, *adjustment], target)
        if adjustment:
            z_mean = self.mean()[adjustment]
            z_cov = self.covariance()[np.ix_(adjustment, adjustment)] / fit.n
        else:
            z_mean, z_cov = np.zeros(0), None
        return _mean_from_fit(fit, value, z_mean, z_cov)


def batched_gram_ols(
    grams: np.ndarray,
    cols: np.ndarray,
    target: int | np.ndarray,
    n_params: np.ndarray,
    gram_index: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Many small OLS fits at once from Gram matrices.

    Fit ``m`` regresses column ``target[m]`` on columns ``cols[m]`` of the Gram matrix
    ``grams[gram_index[m]]`` (column 0 of a Gram built from ``z = [1, x]`` is the intercept).
    Fits with fewer regressors pad ``cols`` with *dummy* columns whose Gram block is the identity
    and whose cross terms are zero: they get zero coefficients and leave the other coefficients
    unchanged, so all fits share one shape and one batched inverse.

    Parameters
    ----------
    grams : numpy.ndarray, shape (g, d, d)
        Gram matrices (``grams[i, 0, 0]`` = number of rows).
    cols : numpy.ndarray of int, shape (m, k)
        Regressor columns per fit, padded with dummy columns.
    target : int or numpy.ndarray of int, shape (m,)
        The outcome column (per fit, or shared).
    n_params : numpy.ndarray of int, shape (m,)
        Number of real (non-dummy) regressors per fit, for the residual degrees of freedom.
    gram_index : numpy.ndarray of int, shape (m,), optional
        Which Gram each fit uses (default: fit ``m`` uses ``grams[m]``).

    Returns
    -------
    coef : numpy.ndarray, shape (m, k)
    xtx_inv : numpy.ndarray, shape (m, k, k)
        ``(X^T X)^-1``; the coefficient covariance is ``sigma2[:, None, None] * xtx_inv``.
    sigma2 : numpy.ndarray, shape (m,)
        Residual variance (``nan`` where the fit has no residual degrees of freedom).
    rss : numpy.ndarray, shape (m,)
        Residual sum of squares.
    """
    grams = np.asarray(grams, dtype=float)
    cols = np.asarray(cols, dtype=np.int64)
    m = cols.shape[0]
    gi = np.arange(m) if gram_index is None else np.asarray(gram_index, dtype=np.int64)
    if grams.ndim != 3 or cols.ndim != 2 or gi.shape != (m,):
        raise ValueError(
            f"grams (g, d, d), cols (m, k) and gram_index (m,) disagree: "
            f"{grams.shape}, {cols.shape}, {gi.shape}"
        )
    tgt = np.broadcast_to(np.asarray(target, dtype=np.int64), (m,))
    a = grams[gi[:, None, None], cols[:, :, None], cols[:, None, :]]
    b = grams[gi[:, None], cols, tgt[:, None]]
    yy = grams[gi, tgt, tgt]
    n = grams[gi, 0, 0]
    with np.errstate(all="ignore"):
        try:
            inv = np.linalg.inv(a)
        except np.linalg.LinAlgError:
            inv = np.linalg.pinv(a)
        coef = np.einsum("mij,mj->mi", inv, b)
        rss = np.maximum(yy - np.einsum("mi,mi->m", coef, b), 0.0)
        dof = n - np.asarray(n_params)
        sigma2 = np.where(dof > 0, rss / np.maximum(dof, 1), np.nan)
    return coef, inv, sigma2, rss
