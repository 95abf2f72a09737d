"""Structure learning: our PC beside causal-learn's PC on the same samples, plus online PC cost.

Batch part. For every graph family (Erdos-Renyi with expected degree 2; the causal-bandit
"parallel" graph with 3 reward parents and max in-degree 3), every p and n, and every seed, one
random SEM is drawn and ``n`` observational rows sampled from it; both learners see the SAME
rows (common random numbers) with the same alpha and Fisher z test: ours
(:class:`causal_tuner.PC`) and causal-learn's ``pc(data, alpha, fisherz, stable=True)``. Each
estimate is scored against the true CPDAG: SHD (pairs whose edge state differs), skeleton F1
and oriented F1 (:func:`causal_tuner.edge_scores`), and wall time per fit. Means carry 95%
confidence intervals over seeds (normal approximation, 1.96 standard errors); the paired SHD
difference (ours minus causal-learn) gets its own interval.

Online part. :class:`causal_tuner.OnlinePC` on a stream of p = 50 variables: 2,000
observational rows then 8,000 rows each intervening on a random non-reward node with value
+-1 (the bandit's rows). Reported: the per-update time (median, 99th percentile, mean, so the
amortized rediscovery cost is in the mean), the number of rediscoveries and their mean time.

Usage::

    python3 benchmarks/structure_learning.py                 # full: 20 seeds, writes RESULTS.md
    python3 benchmarks/structure_learning.py --quick --no-results
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import re
import sys
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from results_md import machine
from tqdm import tqdm

from causal_tuner import (
    PC,
    OnlinePC,
    PartiallyDirectedGraph,
    edge_scores,
    random_er_sem,
    random_parallel_sem,
    structural_hamming_distance,
)

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "RESULTS.md"
OUT = HERE / "results"
HEADING = "## Structure learning: PC vs causal-learn"


# ------------------------------------------------------------------ learners
def causallearn_adjacency(data: np.ndarray, alpha: float) -> np.ndarray:
    """causal-learn's PC (Fisher z, stable) as a matrix in our convention.

    causal-learn marks ``i -> j`` by ``G[j, i] = 1, G[i, j] = -1`` and ``i - j`` by both -1;
    a conflict-induced ``i <-> j`` (both 1) is mapped to an undirected edge.
    """
    from causallearn.search.ConstraintBased.PC import pc
    from causallearn.utils.cit import fisherz

    with contextlib.redirect_stdout(io.StringIO()):
        cg = pc(data, alpha, fisherz, stable=True, show_progress=False)
    g = cg.G.graph
    p = g.shape[0]
    a = np.zeros((p, p), dtype=np.int8)
    for i in range(p):
        for j in range(p):
            if i == j or g[i, j] == 0:
                continue
            directed_ij = g[j, i] == 1 and g[i, j] == -1
            symmetric = g[i, j] == g[j, i]
            if directed_ij or symmetric:
                a[i, j] = 1
    return a


def ours_adjacency(data: np.ndarray, alpha: float) -> np.ndarray:
    return PC(alpha=alpha).fit(data).adjacency_


LEARNERS = {"causal_tuner.PC": ours_adjacency, "causal-learn pc": causallearn_adjacency}


def draw_sem(family: str, p: int, seed: np.random.SeedSequence):
    if family == "er":
        return random_er_sem(p, 2.0, seed=np.random.default_rng(seed))
    if family == "parallel":
        return random_parallel_sem(3, p - 4, 3, seed=np.random.default_rng(seed))
    raise ValueError(f"unknown graph family {family!r} (use 'er' or 'parallel')")


def run_batch(
    families: list[str], ps: list[int], ns: list[int], seeds: int, alpha: float
) -> pd.DataFrame:
    rows = []
    jobs = [(f, p, n, s) for f in families for p in ps for n in ns for s in range(seeds)]
    for family, p, n, seed in tqdm(jobs, desc="structure learning", unit="fit"):
        graph_seed, data_seed = np.random.SeedSequence([p, n, seed]).spawn(2)
        sem = draw_sem(family, p, graph_seed)
        data = sem.sample(n, seed=np.random.default_rng(data_seed))
        truth = PartiallyDirectedGraph.from_dag(sem.graph)
        for method, learner in LEARNERS.items():
            start = time.perf_counter()
            estimate = learner(data, alpha)
            elapsed = time.perf_counter() - start
            scores = edge_scores(estimate, truth)
            rows.append(
                {
                    "family": family,
                    "p": p,
                    "n": n,
                    "seed": seed,
                    "method": method,
                    "shd": structural_hamming_distance(estimate, truth),
                    "skeleton_f1": scores["skeleton_f1"],
                    "oriented_f1": scores["oriented_f1"],
                    "fit_s": elapsed,
                    "true_edges": int(truth.skeleton.sum() // 2),
                }
            )
    return pd.DataFrame(rows)


def run_online(p: int, n_obs: int, n_int: int, seed: int, rediscover_every: int) -> dict:
    rng = np.random.default_rng(seed)
    sem = random_parallel_sem(3, p - 4, 3, seed=rng)
    rows = [sem.sample(n_obs, seed=rng)]
    regimes = [np.full(n_obs, -1)]
    nodes = rng.integers(p - 1, size=n_int)
    values = rng.choice([-1.0, 1.0], size=n_int)
    for node, value in zip(nodes, values, strict=True):
        rows.append(sem.sample(1, seed=rng, interventions={int(node): float(value)}))
    regimes.append(nodes)
    data, intervened = np.vstack(rows), np.concatenate(regimes)
    online = OnlinePC(alpha=0.01, rediscover_every=rediscover_every, change_threshold=0.1)
    times = np.empty(len(data))
    rediscovery_times = []
    for t, (row, k) in enumerate(
        tqdm(list(zip(data, intervened, strict=True)), desc="online PC", unit="row")
    ):
        before = online.n_rediscoveries_ if t else 0
        start = time.perf_counter()
        online.update(row, int(k))
        times[t] = time.perf_counter() - start
        if online.n_rediscoveries_ > before:
            rediscovery_times.append(times[t])
    batch = PC(alpha=0.01).fit(data, intervened)
    online.rediscover()
    truth = PartiallyDirectedGraph.from_dag(sem.graph)
    return {
        "p": p,
        "rows": len(data),
        "update_median_ms": float(np.median(times) * 1e3),
        "update_p99_ms": float(np.percentile(times, 99) * 1e3),
        "update_mean_ms": float(times.mean() * 1e3),
        "rediscoveries": online.n_rediscoveries_ - 1,
        "rediscovery_mean_s": float(np.mean(rediscovery_times)) if rediscovery_times else 0.0,
        "final_equals_batch": bool(np.array_equal(online.adjacency_, batch.adjacency_)),
        "final_shd": structural_hamming_distance(online.cpdag_, truth),
        "obs_only_shd": structural_hamming_distance(PC(alpha=0.01).fit(data[:n_obs]).cpdag_, truth),
    }


def run_experimental(
    seeds: int, p: int = 20, n_obs: int = 500, n_per_node: int = 100
) -> pd.DataFrame:
    """Experimental rows: per-regime handling vs naive pooling vs observational rows only.

    Parallel graphs with p nodes; ``n_obs`` observational rows plus ``n_per_node`` rows under
    ``do(X_k)`` for every non-reward node k, with the value either drawn +-1 per row (the bandit's
    arms) or fixed at +2 (a knob set to one value). All three learners see the same rows.
    """
    rows = []
    jobs = [(design, seed) for design in ("do(+-1)", "do(+2)") for seed in range(seeds)]
    for design, seed in tqdm(jobs, desc="experimental rows", unit="graph"):
        graph_seed, data_seed = np.random.SeedSequence([p, 7, seed]).spawn(2)
        sem = draw_sem("parallel", p, graph_seed)
        rng = np.random.default_rng(data_seed)
        parts, regimes = [sem.sample(n_obs, seed=rng)], [np.full(n_obs, -1)]
        for k in range(p - 1):
            if design == "do(+2)":
                parts.append(sem.sample(n_per_node, seed=rng, interventions={k: 2.0}))
            else:
                values = rng.choice([-1.0, 1.0], size=n_per_node)
                parts.extend(sem.sample(1, seed=rng, interventions={k: float(v)}) for v in values)
            regimes.append(np.full(n_per_node, k))
        data, intervened = np.vstack(parts), np.concatenate(regimes)
        truth = PartiallyDirectedGraph.from_dag(sem.graph)
        dag = PartiallyDirectedGraph.from_networkx(sem.graph)
        fits = {
            "per-regime (ours)": PC(alpha=0.01).fit(data, intervened),
            "pooled as observational": PC(alpha=0.01).fit(data),
            "observational rows only": PC(alpha=0.01).fit(data[:n_obs]),
        }
        for method, pc in fits.items():
            scores = edge_scores(pc.cpdag_, dag)
            rows.append(
                {
                    "design": design,
                    "seed": seed,
                    "method": method,
                    "shd_vs_cpdag": structural_hamming_distance(pc.cpdag_, truth),
                    "shd_vs_dag": structural_hamming_distance(pc.cpdag_, dag),
                    "skeleton_f1": scores["skeleton_f1"],
                    "oriented_f1_vs_dag": scores["oriented_f1"],
                }
            )
    return pd.DataFrame(rows)


def experimental_markdown(frame: pd.DataFrame, p: int = 20) -> str:
    lines = [
        "",
        f"Experimental rows (parallel graphs, p = {p}, {frame.seed.nunique()} seeds; 500 "
        "observational rows + 100 rows under do(X_k) for each of the 19 non-reward nodes; the "
        "same rows for the three learners). Interventions can orient edges the observational "
        "CPDAG leaves undirected, so the graph is also scored against the true DAG:",
        "",
        "| design | learner | SHD vs DAG | SHD vs CPDAG | skeleton F1 | oriented F1 vs DAG |",
        "|---|---|---|---|---|---|",
    ]
    for (design, method), part in frame.groupby(["design", "method"], sort=False):
        cells = [
            fmt(*ci(part[m]))
            for m in ("shd_vs_dag", "shd_vs_cpdag", "skeleton_f1", "oriented_f1_vs_dag")
        ]
        lines.append(f"| {design} | {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------ reporting
def ci(values: pd.Series) -> tuple[float, float]:
    values = np.asarray(values, dtype=float)
    mean = float(values.mean())
    half = 1.96 * float(values.std(ddof=1)) / np.sqrt(len(values)) if len(values) > 1 else 0.0
    return mean, half


def summarize(frame: pd.DataFrame) -> pd.DataFrame:
    out = []
    for (family, p, n), part in frame.groupby(["family", "p", "n"], sort=True):
        ours = part[part.method == "causal_tuner.PC"].sort_values("seed")
        ref = part[part.method == "causal-learn pc"].sort_values("seed")
        row = {"family": family, "p": p, "n": n, "seeds": len(ours)}
        for tag, sub in (("ours", ours), ("cl", ref)):
            for metric in ("shd", "skeleton_f1", "oriented_f1", "fit_s"):
                row[f"{tag}_{metric}"], row[f"{tag}_{metric}_ci"] = ci(sub[metric])
        row["shd_diff"], row["shd_diff_ci"] = ci(ours["shd"].to_numpy() - ref["shd"].to_numpy())
        row["speedup"] = float(ref["fit_s"].mean() / ours["fit_s"].mean())
        out.append(row)
    return pd.DataFrame(out)


def fmt(mean: float, half: float, digits: int = 2) -> str:
    return f"{mean:.{digits}f} ± {half:.{digits}f}"


def markdown(
    summary: pd.DataFrame, online: dict | None, command: str, alpha: float, load: str = ""
) -> str:
    lines = [
        "",
        f"Command: `{command}`  ",
        f"Machine: {machine()}{load}  ",
        f"Alpha {alpha}, Fisher z, PC-stable in both; same rows for both learners; mean ± 95% CI "
        f"over seeds. SHD against the true CPDAG (lower is better); F1 of the skeleton and of the "
        f"oriented edge marks (higher is better); Δ SHD = ours − causal-learn, paired by seed. "
        f"CSV: `benchmarks/results/structure_learning.csv`; figure: "
        f"`benchmarks/results/structure_learning.png`.",
        "",
        "| graph | p | n | seeds | SHD ours | SHD causal-learn | Δ SHD | skeleton F1 ours | "
        "skeleton F1 c-l | oriented F1 ours | oriented F1 c-l | fit s ours | fit s c-l | speed-up |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in summary.itertuples():
        lines.append(
            f"| {r.family} | {r.p} | {r.n} | {r.seeds} | {fmt(r.ours_shd, r.ours_shd_ci, 1)} | "
            f"{fmt(r.cl_shd, r.cl_shd_ci, 1)} | {fmt(r.shd_diff, r.shd_diff_ci, 2)} | "
            f"{fmt(r.ours_skeleton_f1, r.ours_skeleton_f1_ci)} | "
            f"{fmt(r.cl_skeleton_f1, r.cl_skeleton_f1_ci)} | "
            f"{fmt(r.ours_oriented_f1, r.ours_oriented_f1_ci)} | "
            f"{fmt(r.cl_oriented_f1, r.cl_oriented_f1_ci)} | "
            f"{r.ours_fit_s:.3f} | {r.cl_fit_s:.3f} | {r.speedup:.1f}× |"
        )
    if online is not None:
        lines += [
            "",
            f"Online PC (`OnlinePC(rediscover_every=200, change_threshold=0.1)`), p = "
            f"{online['p']}, {online['rows']} rows (2,000 observational, then one do(X_k = ±1) "
            f"row per round on a random non-reward node):",
            "",
            "| update median ms | update p99 ms | update mean ms (amortized) | rediscoveries | "
            "mean rediscovery s | final graph == batch PC on all rows | SHD final | "
            "SHD of batch PC on the 2,000 observational rows |",
            "|---|---|---|---|---|---|---|---|",
            f"| {online['update_median_ms']:.3f} | {online['update_p99_ms']:.3f} | "
            f"{online['update_mean_ms']:.3f} | {online['rediscoveries']} | "
            f"{online['rediscovery_mean_s']:.3f} | {online['final_equals_batch']} | "
            f"{online['final_shd']} | {online['obs_only_shd']} |",
        ]
    return "\n".join(lines) + "\n"


def write_results(body: str) -> None:
    """Replace the text under our own heading in RESULTS.md (re-read right before writing)."""
    doc = RESULTS.read_text()
    if HEADING not in doc:
        doc = doc.rstrip("\n") + f"\n\n{HEADING}\n"
    pattern = re.compile(re.escape(HEADING) + r"\n.*?(?=\n## |\Z)", re.DOTALL)
    doc = pattern.sub(lambda _: HEADING + "\n" + body.rstrip("\n") + "\n", doc, count=1)
    RESULTS.write_text(doc)


def plot(summary: pd.DataFrame, path: Path) -> None:
    families = sorted(summary.family.unique())
    ps = sorted(summary.p.unique())
    fig, axes = plt.subplots(
        len(families), len(ps), figsize=(4 * len(ps), 3.2 * len(families)), squeeze=False
    )
    for r, family in enumerate(families):
        for c, p in enumerate(ps):
            ax = axes[r][c]
            part = summary[(summary.family == family) & (summary.p == p)].sort_values("n")
            for tag, label in (("ours", "causal_tuner.PC"), ("cl", "causal-learn pc")):
                mean, half = part[f"{tag}_shd"], part[f"{tag}_shd_ci"]
                ax.plot(part.n, mean, marker="o", label=label)
                ax.fill_between(part.n, mean - half, mean + half, alpha=0.2)
            ax.set_xscale("log")
            ax.set_xticks(list(part.n))
            ax.set_xticklabels([str(n) for n in part.n])
            ax.minorticks_off()
            ax.set_title(f"{family}, p = {p}")
            ax.set_xlabel("rows n")
            ax.set_ylabel("SHD to true CPDAG")
            ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small grid, 5 seeds")
    ap.add_argument("--seeds", type=int, default=None, help="seeds per setting (default 20)")
    ap.add_argument("--alpha", type=float, default=0.01)
    ap.add_argument("--no-online", action="store_true", help="skip the online PC part")
    ap.add_argument("--no-results", action="store_true", help="do not touch RESULTS.md")
    args = ap.parse_args(argv)
    seeds = args.seeds or (5 if args.quick else 20)
    if seeds < 2:
        print("error: --seeds must be >= 2 (confidence intervals need two seeds)", file=sys.stderr)
        return 2
    if not 0 < args.alpha < 1:
        print(f"error: --alpha must lie in (0, 1), got {args.alpha}", file=sys.stderr)
        return 2
    load_start = os.getloadavg()[0]
    ps = [10, 20] if args.quick else [10, 20, 50]
    ns = [200, 1000] if args.quick else [200, 1000, 5000]
    frame = run_batch(["er", "parallel"], ps, ns, seeds, args.alpha)
    summary = summarize(frame)
    online = None
    if not args.no_online:
        online = run_online(
            50, 2000, 8000 if not args.quick else 2000, seed=0, rediscover_every=200
        )
    experimental = run_experimental(seeds)
    OUT.mkdir(exist_ok=True)
    frame.to_csv(OUT / "structure_learning.csv", index=False)
    experimental.to_csv(OUT / "structure_learning_experimental.csv", index=False)
    plot(summary, OUT / "structure_learning.png")
    command = "python3 benchmarks/structure_learning.py " + " ".join(
        argv if argv is not None else sys.argv[1:]
    )
    load = (
        f"; 1-min load average {load_start:.1f} at start, {os.getloadavg()[0]:.1f} at end "
        "(shared machine: compare the two learners within this run)"
    )
    body = markdown(summary, online, command.strip(), args.alpha, load)
    body += experimental_markdown(experimental)
    print(body)
    if not args.no_results:
        write_results(body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
