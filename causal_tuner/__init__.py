"""causal-tuner: online causal-bandit tuning of LLM serving engines."""

__version__ = "0.1.0"

from causal_tuner.backdoor import (
    AdjustmentResult,
    adjustment_sets,
    find_adjustment,
    is_backdoor_set,
)
from causal_tuner.bandit import RunResult, SEMBanditEnvironment, make_context, run_policy
from causal_tuner.estimators import (
    CombinedEstimate,
    Estimate,
    GramStatistics,
    backdoor_ols,
    batched_gram_ols,
    combine,
    experimental_estimate,
)
from causal_tuner.policies import (
    Arm,
    BanditContext,
    History,
    Policy,
    available_policies,
    make_policy,
    plus_minus_arms,
)
from causal_tuner.sem import LinearGaussianSEM, random_er_sem, random_parallel_sem
from causal_tuner.structure import (
    PC,
    DSeparationOracle,
    OnlinePC,
    PartiallyDirectedGraph,
    SufficientStatistics,
    edge_scores,
    fisher_z_pvalue,
    meek_closure,
    structural_hamming_distance,
)

#: The tuner's API, imported on first use (it pulls in the simulator and pandas).
_LAZY = {
    "Knob": "causal_tuner.knobs",
    "KnobSpace": "causal_tuner.knobs",
    "Constraint": "causal_tuner.knobs",
    "Objective": "causal_tuner.objective",
    "SLA": "causal_tuner.objective",
    "TuningSession": "causal_tuner.session",
    "Trial": "causal_tuner.session",
    "FrozenTrial": "causal_tuner.store",
    "TrialState": "causal_tuner.store",
    "InMemoryStore": "causal_tuner.store",
    "SQLiteStore": "causal_tuner.store",
    "AnalyticalPrior": "causal_tuner.prior",
    "CausalRewardModel": "causal_tuner.reward_model",
    "SimulatedEnvironment": "causal_tuner.environments",
    "PooledEnvironment": "causal_tuner.environments",
    "TraceLoad": "causal_tuner.environments",
    "WindowLoad": "causal_tuner.environments",
    "available_tuner_policies": "causal_tuner.tuning_policies",
    "make_tuner_policy": "causal_tuner.tuning_policies",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'causal_tuner' has no attribute {name!r}")


__all__ = [
    *_LAZY,
    "PC",
    "AdjustmentResult",
    "Arm",
    "BanditContext",
    "CombinedEstimate",
    "DSeparationOracle",
    "Estimate",
    "GramStatistics",
    "History",
    "LinearGaussianSEM",
    "OnlinePC",
    "PartiallyDirectedGraph",
    "Policy",
    "RunResult",
    "SEMBanditEnvironment",
    "SufficientStatistics",
    "adjustment_sets",
    "available_policies",
    "backdoor_ols",
    "batched_gram_ols",
    "combine",
    "edge_scores",
    "experimental_estimate",
    "find_adjustment",
    "fisher_z_pvalue",
    "is_backdoor_set",
    "make_context",
    "make_policy",
    "meek_closure",
    "plus_minus_arms",
    "random_er_sem",
    "random_parallel_sem",
    "run_policy",
    "structural_hamming_distance",
]
