"""Scenario (e) at other loads to come: does the confounded history fool the naive learner there
too, and does backdoor adjustment still hold?

Scenario (e)'s load to come (2.5x the Azure conv rate) was fixed when it was designed; this runs
the same deployment, knobs, objective and logged history at other loads to come (the history
is the same 500 windows at 0.5x-4x), with fresh ground-truth pools, and prints BA-UCB's, the
naive learner's and UCB1's cumulative regret and final configs.

Usage::

    python benchmarks/confounding_loads.py                    # 1.5x and 3.0x, 10 seeds
    python benchmarks/confounding_loads.py --loads 2.0 --seeds 20
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace

from causal_tuner.tuning_benchmark import (
    SCENARIOS,
    build_scenario,
    modal_final_config,
    paired_ratio,
    run_scenario,
    summarize,
)

POLICIES = ("ba-ucb", "naive", "ucb1")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--loads", default="1.5,3.0", help="rate scales of the load to come")
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=200)
    ap.add_argument("--pool-size", type=int, default=8)
    ap.add_argument("--jobs", type=int, default=2)
    args = ap.parse_args(argv)
    try:
        loads = [float(x) for x in args.loads.split(",") if x.strip()]
    except ValueError:
        ap.error(f"--loads must be comma-separated numbers, got {args.loads!r}")
    if not loads or min(loads) <= 0:
        ap.error("--loads needs positive rate scales")
    base = SCENARIOS["e"]
    print(
        "| load to come | oracle (ms) | BA-UCB regret | naive regret | UCB1 regret "
        "| BA-UCB / UCB1 | naive / BA-UCB | final: BA-UCB / naive (ms) | naive's final config |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for scale in loads:
        t0 = time.perf_counter()
        scen = replace(base, name=f"e@{scale:g}", rate_scale=scale, rounds=args.rounds)
        built = build_scenario(scen, pool_size=args.pool_size, progress=False)
        rows, finals = run_scenario(
            built, POLICIES, range(args.seeds), progress=False, n_jobs=args.jobs
        )
        summary = summarize(rows, finals).set_index("policy")
        ratio, lo, hi = paired_ratio(rows, scen.name, "ba-ucb", "ucb1")
        nr, nlo, nhi = paired_ratio(rows, scen.name, "naive", "ba-ucb")
        fin = finals.groupby("policy")["final_true_reward"].mean()
        print(
            f"| {scale:g}x | {finals['best_reward'].iloc[0]:,.0f} "
            + " ".join(f"| {summary.loc[p, 'cum_regret']:,.0f}" for p in POLICIES)
            + f" | {ratio:.2f} [{lo:.2f}-{hi:.2f}] | {nr:.1f} [{nlo:.1f}-{nhi:.1f}] "
            f"| {fin['ba-ucb']:,.0f} / {fin['naive']:,.0f} "
            f"| {modal_final_config(finals, 'naive', built.configs)} |",
            flush=True,
        )
        print(f"(load {scale:g}x: {time.perf_counter() - t0:.0f} s)", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
