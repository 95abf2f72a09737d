"""Arrival processes, rate profiles and length distributions."""

from __future__ import annotations

import numpy as np
import pytest

from simulator import (
    ConstantRate,
    DiurnalRate,
    LengthDistribution,
    PiecewiseRate,
    Workload,
    arrival_times_s,
    load_trace,
)


def _cv(t: np.ndarray) -> float:
    gaps = np.diff(t)
    return float(gaps.std() / gaps.mean())


def test_poisson_arrivals_have_the_rate_and_unit_cv():
    t = arrival_times_s(ConstantRate(50.0), 2000.0, cv=1.0, seed=1)
    n = len(t)
    # 95% interval for a Poisson count with mean 100,000
    assert abs(n - 100_000) < 1.96 * np.sqrt(100_000) * 1.5
    assert _cv(t) == pytest.approx(1.0, abs=0.02)
    assert np.all(np.diff(t) >= 0) and t.min() >= 0 and t.max() < 2000.0


@pytest.mark.parametrize("cv", [0.5, 2.0, 4.0])
def test_gamma_arrivals_have_the_requested_burstiness(cv):
    t = arrival_times_s(ConstantRate(20.0), 5000.0, cv=cv, seed=2)
    assert len(t) / 5000.0 == pytest.approx(20.0, rel=0.05 * cv)
    assert _cv(t) == pytest.approx(cv, rel=0.08)


def test_diurnal_rate_shapes_the_arrival_counts():
    rate = DiurnalRate(mean_rps=10.0, amplitude=0.8, period_s=1000.0)
    t = arrival_times_s(rate, 1000.0, seed=3)
    peak = np.sum((t > 200) & (t < 300))  # rate near 18 rps around t = 250
    trough = np.sum((t > 700) & (t < 800))  # near 2 rps around t = 750
    assert peak > 5 * trough
    assert len(t) == pytest.approx(10_000, rel=0.05)


def test_step_change_and_ramp_profiles():
    step = PiecewiseRate((0.0, 500.0), (5.0, 20.0))
    t = arrival_times_s(step, 1000.0, seed=4)
    before, after = np.sum(t < 500), np.sum(t >= 500)
    assert after / before == pytest.approx(4.0, rel=0.1)
    ramp = PiecewiseRate((0.0, 1000.0), (1.0, 21.0), interpolation="linear")
    assert ramp.rate_rps(np.array([0.0, 500.0, 1000.0])).tolist() == [1.0, 11.0, 21.0]
    r = arrival_times_s(ramp, 1000.0, seed=5)
    assert np.sum(r > 900) > 5 * np.sum(r < 100)


def test_length_distributions_come_from_the_bundled_datasets(shared_data):
    import pandas as pd

    share = LengthDistribution.sharegpt()
    src = pd.read_csv(
        shared_data / "traces" / "sarathi_sharegpt_8k_filtered_stats_llama2_tokenizer.csv"
    )
    assert len(share.prompt_tokens) == len(src)
    assert share.mean_prompt_tokens == pytest.approx(src["num_prefill_tokens"].mean())
    arxiv = LengthDistribution.arxiv()
    assert (
        arxiv.mean_prompt_tokens > 5 * arxiv.mean_output_tokens
    )  # summarization: long in, short out
    p, o = share.sample(50_000, seed=0)
    assert p.mean() == pytest.approx(share.mean_prompt_tokens, rel=0.03)
    # pairs are drawn jointly: each sampled pair exists in the table
    table = set(zip(share.prompt_tokens.tolist(), share.output_tokens.tolist(), strict=True))
    assert all((a, b) in table for a, b in zip(p[:500].tolist(), o[:500].tolist(), strict=True))
    capped = LengthDistribution.sharegpt(max_total_tokens=2048)
    assert (capped.prompt_tokens + capped.output_tokens).max() <= 2048


def test_named_and_trace_lengths():
    assert LengthDistribution.named("1024/128").sample(3, 0)[0].tolist() == [1024] * 3
    trace = load_trace("azure-code")
    lengths = LengthDistribution.from_trace(trace)
    assert lengths.mean_output_tokens == pytest.approx(trace.output_tokens.mean())
    with pytest.raises(ValueError, match="unknown length distribution"):
        LengthDistribution.named("lots")


def test_workload_generation_is_seeded_and_independent_per_stream():
    wl = Workload(
        ConstantRate(5.0),
        LengthDistribution.sharegpt(),
        duration_s=600.0,
        cv=2.0,
        priority_levels=3,
    )
    a, b, c = wl.generate(7), wl.generate(7), wl.generate(8)
    assert a == b
    assert not np.array_equal(a.arrival_ms, c.arrival_ms)
    assert set(a.priority.tolist()) == {0, 1, 2}
    assert a.arrival_ms.max() < 600_000.0


@pytest.mark.parametrize(
    ("factory", "match"),
    [
        (lambda: ConstantRate(0.0), "rps"),
        (lambda: DiurnalRate(5.0, amplitude=1.5), "amplitude"),
        (lambda: PiecewiseRate((1.0,), (2.0,)), "start at 0"),
        (lambda: PiecewiseRate((0.0, 1.0), (2.0,)), "equal"),
        (lambda: arrival_times_s(ConstantRate(1.0), 10.0, cv=0.0), "cv"),
        (lambda: Workload(ConstantRate(1.0), "sharegpt", 10.0), "LengthDistribution"),
        (lambda: LengthDistribution(np.array([0]), np.array([1])), ">= 1"),
    ],
)
def test_bad_workload_parameters_raise_named_errors(factory, match):
    with pytest.raises(ValueError, match=match):
        factory()


def test_random_range_lengths_are_uniform_between_the_ratio_and_nominal():
    lengths = LengthDistribution.random_range(1024, 8192, 0.8, size=40_000, seed=1)
    p, o = lengths.prompt_tokens, lengths.output_tokens
    assert p.min() == 819 and p.max() == 1024
    assert o.min() == 6553 and o.max() == 8192
    assert lengths.mean_prompt_tokens == pytest.approx((819 + 1024) / 2, rel=2e-3)
    assert np.corrcoef(p, o)[0, 1] == pytest.approx(0.0, abs=0.03)  # drawn independently
    assert LengthDistribution.random_range(10, 5, 1.0).prompt_tokens.tolist() == [10] * 4096
    with pytest.raises(ValueError, match="range_ratio"):
        LengthDistribution.random_range(10, 5, 0.0)


def test_jittered_lengths_keep_the_mean_and_stay_in_range():
    lengths = LengthDistribution.jittered(1000, 200, 0.1, size=20_000)
    assert lengths.prompt_tokens.min() >= 900 and lengths.prompt_tokens.max() <= 1100
    assert lengths.mean_prompt_tokens == pytest.approx(1000, rel=0.005)
    assert lengths.mean_output_tokens == pytest.approx(200, rel=0.01)
    assert LengthDistribution.jittered(10, 5, 0.0).prompt_tokens.tolist() == [10]
    with pytest.raises(ValueError, match="jitter"):
        LengthDistribution.jittered(10, 5, 1.0)
