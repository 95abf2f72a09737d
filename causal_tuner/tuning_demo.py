"""``causal-tuner demo``: a tuning run on the serving simulator, no GPU, under two minutes.

Scenario (a) of the tuning benchmark, made small: Qwen3-32B on 8x H200, windows cut from the
bundled Azure conversation trace at 6x its rate, goodput under a 2 s TTFT / 50 ms TPOT SLA,
and a knob space of max_num_seqs x chunked prefill x tensor parallelism. The demo simulates a
few windows of every config (the oracle), then lets BA-UCB with the analytical prior and the
UCB1 and TPE baselines tune for a few dozen windows on the same window draws, and prints the
chosen configs, their regret against the oracle and a plot.
"""

from __future__ import annotations

import time
from pathlib import Path

import click
import numpy as np

from causal_tuner.environments import PooledEnvironment, SimulatedEnvironment, TraceLoad
from causal_tuner.knobs import Knob, KnobSpace
from causal_tuner.objective import SLA, Objective
from causal_tuner.prior import AnalyticalPrior
from causal_tuner.session import DEFAULT_CONTEXT_KEYS, TuningSession
from causal_tuner.store import SQLiteStore
from causal_tuner.tuning_benchmark import plot_regret
from simulator.traces import load_trace

MODEL, SYSTEM, GPUS = "Qwen/Qwen3-32B", "h200_sxm", 8
POLICIES = ("ba-ucb", "ucb1", "tpe")


def _describe(config: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in config.items())


@click.command()
@click.option(
    "--windows",
    default=40,
    show_default=True,
    type=click.IntRange(5, 500),
    help="Tuning windows per policy.",
)
@click.option(
    "--pool-size",
    default=4,
    show_default=True,
    type=click.IntRange(2, 50),
    help="Simulated windows per config for the oracle.",
)
@click.option("--seed", default=0, show_default=True, type=int)
@click.option(
    "--out",
    "out_dir",
    default="causal-tuner-demo",
    show_default=True,
    type=click.Path(file_okay=False, path_type=Path),
)
def demo(windows: int, pool_size: int, seed: int, out_dir: Path) -> None:
    """Tune Qwen3-32B on 8x H200 (simulated) with BA-UCB and compare with UCB1 and TPE."""
    import pandas as pd

    t0 = time.perf_counter()
    out_dir.mkdir(parents=True, exist_ok=True)
    objective = Objective(sla=SLA(ttft_ms=2000.0, tpot_ms=50.0))
    prior = AnalyticalPrior(MODEL, SYSTEM, GPUS, objective)
    space = prior.constrain(
        KnobSpace(
            (
                Knob("max_num_seqs", (16, 32, 64, 128, 256), 256),
                Knob("enable_chunked_prefill", (True, False), True),
                Knob("tensor_parallel_size", (1, 2), 1),
            )
        )
    )
    configs = list(space.grid())
    click.echo(f"Qwen3-32B on {GPUS}x H200, Azure conv trace at 6x rate; {len(configs)} configs.")
    env = SimulatedEnvironment(
        MODEL, SYSTEM, GPUS, TraceLoad(load_trace("azure-conv"), 6.0), objective, seed=seed
    )
    pool = PooledEnvironment(env, configs, pool_size)
    truth = pool.true_rewards(objective, 0)
    best = int(np.argmax(truth))
    click.echo(f"Oracle best: {_describe(configs[best])} -> {truth[best]:,.0f} goodput tok/s\n")

    rows, summary = [], []
    first = {
        k: float(np.nanmean([w[k] for i in range(len(configs)) for w in pool.windows_[(0, i)]]))
        for k in DEFAULT_CONTEXT_KEYS
    }
    for name in POLICIES:
        store_path = out_dir / f"{name}.sqlite"
        store_path.unlink(missing_ok=True)
        with SQLiteStore(store_path) as store:
            session = TuningSession(space, objective, name, store=store, prior=prior, seed=seed)
            for r in range(windows):
                trial = session.ask(first if r == 0 else None)
                obs = pool.observe(trial.config, r, draw=seed)
                session.tell(trial.trial_id, obs)
                i = pool.config_index(trial.config)
                rows.append(
                    {
                        "policy": name,
                        "seed": seed,
                        "round": r,
                        "config": i,
                        "regret": truth[best] - truth[i],
                    }
                )
            final = session.best_config()
        fi = pool.config_index(final)
        regret = sum(r["regret"] for r in rows if r["policy"] == name)
        summary.append((name, _describe(final), truth[fi] / truth[best], regret))
    frame = pd.DataFrame(rows)
    frame.to_csv(out_dir / "windows.csv", index=False)
    plot_regret(
        frame, out_dir / "regret.png", title=f"Qwen3-32B / {GPUS}x H200 (simulated), seed {seed}"
    )

    click.echo(f"{'policy':8} {'cum. regret':>12} {'final/oracle':>13}  chosen config")
    for name, cfg, ratio, regret in summary:
        click.echo(f"{name:8} {regret:12,.0f} {ratio:13.3f}  {cfg}")
    click.echo(
        f"\nRegret is goodput (tok/s) lost against the oracle, summed over {windows} windows of 60 s."
        f"\nWrote {out_dir}/regret.png, windows.csv and one SQLite store per policy "
        f"({time.perf_counter() - t0:.0f} s)."
    )
