"""Measure the analytical prior's error against the serving simulator (sets PRIOR_REL_ERROR).

The tuner's prior variance must come from a measured error, not a guess. This script prices a
calibration grid with :class:`causal_tuner.prior.AnalyticalPrior` and serves the same configs
and loads on the discrete-event simulator, then reports the error of the predicted goodput
relative to the offered output rate (``rate x mean output length``, the natural scale of
goodput). The grid is **not** one of the tuning scenarios: Llama-3.1-8B on one H100, ShareGPT
lengths, Poisson arrivals.

Usage::

    python benchmarks/prior_error.py [--windows 3]
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from pathlib import Path

import numpy as np

from causal_tuner.environments import SimulatedEnvironment, WindowLoad
from causal_tuner.objective import SLA, Objective
from causal_tuner.prior import PRIOR_REL_ERROR, AnalyticalPrior
from simulator.workloads import LengthDistribution

sys.path.insert(0, str(Path(__file__).resolve().parent))
from tuning_regret import _write_section, machine

SECTION = "## Analytical prior error (sets PRIOR_REL_ERROR)"
RATES = (2.0, 4.0, 8.0, 12.0, 16.0, 20.0)
CONFIGS = [
    {"max_num_seqs": s, "max_num_batched_tokens": b, "enable_chunked_prefill": c}
    for s, b, c in itertools.product((16, 64, 256), (2048, 8192), (True, False))
]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--windows", type=int, default=3, help="simulated windows per grid point")
    ap.add_argument("--no-results", action="store_true")
    args = ap.parse_args(argv)
    objective = Objective(sla=SLA(ttft_ms=2000.0, tpot_ms=50.0))
    lengths = LengthDistribution.sharegpt(max_total_tokens=8192)
    prior = AnalyticalPrior("meta-llama/Llama-3.1-8B", "h100_sxm", 1, objective)
    t0 = time.perf_counter()
    rel = []
    for rate in RATES:
        env = SimulatedEnvironment(
            "meta-llama/Llama-3.1-8B", "h100_sxm", 1, WindowLoad(rate, lengths), objective, seed=11
        )
        ctx = {
            "request_rate_rps": rate,
            "mean_prompt_tokens": lengths.mean_prompt_tokens,
            "mean_output_tokens": lengths.mean_output_tokens,
        }
        scale = rate * lengths.mean_output_tokens
        for config in CONFIGS:
            sim = np.mean(
                [env.observe(config, 0, draw=d)["goodput_tok_s"] for d in range(args.windows)]
            )
            rel.append((prior.reward(config, ctx) - sim) / scale)
    rel = np.abs(np.array(rel))
    elapsed = time.perf_counter() - t0
    rms = float(np.sqrt(np.mean(rel**2)))
    text = "\n".join(
        [
            SECTION,
            "",
            f"Command: `python benchmarks/prior_error.py {' '.join(argv if argv is not None else sys.argv[1:])}`  ",
            f"Machine: {machine()}; {elapsed:.0f} s.  ",
            f"Grid: Llama-3.1-8B on 1x H100, ShareGPT lengths, Poisson rates {RATES} req/s, "
            f"{len(CONFIGS)} configs (max_num_seqs x max_num_batched_tokens x chunked prefill), "
            f"{args.windows} simulated 60-s windows each; SLA TTFT 2 s, TPOT 50 ms. Error of the "
            "prior's goodput relative to the offered output rate:",
            "",
            f"- median {np.median(rel):.3f}, p90 {np.percentile(rel, 90):.3f}, RMS {rms:.3f} "
            f"over {len(rel)} points.",
            f"- `PRIOR_REL_ERROR` in causal_tuner/prior.py is {PRIOR_REL_ERROR}: the RMS of the "
            "first calibration run (0.212, commit ad5ef54) rounded up. Since the prior prices "
            "goodput as its expectation over the model's capacity error and reads the window's "
            "burstiness (commit bb237b2) the RMS on this grid is about half that; the constant "
            "was kept: this grid is Poisson load on one small model, and on the bursty Azure code "
            "windows of the tuning scenarios the prior's error is larger (scenario (b): the best "
            "configs priced about 118 tok/s against 77-91 measured). Rerun this script after a "
            "change to the analytical model.",
            "",
        ]
    )
    print(text)
    if not args.no_results:
        _write_section(text, section=SECTION)
    return 0


if __name__ == "__main__":
    sys.exit(main())
