"""causal-tuner: online causal-bandit tuning of LLM serving engines."""

__version__ = "0.1.0"
