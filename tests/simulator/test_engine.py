"""The discrete-event serving engine against a linear test-double cost model.

The engine is model-agnostic (it only calls ``StepCostModel.step_time_ms``), so these tests
price steps with a transparent linear model whose step times can be computed by hand.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from simulator import (
    Cluster,
    EngineConfig,
    EventLoop,
    KVTransfer,
    Replica,
    StepNoise,
    Trace,
    single_replica,
)
from simulator.batch import BatchShape


class LinearCost:
    """``base + per_prefill_token * new + per_kv_token * decode KV + per_seq * decodes`` (ms)."""

    def __init__(self, base=5.0, prefill=0.01, kv=1e-4, seq=0.05, record=False):
        self.base, self.prefill, self.kv, self.seq = base, prefill, kv, seq
        self.calls: list[BatchShape] | None = [] if record else None

    def step_time_ms(self, batch: BatchShape) -> float:
        if self.calls is not None:
            self.calls.append(batch)
        return (
            self.base
            + self.prefill * float(batch.prefill_new_tokens.sum())
            + self.kv * float(batch.decode_context_tokens.sum())
            + self.seq * len(batch.decode_context_tokens)
        )


def quiet(**kw) -> EngineConfig:
    return EngineConfig(step_noise_cv=0.0, run_noise_cv=0.0, **kw)


def run_one(trace, config=None, model=None, blocks=100_000, seed=0):
    cluster = single_replica(config or quiet(), model or LinearCost(), blocks)
    return cluster.run(trace, seed=seed), cluster


# ------------------------------------------------------------------ event loop
def test_event_loop_orders_by_time_then_priority_then_insertion():
    loop = EventLoop()
    seen = []

    def h(now, tag):
        seen.append(tag)

    loop.schedule(5.0, 1, h, "t5-p1-first")
    loop.schedule(5.0, 0, h, "t5-p0")
    loop.schedule(5.0, 1, h, "t5-p1-second")
    loop.schedule(1.0, 9, h, "t1")
    assert loop.run() == 4
    assert seen == ["t1", "t5-p0", "t5-p1-first", "t5-p1-second"]
    with pytest.raises(ValueError, match="before the clock"):
        loop.schedule(1.0, 0, h, None)


# ------------------------------------------------------------------ exact timings
def test_single_request_ttft_and_tpot_match_the_cost_model_by_hand():
    model = LinearCost()
    res, _ = run_one(Trace([0.0], [1000], [5]), model=model)
    row = res.requests.iloc[0]
    prefill = 5.0 + 0.01 * 1000
    assert row["ttft_ms"] == pytest.approx(prefill)
    # decode steps k = 1..4 read KV of 1000 + k tokens
    decodes = [5.0 + 1e-4 * (1000 + k) + 0.05 for k in range(1, 5)]
    assert row["e2e_ms"] == pytest.approx(prefill + sum(decodes))
    assert row["tpot_ms"] == pytest.approx(sum(decodes) / 4)
    assert row["queue_ms"] == 0.0
    assert row["status"] == "ok"


def test_chunked_prefill_splits_a_long_prompt_over_steps():
    res, _ = run_one(Trace([0.0], [2500], [2]), quiet(max_num_batched_tokens=1000))
    # chunks of 1000, 1000, 500 tokens
    expected = 3 * 5.0 + 0.01 * 2500
    assert res.requests["ttft_ms"].iloc[0] == pytest.approx(expected)
    steps = res.steps
    assert steps["prefill_tokens"].tolist()[:3] == [1000, 1000, 500]


def test_prompt_longer_than_budget_without_chunking_is_rejected_and_reported():
    trace = Trace([0.0, 1.0], [3000, 100], [4, 4])
    res, _ = run_one(trace, quiet(max_num_batched_tokens=2048, enable_chunked_prefill=False))
    assert res.requests["status"].tolist() == ["rejected", "ok"]
    assert "max_num_batched_tokens" in res.requests["reject_reason"].iloc[0]
    assert res.summary()["rejected"] == 1


def test_max_model_len_and_kv_capacity_rejections_are_counted_not_dropped():
    trace = Trace([0.0, 0.0, 0.0], [100, 5000, 300], [10, 10, 10])
    res, _ = run_one(trace, quiet(max_model_len=4096), blocks=200)
    assert res.requests["status"].tolist() == ["ok", "rejected", "ok"]
    res2, _ = run_one(Trace([0.0], [5000], [10]), quiet(), blocks=100)  # 100 blocks = 1600 tokens
    assert res2.requests["status"].iloc[0] == "rejected"
    assert "KV blocks" in res2.requests["reject_reason"].iloc[0]


# ------------------------------------------------------------------ scheduler behaviour
def test_max_num_seqs_caps_the_running_batch_and_queues_the_rest():
    trace = Trace(np.zeros(20), np.full(20, 50), np.full(20, 30))
    res, _ = run_one(trace, quiet(max_num_seqs=4))
    assert res.steps["running"].max() == 4
    assert (res.requests["status"] == "ok").all()
    # later requests wait for a slot
    assert res.requests["queue_ms"].iloc[-1] > 0
    assert res.requests["queue_ms"].iloc[0] == 0


def test_cuda_graph_batch_padding_only_on_decode_only_steps():
    model = LinearCost(record=True)
    trace = Trace([0.0, 0.0, 0.0], [64, 64, 64], [6, 6, 6])
    run_one(trace, quiet(decode_span_steps=1), model=model)
    mixed = [b for b in model.calls if len(b.prefill_new_tokens)]
    decode = [b for b in model.calls if not len(b.prefill_new_tokens)]
    assert mixed and decode
    assert all(b.cuda_graph_batch is None for b in mixed)
    assert all(b.cuda_graph_batch == 4 for b in decode)  # 3 sequences padded to capture size 4
    eager = LinearCost(record=True)
    run_one(trace, quiet(cuda_graphs=False), model=eager)
    assert all(b.cuda_graph_batch is None for b in eager.calls)


def test_tiny_kv_cache_preempts_by_recompute_and_still_completes_everything():
    trace = Trace(np.zeros(16), np.full(16, 200), np.full(16, 300))
    small, cl = run_one(trace, quiet(), blocks=120)  # 1920 tokens for 16 x 500
    large, _ = run_one(trace, quiet(), blocks=10_000)
    assert small.num_preemptions > 0
    assert large.num_preemptions == 0
    assert (small.requests["status"] == "ok").all()
    assert small.requests["output_tokens"].sum() == 16 * 300
    assert small.requests["e2e_ms"].mean() > large.requests["e2e_ms"].mean()
    # every block came back
    pool = cl.engines[0].pool
    assert pool.used == 0
    assert pool.free_empty + len(pool.evictable) == pool.num_blocks


def test_prefix_caching_hits_shared_hash_blocks_and_cuts_ttft():
    shared = tuple(range(8))  # 8 x 512 = 4096 shared prefix tokens
    hashes = [(*shared, 100 + i) for i in range(10)]
    trace = Trace(
        np.arange(10) * 2000.0, np.full(10, 4096 + 300), np.full(10, 5), hash_ids=tuple(hashes)
    )
    on, _ = run_one(trace, quiet(enable_prefix_caching=True))
    off, _ = run_one(trace, quiet(enable_prefix_caching=False))
    assert on.requests["prefix_hit_tokens"].iloc[0] == 0
    assert (on.requests["prefix_hit_tokens"].iloc[1:] == 4096).all()
    assert (off.requests["prefix_hit_tokens"] == 0).all()
    assert on.requests["ttft_ms"].iloc[1:].mean() < 0.5 * off.requests["ttft_ms"].iloc[1:].mean()


def test_priority_policy_serves_urgent_requests_first():
    # a long request occupies the only slot; then a low-priority and an urgent one queue up
    trace = Trace([0.0, 1.0, 2.0], [100, 100, 100], [50, 5, 5], priority=[0, 5, 0])
    fcfs, _ = run_one(trace, quiet(max_num_seqs=1, scheduling_policy="fcfs"))
    prio, _ = run_one(trace, quiet(max_num_seqs=1, scheduling_policy="priority"))
    f, p = fcfs.requests.set_index("request_id"), prio.requests.set_index("request_id")
    assert f.loc[1, "first_token_ms"] < f.loc[2, "first_token_ms"]
    assert p.loc[2, "first_token_ms"] < p.loc[1, "first_token_ms"]


# ------------------------------------------------------------------ decode spans
@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("async_scheduling, recv", [(True, 1), (False, 1), (True, 7)])
def test_decode_spans_match_step_by_step_simulation(seed, async_scheduling, recv):
    rng = np.random.default_rng(seed)
    n = 60
    trace = Trace(
        np.sort(rng.uniform(0, 3000, n)), rng.integers(10, 2000, n), rng.integers(1, 200, n)
    )
    # with noise too: a span consumes the per-step noise stream exactly as single steps do
    noisy = {
        "step_noise_cv": 0.1,
        "run_noise_cv": 0.05,
        "max_num_seqs": 16,
        "async_scheduling": async_scheduling,
        "scheduler_recv_interval": recv,
    }
    slow, _ = run_one(trace, EngineConfig(decode_span_steps=1, **noisy), blocks=600, seed=seed)
    fast, _ = run_one(trace, EngineConfig(**noisy), blocks=600, seed=seed)
    assert fast.events < slow.events
    for col in ("ttft_ms", "e2e_ms", "finish_ms"):
        np.testing.assert_allclose(fast.requests[col], slow.requests[col], rtol=1e-9, atol=1e-6)
    assert fast.num_preemptions == slow.num_preemptions
    assert fast.num_steps == slow.num_steps


# ------------------------------------------------------------------ noise and determinism
def test_step_noise_has_mean_one_and_the_requested_cv():
    f = StepNoise(0.2).factors(np.random.default_rng(3), 200_000)
    assert f.mean() == pytest.approx(1.0, abs=0.003)
    assert f.std() / f.mean() == pytest.approx(0.2, rel=0.02)
    assert np.all(StepNoise(0.0).factors(np.random.default_rng(3), 5) == 1.0)


def test_same_seed_identical_results_other_seed_different():
    rng = np.random.default_rng(5)
    trace = Trace(
        np.sort(rng.uniform(0, 5000, 80)), rng.integers(10, 3000, 80), rng.integers(1, 300, 80)
    )
    cfg = EngineConfig(step_noise_cv=0.1, max_num_seqs=8)
    a, _ = run_one(trace, cfg, seed=11)
    b, _ = run_one(trace, cfg, seed=11)
    c, _ = run_one(trace, cfg, seed=12)
    assert a.requests.equals(b.requests)
    assert not np.allclose(a.requests["e2e_ms"], c.requests["e2e_ms"])


# ------------------------------------------------------------------ invariants
@given(
    n=st.integers(1, 25),
    seqs=st.integers(1, 12),
    budget=st.sampled_from([64, 256, 2048]),
    blocks=st.integers(40, 400),
    chunked=st.booleans(),
    caching=st.booleans(),
    block_size=st.sampled_from([16, 32]),
    seed=st.integers(0, 10_000),
)
def test_every_request_ends_and_every_block_returns(
    n, seqs, budget, blocks, chunked, caching, block_size, seed
):
    rng = np.random.default_rng(seed)
    hashes = tuple((0, 1, int(rng.integers(2, 5))) for _ in range(n))
    trace = Trace(
        np.sort(rng.uniform(0, 500, n)),
        rng.integers(1, 1800, n),
        rng.integers(1, 120, n),
        hash_ids=hashes,
    )
    cfg = EngineConfig(
        max_num_seqs=seqs,
        max_num_batched_tokens=budget,
        enable_chunked_prefill=chunked,
        enable_prefix_caching=caching,
        block_size=block_size,
        step_noise_cv=0.05,
    )
    res, cl = run_one(trace, cfg, blocks=blocks, seed=seed)
    r = res.requests
    assert len(r) == n and set(r["status"]) <= {"ok", "rejected"}
    ok = r[r["status"] == "ok"]
    assert (ok["first_token_ms"] >= ok["arrival_ms"]).all()
    assert (ok["finish_ms"] >= ok["first_token_ms"]).all()
    assert (ok["first_scheduled_ms"] >= ok["arrival_ms"]).all()
    assert (res.steps["running"] <= seqs).all()
    assert (res.steps["kv_used_blocks"] <= blocks).all()
    pool = cl.engines[0].pool
    assert pool.used == 0 and pool.free_empty >= 0
    assert pool.free_empty + len(pool.evictable) == pool.num_blocks
    tokens = res.steps["prefill_tokens"] + res.steps["decode_seqs"]
    assert (tokens <= budget).all()


# ------------------------------------------------------------------ cluster
def test_round_robin_and_least_loaded_routing():
    trace = Trace(np.arange(40) * 1.0, np.full(40, 100), np.full(40, 20))
    reps = [Replica(quiet(), LinearCost(), 10_000) for _ in range(4)]
    rr = Cluster(reps, router="round_robin").run(trace)
    assert rr.requests["replica"].value_counts().tolist() == [10, 10, 10, 10]
    # one slow replica: least-loaded sends it fewer requests
    slow = Replica(quiet(), LinearCost(base=50.0), 10_000)
    ll = Cluster([slow, reps[0]], router="least_loaded").run(
        Trace(np.arange(200) * 5.0, np.full(200, 100), np.full(200, 20))
    )
    counts = ll.requests["replica"].value_counts()
    assert counts[0] < counts[1]


def test_least_loaded_counts_requests_still_in_the_front_end():
    """A burst arrives at once; each request reaches its engine after the front end's
    latency. The router must count those in flight, or the whole burst lands on one engine."""
    trace = Trace(np.zeros(32), np.full(32, 100), np.full(32, 20))
    reps = [Replica(quiet(frontend_latency_ms=50.0), LinearCost(), 10_000) for _ in range(4)]
    res = Cluster(reps, router="least_loaded").run(trace)
    assert res.requests["replica"].value_counts().tolist() == [8, 8, 8, 8]


def test_replicas_can_run_different_configs_at_once():
    trace = Trace(np.zeros(64), np.full(64, 128), np.full(64, 64))
    cl = Cluster(
        [
            Replica(quiet(max_num_seqs=4), LinearCost(), 10_000),
            Replica(quiet(max_num_seqs=64), LinearCost(), 10_000),
        ]
    )
    res = cl.run(trace)
    by = res.requests.groupby("replica")
    assert by["tpot_ms"].mean()[0] < by["tpot_ms"].mean()[1]
    assert by["ttft_ms"].mean()[0] > by["ttft_ms"].mean()[1]


def test_disaggregated_prefill_decode_with_kv_transfer():
    trace = Trace(np.arange(10) * 100.0, np.full(10, 1000), np.full(10, 20))
    xfer = KVTransfer(kv_bytes_per_token=131072.0, bandwidth_gb_s=50.0, latency_ms=1.0)
    cl = Cluster(
        [Replica(quiet(), LinearCost(), 10_000)],
        prefill_replicas=[Replica(quiet(), LinearCost(), 10_000)],
        kv_transfer=xfer,
    )
    res = cl.run(trace)
    r = res.requests
    assert (r["status"] == "ok").all()
    assert (r["replica"] == 1).all()  # finished on the decode replica
    # TTFT: the prefill step, then the KV transfer to the decode replica that streams the token
    transfer = xfer.time_ms(1000)
    assert transfer == pytest.approx(1.0 + 1000 * 131072 / 5e10 * 1e3)
    assert r["ttft_ms"].iloc[0] == pytest.approx(5.0 + 10.0 + transfer)
    # then 19 decode steps on the decode replica
    assert r["e2e_ms"].iloc[0] > r["ttft_ms"].iloc[0] + 19 * 5.0
    prefill_steps = res.steps[res.steps["replica"] == 0]
    assert (prefill_steps["decode_seqs"] == 0).all()


def test_closed_loop_keeps_concurrency_clients_busy():
    from simulator import LengthDistribution

    cl = single_replica(quiet(), LinearCost(), 10_000)
    res = cl.run_closed_loop(8, LengthDistribution.fixed(128, 32), num_requests=200, seed=0)
    assert len(res.requests) == 200 and (res.requests["status"] == "ok").all()
    assert res.steps["running"].max() == 8
    # a request is sent only when an earlier one finishes: at most 8 outstanding at any time
    arr = res.requests["arrival_ms"].to_numpy()
    fin = np.sort(res.requests["finish_ms"].to_numpy())
    assert all(np.sum(fin <= t) >= i - 7 for i, t in enumerate(arr))


# ------------------------------------------------------------------ validation
@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"max_num_seqs": 0}, "max_num_seqs"),
        ({"max_num_batched_tokens": 1.5}, "max_num_batched_tokens"),
        ({"gpu_memory_utilization": 1.2}, "gpu_memory_utilization"),
        ({"scheduling_policy": "lifo"}, "scheduling_policy"),
        ({"step_noise_cv": -1.0}, "cv"),
        ({"num_kv_blocks": 0}, "num_kv_blocks"),
        ({"cuda_graphs": "yes"}, "cuda_graphs"),
    ],
)
def test_engine_config_rejects_bad_values_by_name(kw, match):
    with pytest.raises(ValueError, match=match):
        EngineConfig(**kw)


def test_cluster_rejects_bad_construction():
    with pytest.raises(ValueError, match="at least one replica"):
        Cluster([])
    with pytest.raises(ValueError, match="router"):
        Cluster([Replica(quiet(), LinearCost(), 10)], router="random")
    with pytest.raises(ValueError, match="kv_transfer"):
        Cluster(
            [Replica(quiet(), LinearCost(), 10)],
            prefill_replicas=[Replica(quiet(), LinearCost(), 10)],
        )
    with pytest.raises(ValueError, match="step_time_ms"):
        Replica(quiet(), object(), 10)
    with pytest.raises(ValueError, match="concurrency"):
        single_replica(quiet(), LinearCost(), 10).run_closed_loop(0, None, 10)


def test_step_model_returning_garbage_is_reported():
    class Broken:
        def step_time_ms(self, batch):
            return math.nan

    with pytest.raises(ValueError, match="finite"):
        single_replica(quiet(), Broken(), 1000).run(Trace([0.0], [10], [2]))


def test_frontend_latency_delays_scheduling_and_counts_in_ttft():
    trace = Trace([0.0, 1.0], [1000, 1000], [3, 3])
    base, _ = run_one(trace, quiet())
    late, _ = run_one(trace, quiet(frontend_latency_ms=40.0))
    np.testing.assert_allclose(late.requests["ttft_ms"], base.requests["ttft_ms"] + 40.0)
    np.testing.assert_allclose(
        late.requests["first_scheduled_ms"], base.requests["first_scheduled_ms"] + 40.0
    )
    assert (late.requests["queue_ms"] >= 40.0).all()
    with pytest.raises(ValueError, match="frontend_latency_ms"):
        EngineConfig(frontend_latency_ms=-1.0)


def test_async_scheduling_sees_a_busy_engines_arrival_one_step_later():
    # A decodes alone in ~5 ms steps; B arrives in the middle of one of them
    trace = Trace([0.0, 17.0], [100, 100], [40, 3])
    sync, _ = run_one(trace, quiet(async_scheduling=False))
    overlap, _ = run_one(trace, quiet())
    s, a = sync.requests.set_index("request_id"), overlap.requests.set_index("request_id")
    # an idle engine schedules a request at once either way
    assert a.loc[0, "ttft_ms"] == s.loc[0, "ttft_ms"]
    # synchronous: B joins the first step after it arrives
    boundary = s.loc[1, "first_scheduled_ms"]
    assert 17.0 < boundary < 17.0 + 5.1 + 1e-9
    # asynchronous: that step was planned before B arrived (A's decode alone), B joins the next
    steps = overlap.steps.set_index("start_ms")
    assert steps.loc[boundary, "prefill_tokens"] == 0
    assert a.loc[1, "first_scheduled_ms"] == pytest.approx(steps.loc[boundary, "end_ms"])
    lag = a.loc[1, "ttft_ms"] - s.loc[1, "ttft_ms"]
    # one decode step of A (B's own prefill step then reads one more token of A's KV)
    assert lag == pytest.approx(steps.loc[boundary, "end_ms"] - boundary, abs=1e-3)
    assert 5.0 < lag < 5.1


@pytest.mark.parametrize("async_scheduling", [False, True])
def test_sglang_receive_interval_holds_arrivals_until_enough_decode_steps(async_scheduling):
    # A: a prefill step, then decode steps alone; B arrives during A's second decode step.
    # With --scheduler-recv-interval 4 the scheduler takes B in only at the boundary after
    # the 4th decode step since it last received (right after A's prefill step).
    trace = Trace([0.0, 17.0], [1000, 100], [40, 3])
    cfg = quiet(scheduler_recv_interval=4, decode_span_steps=1, async_scheduling=async_scheduling)
    res, _ = run_one(trace, cfg)
    steps = res.steps.reset_index(drop=True)
    assert steps.loc[0, "prefill_tokens"] == 1000  # A alone; an idle engine takes it at once
    received = steps.loc[4, "end_ms"]  # A's 4th decode step (rows 1-4) ends
    assert steps.loc[1:4, "prefill_tokens"].eq(0).all()
    assert steps.loc[1, "start_ms"] < 17.0 < steps.loc[2, "end_ms"]
    b = res.requests.set_index("request_id").loc[1]
    # synchronous: B joins the step that starts there; asynchronous: the one after it
    expected = received if not async_scheduling else steps.loc[5, "end_ms"]
    assert b["first_scheduled_ms"] == pytest.approx(expected)
    # the interval only delays: with the default of 1 B starts right after it arrives
    quick, _ = run_one(trace, quiet(decode_span_steps=1, async_scheduling=async_scheduling))
    assert quick.requests.set_index("request_id").loc[1, "first_scheduled_ms"] < expected
    # decode spans stop at the receive boundary: same results as step by step
    spans, _ = run_one(trace, quiet(scheduler_recv_interval=4, async_scheduling=async_scheduling))
    np.testing.assert_allclose(spans.requests["ttft_ms"], res.requests["ttft_ms"], rtol=1e-9)
    np.testing.assert_allclose(spans.requests["e2e_ms"], res.requests["e2e_ms"], rtol=1e-9)


def random_trace(seed, n, span_ms, prompts, outputs):
    """``n`` uniform arrivals over ``span_ms`` with uniform prompt and output lengths."""
    rng = np.random.default_rng(seed)
    return Trace(
        np.sort(rng.uniform(0, span_ms, n)), rng.integers(*prompts, n), rng.integers(*outputs, n)
    )


def test_a_non_mixing_scheduler_never_puts_prefill_and_decode_in_one_step():
    """SGLang's default scheduler: prefill steps and decode steps alternate, prefill first, so
    arrivals stall the decodes (higher TPOT)."""
    n = 300
    trace = random_trace(0, n, 60_000, (200, 2000), (20, 200))
    out = {}
    for mixed in (True, False):
        res, _ = run_one(trace, quiet(max_num_seqs=32, mixed_batching=mixed), blocks=4000)
        st = res.steps
        both = ((st["prefill_tokens"] > 0) & (st["decode_seqs"] > 0)).sum()
        ok = res.requests[res.requests["status"] == "ok"]
        out[mixed] = (both, ok["ttft_ms"].mean(), ok["tpot_ms"].mean(), len(ok))
    assert out[True][0] > 0 and out[False][0] == 0
    assert out[False][3] == out[True][3] == n  # every request served either way
    assert out[False][2] > out[True][2]  # decodes wait behind every prefill


def test_a_non_mixing_scheduler_under_kv_pressure_still_drains():
    """A prompt chunk that preempts its own request for KV blocks leaves the prefill step empty:
    the step must fall back to the decodes, never strand the queue."""
    trace = random_trace(1, 60, 2000, (200, 600), (50, 300))
    cfg = quiet(max_num_seqs=64, mixed_batching=False, max_num_batched_tokens=64)
    res, _ = run_one(trace, cfg, blocks=60)
    assert (res.requests["status"] == "ok").all()
    assert res.num_preemptions > 0


def test_a_non_mixing_decode_pool_takes_hand_offs_without_prefill_steps():
    """On a disaggregated decode worker, a hand-off (KV already there) joins the decodes; it is
    not a prefill that stalls them."""
    n = 120
    trace = random_trace(2, n, 20_000, (200, 1000), (50, 200))
    tpot = {}
    for mixed in (True, False):
        cl = Cluster(
            [Replica(quiet(mixed_batching=mixed), LinearCost(), 10_000)],
            prefill_replicas=[Replica(quiet(), LinearCost(), 10_000)],
            kv_transfer=KVTransfer(kv_bytes_per_token=1e5, bandwidth_gb_s=50.0),
        )
        res = cl.run(trace, seed=0)
        ok = res.requests[res.requests["status"] == "ok"]
        assert len(ok) == n
        tpot[mixed] = ok["tpot_ms"].mean()
    assert tpot[False] == pytest.approx(tpot[True], rel=0.02)


# ------------------------------------------------------------------ speculative decoding (MTP)
def test_speculative_decodes_verify_drafts_and_advance_by_the_accepted_tokens():
    model = LinearCost(record=True)
    # 1.5 tokens per step; step by step, so every step is priced once
    cfg = quiet(speculative_tokens=1, draft_acceptance=(0.5,), decode_span_steps=1)
    res, _ = run_one(Trace([0.0], [100], [11]), cfg, model=model)
    decodes = [b for b in model.calls if len(b.decode_context_tokens)]
    assert all(b.draft_tokens == 1 and b.num_tokens == 2 for b in decodes)
    # 10 tokens after the first at 1.5 per step (carried fractions: 1, 2, 1, 2, ...): 7 steps
    assert len(decodes) == 7
    row = res.requests.iloc[0]
    assert row["status"] == "ok"
    assert row["tpot_ms"] == pytest.approx(sum(map(model.step_time_ms, decodes)) / 10)


def test_speculative_decodes_take_their_drafts_out_of_the_token_budget():
    model = LinearCost(record=True)
    cfg = quiet(speculative_tokens=3, max_num_batched_tokens=10, decode_span_steps=1)
    run_one(Trace([0.0, 0.0, 0.0], [5, 5, 5], [20, 20, 20]), cfg, model=model)
    # three decoding requests need 12 tokens: at most two fit a step of 10
    assert max(len(b.decode_context_tokens) for b in model.calls) == 2
    assert max(b.num_tokens for b in model.calls) <= 10


@pytest.mark.parametrize("seed", [0, 1])
def test_speculative_decode_spans_match_step_by_step_simulation(seed):
    rng = np.random.default_rng(seed)
    n = 40
    trace = Trace(
        np.sort(rng.uniform(0, 3000, n)), rng.integers(10, 2000, n), rng.integers(1, 200, n)
    )
    kw = {"max_num_seqs": 16, "speculative_tokens": 3}
    slow, _ = run_one(trace, quiet(decode_span_steps=1, **kw), blocks=600, seed=seed)
    fast, _ = run_one(trace, quiet(**kw), blocks=600, seed=seed)
    assert fast.events < slow.events
    assert (fast.requests["status"] == "ok").all() and (slow.requests["status"] == "ok").all()
    # a span prices its steps by interpolating the KV growth of alpha tokens per step
    for col in ("ttft_ms", "e2e_ms"):
        np.testing.assert_allclose(fast.requests[col], slow.requests[col], rtol=2e-3)
    plain, _ = run_one(trace, quiet(max_num_seqs=16), blocks=600, seed=seed)
    assert fast.requests["e2e_ms"].mean() < plain.requests["e2e_ms"].mean()


# ------------------------------------------------------------------ TensorRT-LLM batching delays
def _late_arrival(cfg, model=None, at=40.0):
    # A decodes for a long time; B arrives while A decodes
    return run_one(Trace([0.0, at], [100, 100], [200, 3]), cfg, model=model)


def test_batch_waiting_holds_a_prompt_while_others_decode_until_the_timeout():
    base = {"async_scheduling": False, "max_num_batched_tokens": 1000}
    free, _ = _late_arrival(quiet(**base))
    held, _ = _late_arrival(quiet(batch_wait_iters=5, batch_wait_tokens_ratio=0.9, **base))
    step = 5.0 + 1e-4 * 150 + 0.05  # a one-request decode step of LinearCost, roughly
    extra = held.requests.loc[1, "ttft_ms"] - free.requests.loc[1, "ttft_ms"]
    assert 4 * step < extra < 6.5 * step
    # enough waiting tokens release the prompt at once (100 prompt + 1 decode >= 0.1 x 1000)
    quick, _ = _late_arrival(quiet(batch_wait_iters=5, batch_wait_tokens_ratio=0.1, **base))
    assert quick.requests.loc[1, "ttft_ms"] == pytest.approx(free.requests.loc[1, "ttft_ms"])
    # an idle engine never waits
    alone, _ = run_one(Trace([0.0], [100], [3]), quiet(batch_wait_iters=5, **base))
    ref, _ = run_one(Trace([0.0], [100], [3]), quiet(**base))
    assert alone.requests.loc[0, "ttft_ms"] == pytest.approx(ref.requests.loc[0, "ttft_ms"])
    # decode spans stop where the held prompt goes in: same as step by step
    slow, _ = _late_arrival(quiet(batch_wait_iters=5, decode_span_steps=1, **base))
    fast, _ = _late_arrival(quiet(batch_wait_iters=5, **base))
    np.testing.assert_allclose(fast.requests["ttft_ms"], slow.requests["ttft_ms"], rtol=1e-9)
    np.testing.assert_allclose(fast.requests["e2e_ms"], slow.requests["e2e_ms"], rtol=1e-9)


def test_attention_dp_balance_holds_arrivals_like_a_receive_window():
    a, _ = _late_arrival(quiet(attention_dp_balance_iters=7), at=23.0)
    b, _ = _late_arrival(quiet(scheduler_recv_interval=7), at=23.0)
    free, _ = _late_arrival(quiet(), at=23.0)
    assert a.requests.equals(b.requests)
    assert a.requests.loc[1, "ttft_ms"] > free.requests.loc[1, "ttft_ms"]


# ------------------------------------------------------------------ KV admission policies
def _kv_pressure(policy, blocks=120, seed=0, mixed=True):
    """16 requests at once, 200-token prompts and 100-400 output tokens, on ``blocks`` blocks
    of 16 tokens (16 x 450 tokens need about 460)."""
    rng = np.random.default_rng(seed)
    trace = Trace(np.zeros(16), np.full(16, 200), rng.integers(100, 401, 16))
    cfg = quiet(kv_admission=policy, mixed_batching=mixed)
    return run_one(trace, cfg, blocks=blocks, seed=seed)


@pytest.mark.parametrize("policy", ["reserve", "lookahead"])
def test_reserving_policies_never_preempt_and_serve_everything(policy):
    res, cl = _kv_pressure(policy)
    eager, _ = _kv_pressure("on_demand")
    assert eager.num_preemptions > 0  # the same load makes vLLM's on-demand admission preempt
    assert res.num_preemptions == 0
    assert (res.requests["status"] == "ok").all()
    assert res.requests["output_tokens"].sum() == eager.requests["output_tokens"].sum()
    pool = cl.engines[0].pool
    assert pool.used == 0 and pool.free_empty + len(pool.evictable) == pool.num_blocks


def test_reserve_admits_only_what_fits_for_the_whole_lifetime():
    """TensorRT-LLM's GUARANTEED_NO_EVICT: the blocks the running requests will hold at their
    last token never exceed the cache, at any step."""
    res, _ = _kv_pressure("reserve")
    req = res.requests
    lifetime = -(-(req["prompt_tokens"] + req["output_tokens"]) // 16)
    starts, ends = req["first_scheduled_ms"].to_numpy(), req["finish_ms"].to_numpy()
    for t in res.steps["start_ms"].to_numpy():
        alive = (starts <= t) & (ends > t)
        assert lifetime[alive].sum() <= 120
    # later requests wait for earlier ones instead of taking their blocks
    assert req["ttft_ms"].max() > 2 * req["ttft_ms"].min()


def test_lookahead_admits_more_at_once_than_reserving_whole_lifetimes():
    """SGLang's ignore_eos check counts the tokens freed by requests that finish first, so it
    runs more requests at once than TensorRT-LLM's whole-lifetime reservation."""
    res = {p: _kv_pressure(p, blocks=200)[0] for p in ("reserve", "lookahead")}
    peak = {p: int(r.steps["running"].max()) for p, r in res.items()}
    assert peak["lookahead"] > peak["reserve"]
    assert res["lookahead"].requests["e2e_ms"].max() < res["reserve"].requests["e2e_ms"].max()


@pytest.mark.parametrize("mixed", [True, False])
def test_estimate_retracts_fewest_outputs_to_the_back_and_drains(mixed):
    """SGLang's general admission reserves a shrinking share of the remaining output; when
    decoding runs out of blocks it retracts, and every request still completes."""
    res, cl = _kv_pressure("estimate", blocks=90, mixed=mixed)
    assert (res.requests["status"] == "ok").all()
    assert res.num_preemptions > 0
    eng = cl.engines[0]
    assert eng.pool.used == 0
    # idle again: the ratio is back at its initial value
    from simulator.engine import SGLANG_INIT_NEW_TOKEN_RATIO

    assert eng._token_ratio == SGLANG_INIT_NEW_TOKEN_RATIO


def test_estimate_admits_fewer_at_once_than_on_demand():
    eager, _ = _kv_pressure("on_demand", blocks=200)
    est, _ = _kv_pressure("estimate", blocks=200)
    assert est.steps["running"].max() <= eager.steps["running"].max()
    assert est.num_preemptions <= eager.num_preemptions


def test_engine_config_rejects_an_unknown_kv_admission():
    with pytest.raises(ValueError, match="kv_admission"):
        EngineConfig(kv_admission="greedy")
