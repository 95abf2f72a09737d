"""What the tuner maximizes: goodput under a latency SLA (default), throughput, or a latency.

An objective turns one window's observation (a mapping of named floats, the fields of
``simulator.metrics.WindowObservation`` or the same names scraped from a live engine) into a
scalar reward to *maximize*, and says whether the window violated the SLA (a latency percentile
of the window above its target). Violating windows can carry an extra cost, so that a policy
which buys throughput with latency is charged for it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from simulator.metrics import SLA

__all__ = ["SLA", "Objective"]

_KINDS = ("goodput", "throughput", "latency")
_LATENCY_METRICS = ("ttft", "tpot")
_PERCENTILES = (50, 90, 99)


@dataclass(frozen=True)
class Objective:
    """A scalar reward per window, to maximize.

    Parameters
    ----------
    kind : {"goodput", "throughput", "latency"}
        ``goodput``: output tokens/s of requests meeting the SLA (``goodput_tok_s``, computed by
        the environment with this objective's ``sla``); ``throughput``: output tokens/s
        (``throughput_tok_s``; divide by the GPU count yourself to compare deployments);
        ``latency``: minus a latency percentile (``{latency_metric}_p{percentile}_ms``).
    sla : simulator.metrics.SLA
        Per-request TTFT and TPOT targets.
    percentile : {50, 90, 99}
        A window violates the SLA when this percentile of its TTFT or TPOT exceeds the target.
    violation_cost : float
        Subtracted from the reward of a violating window, in the reward's units. Zero by
        default for goodput, which already drops the requests that miss the SLA.
    latency_metric : {"ttft", "tpot"}
        Used when ``kind == "latency"``.
    """

    kind: str = "goodput"
    sla: SLA = field(default_factory=SLA)
    percentile: int = 90
    violation_cost: float = 0.0
    latency_metric: str = "ttft"

    def __post_init__(self) -> None:
        if self.kind not in _KINDS:
            raise ValueError(f"objective kind must be one of {_KINDS}, got {self.kind!r}")
        if not isinstance(self.sla, SLA):
            raise ValueError(f"sla must be a simulator.metrics.SLA, got {self.sla!r}")
        if self.percentile not in _PERCENTILES:
            raise ValueError(f"percentile must be one of {_PERCENTILES}, got {self.percentile!r}")
        if not (math.isfinite(self.violation_cost) and self.violation_cost >= 0):
            raise ValueError(f"violation_cost must be >= 0, got {self.violation_cost!r}")
        if self.latency_metric not in _LATENCY_METRICS:
            raise ValueError(
                f"latency_metric must be one of {_LATENCY_METRICS}, got {self.latency_metric!r}"
            )

    @property
    def reward_key(self) -> str:
        """The observation key the reward is read from."""
        if self.kind == "goodput":
            return "goodput_tok_s"
        if self.kind == "throughput":
            return "throughput_tok_s"
        return f"{self.latency_metric}_p{self.percentile}_ms"

    @staticmethod
    def _get(observation: Mapping[str, float], key: str, why: str) -> float:
        if key not in observation:
            raise ValueError(
                f"observation lacks {key!r}, needed by {why}; it has {sorted(observation)}"
            )
        return float(observation[key])

    def violated(self, observation: Mapping[str, float]) -> bool:
        """Whether the window's latency percentile exceeded a target.

        A window in which no request finished (NaN latencies) counts as violating: nothing was
        served in time.
        """
        ttft = self._get(observation, f"ttft_p{self.percentile}_ms", "the SLA check")
        tpot = self._get(observation, f"tpot_p{self.percentile}_ms", "the SLA check")
        if math.isnan(ttft):
            return True
        return ttft > self.sla.ttft_ms or (not math.isnan(tpot) and tpot > self.sla.tpot_ms)

    def reward(self, observation: Mapping[str, float]) -> float:
        """The window's reward (larger is better); ``ValueError`` if a needed key is missing."""
        value = self._get(observation, self.reward_key, f"the {self.kind} objective")
        if not math.isfinite(value):
            raise ValueError(f"observation[{self.reward_key!r}] is not finite ({value})")
        reward = -value if self.kind == "latency" else value
        if self.violation_cost and self.violated(observation):
            reward -= self.violation_cost
        return reward
