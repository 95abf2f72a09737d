"""Regret curves of the tuner's policies on scenarios (a)-(f), with acceptance checks.

Usage::

    python benchmarks/tuning_regret.py                       # full: 20 seeds x 200 windows
    python benchmarks/tuning_regret.py --quick               # 5 seeds x 60 windows, small pools
    python benchmarks/tuning_regret.py --scenarios a,e --seeds 10

Ground-truth pools (simulated windows per config) are cached under ``.cache/tuning_pools``
(keyed by scenario, pool size and the code version of the simulator files), so policy changes
re-run in minutes. Writes ``benchmarks/output/tuning_regret/`` (per-round CSV, summary CSV, one
PNG per scenario) and rewrites the "Tuning regret" section of ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import hashlib
import pickle
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from results_md import machine, write_section

from causal_tuner.tuning_benchmark import (
    DEFAULT_POLICIES,
    NON_CAUSAL_BASELINES,
    SCENARIOS,
    build_scenario,
    make_prior,
    modal_final_config,
    paired_ratio,
    plot_regret,
    run_scenario,
    summarize,
)

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "output" / "tuning_regret"
CACHE = ROOT / ".cache" / "tuning_pools"
RESULTS = ROOT / "benchmarks" / "RESULTS.md"
POOL_FILES: dict[str, str] = {}
SECTION = "## Tuning regret: BA-UCB with the analytical prior vs baselines (scenarios a-f)"


def _code_version(name: str) -> str:
    """Hash of the simulator and environment code and of the scenario's definition: a changed
    simulator or scenario invalidates its pools."""
    h = hashlib.sha1()
    for path in [
        *sorted((ROOT / "simulator").glob("*.py")),
        ROOT / "causal_tuner" / "environments.py",
    ]:
        h.update(path.read_bytes())
    h.update(repr(SCENARIOS[name]).encode())
    return h.hexdigest()[:10]


def built(name: str, pool_size: int, allow_stale: bool = False):
    """The scenario's pools: cached for the current simulator code, else simulated now.

    ``allow_stale``: use the newest cached pools of this scenario and size even when the
    simulator code changed since (their code hash is reported with the results).
    """
    CACHE.mkdir(parents=True, exist_ok=True)
    path = CACHE / f"{name}_pool{pool_size}_{_code_version(name)}.pkl"
    if not path.exists() and allow_stale:
        older = sorted(CACHE.glob(f"{name}_pool{pool_size}_*.pkl"), key=lambda p: p.stat().st_mtime)
        if older:
            path = older[-1]
            print(f"scenario {name}: using stale pools {path.name} (simulator code changed since)")
    if path.exists():
        POOL_FILES[name] = path.name
        with path.open("rb") as fh:
            b = pickle.load(fh)
        # the pools are the simulator's; the prior is the tuner's code, built fresh each run
        b.prior = make_prior(b.scenario)
        return b
    t0 = time.perf_counter()
    b = build_scenario(SCENARIOS[name], pool_size=pool_size)
    print(f"scenario {name}: simulated pools in {time.perf_counter() - t0:.0f} s", flush=True)
    with path.open("wb") as fh:
        pickle.dump(b, fh)
    POOL_FILES[name] = path.name
    return b


def _git_head() -> str:
    import subprocess

    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        )
        return out.stdout.strip() or "unknown"
    except OSError:
        return "unknown"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--scenarios", default="a,b,c,d,e,f")
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument(
        "--first-seed",
        type=int,
        default=0,
        help="seeds first-seed .. first-seed + seeds - 1 (another range is a held-out check)",
    )
    ap.add_argument("--out", type=Path, default=OUT, help="folder for plots and CSVs")
    ap.add_argument("--rounds", type=int, default=200)
    ap.add_argument("--pool-size", type=int, default=8)
    ap.add_argument("--policies", default=",".join(DEFAULT_POLICIES))
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="5 seeds x 60 windows, pools of 4")
    ap.add_argument(
        "--build-only", action="store_true", help="simulate and cache the pools, then stop"
    )
    ap.add_argument(
        "--no-results", action="store_true", help="do not rewrite benchmarks/RESULTS.md"
    )
    ap.add_argument(
        "--allow-stale-pools",
        action="store_true",
        help="reuse the newest cached pools even if the simulator code changed since",
    )
    args = ap.parse_args(argv)
    if args.quick:
        args.seeds, args.rounds, args.pool_size = 5, 60, 4
    names = [n.strip() for n in args.scenarios.split(",") if n.strip()]
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        ap.error(f"unknown scenarios {unknown}; choose from {sorted(SCENARIOS)}")
    builds = {n: built(n, args.pool_size, args.allow_stale_pools) for n in names}
    if args.build_only:
        return 0
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    seeds = range(args.first_seed, args.first_seed + args.seeds)
    all_rows, all_finals = [], []
    t0 = time.perf_counter()
    for name in names:
        policies = list(dict.fromkeys(args.policies.split(",")))
        if SCENARIOS[name].history is not None and "naive" not in policies:
            policies.append("naive")
        rows, finals = run_scenario(
            builds[name], policies, seeds, rounds=args.rounds, n_jobs=args.jobs
        )
        all_rows.append(rows)
        all_finals.append(finals)
        plot_regret(rows, out / f"regret_{name}.png", title=SCENARIOS[name].title)
    rows = pd.concat(all_rows, ignore_index=True)
    finals = pd.concat(all_finals, ignore_index=True)
    elapsed = time.perf_counter() - t0
    rows.to_csv(out / "rows.csv.gz", index=False)
    finals.to_csv(out / "finals.csv", index=False)
    summary = summarize(rows, finals)
    summary.to_csv(out / "summary.csv", index=False)

    lines = [SECTION, ""]
    cmd = "python benchmarks/tuning_regret.py " + " ".join(
        argv if argv is not None else sys.argv[1:]
    )
    lines += [
        f"Command: `{cmd.strip()}`  ",
        f"Machine: {machine()}; policy runs took {elapsed:.0f} s wall (pools cached separately).  ",
        f"Code: commit {_git_head()}; ground-truth pools (file names carry the simulator code "
        f"hash): {', '.join(f'{k}: `{v}`' for k, v in POOL_FILES.items())}.  ",
        f"Setting: {args.seeds} seeds ({seeds.start}-{seeds.stop - 1}) x {args.rounds} windows of 60 s, pools of {args.pool_size} simulated "
        "windows per config (the oracle is the pool mean); every policy sees the same window draws "
        "(common random numbers). Regret is in the objective's units (goodput tok/s; for (e) "
        "milliseconds of TTFT p90) summed over windows; 95% CIs are t-intervals over seeds, ratios carry paired "
        f"bootstrap CIs. Plots and CSVs: `{_rel(out)}/`.",
        "",
        "| scenario | policy | cum. regret (95% CI) | final / oracle | final within 3% | SLA-violating windows |",
        "|---|---|---|---|---|---|",
    ]
    for _, r in summary.sort_values(["scenario", "cum_regret"]).iterrows():
        lines.append(
            f"| {r.scenario} | {r.policy} | {r.cum_regret:,.0f} ({r.cum_regret_lo:,.0f} to {r.cum_regret_hi:,.0f}) | "
            f"{r.final_ratio:.3f} | {r.final_within_3pct:.0%} | {r.sla_violating_windows:.1f} |"
        )
    lines += ["", "Acceptance checks:", ""]
    for name in names:
        sub = summary[summary.scenario == name].set_index("policy")
        base = [p for p in NON_CAUSAL_BASELINES if p in sub.index]
        if "ba-ucb" not in sub.index or not base:
            continue
        best = min(base, key=lambda p: sub.loc[p, "cum_regret"])
        ratio, lo, hi = paired_ratio(rows, name, "ba-ucb", best)
        ok = "PASS" if ratio <= 0.5 else "FAIL"
        lines.append(
            f"- ({name}) BA-UCB / best non-causal baseline ({best}) cumulative regret = {ratio:.2f} "
            f"(95% CI {lo:.2f}-{hi:.2f}); target <= 0.5: **{ok}**. Final config within 3% of the "
            f"oracle in {sub.loc['ba-ucb', 'final_within_3pct']:.0%} of seeds (mean ratio "
            f"{sub.loc['ba-ucb', 'final_ratio']:.3f})."
        )
        if "naive" in sub.index:
            fin = finals[finals.scenario == name]
            modal = {
                p: modal_final_config(fin, p, builds[name].configs) for p in ("naive", "ba-ucb")
            }
            f = fin.groupby("policy")["final_true_reward"].mean()
            nr, nlo, nhi = paired_ratio(rows, name, "naive", "ba-ucb")
            lines.append(
                f"- ({name}) confounded history: the naive learner's final config has true reward "
                f"{f['naive']:,.0f} (most often {modal['naive']}), BA-UCB's {f['ba-ucb']:,.0f} "
                f"(most often {modal['ba-ucb']}); oracle {fin['best_reward'].iloc[0]:,.0f}. "
                f"Naive / BA-UCB cumulative regret = {nr:.1f} (95% CI {nlo:.1f}-{nhi:.1f})."
            )
    if "b" in names and "f" in names and "ba-ucb" in set(summary.policy):
        rb = summary[(summary.scenario == "b") & (summary.policy == "ba-ucb")]["cum_regret"].iloc[0]
        rf = summary[(summary.scenario == "f") & (summary.policy == "ba-ucb")]["cum_regret"].iloc[0]
        lines.append(
            f"- (f) BA-UCB regret with the biased model / with the unbiased one (b) = {rf / rb:.2f}; "
            f"target <= 2: **{'PASS' if rf <= 2 * rb else 'FAIL'}**."
        )
    lines.append("")
    text = "\n".join(lines)
    print(text)
    if not args.no_results:
        _write_section(text)
    return 0


def _rel(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def _write_section(text: str, section: str = SECTION) -> None:
    """Replace ``section`` of RESULTS.md with ``text``, or append it."""
    write_section(text, section, RESULTS)


if __name__ == "__main__":
    np.seterr(all="ignore")
    sys.exit(main())
