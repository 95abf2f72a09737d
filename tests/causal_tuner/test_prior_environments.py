"""The analytical prior and the simulated environments the tuner is benchmarked on."""

import itertools
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from causal_tuner.environments import (
    BiasedStepModel,
    PooledEnvironment,
    SimulatedEnvironment,
    WindowLoad,
    config_to_engine,
)
from causal_tuner.knobs import Knob, KnobSpace
from causal_tuner.objective import SLA, Objective
from causal_tuner.prior import AnalyticalPrior, config_to_batching, p_below
from simulator.batch import BatchShape
from simulator.cluster import Deployment
from simulator.workloads import LengthDistribution

OBJ = Objective(sla=SLA(ttft_ms=2000.0, tpot_ms=50.0))
CTX = {"request_rate_rps": 4.0, "mean_prompt_tokens": 1000.0, "mean_output_tokens": 200.0}


@given(mean=st.floats(1.0, 1e4), spread=st.floats(1.01, 10.0))
def test_p_below_is_a_distribution_function(mean, spread):
    p90 = mean * spread
    xs = np.geomspace(mean / 100, p90 * 100, 25)
    ps = [p_below(x, mean, p90) for x in xs]
    assert all(0.0 <= p <= 1.0 for p in ps)
    assert all(b >= a - 1e-12 for a, b in itertools.pairwise(ps))
    if spread < 2.2:  # a log-normal with exactly this mean and p90 exists
        assert p_below(p90, mean, p90) == pytest.approx(0.9, abs=1e-6)


def test_prior_flags_overload_and_infeasible_configs():
    prior = AnalyticalPrior(
        "meta-llama/Llama-3.1-8B", "h100_sxm", gpus=1, objective=OBJ, capacity_error=0.0
    )
    light = prior.reward({"max_num_seqs": 256}, CTX)
    assert light == pytest.approx(4.0 * 200.0, rel=0.05)  # everything served within the SLA
    # four sequences cannot hold 4 req/s x ~200 tokens each: the queue grows without bound
    assert prior.reward({"max_num_seqs": 4}, CTX) == 0.0
    mean, var = prior([{"max_num_seqs": 256}, {"max_num_seqs": 4}], CTX)
    assert mean[0] > mean[1]
    # the variance is the measured error relative to the offered output rate, for every config:
    # a config priced at zero is not known to earn nothing
    np.testing.assert_allclose(var, (prior.rel_error * 4.0 * 200.0) ** 2)
    assert prior.feasibility({"gpu_memory_utilization": 0.1}) is not None
    assert "does not divide" in prior.feasibility({"tensor_parallel_size": 2})
    with pytest.raises(ValueError, match="request_rate_rps > 0"):
        prior.reward({"max_num_seqs": 8}, {"request_rate_rps": 0.0})


def test_prior_throughput_of_a_full_running_batch_is_its_capacity():
    """Under max_num_seqs overload the served rate is cap / cycle, not the offered rate."""
    thr = Objective(kind="throughput")
    prior = AnalyticalPrior(
        "meta-llama/Llama-3.1-8B", "h100_sxm", gpus=1, objective=thr, capacity_error=0.0
    )
    offered = 4.0 * 200.0
    assert prior.reward({"max_num_seqs": 256}, CTX) == pytest.approx(offered)
    capped = prior.reward({"max_num_seqs": 4}, CTX)
    est = prior.estimate({"max_num_seqs": 4}, CTX)
    cycle_s = (est.ttft_ms + 199.0 * est.tpot_ms) / 1e3
    assert 0 < capped < offered
    assert capped == pytest.approx(4 / cycle_s * 200.0, rel=1e-9)
    assert prior.reward({"max_num_seqs": 8}, CTX) > capped  # more room, more served


def test_prior_is_smooth_across_the_overload_cliff():
    """The point estimate jumps from full goodput to zero where Little's law overflows the
    running cap; the prior's expectation over the model's capacity error does not."""
    kw = {"model": "meta-llama/Llama-3.1-8B", "system": "h100_sxm", "gpus": 1, "objective": OBJ}
    point = AnalyticalPrior(**kw, capacity_error=0.0)
    smooth = AnalyticalPrior(**kw)
    offered = CTX["request_rate_rps"] * CTX["mean_output_tokens"]
    seqs = [{"max_num_seqs": n} for n in range(2, 64)]
    p = np.array([point.reward(c, CTX) for c in seqs])
    edge = int(np.flatnonzero(p > 0)[0])  # the first cap that holds the load
    assert p[edge - 1] == 0.0 and p[edge] > 0.5 * offered
    q = np.array([smooth.reward(c, CTX) for c in seqs])
    assert 0.0 < q[edge - 1] < p[edge] and 0.0 < q[edge] < p[edge]
    assert np.all(np.diff(q) >= -1e-9 * offered)  # more room never hurts
    assert q[-1] == pytest.approx(p[-1], rel=0.05)  # far from the cliff: the point estimate


def test_prior_reads_the_windows_burstiness():
    prior = AnalyticalPrior("meta-llama/Llama-3.1-8B", "h100_sxm", gpus=1, objective=OBJ)
    loaded = {**CTX, "request_rate_rps": 8.0, "mean_prompt_tokens": 3000.0}
    calm = prior.estimate({"max_num_seqs": 256}, {**loaded, "arrival_cv2": 1.0})
    bursty = prior.estimate({"max_num_seqs": 256}, {**loaded, "arrival_cv2": 10.0})
    assert bursty.ttft_ms > 1.5 * calm.ttft_ms
    assert prior.reward({"max_num_seqs": 256}, {**loaded, "arrival_cv2": 10.0}) < prior.reward(
        {"max_num_seqs": 256}, {**loaded, "arrival_cv2": 1.0}
    )
    # no burstiness in the context (or NaN): the model's calibrated default
    default = prior.estimate({"max_num_seqs": 256}, loaded)
    nan = prior.estimate({"max_num_seqs": 256}, {**loaded, "arrival_cv2": math.nan})
    assert nan.ttft_ms == default.ttft_ms


def test_prior_serves_only_the_prompts_an_unchunked_engine_admits():
    prior = AnalyticalPrior(
        "meta-llama/Llama-3.1-8B", "h100_sxm", gpus=1, objective=OBJ, capacity_error=0.0
    )
    ctx = {**CTX, "mean_prompt_tokens": 1500.0}
    chunked = prior.reward({"max_num_batched_tokens": 2048, "enable_chunked_prefill": True}, ctx)
    est = prior.estimate({"max_num_batched_tokens": 2048, "enable_chunked_prefill": False}, ctx)
    unchunked = prior.reward({"max_num_batched_tokens": 2048, "enable_chunked_prefill": False}, ctx)
    rejected = est.details["rejected_fraction"]
    assert 0.05 < rejected < 0.5
    assert unchunked <= (1 - rejected) * 4.0 * 200.0 + 1e-9 < chunked + 1e-9


def test_prior_constrains_a_space():
    prior = AnalyticalPrior("meta-llama/Llama-3.1-8B", "h100_sxm", gpus=2, objective=OBJ)
    space = prior.constrain(
        KnobSpace(
            (
                Knob("tensor_parallel_size", (1, 2, 4), 1),
                Knob("gpu_memory_utilization", (0.1, 0.9), 0.9),
            )
        )
    )
    assert {(c["tensor_parallel_size"], c["gpu_memory_utilization"]) for c in space.grid()} == {
        (1, 0.9),
        (2, 0.9),
    }


def test_config_to_engine_maps_and_rejects():
    cfg = config_to_engine(
        {"max_num_seqs": 64, "enable_chunked_prefill": False, "tensor_parallel_size": 2}
    )
    assert cfg.max_num_seqs == 64 and cfg.enable_chunked_prefill is False
    assert cfg.async_scheduling is True  # vLLM's default
    assert config_to_engine({"async_scheduling": 0}).async_scheduling is False
    assert config_to_batching({"async_scheduling": False}).async_scheduling is False
    with pytest.raises(ValueError, match=r"no knob\(s\) \['swap_space'\]"):
        config_to_engine({"swap_space": 4})


def test_biased_step_model_scales_one_family():
    base = Deployment("meta-llama/Llama-3.1-8B", "h100_sxm").step_model()
    batch = BatchShape(np.array([4096]), np.array([0]), np.full(32, 2000))
    parts = base.breakdown_ms(batch)
    biased = BiasedStepModel(base, {"context_attention": 1.3})
    assert biased.step_time_ms(batch) == pytest.approx(
        base.step_time_ms(batch) + 0.3 * parts["context_attention"]
    )
    with pytest.raises(ValueError, match="unknown op families"):
        BiasedStepModel(base, {"warp_drive": 2.0})
    decode_only = BatchShape(decode_context_tokens=np.full(8, 500))
    assert "context_attention" not in base.breakdown_ms(decode_only)
    assert biased.step_time_ms(decode_only) == pytest.approx(base.step_time_ms(decode_only))
    with pytest.raises(ValueError, match="must be > 0"):
        BiasedStepModel(base, {"context_attention": -1.0})


@pytest.fixture(scope="module")
def env():
    return SimulatedEnvironment(
        "meta-llama/Llama-3.1-8B",
        "h100_sxm",
        2,
        WindowLoad(6.0, LengthDistribution.fixed(512, 64)),
        OBJ,
        window_s=10.0,
        warmup_s=5.0,
        seed=3,
    )


def test_simulated_window_is_a_full_observation(env):
    obs = env.observe({"max_num_seqs": 64}, 0)
    assert obs["request_rate_rps"] == pytest.approx(6.0, rel=0.5)  # the pool's total load
    # goodput counts the tokens of requests finished in the window (some generated before
    # it), throughput the tokens generated in it: close, but not ordered
    assert 0.0 < obs["goodput_tok_s"] <= 1.5 * obs["throughput_tok_s"]
    assert 0.0 <= obs["sla_attainment"] <= 1.0
    assert obs["max_num_seqs"] == 64.0 and obs["sla_violated"] in (0.0, 1.0)
    assert all(
        math.isfinite(v) for k, v in obs.items() if not k.startswith(("ttft", "tpot", "e2e"))
    )


def test_common_random_numbers_and_seeds(env):
    a = env.observe({"max_num_seqs": 64}, 4)
    b = env.observe({"max_num_seqs": 64}, 4)
    c = env.observe({"max_num_seqs": 8}, 4)
    d = env.observe({"max_num_seqs": 64}, 5)
    assert a == b  # same round, same draw
    assert a["request_rate_rps"] == c["request_rate_rps"]  # the same arrivals for another config
    assert a != d


def test_pooled_environment_oracle(env):
    configs = [{"max_num_seqs": 2}, {"max_num_seqs": 64}]
    pool = PooledEnvironment(env, configs, pool_size=3, progress=False)
    truth = pool.true_rewards(OBJ, 0)
    assert truth[1] > truth[0]  # two sequences cannot keep up with the load
    seen = {pool.observe(configs[1], r)["goodput_tok_s"] for r in range(30)}
    assert seen == {w["goodput_tok_s"] for w in pool.windows_[(0, 1)]}  # draws cover the pool
    assert pool.observe(configs[1], 7, draw=2) == pool.observe(configs[1], 7, draw=2)
    with pytest.raises(ValueError, match="not in the pool"):
        pool.observe({"max_num_seqs": 5}, 0)


def test_prior_latency_of_an_overloaded_config_follows_its_queue():
    """Minus TTFT p90 of an overloaded config: its queue grows from an empty engine through the
    window, so the price is finite, grows with the overload, and is close to what the engine
    shows (fluid queue; the serving simulator's windows are the reference)."""
    obj = Objective(kind="latency", sla=SLA(ttft_ms=2000.0, tpot_ms=50.0))
    prior = AnalyticalPrior("meta-llama/Llama-3.1-8B", "h100_sxm", 1, obj)
    lengths = LengthDistribution.fixed(1000, 200)
    ctx = {"request_rate_rps": 12.0, "mean_prompt_tokens": 1000.0, "mean_output_tokens": 200.0}
    seqs = (8, 16, 128)
    priced = [-prior.reward({"max_num_seqs": s}, ctx) for s in seqs]
    assert all(math.isfinite(p) and p > 0 for p in priced)
    assert priced[0] > priced[1] > 10 * priced[2]  # fewer sequences, a faster-growing queue
    # the same config under a heavier load queues longer, but never beyond the run so far
    heavier = -prior.reward({"max_num_seqs": 8}, {**ctx, "request_rate_rps": 24.0})
    assert priced[0] < heavier <= (prior.warmup_s + prior.window_s) * 1e3
    env = SimulatedEnvironment(
        "meta-llama/Llama-3.1-8B",
        "h100_sxm",
        1,
        WindowLoad(12.0, lengths),
        obj,
        window_s=prior.window_s,
        warmup_s=prior.warmup_s,
        seed=5,
    )
    for s, p in zip(seqs[:2], priced[:2], strict=True):
        sim = np.mean(
            [env.observe({"max_num_seqs": s}, 0, draw=d)["ttft_p90_ms"] for d in range(2)]
        )
        assert p == pytest.approx(sim, rel=0.1), (s, p, sim)
