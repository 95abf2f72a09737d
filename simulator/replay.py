"""Replay one request trace through several engine configurations, on common random numbers.

What ``causal-tuner replay`` runs, as a function that returns its results instead of writing
files: each configuration's cluster serves the same trace with the same seed, so differences
between them come from the configuration, not from the draws.

>>> from simulator import Deployment, EngineConfig, load_trace, replay_configs
>>> run = replay_configs(
...     load_trace("azure-conv").head(200),
...     Deployment("meta-llama/Llama-3.1-8B", "h100_sxm"),
...     {"256": EngineConfig(max_num_seqs=256), "16": EngineConfig(max_num_seqs=16)},
... )
>>> list(run.summary["config"]), run.summary["completed"].tolist()
(['256', '16'], [200, 200])
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass

import pandas as pd

from simulator.cluster import Cluster, Deployment
from simulator.engine import EngineConfig
from simulator.metrics import SLA, SimulationResult, observations_frame, window_observations
from simulator.traces import Trace


@dataclass
class ReplayResult:
    """The configurations' runs of one trace.

    ``results`` and ``windows`` are keyed by the configuration's label: per-request results
    (:class:`~simulator.metrics.SimulationResult`) and the tuner's window observations as a
    frame (one row per window). ``summary`` has one row per configuration: its label
    (``config``), the replica's KV-cache blocks, :meth:`SimulationResult.summary` under ``sla``
    and the wall time of its run.
    """

    results: dict[str, SimulationResult]
    windows: dict[str, pd.DataFrame]
    summary: pd.DataFrame
    sla: SLA
    window_s: float


def replay_configs(
    trace: Trace,
    deployment: Deployment,
    configs: Mapping[str, EngineConfig],
    *,
    replicas: int = 1,
    router: str = "round_robin",
    seed: int = 0,
    sla: SLA | None = None,
    window_s: float = 60.0,
    progress: bool = False,
) -> ReplayResult:
    """Serve ``trace`` once per configuration (``replicas`` replicas of ``deployment`` each)."""
    if replicas < 1:
        raise ValueError(f"replicas must be >= 1, got {replicas}")
    if not configs:
        raise ValueError("give at least one engine configuration")
    if len(trace) == 0:
        raise ValueError(f"trace {trace.name!r} has no requests to replay")
    sla = sla or SLA()
    results: dict[str, SimulationResult] = {}
    windows: dict[str, pd.DataFrame] = {}
    rows = []
    for label, config in configs.items():
        replica = deployment.replica(config, name=label)
        cluster = Cluster([replica] * replicas, router=router)
        t0 = time.perf_counter()
        result = cluster.run(trace, seed=seed, progress=progress, label=label)
        wall_s = time.perf_counter() - t0
        results[label] = result
        windows[label] = observations_frame(window_observations(result, window_s=window_s, sla=sla))
        rows.append(
            {
                "config": label,
                "kv_blocks": replica.num_kv_blocks,
                **result.summary(sla),
                "wall_s": wall_s,
            }
        )
    return ReplayResult(results, windows, pd.DataFrame(rows), sla, window_s)
