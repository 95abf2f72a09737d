"""Per-request and per-window metrics, the tiered observation, and the Prometheus export."""

from __future__ import annotations

import math

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from simulator import (
    SLA,
    EngineConfig,
    Trace,
    WindowObservation,
    observations_frame,
    single_replica,
    to_prometheus,
    window_observations,
)
from simulator.batch import BatchShape


class LinearCost:
    def step_time_ms(self, batch: BatchShape) -> float:
        return (
            5.0
            + 0.01 * float(batch.prefill_new_tokens.sum())
            + 0.05 * len(batch.decode_context_tokens)
        )


@pytest.fixture(scope="module")
def result():
    rng = np.random.default_rng(0)
    n = 600
    trace = Trace(
        np.sort(rng.uniform(0, 120_000, n)), rng.integers(50, 3000, n), rng.integers(2, 400, n)
    )
    cfg = EngineConfig(max_num_seqs=16, step_noise_cv=0.05)
    return single_replica(cfg, LinearCost(), num_kv_blocks=800).run(trace, seed=1)


def test_request_metrics_are_consistent(result):
    r = result.requests
    ok = r[r["status"] == "ok"]
    np.testing.assert_allclose(ok["e2e_ms"], ok["finish_ms"] - ok["arrival_ms"])
    np.testing.assert_allclose(ok["ttft_ms"], ok["first_token_ms"] - ok["arrival_ms"])
    np.testing.assert_allclose(
        ok["tpot_ms"], (ok["finish_ms"] - ok["first_token_ms"]) / (ok["output_tokens"] - 1)
    )
    assert (ok["queue_ms"] <= ok["ttft_ms"]).all()
    assert result.num_preemptions > 0  # the small cache is exercised


def test_observation_tiers_cover_the_design_tiers():
    tiers = WindowObservation.tiers()
    assert set(tiers.values()) == {0, 1, 2, 3}
    assert "request_rate_rps" in WindowObservation.nodes(0)
    assert "max_num_seqs" in WindowObservation.nodes(1)
    assert "kv_usage_frac" in WindowObservation.nodes(2)
    assert "goodput_tok_s" in WindowObservation.nodes(3)
    assert "window_start_s" not in tiers


def test_windows_conserve_tokens_and_requests(result):
    obs = window_observations(result, window_s=10.0, sla=SLA(ttft_ms=500.0, tpot_ms=50.0))
    frame = observations_frame(obs)
    assert list(frame.columns) == list(obs[0].to_dict())
    r = result.requests
    # every arrival falls into exactly one window
    assert frame["request_rate_rps"].sum() * 10.0 == pytest.approx(len(r))
    # every generated token is attributed to a window
    assert frame["throughput_tok_s"].sum() * 10.0 == pytest.approx(
        r["output_tokens"].sum(), rel=1e-9
    )
    assert (frame["goodput_tok_s"] <= frame["throughput_tok_s"] + 1e-9).sum() >= len(frame) - 1
    assert ((frame["kv_usage_frac"] >= 0) & (frame["kv_usage_frac"] <= 1)).all()
    assert (frame["mean_running_batch"] <= 16).all()
    assert frame["preemptions_per_s"].sum() * 10.0 == pytest.approx(result.num_preemptions)
    assert (frame["max_num_seqs"] == 16).all()


def test_goodput_counts_only_requests_meeting_the_sla(result):
    strict = result.summary(SLA(ttft_ms=1.0, tpot_ms=1.0))
    loose = result.summary(SLA(ttft_ms=1e9, tpot_ms=1e9))
    assert strict["goodput_tok_s"] == 0.0 and strict["sla_attainment"] == 0.0
    assert loose["goodput_tok_s"] == pytest.approx(loose["throughput_tok_s"])
    with pytest.raises(ValueError, match="ttft_ms"):
        SLA(ttft_ms=0.0)


def test_window_arguments_are_validated(result):
    with pytest.raises(ValueError, match="window_s"):
        window_observations(result, window_s=0.0)
    with pytest.raises(ValueError, match="out of range"):
        window_observations(result, replica=3)


def test_prometheus_export_uses_vllm_names_and_counts(result):
    text = to_prometheus(result, model_name="llama")
    families = {f.name: f for f in text_string_to_metric_families(text)}
    for name in (
        "vllm:time_to_first_token_seconds",
        "vllm:inter_token_latency_seconds",
        "vllm:e2e_request_latency_seconds",
        "vllm:request_queue_time_seconds",
        "vllm:num_requests_running",
        "vllm:kv_cache_usage_perc",
        "vllm:num_preemptions",
        "vllm:request_success",
        "vllm:prefix_cache_hits",
    ):
        assert name in families, name
    samples = {s.name: s for f in families.values() for s in f.samples}
    assert samples["vllm:num_preemptions_total"].value == result.num_preemptions
    assert samples["vllm:request_success_total"].value == (result.requests["status"] == "ok").sum()
    assert (
        samples["vllm:time_to_first_token_seconds_count"].value
        == (result.requests["status"] == "ok").sum()
    )
    assert samples["vllm:num_requests_running"].labels == {"engine": "0", "model_name": "llama"}
    ttft_sum = result.requests["ttft_ms"].sum() / 1000.0
    assert samples["vllm:time_to_first_token_seconds_sum"].value == pytest.approx(ttft_sum)
    # at an earlier time fewer requests have finished
    early = {
        s.name: s
        for f in text_string_to_metric_families(to_prometheus(result, at_ms=30_000.0))
        for s in f.samples
    }
    assert (
        0 < early["vllm:request_success_total"].value < samples["vllm:request_success_total"].value
    )


def test_empty_windows_report_nan_latencies_not_errors():
    trace = Trace([0.0], [100], [3])
    res = single_replica(EngineConfig(step_noise_cv=0.0), LinearCost(), 100).run(trace)
    obs = window_observations(res, window_s=1.0, end_s=3.0)
    assert len(obs) == 3
    assert obs[0].throughput_tok_s == pytest.approx(3.0)
    assert math.isnan(obs[2].ttft_p50_ms) and obs[2].request_rate_rps == 0.0


def test_mixed_replica_configs_need_an_explicit_replica():
    from simulator import Cluster, Replica

    trace = Trace(np.arange(20) * 10.0, np.full(20, 100), np.full(20, 5))
    res = Cluster(
        [
            Replica(EngineConfig(max_num_seqs=2), LinearCost(), 100),
            Replica(EngineConfig(max_num_seqs=8), LinearCost(), 100),
        ]
    ).run(trace, seed=0)
    with pytest.raises(ValueError, match="replica="):
        window_observations(res, window_s=1.0)
    second = window_observations(res, window_s=1.0, replica=1)
    assert all(o.max_num_seqs == 8 for o in second)
    assert sum(o.request_rate_rps for o in second) == pytest.approx(10.0)


def test_arrival_cv2_separates_poisson_from_bursts():
    rng = np.random.default_rng(3)
    n = 400
    poisson = np.cumsum(rng.exponential(150.0, n))
    # the same number of requests in bursts of 20 arriving together
    bursty = np.repeat(np.sort(rng.uniform(0, poisson[-1], n // 20)), 20) + rng.uniform(0, 5, n)
    cv2 = {}
    for name, arrivals in (("poisson", poisson), ("bursty", np.sort(bursty))):
        trace = Trace(arrivals, np.full(n, 200), np.full(n, 20))
        res = single_replica(EngineConfig(), LinearCost(), num_kv_blocks=800).run(trace, seed=0)
        (obs,) = window_observations(res, window_s=arrivals[-1] / 1000.0 + 1.0)
        cv2[name] = obs.arrival_cv2
    assert 0.7 < cv2["poisson"] < 1.4
    assert cv2["bursty"] > 5.0
    few = Trace(np.array([0.0, 10.0]), np.array([100, 100]), np.array([5, 5]))
    res = single_replica(EngineConfig(), LinearCost(), num_kv_blocks=800).run(few, seed=0)
    assert math.isnan(window_observations(res, window_s=10.0)[0].arrival_cv2)
