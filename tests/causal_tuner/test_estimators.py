"""Estimators: backdoor OLS against the SEM's true effects, Gram statistics, combination."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from causal_tuner.estimators import (
    Estimate,
    GramStatistics,
    backdoor_ols,
    batched_gram_ols,
    combine,
    experimental_estimate,
)
from causal_tuner.sem import random_er_sem


@given(seed=st.integers(0, 10_000), value=st.sampled_from([-1.0, 0.5, 2.0]))
def test_backdoor_ols_converges_to_true_interventional_mean(seed, value):
    sem = random_er_sem(6, 2.0, seed=seed)
    rng = np.random.default_rng(seed)
    order = sem.topological_order()
    treatment, outcome = order[1], order[-1]
    data = sem.sample(40_000, seed=rng)
    est = backdoor_ols(data, data[:, outcome], treatment, sem.parents(treatment), value)
    truth = sem.interventional_mean({treatment: value})[outcome]
    # Within 5 standard errors (the estimator's own variance), plus float slack.
    assert abs(est.mean - truth) <= 5 * np.sqrt(est.var) + 1e-6
    assert est.var < 0.05


def test_backdoor_ols_with_intercepts_and_confounding():
    rng = np.random.default_rng(3)
    n = 20_000
    z = 2.0 + rng.normal(size=n)
    x = 1.0 + 0.8 * z + rng.normal(size=n)
    y = -3.0 + 1.5 * x + 2.0 * z + rng.normal(size=n)
    data = np.c_[x, z]
    adjusted = backdoor_ols(data, y, 0, [1], 1.0)
    naive = backdoor_ols(data, y, 0, [], 1.0)
    truth = -3.0 + 1.5 * 1.0 + 2.0 * 2.0
    assert abs(adjusted.mean - truth) < 4 * np.sqrt(adjusted.var)
    # Without the confounder the estimate is badly biased: the test can fail.
    assert abs(naive.mean - truth) > 20 * np.sqrt(naive.var)


def test_backdoor_variance_is_calibrated():
    """Across repeated samples, the spread of the estimate matches its reported variance."""
    rng = np.random.default_rng(11)
    estimates, variances = [], []
    for _ in range(300):
        z = rng.normal(size=200)
        x = 0.7 * z + rng.normal(size=200)
        y = 1.0 + 0.5 * x - z + rng.normal(size=200)
        e = backdoor_ols(np.c_[x, z], y, 0, [1], 1.0)
        estimates.append(e.mean)
        variances.append(e.var)
    ratio = np.var(estimates) / np.mean(variances)
    assert 0.75 < ratio < 1.3


def test_gram_statistics_match_batch_ols():
    rng = np.random.default_rng(0)
    data = rng.normal(size=(500, 4))
    data[:, 3] += 0.5 * data[:, 0] - data[:, 2] + 1.0
    gram = GramStatistics(4)
    for row in data[:250]:
        gram.update(row)
    gram.update_many(data[250:])
    assert gram.n_ == 500
    np.testing.assert_allclose(gram.mean(), data.mean(axis=0))
    np.testing.assert_allclose(gram.covariance(), np.cov(data, rowvar=False), atol=1e-10)
    a = gram.backdoor(0, [2], 3, 1.5)
    b = backdoor_ols(data, data[:, 3], 0, [2], 1.5)
    assert a.mean == pytest.approx(b.mean)
    assert a.var == pytest.approx(b.var)


def test_batched_gram_ols_padding_matches_lstsq():
    rng = np.random.default_rng(5)
    data = rng.normal(size=(300, 5))
    data[:, 4] = data[:, :4] @ np.array([1.0, -2.0, 0.5, 0.0]) + 3 + rng.normal(size=300)
    z = np.c_[np.ones(300), data]
    d = z.shape[1]
    width = 3
    gram = np.zeros((d + width, d + width))
    gram[:d, :d] = z.T @ z
    gram[d:, d:] = np.eye(width)
    sets = [[1], [1, 2, 3], [2, 3]]
    cols = np.array([[0, *s, *range(d, d + width - len(s))] for s in sets])
    coef, _, sigma2, _ = batched_gram_ols(
        gram[None], cols, 5, np.array([1 + len(s) for s in sets]), gram_index=np.zeros(3, int)
    )
    for m, s in enumerate(sets):
        design = z[:, [0, *s]]
        expected, rss, *_ = np.linalg.lstsq(design, z[:, 5], rcond=None)
        np.testing.assert_allclose(coef[m, : 1 + len(s)], expected, atol=1e-8)
        np.testing.assert_allclose(coef[m, 1 + len(s) :], 0.0, atol=1e-10)
        assert sigma2[m] == pytest.approx(rss[0] / (300 - 1 - len(s)))


def test_combine_inverse_variance_and_bias_guard():
    c = combine(Estimate(1.0, 1.0, 10), Estimate(3.0, 3.0, 5))
    assert c.mean == pytest.approx((1.0 / 1.0 + 3.0 / 3.0) / (1.0 + 1 / 3.0))
    assert c.var == pytest.approx(1.0 / (1.0 + 1 / 3.0))
    assert c.used_observational and c.used_experimental
    guarded = combine(Estimate(5.0, 0.01), Estimate(0.0, 0.01), guard_z=3.0)
    assert not guarded.used_observational and guarded.mean == 0.0
    unguarded = combine(Estimate(5.0, 0.01), Estimate(0.0, 0.01), guard_z=np.inf)
    assert unguarded.used_observational and unguarded.mean == pytest.approx(2.5)
    assert combine(None, Estimate(2.0, 0.5)).mean == 2.0
    nothing = combine(None, None)
    assert not nothing.informative


def test_experimental_estimate():
    est = experimental_estimate(np.array([1.0, 2.0, 3.0]))
    assert est.mean == 2.0 and est.var == pytest.approx(1.0 / 3)
    assert experimental_estimate(np.array([4.0]), noise_var=2.0).var == 2.0
    assert not experimental_estimate(np.array([])).informative


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"X": np.array([[np.nan, 1.0]] * 10)}, "X contains NaN"),
        ({"y": np.r_[np.inf, np.zeros(9)]}, "y contains NaN"),
        ({"treatment_col": 5}, "treatment_col=5"),
        ({"adjustment_cols": [0]}, "contains the treatment column 0"),
        ({"value": np.nan}, "value must be finite"),
    ],
)
def test_backdoor_ols_bad_input(kwargs, match):
    rng = np.random.default_rng(0)
    args = {
        "X": rng.normal(size=(10, 2)),
        "y": rng.normal(size=10),
        "treatment_col": 0,
        "adjustment_cols": [1],
        "value": 1.0,
    }
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        backdoor_ols(**args)


def test_gram_statistics_rejects_nan_row():
    gram = GramStatistics(3)
    with pytest.raises(ValueError, match="row contains NaN"):
        gram.update(np.array([1.0, np.nan, 0.0]))
    with pytest.raises(ValueError, match="3 columns"):
        gram.update(np.zeros(2))
