"""simulator: analytical serving model and discrete-event serving engine."""

# --- serving engine, workloads and traces (issue 5): imported lazily on first use ---
_ENGINE_API = {
    "Cluster": "simulator.cluster",
    "Deployment": "simulator.cluster",
    "KVTransfer": "simulator.cluster",
    "Replica": "simulator.cluster",
    "single_replica": "simulator.cluster",
    "EngineConfig": "simulator.engine",
    "EventLoop": "simulator.engine",
    "ServingEngine": "simulator.engine",
    "StepNoise": "simulator.engine",
    "SLA": "simulator.metrics",
    "SimulationResult": "simulator.metrics",
    "WindowObservation": "simulator.metrics",
    "observations_frame": "simulator.metrics",
    "to_prometheus": "simulator.metrics",
    "window_observations": "simulator.metrics",
    "LoadReport": "simulator.traces",
    "Trace": "simulator.traces",
    "load_trace": "simulator.traces",
    "ConstantRate": "simulator.workloads",
    "DiurnalRate": "simulator.workloads",
    "LengthDistribution": "simulator.workloads",
    "PiecewiseRate": "simulator.workloads",
    "Workload": "simulator.workloads",
    "arrival_times_s": "simulator.workloads",
    "ReplayResult": "simulator.replay",
    "replay_configs": "simulator.replay",
}


def __getattr__(name: str) -> object:  # PEP 562: lazy exports
    if name in _ENGINE_API:
        import importlib

        return getattr(importlib.import_module(_ENGINE_API[name]), name)
    raise AttributeError(f"module 'simulator' has no attribute {name!r}")


# --- end issue 5 ---

# --- analytical model, search and launch configs (issue 4): lazy exports, same mechanism ---
_ENGINE_API.update(
    {
        "ModelSpec": "simulator.models",
        "Precision": "simulator.models",
        "list_models": "simulator.models",
        "load_model": "simulator.models",
        "precision_for": "simulator.models",
        "ParallelConfig": "simulator.parallel",
        "enumerate_parallel": "simulator.parallel",
        "MemoryBreakdown": "simulator.memory",
        "memory_breakdown": "simulator.memory",
        "OpCall": "simulator.ops",
        "decompose_step": "simulator.ops",
        "AnalyticalStepModel": "simulator.step_time",
        "EngineOverhead": "simulator.step_time",
        "AnalyticalWorkload": "simulator.analytical",
        "BatchingConfig": "simulator.analytical",
        "QueueModel": "simulator.analytical",
        "ServingEstimate": "simulator.analytical",
        "estimate_aggregated": "simulator.analytical",
        "estimate_disaggregated": "simulator.analytical",
        "estimate_static": "simulator.analytical",
        "SearchResult": "simulator.search",
        "SearchSpace": "simulator.search",
        "pareto_frontier": "simulator.search",
        "LaunchConfig": "simulator.launch",
        "check_vllm_args": "simulator.launch",
        "render_all": "simulator.launch",
        "sglang_args": "simulator.launch",
        "trtllm_yaml": "simulator.launch",
        "vllm_args": "simulator.launch",
    }
)
# --- end issue 4 ---
