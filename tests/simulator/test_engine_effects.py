"""The engine, priced by the analytical step model, reproduces effects measured on a real vLLM.

From ../shared/notes/vllm-cpu.md (vLLM 0.32 CPU, concurrency 32, 128 prompt / 64 output tokens):
``max_num_seqs 4`` cut inter-token latency and raised TTFT versus 256, and a tiny KV cache
caused preemptions. The engine must show the same directions (absolute values differ: that
measurement was a tiny model on a CPU; this is Llama-3.1-8B on an H100).
"""

from __future__ import annotations

import numpy as np
import pytest

from simulator import Deployment, EngineConfig, LengthDistribution, single_replica

LENGTHS = LengthDistribution.fixed(128, 64)


def closed_loop(config: EngineConfig, seed: int = 0):
    replica = Deployment("meta-llama/Llama-3.1-8B", "h100_sxm").replica(config)
    cluster = single_replica(replica.config, replica.step_model, replica.num_kv_blocks)
    return cluster.run_closed_loop(32, LENGTHS, num_requests=640, seed=seed)


@pytest.mark.parametrize("seed", [0, 1])
def test_lower_max_num_seqs_lowers_tpot_and_raises_ttft_at_high_concurrency(seed):
    small = closed_loop(EngineConfig(max_num_seqs=4), seed).summary()
    large = closed_loop(EngineConfig(max_num_seqs=256), seed).summary()
    assert small["tpot_ms_p50"] < large["tpot_ms_p50"]
    assert small["ttft_ms_p50"] > 3 * large["ttft_ms_p50"]


def test_tiny_kv_cache_causes_preemptions_and_a_normal_one_none():
    tiny = closed_loop(EngineConfig(num_kv_blocks=64))  # 1,024 tokens for 32 x 192
    normal = closed_loop(EngineConfig())
    assert tiny.num_preemptions > 0
    assert normal.num_preemptions == 0
    assert (tiny.requests["status"] == "ok").all()
    assert tiny.summary()["tpot_ms_p50"] > normal.summary()["tpot_ms_p50"] or (
        tiny.summary()["e2e_ms_p50"] > normal.summary()["e2e_ms_p50"]
    )


def test_decode_spans_agree_with_step_by_step_on_the_analytical_model():
    dep = Deployment("meta-llama/Llama-3.1-8B", "h100_sxm")
    cfgs = [EngineConfig(step_noise_cv=0.0, decode_span_steps=s) for s in (1, 4096)]
    results = []
    for cfg in cfgs:
        rep = dep.replica(cfg)
        cl = single_replica(cfg, rep.step_model, rep.num_kv_blocks)
        results.append(
            cl.run_closed_loop(16, LengthDistribution.sharegpt(), num_requests=150, seed=3)
        )
    slow, fast = results
    # the analytical model interpolates its own tables, so spans are close, not identical
    rel = np.abs(fast.requests["e2e_ms"] - slow.requests["e2e_ms"]) / slow.requests["e2e_ms"]
    assert float(np.median(rel)) < 0.005
    assert float(rel.max()) < 0.03
    assert fast.events < slow.events / 5
