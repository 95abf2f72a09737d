"""causal-tuner: online causal-bandit tuning of LLM serving engines."""

__version__ = "0.1.0"

from causal_tuner.backdoor import (
    AdjustmentResult,
    adjustment_sets,
    find_adjustment,
    is_backdoor_set,
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

__all__ = [
    "PC",
    "AdjustmentResult",
    "DSeparationOracle",
    "LinearGaussianSEM",
    "OnlinePC",
    "PartiallyDirectedGraph",
    "SufficientStatistics",
    "adjustment_sets",
    "edge_scores",
    "find_adjustment",
    "fisher_z_pvalue",
    "is_backdoor_set",
    "meek_closure",
    "random_er_sem",
    "random_parallel_sem",
    "structural_hamming_distance",
]
