"""The causal-bandit paper comparison, reproduced: BA-UCB against its baselines on random SEMs.

Setting (issue 2; the literature's benchmark): random DAGs terminating in a parallel structure
(``random_parallel_sem``: 3 parents of the reward, 6 other nodes, max in-degree 3, so p = 10);
arms ``do(X_j = +-1)`` on the 9 non-reward nodes (18 arms); horizon T = 5000; a prior
observational sample of ``n_obs`` rows, ``n_obs in {10, 20, 40, 80, 160, 320}``; 50 graphs per
setting.

Common random numbers: for graph ``g`` one seed sequence draws the SEM, one observational
sample of ``max(n_obs)`` rows (each setting uses its first ``n_obs`` rows, so samples are
nested), and the per-round noise of the environment; every policy and every ``n_obs`` face the
same draws. Policies get the same integer seed. Paired differences between policies therefore
remove most of the between-graph variance, and we report them with 95% t-intervals.

Use :func:`run_benchmark` (returns data frames), :func:`summarize`, :func:`acceptance`,
:func:`plot_regret`, and :func:`decision_time` (the timing claim at p = 50); the thin CLI is
``benchmarks/paper_regret.py`` and ``causal-tuner paper-demo`` runs :data:`QUICK`.
"""

from __future__ import annotations

import pickle
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from causal_tuner.bandit import SEMBanditEnvironment, make_context, run_policy
from causal_tuner.policies import available_policies, make_policy, plus_minus_arms
from causal_tuner.sem import random_parallel_sem

__all__ = [
    "DEFAULT_POLICIES",
    "FULL",
    "QUICK",
    "BenchmarkResult",
    "PaperBenchmarkConfig",
    "acceptance",
    "decision_time",
    "format_summary",
    "paired_differences",
    "plot_regret",
    "run_benchmark",
    "scaled",
    "summarize",
]

DEFAULT_POLICIES: tuple[str, ...] = (
    "ba-ucb",
    "oracle-ba-ucb",
    "bbb-ucb",
    "cn-ucb",
    "ucb1",
    "thompson",
    "epsilon-greedy",
    "random",
)


@dataclass(frozen=True)
class PaperBenchmarkConfig:
    """One benchmark setting.

    Parameters
    ----------
    n_reward_parents, n_other, max_in_degree : int
        Graph family (``p = n_reward_parents + n_other + 1``).
    horizon : int
        Rounds per run (T).
    n_obs_values : tuple of int
        Sizes of the prior observational sample.
    n_graphs : int
        Random graphs per setting.
    policies : tuple of str
        Registered policy names.
    seed : int
        Root seed of the whole benchmark.
    record_every : int
        Keep one trajectory row every ``record_every`` rounds in the rows table (the last round
        is always kept; summaries use every round).
    n_jobs : int
        Worker processes (joblib); 1 runs in-process.
    """

    n_reward_parents: int = 3
    n_other: int = 6
    max_in_degree: int = 3
    horizon: int = 5000
    n_obs_values: tuple[int, ...] = (10, 20, 40, 80, 160, 320)
    n_graphs: int = 50
    policies: tuple[str, ...] = DEFAULT_POLICIES
    seed: int = 0
    record_every: int = 50
    n_jobs: int = 2

    def __post_init__(self) -> None:
        for name in ("n_reward_parents", "horizon", "n_graphs", "record_every", "n_jobs"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an int >= 1, got {value!r}")
        if not isinstance(self.n_other, int) or self.n_other < 0:
            raise ValueError(f"n_other must be an int >= 0, got {self.n_other!r}")
        if not isinstance(self.max_in_degree, int) or self.max_in_degree < 1:
            raise ValueError(f"max_in_degree must be an int >= 1, got {self.max_in_degree!r}")
        n_obs = tuple(int(n) for n in self.n_obs_values)
        if not n_obs or any(n < 0 for n in n_obs) or len(set(n_obs)) != len(n_obs):
            raise ValueError(f"n_obs_values must be distinct ints >= 0, got {self.n_obs_values!r}")
        object.__setattr__(self, "n_obs_values", tuple(sorted(n_obs)))
        policies = tuple(self.policies)
        known = set(available_policies())
        for name in policies:
            if name not in known:
                raise ValueError(f"unknown policy {name!r}; available: {', '.join(sorted(known))}")
        if not policies or len(set(policies)) != len(policies):
            raise ValueError(f"policies must be distinct and non-empty, got {self.policies!r}")
        object.__setattr__(self, "policies", policies)

    @property
    def p(self) -> int:
        """Number of nodes."""
        return self.n_reward_parents + self.n_other + 1


#: The issue's full setting (p = 10, T = 5000, 6 sample sizes, 50 graphs).
FULL = PaperBenchmarkConfig()
#: Quick mode (CI, demo): 10 graphs, T = 1000, n_obs in {10, 80, 320}.
QUICK = PaperBenchmarkConfig(horizon=1000, n_obs_values=(10, 80, 320), n_graphs=10, record_every=10)


@dataclass(frozen=True, eq=False)
class BenchmarkResult:
    """Outputs of :func:`run_benchmark`.

    Attributes
    ----------
    config : PaperBenchmarkConfig
    runs : pandas.DataFrame
        One row per (policy, graph, n_obs): ``regret_T``, ``mean_ms``, ``median_ms``, the best
        arm's share of pulls, and the graph seed.
    rows : pandas.DataFrame
        Trajectory rows (policy, graph, graph_seed, n_obs, round, arm, reward, regret,
        cum_regret), every ``record_every`` rounds.
    wall_s : float
        Wall time of the whole run.
    """

    config: PaperBenchmarkConfig
    runs: pd.DataFrame
    rows: pd.DataFrame
    wall_s: float


def _graph_seeds(config: PaperBenchmarkConfig) -> list[np.random.SeedSequence]:
    return np.random.SeedSequence(config.seed).spawn(config.n_graphs)


def _run_graph(config: PaperBenchmarkConfig, graph: int, n_obs: int) -> tuple[list[dict], list]:
    """All policies on graph ``graph`` with the first ``n_obs`` observational rows."""
    seq = _graph_seeds(config)[graph]
    sem_seq, obs_seq, noise_seq, policy_seq = seq.spawn(4)
    sem = random_parallel_sem(
        config.n_reward_parents,
        config.n_other,
        config.max_in_degree,
        seed=np.random.default_rng(sem_seq),
    )
    arms = plus_minus_arms(range(sem.p - 1))
    obs_all = sem.sample(max(config.n_obs_values), seed=np.random.default_rng(obs_seq))
    env = SEMBanditEnvironment(sem, arms, config.horizon, seed=np.random.default_rng(noise_seq))
    context = make_context(sem, arms, obs_all[:n_obs], max_in_degree=config.max_in_degree)
    policy_seed = int(policy_seq.generate_state(1)[0])
    graph_seed = int(sem_seq.generate_state(1)[0])
    keep = np.unique(np.r_[np.arange(0, config.horizon, config.record_every), config.horizon - 1])
    best = int(np.argmax(env.arm_means))
    runs, rows = [], []
    for name in config.policies:
        policy = make_policy(name, context, seed=policy_seed)
        result = run_policy(policy, env)
        cum = result.cumulative_regret
        runs.append(
            {
                "policy": name,
                "graph": graph,
                "graph_seed": graph_seed,
                "n_obs": n_obs,
                "p": sem.p,
                "regret_T": float(cum[-1]),
                "mean_ms": float(result.decision_s.mean() * 1e3),
                "median_ms": float(np.median(result.decision_s) * 1e3),
                "best_arm_share": float(np.mean(result.arm_ids == best)),
            }
        )
        arm_names = np.array([str(a) for a in arms])
        rows.append(
            pd.DataFrame(
                {
                    "policy": name,
                    "graph": graph,
                    "graph_seed": graph_seed,
                    "n_obs": n_obs,
                    "round": keep + 1,
                    "arm": arm_names[result.arm_ids[keep]],
                    "reward": result.rewards[keep],
                    "regret": result.regret[keep],
                    "cum_regret": cum[keep],
                }
            )
        )
    return runs, rows


def _tasks(config: PaperBenchmarkConfig) -> list[tuple[int, int]]:
    # Graph by graph (every n_obs of graph 0, then of graph 1, ...): a run stopped early still
    # has the same graphs for every n_obs, so the paired comparisons stay balanced.
    return [
        (g, n) for g in range(config.n_graphs) for n in sorted(config.n_obs_values, reverse=True)
    ]


def _task_file(checkpoint: Path, config: PaperBenchmarkConfig, graph: int, n_obs: int) -> Path:
    key = f"p{config.p}_T{config.horizon}_s{config.seed}_g{graph}_n{n_obs}"
    return checkpoint / f"task_{key}.pkl"


def _run_task(
    config: PaperBenchmarkConfig, graph: int, n_obs: int, checkpoint: Path | None
) -> tuple[list[dict], list]:
    out = _run_graph(config, graph, n_obs)
    if checkpoint is not None:
        path = _task_file(checkpoint, config, graph, n_obs)
        tmp = path.with_suffix(".tmp")
        with open(tmp, "wb") as fh:
            pickle.dump(out, fh)
        tmp.replace(path)  # atomic: a killed run never leaves a half-written task
    return out


def run_benchmark(
    config: PaperBenchmarkConfig,
    progress: bool = True,
    checkpoint: str | Path | None = None,
    max_tasks: int | None = None,
) -> BenchmarkResult:
    """Run every policy on every (graph, n_obs) task of ``config``.

    Parameters
    ----------
    config : PaperBenchmarkConfig
    progress : bool
        Show a tqdm progress bar over the tasks.
    checkpoint : path, optional
        Folder where each finished task is saved; tasks already there (same setting and seed)
        are loaded instead of re-run, so an interrupted run resumes where it stopped. The
        policies' code is not part of the key: clear the folder after changing it.
    max_tasks : int, optional
        Run at most this many new tasks (the result then holds only finished tasks; tasks run
        graph by graph, every n_obs of a graph together).

    Returns
    -------
    BenchmarkResult
    """
    from tqdm.auto import tqdm

    folder = None if checkpoint is None else Path(checkpoint)
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
    tasks = _tasks(config)
    outputs: list[tuple[list[dict], list]] = []
    todo = []
    for g, n in tasks:
        path = None if folder is None else _task_file(folder, config, g, n)
        if path is not None and path.exists():
            with open(path, "rb") as fh:
                outputs.append(pickle.load(fh))
        else:
            todo.append((g, n))
    if max_tasks is not None:
        todo = todo[: max(int(max_tasks), 0)]
    start = time.perf_counter()
    bar = tqdm(
        total=len(todo), desc=f"paper benchmark p={config.p}", unit="task", disable=not progress
    )
    if config.n_jobs == 1:
        for g, n in todo:
            outputs.append(_run_task(config, g, n, folder))
            bar.update()
    elif todo:
        from joblib import Parallel, delayed

        parallel = Parallel(n_jobs=config.n_jobs, return_as="generator_unordered")
        for out in parallel(delayed(_run_task)(config, g, n, folder) for g, n in todo):
            outputs.append(out)
            bar.update()
    bar.close()
    if not outputs:
        raise ValueError("no task finished: nothing to summarize")
    runs = pd.DataFrame([r for out in outputs for r in out[0]])
    rows = pd.concat([df for out in outputs for df in out[1]], ignore_index=True)
    runs = runs.sort_values(["n_obs", "policy", "graph"], ignore_index=True)
    rows = rows.sort_values(["n_obs", "policy", "graph", "round"], ignore_index=True)
    return BenchmarkResult(config, runs, rows, time.perf_counter() - start)


def _mean_ci(values: np.ndarray, confidence: float = 0.95) -> tuple[float, float]:
    values = np.asarray(values, dtype=float)
    n = values.size
    if n < 2:
        return float(values.mean()) if n else float("nan"), float("nan")
    half = stats.t.ppf(0.5 + confidence / 2, n - 1) * values.std(ddof=1) / np.sqrt(n)
    return float(values.mean()), float(half)


def summarize(runs: pd.DataFrame) -> pd.DataFrame:
    """Mean regret at T with its 95% CI, and time per round, per (n_obs, policy)."""
    out = []
    for (n_obs, policy), group in runs.groupby(["n_obs", "policy"], sort=True):
        mean, half = _mean_ci(group["regret_T"].to_numpy())
        out.append(
            {
                "n_obs": n_obs,
                "policy": policy,
                "graphs": len(group),
                "regret_T": mean,
                "ci95": half,
                "mean_ms_per_round": float(group["mean_ms"].mean()),
                "median_ms_per_round": float(group["median_ms"].median()),
                "best_arm_share": float(group["best_arm_share"].mean()),
            }
        )
    return pd.DataFrame(out)


def paired_differences(runs: pd.DataFrame, policy: str, baseline: str) -> pd.DataFrame:
    """Per n_obs: mean of ``regret_T(policy) - regret_T(baseline)`` over graphs, 95% CI, ratio."""
    out = []
    for n_obs, group in runs.groupby("n_obs", sort=True):
        a = group[group.policy == policy].set_index("graph")["regret_T"]
        b = group[group.policy == baseline].set_index("graph")["regret_T"]
        common = a.index.intersection(b.index)
        if common.empty:
            continue
        diff, half = _mean_ci((a[common] - b[common]).to_numpy())
        ratio = float(a[common].mean() / b[common].mean()) if b[common].mean() > 0 else np.inf
        out.append(
            {"n_obs": n_obs, "diff": diff, "ci95": half, "ratio": ratio, "graphs": len(common)}
        )
    return pd.DataFrame(out)


def acceptance(runs: pd.DataFrame) -> dict[str, object]:
    """The issue's relative claims, measured on ``runs`` (the largest n_obs is the reference).

    Returns a dict with the measured figures and a boolean ``*_ok`` per claim (claims whose
    policies were not run are omitted).
    """
    policies = set(runs.policy)
    n_max = int(runs.n_obs.max())
    at = runs[runs.n_obs == n_max]

    def mean(policy: str, frame: pd.DataFrame = at) -> float:
        return float(frame[frame.policy == policy]["regret_T"].mean())

    out: dict[str, object] = {"n_obs_ref": n_max}
    if {"ba-ucb", "ucb1"} <= policies:
        ratio = mean("ba-ucb") / mean("ucb1")
        out["ba_over_ucb1"] = ratio
        out["ba_over_ucb1_ok"] = ratio <= 0.25
        by_n = paired_differences(runs, "ba-ucb", "ucb1")
        out["ba_over_ucb1_by_n_obs"] = dict(zip(by_n.n_obs.astype(int), by_n.ratio, strict=True))
        ratios = by_n.ratio.to_numpy()
        if len(ratios) >= 2:
            rho = stats.spearmanr(by_n.n_obs, ratios).statistic
            out["advantage_trend_spearman"] = float(rho)
            out["advantage_grows_ok"] = bool(ratios[-1] < ratios[0] and rho < 0)
    if {"oracle-ba-ucb", "ucb1"} <= policies:
        out["oracle_over_ucb1"] = mean("oracle-ba-ucb") / mean("ucb1")
    for other in ("cn-ucb", "bbb-ucb"):
        if {"ba-ucb", other} <= policies:
            diff = paired_differences(at, "ba-ucb", other).iloc[0]
            key = other.replace("-", "_")
            out[f"ba_minus_{key}"] = float(diff["diff"])
            out[f"ba_minus_{key}_ci95"] = float(diff["ci95"])
            out[f"ba_below_{key}_ok"] = bool(mean("ba-ucb") < mean(other))
    if {"ba-ucb", "bbb-ucb"} <= policies:
        ba_ms = float(runs[runs.policy == "ba-ucb"]["mean_ms"].mean())
        bbb_ms = float(runs[runs.policy == "bbb-ucb"]["mean_ms"].mean())
        out["ba_ms_per_round"] = ba_ms
        out["bbb_ms_per_round"] = bbb_ms
        out["ba_faster_than_bbb_ok"] = ba_ms < bbb_ms
    return out


def _curve_stats(
    rows: pd.DataFrame,
) -> Iterator[tuple[int, str, np.ndarray, np.ndarray, np.ndarray]]:
    for (n_obs, policy), group in rows.groupby(["n_obs", "policy"], sort=True):
        table = group.pivot(index="round", columns="graph", values="cum_regret")
        values = table.to_numpy()
        n = values.shape[1]
        mean = values.mean(axis=1)
        if n > 1:
            half = stats.t.ppf(0.975, n - 1) * values.std(axis=1, ddof=1) / np.sqrt(n)
        else:
            half = np.zeros_like(mean)
        yield int(n_obs), str(policy), table.index.to_numpy(), mean, half


def plot_regret(result: BenchmarkResult, path: str, title: str | None = None) -> str:
    """Cumulative-regret curves (mean with 95% bands), one panel per n_obs, plus regret at T.

    Returns the path written (PNG).
    """
    import matplotlib
    from matplotlib.figure import Figure

    n_values = list(result.config.n_obs_values)
    policies = list(result.config.policies)
    colors = {name: matplotlib.colormaps["tab10"](i % 10) for i, name in enumerate(policies)}
    n_panels = len(n_values) + 1
    cols = min(n_panels, 4)
    rows_n = int(np.ceil(n_panels / cols))
    fig = Figure(figsize=(4.2 * cols, 3.4 * rows_n))
    axes = fig.subplots(rows_n, cols, squeeze=False)
    flat = axes.ravel()
    panel = {n: flat[i] for i, n in enumerate(n_values)}
    for n_obs, policy, rounds, mean, half in _curve_stats(result.rows):
        ax = panel[n_obs]
        ax.plot(rounds, mean, color=colors[policy], label=policy, lw=1.4)
        ax.fill_between(rounds, mean - half, mean + half, color=colors[policy], alpha=0.18, lw=0)
    for n_obs, ax in panel.items():
        ax.set_title(f"n_obs = {n_obs}")
        ax.set_xlabel("round")
        ax.set_ylabel("cumulative pseudo-regret")
        ax.grid(alpha=0.3)
    ax = flat[len(n_values)]
    summary = summarize(result.runs)
    for policy in policies:
        s = summary[summary.policy == policy]
        ax.errorbar(
            s.n_obs,
            s.regret_T,
            yerr=s.ci95,
            color=colors[policy],
            marker="o",
            ms=3,
            label=policy,
            capsize=2,
        )
    ax.set_xscale("log", base=2)
    ax.set_xlabel("n_obs (prior observational rows)")
    ax.set_ylabel(f"regret at T = {result.config.horizon}")
    ax.set_title("regret at T (95% CI)")
    ax.grid(alpha=0.3)
    for extra in flat[len(n_values) + 1 :]:
        extra.axis("off")
    handles, labels = flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(len(policies), 8), fontsize=8)
    fig.suptitle(
        title
        or f"Causal bandit, p = {result.config.p}, {result.config.n_graphs} graphs, mean with 95% bands"
    )
    fig.tight_layout(rect=(0, 0.06, 1, 0.96))
    fig.savefig(path, dpi=110)
    return str(path)


def decision_time(
    p: int = 50,
    n_obs: int = 10_000,
    rounds: int = 300,
    n_graphs: int = 3,
    policy: str = "ba-ucb",
    seed: int = 0,
    max_in_degree: int = 3,
    n_reward_parents: int = 3,
    policy_params: dict | None = None,
    progress: bool = True,
) -> pd.DataFrame:
    """Per-round decision time (``select`` + ``update``) of ``policy`` at scale.

    Builds ``n_graphs`` parallel-structure SEMs with ``p`` nodes, gives the policy ``n_obs``
    observational rows, and plays ``rounds`` rounds. Construction (the first structure search)
    is timed separately.

    Returns
    -------
    pandas.DataFrame
        One row per (graph, round): ``decision_ms``; plus per-graph ``setup_s`` repeated.
    """
    from tqdm.auto import tqdm

    if p < n_reward_parents + 2:
        raise ValueError(f"p={p} too small for {n_reward_parents} reward parents")
    frames = []
    seqs = np.random.SeedSequence(seed).spawn(n_graphs)
    for g in tqdm(range(n_graphs), desc=f"decision time p={p}", disable=not progress):
        sem_seq, obs_seq, noise_seq, policy_seq = seqs[g].spawn(4)
        sem = random_parallel_sem(
            n_reward_parents,
            p - n_reward_parents - 1,
            max_in_degree,
            seed=np.random.default_rng(sem_seq),
        )
        arms = plus_minus_arms(range(p - 1))
        obs = sem.sample(n_obs, seed=np.random.default_rng(obs_seq))
        env = SEMBanditEnvironment(sem, arms, rounds, seed=np.random.default_rng(noise_seq))
        context = make_context(sem, arms, obs, max_in_degree=max_in_degree)
        start = time.perf_counter()
        pol = make_policy(
            policy, context, seed=int(policy_seq.generate_state(1)[0]), **(policy_params or {})
        )
        setup_s = time.perf_counter() - start
        result = run_policy(pol, env, keep_history=False)
        frames.append(
            pd.DataFrame(
                {
                    "graph": g,
                    "round": np.arange(1, rounds + 1),
                    "decision_ms": result.decision_s * 1e3,
                    "setup_s": setup_s,
                    "regret": result.regret,
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


def scaled(config: PaperBenchmarkConfig, p: int, **changes) -> PaperBenchmarkConfig:
    """``config`` with ``p`` nodes (same number of reward parents), other fields overridden."""
    n_other = p - config.n_reward_parents - 1
    if n_other < 0:
        raise ValueError(f"p={p} is too small for {config.n_reward_parents} reward parents")
    return replace(config, n_other=n_other, **changes)


def format_summary(summary: pd.DataFrame, n_obs_values: Sequence[int] | None = None) -> str:
    """A markdown table: one row per (n_obs, policy)."""
    frame = summary if n_obs_values is None else summary[summary.n_obs.isin(list(n_obs_values))]
    lines = [
        "| n_obs | policy | graphs | mean regret at T | 95% CI | ms/round (mean) | ms/round (median) | best-arm share |",
        "|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in frame.itertuples():
        lines.append(
            f"| {row.n_obs} | {row.policy} | {row.graphs} | {row.regret_T:.1f} | ±{row.ci95:.1f} | "
            f"{row.mean_ms_per_round:.3f} | {row.median_ms_per_round:.3f} | {row.best_arm_share:.2f} |"
        )
    return "\n".join(lines)
