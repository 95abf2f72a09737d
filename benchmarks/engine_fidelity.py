"""Fidelity of the discrete-event engine on measured deployments (silicon_dev.csv).

For every aggregated row of ``../shared/data/validation/silicon_dev.csv`` that the analytical
model covers, run the serving engine in closed loop at the row's client concurrency
(``silicon_concurrency``, as the measurement did), with the row's ISL/OSL, parallel layout and
``max_num_seqs`` (the row's ``batch_size``), steps priced by the same calibrated analytical step
model, and report the median absolute percentage error of mean TTFT and mean TPOT beside the
analytical model's closed-form estimate (``benchmarks/fidelity.py``, whose row loading and
predictor are reused) and AIConfigurator 0.12.0's predictions, on common rows, with 95%
bootstrap confidence intervals over rows. "Under load" means concurrency >= 32.

The benchmark client: rows from InferenceX ran a client whose lengths are uniform on
``[floor(0.8 L), L]`` for the nominal ``L`` (``harness.py``), and the simulated clients draw the
same. The other rows' harness is not documented: nominally fixed lengths, but clients of a real
harness drift out of lock-step (length variation, client overheads), so their simulated clients
draw lengths uniformly within ``+-CLIENT_LENGTH_JITTER[backend]`` of nominal (mean preserved).
Each row's scheduler runs asynchronously or not as its engine version did (``harness.py``).
That constant and the front end's latency are fitted per backend by ``--calibrate`` on the
calibration half of the rows (``benchmarks/fidelity.py``'s documented split: SHA-1 of the id
even), minimising the median TTFT error plus the median TPOT error (a jitter that keeps clients
in step moves TTFT one way and TPOT the other, so fitting TTFT alone trades one for the other);
results are reported on the held-out half and on all rows. Nothing is fitted per row. The
engine's run-noise CV is the only engine constant fitted on this file (``--calibrate-noise``).

Usage::

    python benchmarks/engine_fidelity.py [--limit N] [--seeds 2] [--calibrate] [--calibrate-noise]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent))
import fidelity as analytical_fidelity
import harness
from results_md import write_marked_block

from simulator.analytical import DEFAULT_QUEUE, MIXED_BATCHING_DEFAULT
from simulator.cluster import Cluster, KVTransfer, Replica
from simulator.engine import DEFAULT_RUN_NOISE_CV, EngineConfig
from simulator.memory import kv_bytes_per_token
from simulator.models import load_model
from simulator.step_time import DEFAULT_OVERHEAD, ENGINE_STEP_SCALES
from simulator.workloads import LengthDistribution

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "validation"
RESULTS = ROOT / "benchmarks" / "RESULTS.md"
SECTION = "## Serving engine: speed and fidelity"
LOAD_CONCURRENCY = 32
#: Per backend, fitted by ``--calibrate`` on the calibration half of the aggregated rows (seed 0)
#: with the front-end latency below: the grid value minimising median TTFT APE + median TPOT APE
#: (sglang 0: 12.9 + 14.6 against 26.7 + 15.1 at 0.01 and 32.6 + 20.6 at 0.3; trtllm 0.2:
#: 13.9 + 9.1 against 13.7 + 9.5 at 0.1 and 14.6 + 9.1 at 0.3; vllm 0.3: 11.6 + 7.5 against
#: 11.6 + 7.5 at 0.1 and 12.3 + 7.6 at 0.05, a near-tie; refitted with the engine's own step
#: constants, at commit 57e7421; all values in benchmarks/RESULTS.md). It applies to
#: the rows whose client is not documented; InferenceX rows draw the lengths its client drew
#: (``harness.py``).
#: SGLang's scheduler does not mix prefill into decode steps, so clients with equal lengths stay
#: in lock-step: its undocumented rows (H100, H200) fit best that way, at a cost in TPOT.
CLIENT_LENGTH_JITTER = {"vllm": 0.1, "sglang": 0.0, "trtllm": 0.2}
#: Per-backend frontend latency (``EngineConfig.frontend_latency_ms``: HTTP, tokenization and
#: hand-off before the scheduler sees a request), fitted by ``--calibrate`` with the jitter above:
#: for each backend and jitter, the constant c (grid 0..300 ms, step 5) minimising the median
#: TTFT APE of (engine TTFT at frontend latency 0) + c; the reported rows then simulate it
#: mechanistically. As the analytical model's fixed TTFT (``benchmarks/fidelity.py``), it belongs to
#: the client and front end the measurement ran through: one value for InferenceX rows (this
#: dict) and one for the rows of other sources (:data:`OTHER_SOURCE_FRONTEND_MS`), fitted jointly.
FRONTEND_LATENCY_MS = {"vllm": 10.0, "sglang": 105.0, "trtllm": 20.0}
OTHER_SOURCE_FRONTEND_MS = {"vllm": 0.0, "sglang": 60.0, "trtllm": 100.0}
#: Requests each closed-loop client sends (the measurement's length is not recorded; the first,
#: synchronized wave weighs less the longer the run). Chosen on 50 calibration-half aggregated
#: rows with concurrency 32-256 (seed 0, ``random_state=0`` sample): median TTFT APE 57.7% with
#: 4 requests per client, 29.5% with 10 (with the constants of that time, jitter 0.3).
REQUESTS_PER_CLIENT = 10
#: The engine's own step constants per backend, ``(kernel_scale, prefill_step_scale)``: the
#: product's (``simulator.step_time.ENGINE_STEP_SCALES``), which ``--calibrate`` refits on the
#: calibration half before the jitter and front end (the grid point minimising median TTFT APE,
#: with the additive front ends that minimise it, + median TPOT APE).
ENGINE_SCALES = dict(ENGINE_STEP_SCALES)
KERNEL_SCALE_STEPS = (
    -0.2,
    -0.1,
    0.0,
    0.1,
    0.2,
    0.3,
)  # added to the analytical estimate's kernel_scale
PREFILL_STEP_GRID = (0.8, 0.9, 1.0, 1.1, 1.2, 1.3, 1.4)
JITTER_GRID = (0.0, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3)
GROUP_KEYS = [
    "model_path",
    "system",
    "backend",
    "backend_version",
    "precision",
    "mode",
    "isl",
    "osl",
    "gemm_quant_mode",
    "tp_size",
    "pp_size",
    "attention_dp_size",
    "moe_ep_size",
    "concurrency",
    "prefill_num_workers",
    "decode_num_workers",
    "prefill_tp_size",
    "decode_tp_size",
]


def run_noise_cv(rows: pd.DataFrame) -> tuple[float, int]:
    """Median TPOT coefficient of variation over groups of repeated identical deployments whose
    measurements differ (identical values are copies of one measurement, not repeats)."""
    cvs = []
    for _, grp in rows.groupby(GROUP_KEYS, dropna=False):
        v = grp["silicon_tpot_ms"].to_numpy(dtype=float)
        if len(v) > 1 and np.ptp(v) / v.mean() > 1e-6:
            cvs.append(v.std(ddof=1) / v.mean())
    return float(np.median(cvs)), len(cvs)


def _pool(
    model,
    seqs: int,
    count: int,
    frontend_ms: float = 0.0,
    async_scheduling: bool = True,
    recv_interval: int = 1,
    budget: int = 8192,
    speculative_tokens: int = 0,
    batch_wait: tuple[int, float] = (0, 0.0),
    attention_dp_balance: int = 0,
    kv_admission: str = "on_demand",
) -> list[Replica]:
    """``count`` replicas of one worker type with vLLM-default budget and memory, and the
    backend's scheduler (SGLang's does not mix prefill into decode steps)."""
    cfg = EngineConfig(
        max_num_seqs=max(int(seqs), 1),
        max_num_batched_tokens=int(budget),
        frontend_latency_ms=float(frontend_ms),
        mixed_batching=MIXED_BATCHING_DEFAULT[model.backend],
        kv_admission=kv_admission,
        async_scheduling=async_scheduling,
        scheduler_recv_interval=recv_interval,
        speculative_tokens=speculative_tokens,
        batch_wait_iters=batch_wait[0],
        batch_wait_tokens_ratio=batch_wait[1],
        attention_dp_balance_iters=attention_dp_balance,
    )
    mem = model.memory(
        cfg.gpu_memory_utilization,
        max_num_batched_tokens=cfg.max_num_batched_tokens,
        max_num_seqs=cfg.max_num_seqs,
        cuda_graph_sizes=cfg.cuda_graph_sizes or None,
        block_size=cfg.block_size,
        draft_layers=model.model.mtp_layers if speculative_tokens else 0,
    )
    if not mem.feasible:
        raise ValueError(mem.reason())
    return [Replica(cfg, model, mem.kv_capacity_blocks) for _ in range(count)]


def _kv_transfer(prefill_model) -> KVTransfer:
    """The analytical model's KV hand-off pricing (``simulator.analytical.kv_transfer_ms``):
    each prefill GPU sends its share over the inter-node link, in parallel."""
    spec = prefill_model.spec
    per_gpu = kv_bytes_per_token(
        prefill_model.model, replace(prefill_model.parallel, pp=1), prefill_model.precision
    )
    return KVTransfer(
        kv_bytes_per_token=per_gpu,
        bandwidth_gb_s=spec.internode_bw_bytes_s / 1e9,
        latency_ms=spec.p2p_latency_s * 1e3,
    )


def simulate_row(
    row: pd.Series,
    predictor,
    seed: int,
    jitter: float | None = None,
    frontend: dict[str, float] | None = None,
    frontend_other: dict[str, float] | None = None,
    scales: dict[str, tuple[float, float]] | None = None,
) -> tuple[float, float, int]:
    """Closed-loop simulation of one row: (mean TTFT ms, mean TPOT ms, preemptions).

    ``scales`` maps a backend to the engine's ``(kernel_scale, prefill_step_scale)``
    (:data:`ENGINE_SCALES` when omitted).

    Aggregated rows: one replica per attention-DP rank, least-loaded routing. Disaggregated
    rows: a prefill pool (``prefill_num_workers`` x its attention-DP ranks) and a decode pool,
    KV hand-off priced as in the analytical model.
    """
    is_moe = load_model(row["model_path"]).is_moe
    kernel, prefill = (ENGINE_SCALES if scales is None else scales)[row["backend"]]

    def engine_model(par):
        model = predictor.step_model(row, par)
        ov = replace(model.overhead, kernel_scale=kernel, prefill_step_scale=prefill)
        return model.with_overhead(ov)

    conc = int(row["concurrency"])
    if harness.is_inferencex(row):
        fe_table = FRONTEND_LATENCY_MS if frontend is None else frontend
    else:
        fe_table = OTHER_SOURCE_FRONTEND_MS if frontend_other is None else frontend_other
    fe = fe_table.get(row["backend"], 0.0)
    overlap = harness.async_scheduling(row)
    if row["mode"] == "agg":
        par = analytical_fidelity._layout(row, moe=is_moe)
        ranks = par.attention_dp
        seqs = int(row["batch_size"]) if np.isfinite(row["batch_size"]) else -(-conc // ranks)
        cluster = Cluster(
            _pool(
                engine_model(par),
                seqs,
                ranks,
                fe,
                overlap,
                harness.scheduler_recv_interval(row),
                harness.max_num_batched_tokens(row),
                harness.speculative_tokens(row),
                harness.batch_wait(row),
                harness.attention_dp_balance(row),
                harness.kv_admission(row),
            ),
            router="least_loaded",
        )
    else:
        p_par = analytical_fidelity._layout(row, "prefill_", moe=is_moe)
        d_par = analytical_fidelity._layout(row, "decode_", moe=is_moe)
        pm, dm = engine_model(p_par), engine_model(d_par)
        p_ranks = int(row["prefill_num_workers"]) * p_par.attention_dp
        d_ranks = int(row["decode_num_workers"]) * d_par.attention_dp
        d_seqs = (
            int(row["decode_batch_size"])
            if np.isfinite(row["decode_batch_size"])
            else -(-conc // d_ranks)
        )
        p_seqs = int(row["prefill_batch_size"]) if np.isfinite(row["prefill_batch_size"]) else 8
        # TensorRT-LLM's disaggregated context servers run without the overlap scheduler
        prefill_overlap = overlap and row["backend"] != "trtllm"
        cluster = Cluster(
            _pool(
                dm,
                d_seqs,
                d_ranks,
                async_scheduling=overlap,
                kv_admission=harness.kv_admission(row),
            ),
            router="least_loaded",
            prefill_replicas=_pool(pm, p_seqs, p_ranks, fe, prefill_overlap),
            kv_transfer=_kv_transfer(pm),
        )
    if harness.is_inferencex(row):  # the harness's own length ranges (see harness.py)
        lengths = LengthDistribution.random_range(
            int(row["isl"]), int(row["osl"]), harness.INFERENCEX_RANGE_RATIO, seed=seed
        )
    else:
        if jitter is None:
            jitter = CLIENT_LENGTH_JITTER.get(row["backend"], 0.0)
        lengths = LengthDistribution.jittered(int(row["isl"]), int(row["osl"]), jitter, seed=seed)
    n = int(max(REQUESTS_PER_CLIENT * conc, 64))
    res = cluster.run_closed_loop(conc, lengths, num_requests=n, seed=seed)
    ok = res.requests[res.requests["status"] == "ok"]
    if len(ok) < n:
        raise ValueError(
            f"{n - len(ok)} requests rejected: {res.requests['reject_reason'].iloc[0]}"
        )
    return float(ok["ttft_ms"].mean()), float(ok["tpot_ms"].mean()), res.num_preemptions


def _git_head() -> str:
    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], capture_output=True, text=True, cwd=ROOT
        ).stdout.strip()

    dirty = git("status", "--porcelain", "--", "simulator", "perfdb", "benchmarks/fidelity.py")
    return git("rev-parse", "--short", "HEAD") + (
        " (with uncommitted changes in simulator/perfdb)" if dirty else ""
    )


def ape(pred: pd.Series, true: pd.Series) -> pd.Series:
    return (pred - true).abs() / true * 100.0


def median_ci(
    values: np.ndarray, rng: np.random.Generator, n_boot: int = 2000
) -> tuple[float, float, float]:
    values = values[np.isfinite(values)]
    if values.size == 0:
        return (np.nan, np.nan, np.nan)
    boots = np.median(rng.choice(values, size=(n_boot, values.size)), axis=1)
    return (
        float(np.median(values)),
        float(np.percentile(boots, 2.5)),
        float(np.percentile(boots, 97.5)),
    )


def _fmt(t: tuple[float, float, float]) -> str:
    if not np.isfinite(t[0]):
        return "—"
    return f"{t[0]:.1f} [{t[1]:.1f}, {t[2]:.1f}]"


def write_results(text: str, marker: str) -> None:
    """Replace our marked block inside our own section of RESULTS.md."""
    write_marked_block(text, SECTION, marker, RESULTS)


def _plot(frame: pd.DataFrame, path: Path) -> None:
    """Box plots of absolute % error by concurrency bucket: engine vs analytical."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    edges = [0, 8, 32, 128, np.inf]
    names = ["< 8", "8-31", "32-127", ">= 128"]
    bucket = pd.cut(frame["concurrency"], edges, right=False, labels=names)
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for ax, metric in zip(axes, ("ttft", "tpot"), strict=True):
        data, pos, colors = [], [], []
        for k, name in enumerate(names):
            for off, (who, color) in enumerate((("sim", "C0"), ("ana", "C1"))):
                v = frame.loc[bucket == name, f"{who}_{metric}_ape"].dropna().to_numpy()
                data.append(np.clip(v, 0.1, None))
                pos.append(k * 3 + off)
                colors.append(color)
        box = ax.boxplot(data, positions=pos, widths=0.8, patch_artist=True, showfliers=False)
        for patch, color in zip(box["boxes"], colors, strict=True):
            patch.set_facecolor(color)
            patch.set_alpha(0.6)
        counts = [int((bucket == n).sum()) for n in names]
        ax.set_xticks([k * 3 + 0.5 for k in range(len(names))])
        ax.set_xticklabels([f"{n}\n(n={c})" for n, c in zip(names, counts, strict=True)])
        ax.set_yscale("log")
        ax.set_xlabel("client concurrency")
        ax.set_ylabel(f"{metric.upper()} absolute error (%)")
        ax.grid(True, axis="y", which="both", alpha=0.3)
        ax.legend(
            [
                plt.Rectangle((0, 0), 1, 1, color="C0", alpha=0.6),
                plt.Rectangle((0, 0), 1, 1, color="C1", alpha=0.6),
            ],
            ["engine (closed loop)", "analytical"],
            fontsize=8,
        )
    fig.suptitle("Error vs silicon_dev.csv (boxes: quartiles, whiskers 1.5 IQR)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _score(grp: pd.DataFrame, sim_ttft: pd.Series, sim_tpot: pd.Series) -> tuple:
    """``(TTFT APE + TPOT APE, front end of InferenceX rows, of other rows, TTFT APE, TPOT
    APE)``: the additive front ends (0..300 ms by 5) that minimise the median TTFT APE of the
    engine's TTFT at front end 0, and the median TPOT APE (which the front end does not touch).
    """
    ix = np.array([harness.is_inferencex(grp.loc[i]) for i in grp.index], dtype=bool)
    truth = grp["silicon_ttft_ms"].to_numpy(dtype=float)
    sim = sim_ttft.to_numpy(dtype=float)
    cs = np.arange(0, 301, 5, dtype=float)
    best = (np.inf, 0.0, 0.0)
    for c_ix in cs:
        guess = sim[None, :] + np.where(ix[None, :], c_ix, cs[:, None])
        scores = np.nanmedian(np.abs(guess - truth) / truth * 100, axis=1)
        k = int(np.nanargmin(scores))
        if scores[k] < best[0]:
            best = (float(scores[k]), float(c_ix), float(cs[k]))
    tp = float(np.nanmedian(ape(sim_tpot, grp["silicon_tpot_ms"])))
    return (best[0] + tp, best[1], best[2], best[0], tp)


def _simulate_chunk(args: tuple) -> list[tuple]:
    chunk, jitter, scales = args
    predictor = analytical_fidelity.Predictor(dict(DEFAULT_OVERHEAD), DEFAULT_QUEUE)
    zero = {b: 0.0 for b in FRONTEND_LATENCY_MS}
    out = []
    for idx, row in chunk.iterrows():
        try:
            t, tp, _ = simulate_row(row, predictor, 0, jitter[row["backend"]], zero, zero, scales)
        except ValueError:
            t, tp = np.nan, np.nan
        out.append((idx, t, tp))
    return out


def _simulate_many(
    rows: pd.DataFrame,
    jitter: dict[str, float],
    scales: dict[str, tuple[float, float]],
    reuse: tuple[pd.Series, pd.Series] | None = None,
    workers: int = 2,
) -> tuple[pd.Series, pd.Series]:
    """Engine TTFT and TPOT (front end 0, seed 0) of ``rows`` in ``workers`` processes; the rows
    whose lengths do not use the jitter (InferenceX's) are taken from ``reuse`` (TTFT, TPOT) when
    given."""
    ttft = pd.Series(np.nan, index=rows.index)
    tpot = pd.Series(np.nan, index=rows.index)
    todo = rows
    if reuse is not None:
        ix = np.array([harness.is_inferencex(rows.loc[i]) for i in rows.index], dtype=bool)
        ttft[ix], tpot[ix] = reuse[0][rows.index[ix]], reuse[1][rows.index[ix]]
        todo = rows[~ix]
    chunks = [(todo.iloc[k::workers], jitter, scales) for k in range(workers)]
    with ProcessPoolExecutor(workers) as pool:
        for part in pool.map(_simulate_chunk, chunks):
            for idx, t, tp in part:
                ttft[idx], tpot[idx] = t, tp
    return ttft, tpot


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--limit", type=int, default=None, help="random subset of rows (seeded)")
    ap.add_argument(
        "--seeds", type=int, default=2, help="engine seeds per row (reported: mean over seeds)"
    )
    ap.add_argument("--calibrate-noise", action="store_true", help="recompute the run-noise CV")
    ap.add_argument(
        "--calibrate", action="store_true", help="fit CLIENT_LENGTH_JITTER on the calibration half"
    )
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "out" / "engine_fidelity")
    ap.add_argument("--no-results", action="store_true", help="do not write RESULTS.md")
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()

    all_rows = analytical_fidelity.load_rows()
    noise_cv, noise_groups = run_noise_cv(all_rows)
    print(
        f"run-noise CV from {noise_groups} repeated groups: {noise_cv:.4f} (engine default {DEFAULT_RUN_NOISE_CV})"
    )
    if args.calibrate_noise:
        return 0

    rows = analytical_fidelity.load_rows(args.limit)
    predictor = analytical_fidelity.Predictor(dict(DEFAULT_OVERHEAD), DEFAULT_QUEUE)
    pred = analytical_fidelity.predict_all(rows, predictor)
    agg = pred[pred["our_status"].eq("ok")].copy()
    jitter = dict(CLIENT_LENGTH_JITTER)
    calib_lines: list[str] = []
    frontend = dict(FRONTEND_LATENCY_MS)
    frontend_other = dict(OTHER_SOURCE_FRONTEND_MS)
    scales = dict(ENGINE_SCALES)
    if args.calibrate:
        cal = agg[agg["calibration"] & agg["mode"].eq("agg")]
        # stage 1: the engine's step constants, at the current jitter
        grid = [(dk, ps) for dk in KERNEL_SCALE_STEPS for ps in PREFILL_STEP_GRID]
        per_scale: dict[str, dict[tuple[float, float], tuple]] = {b: {} for b in ENGINE_SCALES}
        for dk, ps in tqdm(grid, desc="calibrate engine scales", leave=False):
            trial = {
                b: (round(DEFAULT_OVERHEAD[b].kernel_scale + dk, 3), ps) for b in ENGINE_SCALES
            }
            ttft, tpot = _simulate_many(cal, jitter, trial)
            for backend, grp in cal.groupby("backend"):
                fit = _score(grp, ttft[grp.index], tpot[grp.index])
                per_scale[backend][trial[backend]] = fit
        scale_fits = []
        for backend, fits_b in per_scale.items():
            if not fits_b:
                continue
            best = min(fits_b, key=lambda k: fits_b[k][0])
            scales[backend] = best
            scale_fits.append(
                f"{backend}: "
                + ", ".join(
                    f"{k[0]:g} / {k[1]:g}: {v[3]:.1f} + {v[4]:.1f}" for k, v in fits_b.items()
                )
                + f" -> {best[0]:g} / {best[1]:g}"
            )
        # stage 2: the client jitter and the front end, with those constants
        ttfts, tpots = {}, {}
        for k, j in enumerate(JITTER_GRID):
            first = JITTER_GRID[0]
            ttfts[j], tpots[j] = _simulate_many(
                cal,
                {b: j for b in ENGINE_SCALES},
                scales,
                reuse=(ttfts[first], tpots[first]) if k else None,
            )
        fits = []
        for backend, grp in cal.groupby("backend"):
            # per jitter: the additive front-end latencies (InferenceX rows, other rows) that
            # best fit TTFT, then the score TTFT error (with them) + TPOT error (which the front
            # end does not touch)
            per_j = {j: _score(grp, ttfts[j][grp.index], tpots[j][grp.index]) for j in JITTER_GRID}
            best = min(per_j, key=lambda j: per_j[j][0])
            jitter[backend] = best
            frontend[backend], frontend_other[backend] = per_j[best][1], per_j[best][2]
            fits.append(
                f"{backend} ({len(grp)} rows): "
                + ", ".join(
                    f"{j:g}: {v[3]:.1f} + {v[4]:.1f} at {v[1]:g} / {v[2]:g} ms"
                    for j, v in per_j.items()
                )
                + f" -> jitter {best:g}, {frontend[backend]:g} / {frontend_other[backend]:g} ms"
            )
        calib_lines = [
            f"Calibration on the calibration half ({len(cal)} aggregated rows, seed 0). First the "
            "engine's step constants per backend, `kernel_scale / prefill_step_scale` (the "
            "analytical estimate's `kernel_scale` plus "
            f"{', '.join(f'{d:+g}' for d in KERNEL_SCALE_STEPS)}; prefill step scale "
            f"{', '.join(f'{p:g}' for p in PREFILL_STEP_GRID)}), at the jitter in the script: "
            "median TTFT APE (with the additive front ends that minimise it) + median TPOT APE, "
            "the smallest sum kept: " + "; ".join(scale_fits) + ". Then, per backend and "
            "`CLIENT_LENGTH_JITTER` value: median TTFT APE (with the additive "
            "`frontend_latency_ms` values, InferenceX rows / other rows, that minimise it) + median "
            "TPOT APE; the smallest sum is kept: " + "; ".join(fits) + ".",
            "",
        ]
    agg["sim_ttft_ms"] = np.nan
    agg["sim_tpot_ms"] = np.nan
    agg["sim_preemptions"] = np.nan
    agg["sim_status"] = "ok"
    agg["sim_wall_s"] = np.nan
    for idx in tqdm(agg.index, desc="engine closed loop", leave=False):
        row = agg.loc[idx]
        t0 = time.perf_counter()
        try:
            runs = [
                simulate_row(
                    row,
                    predictor,
                    seed,
                    jitter.get(row["backend"], 0.0),
                    frontend,
                    frontend_other,
                    scales,
                )
                for seed in range(args.seeds)
            ]
            agg.loc[idx, ["sim_ttft_ms", "sim_tpot_ms", "sim_preemptions"]] = np.mean(runs, axis=0)
        except ValueError as exc:
            agg.loc[idx, "sim_status"] = f"error: {str(exc)[:160]}"
        agg.loc[idx, "sim_wall_s"] = time.perf_counter() - t0
    for who, col in (("sim", "sim"), ("ana", "our"), ("aic", "aic")):
        agg[f"{who}_ttft_ape"] = ape(agg[f"{col}_ttft_ms"], agg["silicon_ttft_ms"])
        agg[f"{who}_tpot_ape"] = ape(agg[f"{col}_tpot_ms"], agg["silicon_tpot_ms"])
    agg.to_csv(args.out / "engine_fidelity_rows.csv", index=False)
    _plot(agg[agg["sim_status"].eq("ok")], args.out / "engine_fidelity.png")

    rng = np.random.default_rng(0)
    both = agg[agg["sim_status"].eq("ok")]
    lines = []
    header = (
        "| rows | n | engine TTFT | analytical TTFT | engine TPOT | analytical TPOT | "
        "AIC TTFT (its rows) | AIC TPOT (its rows) |"
    )
    lines += [header, "|---|---:|---|---|---|---|---|---|"]
    held = both[~both["calibration"]]
    subsets = [
        ("all rows", both),
        ("aggregated rows", both[both["mode"] == "agg"]),
        ("disaggregated rows", both[both["mode"] == "disagg"]),
        ("held-out half", held),
        (
            f"held-out, under load (concurrency >= {LOAD_CONCURRENCY})",
            held[held["concurrency"] >= LOAD_CONCURRENCY],
        ),
        (
            f"under load (concurrency >= {LOAD_CONCURRENCY})",
            both[both["concurrency"] >= LOAD_CONCURRENCY],
        ),
        (f"light (concurrency < {LOAD_CONCURRENCY})", both[both["concurrency"] < LOAD_CONCURRENCY]),
    ]
    subsets += [(f"backend {b}", g) for b, g in both.groupby("backend")]
    for name, g in subsets:
        aic = g[g["aic_ttft_ms"].notna()]
        cells = [
            _fmt(median_ci(g["sim_ttft_ape"].to_numpy(), rng)),
            _fmt(median_ci(g["ana_ttft_ape"].to_numpy(), rng)),
            _fmt(median_ci(g["sim_tpot_ape"].to_numpy(), rng)),
            _fmt(median_ci(g["ana_tpot_ape"].to_numpy(), rng)),
            f"{_fmt(median_ci(aic['aic_ttft_ape'].to_numpy(), rng))} (n={len(aic)})",
            _fmt(median_ci(aic["aic_tpot_ape"].to_numpy(), rng)),
        ]
        lines.append(f"| {name} | {len(g)} | " + " | ".join(cells) + " |")
    # row-for-row: how often the engine beats the analytical shortcut on TTFT
    load = both[both["concurrency"] >= LOAD_CONCURRENCY]
    wins = float((load["sim_ttft_ape"] < load["ana_ttft_ape"]).mean()) if len(load) else np.nan
    # paired bootstrap (same resampled rows for both) of the difference of the medians: whether
    # the engine cuts the TTFT error under load beyond row-sampling noise
    paired = []
    for name, g in (
        ("held-out, under load", held[held["concurrency"] >= LOAD_CONCURRENCY]),
        ("all rows under load", load),
    ):
        g = g.dropna(subset=["sim_ttft_ape", "ana_ttft_ape"])
        a, b = g["sim_ttft_ape"].to_numpy(), g["ana_ttft_ape"].to_numpy()
        if len(a) < 2:
            continue
        idx = rng.integers(0, len(a), size=(2000, len(a)))
        diffs = np.median(a[idx], axis=1) - np.median(b[idx], axis=1)
        lo, hi = np.percentile(diffs, [2.5, 97.5])
        paired.append(
            f"{name}: {np.median(a) - np.median(b):+.1f} points [{lo:+.1f}, {hi:+.1f}] (n={len(a)})"
        )
    failed = agg["sim_status"].ne("ok").sum()
    wall = time.perf_counter() - t_start
    cmd = (
        "python benchmarks/engine_fidelity.py"
        + (f" --limit {args.limit}" if args.limit else "")
        + f" --seeds {args.seeds}"
        + (" --calibrate" if args.calibrate else "")
    )
    text = "\n".join(
        [
            "### Fidelity: closed-loop engine vs analytical estimate (silicon_dev.csv)",
            "",
            f"Command: `{cmd}` — {analytical_fidelity.machine()}; {wall:.0f} s wall.",
            "",
            f"Code: git {_git_head()}. Rows: {len(agg)} rows the analytical model covers "
            f"({int((agg['mode'] == 'agg').sum())} aggregated, {int((agg['mode'] == 'disagg').sum())} "
            f"disaggregated; {failed} the engine could not run: see `engine_fidelity_rows.csv`). "
            "Each row runs closed loop at its `silicon_concurrency` "
            f"({REQUESTS_PER_CLIENT} requests per client, as AIConfigurator's and InferenceX's "
            "harnesses send) with its engine's scheduler (asynchronous except vLLM < 0.14; "
            "SGLang's receive interval where its recipe sets one) and "
            "its client's lengths (InferenceX rows: uniform on [floor(0.8 L), L] for the nominal "
            "L, `harness.py`), max_num_seqs = its batch size, max_num_batched_tokens 8192 "
            "(twice the ISL where the recipe says so, `harness.py`), "
            "chunked prefill, for the other rows client length jitter +-"
            f"{', '.join(f'{b} {v:g}' for b, v in sorted(jitter.items()))} and per-backend frontend latency "
            f"{', '.join(f'{b} {v:g} / {frontend_other[b]:g} ms' for b, v in sorted(frontend.items()))} "
            "(InferenceX rows / other rows; both fitted on the "
            "calibration half by `--calibrate`), "
            f"{args.seeds} seeds (mean per row). Aggregated rows: one replica per attention-DP rank; "
            "disaggregated rows: prefill and decode pools of the row's workers, KV hand-off priced "
            "as the analytical model prices it, TTFT including it. Cells: median "
            "absolute % error of mean TTFT / TPOT vs silicon, [95% bootstrap CI over rows]. "
            "Same kernel tables and step model for both; the engine with its own "
            "`kernel_scale / prefill_step_scale` ("
            + ", ".join(f"{b} {k:g} / {p:g}" for b, (k, p) in sorted(scales.items()))
            + "; fitted by `--calibrate`), the analytical estimate with the constants of "
            "`benchmarks/fidelity.py`; AIConfigurator "
            "columns are on the subset of rows it predicts.",
            "",
            *calib_lines,
            *lines,
            "",
            f"Under load the engine's TTFT error is lower than the analytical estimate's on "
            f"{wins * 100:.0f}% of rows (row for row). Engine minus analytical median TTFT error, "
            "paired bootstrap 95% CI over rows: " + "; ".join(paired) + ".",
            "",
            f"Run-noise CV: median TPOT coefficient of variation over {noise_groups} groups of repeated "
            f"identical deployments whose measurements differ = {noise_cv:.4f} (engine default "
            f"`DEFAULT_RUN_NOISE_CV` = {DEFAULT_RUN_NOISE_CV}).",
            "",
            "Figure: `benchmarks/out/engine_fidelity/engine_fidelity.png` (error vs concurrency).",
        ]
    )
    print(text)
    if not args.no_results:
        write_results(text, "engine-fidelity")
    return 0


if __name__ == "__main__":
    sys.exit(main())
