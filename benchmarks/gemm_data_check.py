"""GEMM timings against the data in the weights and the weight layout (``gpu_gemm_data.py``,
and one ``perfdb collect --op gemm`` run after the collector moved to the engines' layout).

Reads ``benchmarks/results/gpu_gemm_data_{h200,h100}/gemm_data.csv`` and
``benchmarks/results/gpu_gemm_data_h200/gemm_tn_graphs_seed0.tgz``, compares them with the
bundled vLLM GEMM tables (and the earlier ``[k, n]``-layout collector run in
``benchmarks/results/gpu_collect_h200``), prints the report and writes its section of
``benchmarks/RESULTS.md`` (unless ``--no-results``).

Usage::

    python benchmarks/gemm_data_check.py
"""

from __future__ import annotations

import argparse
import sys
import tarfile
import tempfile
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from results_md import emit  # noqa: E402

from perfdb import GemmOp, load_system  # noqa: E402

SECTION = "## GEMM timings: the data in the weights and the weight layout"
RESULTS = ROOT / "benchmarks" / "results"
KEYS = ["dtype", "m", "n", "k"]


def data_table(system: str) -> pd.DataFrame:
    d = pd.read_csv(RESULTS / f"gpu_gemm_data_{system}" / "gemm_data.csv")
    p = d.pivot_table(index=KEYS, columns="weights", values="latency_ms").reset_index()
    db = load_system(f"{system}_sxm", backend="vllm")
    p["bundled"] = [
        db.latency(GemmOp(m=int(r.m), n=int(r.n), k=int(r.k), dtype=r.dtype))[0]
        for r in p.itertuples()
    ]
    return p


def _tar_table(path: Path, system: str) -> pd.DataFrame:
    with tempfile.TemporaryDirectory() as tmp:
        with tarfile.open(path) as tar:
            tar.extractall(tmp, filter="data")
        return load_system(system, backend="torch", root=tmp).table("gemm")


def layout_table() -> pd.DataFrame:
    new = _tar_table(RESULTS / "gpu_gemm_data_h200" / "gemm_tn_graphs_seed0.tgz", "h200_sxm")
    old = _tar_table(RESULTS / "gpu_collect_h200" / "graphs_seed0.tgz", "h200_sxm")
    old = old[old.dtype == "bf16"]
    ref = load_system("h200_sxm", backend="vllm").table("gemm")
    ref = ref.groupby(KEYS, as_index=False).latency_ms.median()
    t = new.merge(old, on=KEYS, suffixes=("_wT", "_kn")).merge(ref, on=KEYS)
    t["wT"] = t.latency_ms_wT / t.latency_ms
    t["kn"] = t.latency_ms_kn / t.latency_ms
    return t


def _light_load_ttft_ratios() -> str:
    """vLLM's light-load (concurrency <= 8) InferenceX rows on Hopper: median measured /
    predicted TTFT at ISL 8192 and 1024, from the fidelity benchmark's predictions."""
    import harness

    pred = pd.read_csv(ROOT / "benchmarks" / "out" / "fidelity" / "predictions.csv")
    rows = pd.read_csv(ROOT.parent / "shared" / "data" / "validation" / "silicon_dev.csv")
    ix = set(rows.loc[rows.apply(harness.is_inferencex, axis=1), "id"])
    ok = pred[
        pred.our_status.eq("ok")
        & pred.backend.eq("vllm")
        & pred["mode"].eq("agg")
        & (pred.concurrency <= 8)
        & pred.id.isin(ix)
    ]
    ratio = ok.silicon_ttft_ms / ok.our_ttft_ms
    out = []
    for system in ("h100_sxm", "h200_sxm"):
        med = {isl: ratio[(ok.system == system) & (ok.isl == isl)].median() for isl in (8192, 1024)}
        out.append(f"{med[8192]:.2f} at ISL 8192 against {med[1024]:.2f} at 1024 ({system})")
    return "; ".join(out)


def _row(label: str, s: pd.Series) -> str:
    return f"| {label} | " + " | ".join(f"{v:.3f}" for v in s) + " |"


def report() -> str:
    lines = [
        SECTION,
        "",
        "Commands: `PYTHONPATH=. python3 benchmarks/gpu_gemm_data.py` through the `device` tool on "
        "one NVIDIA H200 and one NVIDIA H100 80GB HBM3 (torch 2.11.0+cu130); `perfdb collect "
        "--system h200_sxm --device cuda --world-size 1 --op gemm` on the H200 after the change "
        "below; then `python benchmarks/gemm_data_check.py` (CPU). Each time: CUDA-graph replays "
        "over rotating inputs, median of 3 averages (`perfdb collect`'s timer). Shapes: m in "
        "{1, 64, 512, 1024, 2048, 8192} x (n, k) in {(8192, 8192), (28672, 8192), (8192, 28672), "
        "(10240, 8192)}; `x @ w.T` with `w` stored `[n, k]` (bf16), `torch._scaled_mm` with "
        "per-tensor scales (fp8). Weights: random normal, zeros, and `torch.empty` taken first "
        "in a fresh process, never written, as AIConfigurator's vLLM GEMM collector leaves its "
        "bf16 `RowParallelLinear` weights (`collector/vllm/collect_gemm.py`: no initialisation; "
        "its comment leaves the impact of random weights to evaluate). The never-written "
        "weights held no non-zero element on either GPU. Cells: medians over the four (n, k).",
        "",
    ]
    for system in ("h200", "h100"):
        p = data_table(system)
        ms = sorted(p.m.unique())
        lines += [
            f"{system.upper()}:",
            "",
            "| ratio | " + " | ".join(f"m={m}" for m in ms) + " |",
            "|---|" + "---:|" * len(ms),
        ]
        for dtype in ("bf16", "fp8"):
            g = p[p.dtype == dtype].groupby("m")
            lines.append(
                _row(f"{dtype} zeros / random", g.apply(lambda x: (x.zeros / x.random).median()))
            )
            lines.append(
                _row(
                    f"{dtype} never written / random",
                    g.apply(lambda x: (x["empty"] / x.random).median()),
                )
            )
        g = p[p.dtype == "bf16"].groupby("m")
        lines.append(
            _row("bf16 random / bundled vLLM", g.apply(lambda x: (x.random / x.bundled).median()))
        )
        lines.append(
            _row(
                "bf16 never written / bundled vLLM",
                g.apply(lambda x: (x["empty"] / x.bundled).median()),
            )
        )
        lines.append("")
    t = layout_table()
    g = t.groupby("m")
    ms = sorted(t.m.unique())
    lines += [
        "`perfdb collect`'s bf16 GEMM sweep on the H200 (225 shapes) over the bundled vLLM table, "
        "per m (median over n, k), with the weight stored `[n, k]` (`x @ w.T`, this change) and "
        "`[k, n]` (`x @ w`, the earlier run in `benchmarks/results/gpu_collect_h200`):",
        "",
        "| layout | " + " | ".join(f"m={m}" for m in ms) + " | all: median [p10, p90] |",
        "|---|" + "---:|" * len(ms) + "---|",
    ]
    for col, label in (("wT", "`[n, k]`, x @ w.T"), ("kn", "`[k, n]`, x @ w")):
        s = t[col]
        lines.append(
            _row(label, g[col].median()).rstrip(" |")
            + f" | {s.median():.3f} [{s.quantile(0.1):.3f}, {s.quantile(0.9):.3f}] |"
        )
    lines += [
        "",
        "Reading: never-written (zero) weights run 4-16% faster than random ones once a GEMM "
        "is compute-bound (m >= 512, both GPUs, both precisions; the GPU sits at its power cap, "
        "section above) and the same at small m; the zeros allocated and timed right after the "
        "random weights show the same direction, noisier. The bundled vLLM bf16 table lies "
        "between: random-weight GEMMs in the engines' layout take 1.00-1.08x its time at m >= "
        "512, never-written ones 0.92-0.99x. So its prefill-sized GEMM prices are a few percent "
        "(up to 8%) optimistic for real weights, which does not explain the light-load TTFT of "
        "vLLM rows with 8k-token prompts: measured / predicted "
        + _light_load_ttft_ratios()
        + " (fidelity section, `benchmarks/out/fidelity/predictions.csv`). "
        "`perfdb collect` now times GEMMs in the engines' layout (the weight `[n, k]`, "
        "`x @ w.T`, as `F.linear` runs it): cuBLAS runs `[k, n]` 5-10% slower at m >= 1024 and "
        "about 6% faster at small m on the H200, so the earlier run's ratio rose with m while "
        "this one is flat (p10-p90 narrower). The earlier collector sections keep their `[k, n]` "
        "measurements.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--no-results", action="store_true")
    args = ap.parse_args(argv)
    emit(report(), SECTION, write=not args.no_results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
