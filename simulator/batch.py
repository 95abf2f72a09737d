"""The contract between the step-time model and the serving engine.

One engine step runs a batch that mixes prefill chunks and decode tokens. The engine
describes it as a :class:`BatchShape`; any :class:`StepCostModel` prices it. The analytical
model (``simulator.step_time``) is the production implementation; the engine depends only on
this protocol.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np

#: Marginal acceptance of each draft position of DeepSeek-V3/R1's multi-token-prediction module
#: (the probability that the ``i``-th draft token of a step is accepted), from TensorRT-LLM's
#: measured tokens per step for DeepSeek-R1 on 8 B200s (its blog "Pushing Latency Boundaries:
#: Optimizing DeepSeek-R1 Performance on NVIDIA B200 GPUs", real data, 1K in / 2K out: MTP
#: depth 1-5 emit 1.92, 2.58, 2.82, 2.99, 3.01 tokens per step), as successive differences.
DEEPSEEK_MTP_ACCEPTANCE = (0.92, 0.66, 0.24, 0.17, 0.02)


def tokens_per_step(speculative_tokens: int, acceptance: tuple[float, ...]) -> float:
    """Mean tokens one decoding sequence emits per speculative step: the verified token plus
    the expected accepted drafts, ``1 + acceptance[0] + ... + acceptance[k - 1]`` (draft
    positions past the table add nothing)."""
    return 1.0 + float(sum(acceptance[:speculative_tokens]))


@dataclass(frozen=True)
class BatchShape:
    """The work of one engine step.

    Parameters
    ----------
    prefill_new_tokens : array of int
        For each request prefilling in this step, the number of new prompt tokens computed
        (a chunk when chunked prefill splits a prompt).
    prefill_context_tokens : array of int
        For each prefilling request, the tokens already in its KV cache before this chunk
        (earlier chunks plus prefix-cache hits). Same length as ``prefill_new_tokens``.
    decode_context_tokens : array of int
        For each decoding request (one new token each), its KV length including the new token.
    cuda_graph_batch : int or None
        Decode batch size padded to a captured CUDA-graph size, or ``None`` when the step runs
        eagerly (mixed prefill steps, graphs disabled, or batch above the largest capture).
    draft_tokens : int
        Speculative decoding: each decoding request verifies its last token plus this many
        draft tokens in the step (the target model computes ``1 + draft_tokens`` tokens per
        decode), and a draft head proposes them (0: plain decoding).
    """

    prefill_new_tokens: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    prefill_context_tokens: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    decode_context_tokens: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    cuda_graph_batch: int | None = None
    draft_tokens: int = 0

    def __post_init__(self) -> None:
        if self.draft_tokens < 0:
            raise ValueError(f"draft_tokens must be >= 0, got {self.draft_tokens}")
        if len(self.prefill_new_tokens) != len(self.prefill_context_tokens):
            raise ValueError(
                "prefill_new_tokens and prefill_context_tokens must have the same length, got "
                f"{len(self.prefill_new_tokens)} and {len(self.prefill_context_tokens)}"
            )

    @property
    def num_tokens(self) -> int:
        """Tokens computed in this step (prefill chunks plus ``1 + draft_tokens`` per decode)."""
        decodes = len(self.decode_context_tokens) * (1 + self.draft_tokens)
        return int(np.sum(self.prefill_new_tokens)) + decodes

    @property
    def num_seqs(self) -> int:
        return len(self.prefill_new_tokens) + len(self.decode_context_tokens)


@runtime_checkable
class StepCostModel(Protocol):
    """Prices one engine step of a fixed deployment (model, system, parallelism, dtype)."""

    def step_time_ms(self, batch: BatchShape) -> float:
        """Wall time of one forward step for ``batch``, in milliseconds (always finite, > 0)."""
        ...
