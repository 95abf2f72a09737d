"""Determinism golden test: a fixed seed reproduces committed per-request results exactly.

Regenerate (only after an intended behaviour change, and say so in the commit):
``python tests/simulator/test_engine_golden.py``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from simulator import EngineConfig, load_trace, single_replica
from simulator.batch import BatchShape

GOLDEN = Path(__file__).resolve().parent / "golden" / "engine_golden.csv"
COLUMNS = [
    "request_id",
    "status",
    "first_token_ms",
    "finish_ms",
    "prefix_hit_tokens",
    "num_preemptions",
]


class GoldenCost:
    """A fixed linear cost model (ms), independent of any other module's calibration."""

    def step_time_ms(self, batch: BatchShape) -> float:
        return (
            4.0
            + 0.02 * float(batch.prefill_new_tokens.sum())
            + 2e-4 * float(batch.decode_context_tokens.sum())
            + (0.0 if batch.cuda_graph_batch is not None else 1.5)
        )


def golden_run() -> pd.DataFrame:
    # Mooncake requests exercise prefix caching; a small cache forces preemptions; the time
    # scale raises the load so batches form
    trace = load_trace("mooncake-conv").head(200).scale_time(0.02)
    config = EngineConfig(max_num_seqs=32, max_num_batched_tokens=4096, step_noise_cv=0.1)
    result = single_replica(config, GoldenCost(), num_kv_blocks=3000).run(trace, seed=20261125)
    return result.requests[COLUMNS]


def test_same_seed_reproduces_the_golden_per_request_results():
    got = golden_run()
    want = pd.read_csv(GOLDEN)
    assert list(got.columns) == list(want.columns)
    assert got["request_id"].tolist() == want["request_id"].tolist()
    assert got["status"].tolist() == want["status"].tolist()
    for col in ("prefix_hit_tokens", "num_preemptions"):
        assert got[col].tolist() == want[col].tolist(), col
    for col in ("first_token_ms", "finish_ms"):
        np.testing.assert_allclose(got[col].to_numpy(), want[col].to_numpy(), rtol=1e-12, atol=1e-9)
    # the scenario is not trivial: it preempts, hits the prefix cache and queues
    assert want["num_preemptions"].sum() > 0
    assert want["prefix_hit_tokens"].sum() > 0


if __name__ == "__main__":
    GOLDEN.parent.mkdir(exist_ok=True)
    golden_run().to_csv(GOLDEN, index=False, float_format="%.17g")
    print(f"wrote {GOLDEN}")
