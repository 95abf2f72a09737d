"""Which config does BA-UCB keep? Four rules for judging the kept config, on the same runs.

BA-UCB's choice of the next window does not depend on the rule, so one run per scenario and
seed serves all four; only the config kept after the last window differs. Each rule takes the
largest lower bound ``mean - sd`` of an estimate averaged over the load sample:

* ``flat``: the reward model as the bandit uses it (a config's prior error, learned on its own
  windows, is carried unchanged to the load to come); the rule before commit 3606352;
* ``sloped``: with per-config slopes of that error on the load
  (``CausalRewardModel.estimate(..., load_slopes=True)``);
* ``min``: the smaller of the two lower bounds;
* ``average``: the equal-weight average of the two models, its variance their mean plus the
  spread of the two means: ``TuningSession.best_config``, the rule the tuner uses.

Prints, per scenario and rule, the share of seeds whose kept config is within 3% of the
oracle's reward, the mean final/oracle ratio and the seeds that miss.

Usage::

    python benchmarks/kept_config.py --first-seed 60 --seeds 100
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from joblib import Parallel, delayed
from tuning_regret import built  # benchmarks/ is on the path when run as a script

from causal_tuner.store import TrialState
from causal_tuner.tuning_benchmark import _final_ratio, tune_seed

RULES = ("flat", "sloped", "min", "average")


def one_seed(b, seed: int) -> dict[str, float]:
    """Run BA-UCB on scenario ``b`` with ``seed``; the final/oracle ratio under each rule."""
    session, _ = tune_seed(b, "ba-ucb", seed)
    truth = b.oracle(b.scenario.rounds - 1)
    index = {b.pool._key(c): i for i, c in enumerate(b.configs)}
    cands = session.candidates
    trials = session.store.trials([TrialState.COMPLETE])
    ctx = session.current_context()
    flat, sloped = (
        session.policy.estimates(cands, trials, ctx, load_slopes=flag) for flag in (False, True)
    )
    lcb_flat = flat.mean - np.sqrt(flat.var)
    lcb_sloped = sloped.mean - np.sqrt(sloped.var)
    picks = {
        "flat": cands[int(np.argmax(lcb_flat))],
        "sloped": cands[int(np.argmax(lcb_sloped))],
        "min": cands[int(np.argmax(np.minimum(lcb_flat, lcb_sloped)))],
        "average": session.best_config(),
    }
    best = float(truth.max())
    return {k: _final_ratio(float(truth[index[b.pool._key(c)]]), best) for k, c in picks.items()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--scenarios", default="a,b,c,d,e,f")
    ap.add_argument("--first-seed", type=int, default=0)
    ap.add_argument("--seeds", type=int, default=20, help="number of seeds")
    ap.add_argument("--pool-size", type=int, default=8)
    ap.add_argument("--jobs", type=int, default=2)
    args = ap.parse_args(argv)
    if args.seeds < 1:
        ap.error("--seeds must be >= 1")
    names = [n.strip() for n in args.scenarios.split(",") if n.strip()]
    seeds = range(args.first_seed, args.first_seed + args.seeds)
    print(f"seeds {seeds.start}-{seeds.stop - 1}; final config within 3% of the oracle")
    print("| scenario | rule | within 3% | mean final/oracle | misses (seed: final/oracle) |")
    print("|---|---|---|---|---|")
    totals = dict.fromkeys(RULES, 0)
    t0 = time.perf_counter()
    for name in names:
        b = built(name, args.pool_size)
        out = Parallel(n_jobs=args.jobs)(delayed(one_seed)(b, sd) for sd in seeds)
        for rule in RULES:
            ratios = np.array([o[rule] for o in out])
            miss = [f"{sd}: {r:.3f}" for sd, r in zip(seeds, ratios, strict=True) if r < 0.97]
            totals[rule] += len(miss)
            print(
                f"| {name} | {rule} | {np.mean(ratios >= 0.97):.0%} | {ratios.mean():.4f} "
                f"| {', '.join(miss) or '-'} |",
                flush=True,
            )
    n = len(names) * len(seeds)
    print("misses of " + str(n) + ": " + ", ".join(f"{r} {totals[r]}" for r in RULES))
    print(f"({time.perf_counter() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
