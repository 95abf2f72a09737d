"""causal-tuner: online causal-bandit tuning of LLM serving engines."""

__version__ = "0.1.0"

from causal_tuner.sem import LinearGaussianSEM, random_er_sem, random_parallel_sem

__all__ = [
    "LinearGaussianSEM",
    "random_er_sem",
    "random_parallel_sem",
]
