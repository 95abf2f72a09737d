"""Analytical serving modes: closed-loop consistency (Little's law), load trends, SLA, errors."""

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from simulator import (
    AnalyticalStepModel,
    BatchingConfig,
    QueueModel,
    estimate_aggregated,
    estimate_disaggregated,
    estimate_static,
)
from simulator import AnalyticalWorkload as Workload
from simulator.analytical import burst_ttft_ms, burst_ttfts_ms, run_ttft_p90


@pytest.fixture(scope="module")
def llama70():
    return AnalyticalStepModel.from_names(
        model="meta-llama/Llama-3.1-70B", system="h200_sxm", tp=4, dtype="fp8"
    )


def test_workload_validation():
    with pytest.raises(ValueError, match="exactly one of concurrency"):
        Workload(1000, 100)
    with pytest.raises(ValueError, match="isl and osl must be >= 1"):
        Workload(0, 100, concurrency=4)
    wl = Workload.from_samples(np.array([100, 200, 300]), np.array([10, 20, 30]), concurrency=2)
    assert wl.isl == 200 and wl.isl_p90 == pytest.approx(280)


def test_static_batch(llama70):
    est = estimate_static(llama70, 8, 1024, 128)
    assert est.ttft_ms > est.tpot_ms > 0
    assert estimate_static(llama70, 64, 1024, 128).tpot_ms > est.tpot_ms


@pytest.mark.parametrize("conc", [1, 8, 64, 256])
def test_closed_loop_obeys_littles_law(llama70, conc):
    est = estimate_aggregated(llama70, Workload(2048, 256, concurrency=conc))
    in_flight = est.request_rate_per_s * est.request_latency_ms / 1e3
    assert in_flight == pytest.approx(conc, rel=0.03)
    assert est.output_tok_s_per_gpu == pytest.approx(est.request_rate_per_s * 256 / 4, rel=1e-9)


def test_load_trends(llama70):
    ests = [estimate_aggregated(llama70, Workload(2048, 256, concurrency=c)) for c in (1, 16, 128)]
    ttft = [e.ttft_ms for e in ests]
    tpot = [e.tpot_ms for e in ests]
    thr = [e.output_tok_s_per_gpu for e in ests]
    assert ttft == sorted(ttft) and tpot == sorted(tpot) and thr == sorted(thr)
    assert ests[0].output_tok_s_per_user > ests[-1].output_tok_s_per_user
    assert ests[-1].tpot_p90_ms >= ests[-1].tpot_ms
    assert ests[0].meets(ttft_ms=1e6, tpot_ms=1e6) and not ests[-1].meets(tpot_ms=1.0)


def test_running_cap_queues_clients(llama70):
    free = estimate_aggregated(llama70, Workload(1024, 128, concurrency=64))
    capped = estimate_aggregated(
        llama70, Workload(1024, 128, concurrency=64), BatchingConfig(max_num_seqs=8)
    )
    assert capped.ttft_ms > free.ttft_ms and capped.tpot_ms < free.tpot_ms


def test_open_loop_overload_is_infinite(llama70):
    ok = estimate_aggregated(llama70, Workload(1024, 128, request_rate=0.5))
    assert math.isfinite(ok.ttft_ms)
    over = estimate_aggregated(llama70, Workload(8192, 128, request_rate=1000.0))
    assert not math.isfinite(over.ttft_ms) and not over.meets(ttft_ms=1e9)


def test_non_mixing_scheduler_runs_in_lockstep_bursts():
    kw = dict(model="meta-llama/Llama-3.1-8B", system="h100_sxm")
    vllm = AnalyticalStepModel.from_names(backend="vllm", **kw)
    sglang = AnalyticalStepModel.from_names(backend="sglang", **kw)
    wl = Workload(1024, 512, concurrency=64)
    q = QueueModel(rounds=6)
    mixed = estimate_aggregated(vllm.with_overhead(sglang.overhead), wl, queue=q)
    lockstep = estimate_aggregated(sglang, wl, queue=q)
    burst = burst_ttft_ms(sglang, 64, 1024, 8192)
    ov = sglang.overhead
    assert lockstep.ttft_ms == pytest.approx(burst * ov.prefill_scale + ov.ttft_ms, rel=1e-6)
    assert lockstep.ttft_ms > mixed.ttft_ms
    # output lengths that vary break the lockstep: only the first round is a burst
    fixed = estimate_aggregated(sglang, Workload(1024, 461, concurrency=64), queue=q)
    varied = estimate_aggregated(sglang, Workload(1024, 461, concurrency=64, osl_p90=502), queue=q)
    assert varied.ttft_ms < fixed.ttft_ms


def test_sglang_receive_interval_adds_half_a_window_of_decode_steps(llama70):
    wl = Workload(2048, 256, concurrency=16)
    base = estimate_aggregated(llama70, wl)
    slow = estimate_aggregated(llama70, wl, BatchingConfig(scheduler_recv_interval=30))
    extra = (slow.ttft_ms - base.ttft_ms) / llama70.overhead.prefill_scale
    step = llama70.decode_step_ms(16, 2048 + 128)
    assert 0.5 * 29 * step * 0.7 < extra < 0.5 * 29 * step * 1.3
    lone = Workload(2048, 256, concurrency=1)  # an idle engine takes the request in at once
    assert estimate_aggregated(
        llama70, lone, BatchingConfig(scheduler_recv_interval=30)
    ).ttft_ms == (pytest.approx(estimate_aggregated(llama70, lone).ttft_ms, rel=1e-9))
    with pytest.raises(ValueError, match="scheduler_recv_interval"):
        BatchingConfig(scheduler_recv_interval=0)


@given(n=st.integers(1, 300), isl=st.integers(16, 9000))
def test_burst_ttft_bounds(n, isl):
    model = _small()
    t = burst_ttft_ms(model, n, isl, 8192)
    single = burst_ttft_ms(model, 1, isl, 8192)
    assert t >= single * 0.999
    assert burst_ttft_ms(model, n + 50, isl, 8192) >= t * 0.999


_CACHE = {}


def _small():
    if "m" not in _CACHE:
        _CACHE["m"] = AnalyticalStepModel.from_names(model="Qwen/Qwen3-8B", system="h100_sxm")
    return _CACHE["m"]


def test_memory_infeasible_raises():
    big = AnalyticalStepModel.from_names(model="meta-llama/Llama-3.1-70B", system="h100_sxm")
    with pytest.raises(ValueError, match="does not fit in GPU memory"):
        estimate_aggregated(big, Workload(1024, 128, concurrency=4))


def test_disaggregated_more_prefill_workers_cut_ttft(llama70):
    wl = Workload(8000, 200, concurrency=64)
    one = estimate_disaggregated(llama70, llama70, wl, prefill_workers=1, decode_workers=1)
    three = estimate_disaggregated(llama70, llama70, wl, prefill_workers=3, decode_workers=1)
    assert three.ttft_ms < one.ttft_ms
    assert one.num_gpus == 8 and three.num_gpus == 16
    assert one.details["kv_transfer_ms"] > 0
    in_flight = one.request_rate_per_s * one.request_latency_ms / 1e3
    assert in_flight == pytest.approx(64, rel=0.03)


def test_admitted_prompts_truncate_the_length_distribution():
    from simulator.analytical import admitted_prompts

    # fixed lengths: all or nothing
    assert admitted_prompts(1000.0, 1000.0, 2048) == (1.0, 1000.0, 1000.0)
    assert admitted_prompts(3000.0, 3000.0, 2048)[0] == 0.0
    # a spread: the long tail is cut, the admitted mean and p90 drop below the limit
    frac, mean, p90 = admitted_prompts(2000.0, 4400.0, 2048)
    assert 0.3 < frac < 0.9
    assert mean < 2000.0 and p90 <= 2048.0 and mean < p90
    fracs = [admitted_prompts(2000.0, 4400.0, lim)[0] for lim in (512, 2048, 8192, 65536)]
    assert fracs == sorted(fracs) and fracs[-1] > 0.99


def test_unchunked_prompts_over_the_budget_are_rejected(llama70):
    wl = Workload(isl=2000, osl=100, request_rate=1.0, isl_p90=4400, osl_p90=200)
    on = estimate_aggregated(llama70, wl, BatchingConfig(max_num_batched_tokens=2048))
    off = estimate_aggregated(
        llama70, wl, BatchingConfig(max_num_batched_tokens=2048, chunked_prefill=False)
    )
    assert on.details["rejected_fraction"] == 0.0
    rejected = off.details["rejected_fraction"]
    assert 0.1 < rejected < 0.7
    # the served rate is the admitted part of the offered one
    assert off.request_rate_per_s == pytest.approx(1.0 * (1 - rejected), rel=1e-6)
    assert on.request_rate_per_s == pytest.approx(1.0, rel=1e-6)
    fixed = Workload(isl=3000, osl=100, request_rate=1.0)
    with pytest.raises(ValueError, match="max_num_batched_tokens=2048 with chunked prefill off"):
        estimate_aggregated(
            llama70, fixed, BatchingConfig(max_num_batched_tokens=2048, chunked_prefill=False)
        )


def test_closed_loop_ttft_has_no_wait_when_every_client_is_admitted(llama70):
    # one client is always admitted and never queues behind itself: its TTFT is its prefill
    # whatever the length of its decode phase (a wait taken as the bisection's residual grew
    # with the whole request latency: 86, 92 and 202 ms here at output lengths 128-16384,
    # 82, 125 and 235 ms disaggregated; Kingman's open-loop wait put 99 ms at length 8)
    steady = QueueModel(arrival_cv2=1.0)
    for estimate in (
        lambda wl: estimate_aggregated(llama70, wl, queue=steady),
        lambda wl: estimate_disaggregated(
            llama70, llama70, wl, prefill_workers=1, decode_workers=1, queue=steady
        ),
    ):
        ttft = [
            estimate(Workload(1024, osl, concurrency=1)).ttft_ms for osl in (8, 128, 4096, 16384)
        ]
        assert max(ttft) / min(ttft) < 1.03, ttft


@pytest.fixture(scope="module")
def qwen32_sglang():
    return AnalyticalStepModel.from_names(
        model="Qwen/Qwen3-32B", system="h100_sxm", tp=2, dtype="fp8", backend="sglang"
    )


def test_a_lone_client_decodes_at_the_one_request_step(llama70, qwen32_sglang):
    # one client's decode steps hold one request; its mean decode batch (Little's law, just
    # under 1) once fell below the 0.5 threshold during the bisection and priced TPOT at 0,
    # with 25,456 output tok/s per GPU for Qwen3-32B on 2 H100s under SGLang's scheduler
    for model in (llama70, qwen32_sglang):
        est = estimate_aggregated(model, Workload(1024, 8192, concurrency=1))
        one = model.decode_step_ms(1, 1024 + 8192 / 2)
        assert est.tpot_ms == pytest.approx(one, rel=0.05)
        # Little's law over the one client's cycle
        assert est.request_rate_per_s == pytest.approx(1e3 / est.request_latency_ms, rel=1e-6)
        assert est.output_tok_s_per_gpu * est.num_gpus < 1e3 / est.tpot_ms


def test_closed_loop_reports_the_rejected_share_of_prompts(llama70):
    batching = BatchingConfig(max_num_batched_tokens=2048, chunked_prefill=False)
    wl = Workload(isl=2000, osl=100, concurrency=16, isl_p90=4400)
    rejected = estimate_aggregated(llama70, wl, batching).details["rejected_fraction"]
    assert 0.1 < rejected < 0.7
    chunked = estimate_aggregated(llama70, wl, BatchingConfig(max_num_batched_tokens=2048))
    assert chunked.details["rejected_fraction"] == 0.0


def test_a_lone_clients_prompt_fills_the_step_budget_alone(llama70):
    # no other client decodes beside a lone client's prefill (the arrival theorem), so a
    # prompt of exactly max_num_batched_tokens is one step, not a full one plus a 1-token chunk
    ov = llama70.overhead
    est = estimate_aggregated(
        llama70, Workload(8192, 512, concurrency=1), BatchingConfig(max_num_batched_tokens=8192)
    )
    engine_part = (est.ttft_ms - ov.ttft_ms) / ov.prefill_scale
    assert engine_part == pytest.approx(burst_ttft_ms(llama70, 1, 8192, 8192), rel=0.02)


@pytest.mark.parametrize("isl,osl", [(128, 128), (1024, 8192), (8192, 1024)])
def test_latency_never_falls_as_clients_are_added(llama70, qwen32_sglang, isl, osl):
    # the sweep that found the three closed-loop bugs above: with the clients within the
    # running cap, neither TTFT nor TPOT may fall as more clients share the engine
    for model in (llama70, qwen32_sglang):
        prev = None
        for clients in (1, 2, 4, 8, 16, 32, 64):
            est = estimate_aggregated(
                model, Workload(isl, osl, concurrency=clients), BatchingConfig(max_num_seqs=64)
            )
            assert est.tpot_ms > 0 and math.isfinite(est.ttft_ms)
            if prev is not None:
                assert est.ttft_ms >= 0.98 * prev.ttft_ms, (clients, prev.ttft_ms, est.ttft_ms)
                assert est.tpot_ms >= 0.98 * prev.tpot_ms, (clients, prev.tpot_ms, est.tpot_ms)
            prev = est


def test_async_scheduling_adds_one_step_to_a_busy_engines_ttft(llama70):
    sync = BatchingConfig(async_scheduling=False)
    # a lone client finds the engine idle: it is scheduled at once either way
    lone = [
        estimate_aggregated(llama70, Workload(2048, 256, concurrency=1), b) for b in (None, sync)
    ]
    assert lone[0].ttft_ms == pytest.approx(lone[1].ttft_ms, rel=1e-9)
    # with others decoding, the next step is already planned: about one step (a TPOT) more
    busy = [
        estimate_aggregated(llama70, Workload(2048, 256, concurrency=16), b) for b in (None, sync)
    ]
    extra = busy[0].ttft_ms - busy[1].ttft_ms
    scale = llama70.overhead.prefill_scale
    assert 0.5 * busy[0].tpot_ms * scale < extra < 1.5 * busy[0].tpot_ms * scale


# ------------------------------------------------------------------ speculative decoding (MTP)
@pytest.fixture(scope="module")
def deepseek_b200():
    return AnalyticalStepModel.from_names(
        model="deepseek-ai/DeepSeek-R1", system="b200_sxm", tp=8, dtype="fp8", backend="trtllm"
    )


def test_mtp_tokens_per_step_follow_the_published_acceptance():
    from simulator.batch import DEEPSEEK_MTP_ACCEPTANCE, tokens_per_step

    # TensorRT-LLM's measured tokens per step for DeepSeek-R1, MTP depth 1-5
    for k, published in zip(range(1, 6), (1.92, 2.58, 2.82, 2.99, 3.01), strict=True):
        assert tokens_per_step(k, DEEPSEEK_MTP_ACCEPTANCE) == pytest.approx(published)
    assert tokens_per_step(0, DEEPSEEK_MTP_ACCEPTANCE) == 1.0
    assert BatchingConfig(speculative_tokens=9).tokens_per_step == pytest.approx(3.01)
    with pytest.raises(ValueError, match="speculative_tokens"):
        BatchingConfig(speculative_tokens=-1)
    with pytest.raises(ValueError, match="draft_acceptance"):
        BatchingConfig(speculative_tokens=1, draft_acceptance=(1.2,))


def test_a_speculative_step_verifies_the_drafts_and_runs_the_draft_head(deepseek_b200):
    from simulator.batch import BatchShape

    m = deepseek_b200
    plain = m.decode_step_ms(8, 2000)
    spec = m.decode_step_ms(8, 2000, draft_tokens=3)
    # the target computes 4 tokens per sequence, the MTP layer runs 3 times: dearer, but far
    # less than 4 plain steps (decode is memory bound)
    assert plain < spec < 2 * plain
    assert m.draft_ms(8, 2000, 3) > 0 and m.draft_ms(8, 2000, 0) == 0.0
    # the engine's batch pricing agrees with the fast path
    shape = BatchShape(decode_context_tokens=np.full(8, 2000), cuda_graph_batch=8, draft_tokens=3)
    assert shape.num_tokens == 32
    assert m.step_time_ms(shape) == pytest.approx(spec, rel=1e-9)


def test_mtp_cuts_a_lone_clients_tpot_by_the_tokens_per_step(deepseek_b200):
    wl = Workload(1024, 1024, concurrency=1)
    plain = estimate_aggregated(deepseek_b200, wl)
    b = BatchingConfig(speculative_tokens=3)
    mtp = estimate_aggregated(deepseek_b200, wl, b)
    step = deepseek_b200.decode_step_ms(1, 1024 + 1024 / 2, draft_tokens=3)
    assert mtp.tpot_ms == pytest.approx(step / 2.82, rel=0.05)
    assert mtp.tpot_ms < plain.tpot_ms
    # the MTP module's weights and KV come out of the cache
    assert mtp.memory.kv_capacity_tokens < plain.memory.kv_capacity_tokens
    # under load too, and Little's law still holds
    loaded = estimate_aggregated(deepseek_b200, Workload(1024, 1024, concurrency=64), b)
    assert (
        loaded.tpot_ms
        < estimate_aggregated(deepseek_b200, Workload(1024, 1024, concurrency=64)).tpot_ms
    )
    assert loaded.request_rate_per_s == pytest.approx(
        64 / (loaded.request_latency_ms / 1e3), rel=1e-6
    )


def test_mtp_needs_a_checkpoint_with_an_mtp_module(llama70):
    with pytest.raises(ValueError, match="num_nextn_predict_layers"):
        estimate_aggregated(
            llama70, Workload(1024, 128, concurrency=4), BatchingConfig(speculative_tokens=1)
        )


# ------------------------------------------------------------------ TensorRT-LLM batching delays
def test_tensorrt_llm_holds_prompts_by_its_batching_delays():
    from simulator.analytical import held_prompt_steps

    trt = AnalyticalStepModel.from_names(
        model="meta-llama/Llama-3.1-70B", system="h200_sxm", tp=2, dtype="fp8", backend="trtllm"
    )
    wait = BatchingConfig(batch_wait_iters=20, batch_wait_tokens_ratio=0.9)
    # rare arrivals: every prompt waits the whole window
    assert held_prompt_steps(trt, wait, 1e-6, 1000, 10) == pytest.approx(20, rel=1e-3)
    # frequent ones share the window, or fill the token threshold first
    assert held_prompt_steps(trt, wait, 0.2, 1000, 10) < 20
    assert (
        held_prompt_steps(
            trt,
            BatchingConfig(
                max_num_batched_tokens=2048, batch_wait_iters=20, batch_wait_tokens_ratio=0.9
            ),
            0.5,
            1000,
            10,
        )
        < 3
    )
    # decodes alone over the threshold, no timeout, or another engine: nothing is held
    assert held_prompt_steps(trt, wait, 0.01, 1000, 8000) == 0.0
    assert held_prompt_steps(trt, BatchingConfig(batch_wait_tokens_ratio=0.9), 0.01, 1000, 0) == 0
    vllm = AnalyticalStepModel.from_names(
        model="meta-llama/Llama-3.1-70B", system="h200_sxm", tp=2, dtype="fp8"
    )
    assert held_prompt_steps(vllm, wait, 0.01, 1000, 0) == 0
    # the closed loop: a held prompt's TTFT rises by about the held steps
    wl = Workload(1024, 1024, concurrency=16)
    free = estimate_aggregated(trt, wl)
    held = estimate_aggregated(trt, wl, wait)
    assert held.ttft_ms - free.ttft_ms > 10 * free.tpot_ms * trt.overhead.prefill_scale
    assert held.tpot_ms == pytest.approx(free.tpot_ms, rel=0.05)


def test_attention_dp_balance_holds_half_its_timeout_on_average():
    from simulator.analytical import held_prompt_steps

    dp = AnalyticalStepModel.from_names(
        model="deepseek-ai/DeepSeek-R1",
        system="b200_sxm",
        attention_dp=8,
        ep=8,
        dtype="fp8",
        backend="trtllm",
    )
    cfg = BatchingConfig(attention_dp_balance_iters=60)
    assert held_prompt_steps(dp, cfg, 0.01, 1000, 10) == 30
    assert held_prompt_steps(dp, BatchingConfig(), 0.01, 1000, 10) == 0
    with pytest.raises(ValueError, match="attention_dp_balance_iters"):
        BatchingConfig(attention_dp_balance_iters=-1)


def test_run_ttft_p90_of_a_mixture():
    none = np.empty(0)
    # the steady state alone: its own p90, or its mean when that p90 is not above it
    assert run_ttft_p90(none, 0.0, 100.0, 180.0) == pytest.approx(180.0, rel=1e-5)
    assert run_ttft_p90(none, 0.0, 100.0, 60.0) == pytest.approx(100.0, rel=1e-5)
    burst = np.arange(1, 11) * 100.0  # 100 .. 1000 ms
    # every request in the burst: its 9th of 10 values
    assert run_ttft_p90(burst, 1.0, 10.0, 10.0) == pytest.approx(900.0, rel=1e-5)
    # half the requests in the burst at a fixed steady 10 ms: the burst's 80th percentile
    assert run_ttft_p90(burst, 0.5, 10.0, 10.0) == pytest.approx(800.0, rel=1e-5)
    # a burst share below 10%: the p90 is the steady state's, under a mean the burst pulls up
    p90 = run_ttft_p90(burst, 0.05, 10.0, 10.0)
    assert p90 == pytest.approx(10.0, rel=1e-5) and p90 < 0.05 * burst.mean() + 0.95 * 10.0
    assert math.isinf(run_ttft_p90(burst, 0.5, math.inf, math.inf))


def test_ttft_p90_carries_the_fixed_ttft_and_prefill_scale(llama70):
    """The fitted TTFT constants apply to every request, so to the p90 as to the mean; an
    open loop has no burst, so its p90 is never below its mean."""
    from dataclasses import replace

    wl = Workload(2048, 256, request_rate=4.0, isl_p90=4096)
    base = estimate_aggregated(llama70, wl)
    assert base.ttft_p90_ms >= base.ttft_ms
    shifted = llama70.with_overhead(
        replace(llama70.overhead, ttft_ms=llama70.overhead.ttft_ms + 500)
    )
    est = estimate_aggregated(shifted, wl)
    assert est.ttft_ms - base.ttft_ms == pytest.approx(500.0, rel=1e-9)
    assert est.ttft_p90_ms - base.ttft_p90_ms == pytest.approx(500.0, rel=1e-9)
    d = estimate_disaggregated(llama70, llama70, wl, prefill_workers=1, decode_workers=1)
    assert d.ttft_p90_ms >= d.ttft_ms


def test_lockstep_clients_take_the_burst_p90(llama70):
    """SGLang's scheduler keeps equal-length clients in lockstep: every request is in a burst,
    so the p90 is the burst's, above its mean."""
    sglang = AnalyticalStepModel.from_names(
        model="meta-llama/Llama-3.1-70B", system="h200_sxm", tp=4, dtype="fp8", backend="sglang"
    )
    est = estimate_aggregated(sglang, Workload(1024, 512, concurrency=64))
    bursts = burst_ttfts_ms(sglang, 64, 1024, 8192)
    ov = sglang.overhead
    expected = bursts[int(np.ceil(0.9 * len(bursts))) - 1] * ov.prefill_scale + ov.ttft_ms
    assert est.ttft_p90_ms == pytest.approx(expected, rel=1e-5)
    assert est.ttft_p90_ms > est.ttft_ms


def test_a_saturated_prefill_server_caps_throughput_and_queues_the_rest():
    """Past the prefill server's saturation more clients only wait: tokens/s stay flat and
    TTFT grows with the clients (the closed-loop solve once stopped within 0.2% of the rate,
    leaving most clients unplaced: tokens/s per GPU doubled from 256 to 1024 clients)."""
    qwen = AnalyticalStepModel.from_names(model="Qwen/Qwen3-32B", system="h200_sxm", tp=8)
    batching = BatchingConfig(max_num_batched_tokens=2048, max_num_seqs=1024)
    ests = [
        estimate_aggregated(qwen, Workload(4000, 500, concurrency=c), batching)
        for c in (512, 768, 1024)
    ]
    assert min(e.prefill_utilization for e in ests) > 0.99
    thr = [e.output_tok_s_per_gpu for e in ests]
    assert max(thr) / min(thr) < 1.05, thr
    ttft = [e.ttft_ms for e in ests]
    assert ttft == sorted(ttft) and ttft[-1] > 2 * ttft[0], ttft
