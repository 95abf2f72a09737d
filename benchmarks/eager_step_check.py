"""Fit and check the step model's eager-launch term on whole decoder steps measured on a GPU.

Input: the CSVs ``benchmarks/gpu_eager_step.py`` wrote on a lent H200 (in
``benchmarks/results/gpu_eager_step_h200``): the same decoder step timed replayed from a CUDA
graph and launched eagerly. With the measured graph time as the kernel time, two forms of the
eager step are compared, each with the step model's kernel count ``N`` of the architecture
(``AnalyticalStepModel.kernels_per_step``, vLLM's fused ops):

- additive (the step model's, ``EngineOverhead.eager_kernel_us`` = 4 us): ``graph + N x 4 us``;
- host-bound (a candidate): ``max(graph, N x h)``: the host launches ahead of the GPU, so
  launches cost time only when they outlast the kernels.

``h`` is fitted on one run (``llama8b_fit``: the median absolute log error over its steps,
grid 0.5 us) and checked on the others, which were measured after the fit was chosen as the
rule: ``llama8b_heldout`` (other batch sizes, KV and prompt lengths) and ``qwen3_32b_heldout``
(Qwen3-32B's dimensions: 64 layers, hidden 5120).

Usage::

    python benchmarks/eager_step_check.py [--no-results]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from results_md import write_section  # noqa: E402

from simulator.ops import token_ops  # noqa: E402
from simulator.step_time import AnalyticalStepModel, EngineOverhead  # noqa: E402

SECTION = "## Eager launches vs CUDA graphs: whole decoder steps on a GPU"
SRC = ROOT / "benchmarks" / "results" / "gpu_eager_step_h200"
RUNS = {
    "llama8b_fit": "meta-llama/Llama-3.1-8B",
    "llama8b_heldout": "meta-llama/Llama-3.1-8B",
    "qwen3_32b_heldout": "Qwen/Qwen3-32B",
}
OLD_US = EngineOverhead().eager_kernel_us


def load(src: Path) -> pd.DataFrame:
    frames = []
    for run, model in RUNS.items():
        path = src / f"{run}.csv"
        if not path.is_file():
            raise SystemExit(
                f"error: {path} is missing (run benchmarks/gpu_eager_step.py on a GPU)"
            )
        d = pd.read_csv(path)
        d.insert(0, "run", run)
        step = AnalyticalStepModel.from_names(model=model, system="h200_sxm")
        # the step model's count of one step's kernels (what it charges eager launches for)
        calls = token_ops(step.model, step.parallel, step.precision, 1, 1)
        d["model_kernels"] = sum(c.count for c in calls)
        frames.append(d)
    return pd.concat(frames, ignore_index=True)


def predict(d: pd.DataFrame, h_us: float) -> tuple[np.ndarray, np.ndarray]:
    """(host-bound, additive) predictions of the eager step time, ms."""
    host = d.model_kernels.to_numpy() * h_us / 1e3
    graph = d.graph_ms.to_numpy()
    return np.maximum(graph, host), graph + d.model_kernels.to_numpy() * OLD_US / 1e3


def mdale(pred: np.ndarray, actual: np.ndarray) -> float:
    """Median absolute log error, as a percentage-like figure (100 x)."""
    return float(np.median(np.abs(np.log(pred / actual))) * 100)


def fit(d: pd.DataFrame) -> float:
    grid = np.arange(1.0, 100.0, 0.5)
    errs = [mdale(predict(d, h)[0], d.eager_ms.to_numpy()) for h in grid]
    return float(grid[int(np.argmin(errs))])


def _batch(kind: str, size: int, kv_len: int):
    from simulator.batch import BatchShape

    if kind == "decode":
        return BatchShape(decode_context_tokens=np.full(size, kv_len), cuda_graph_batch=size)
    return BatchShape(prefill_new_tokens=np.array([size]), prefill_context_tokens=np.array([0]))


def collected_db(root: Path):
    """The H200 tables ``benchmarks/gpu_collect.sh`` measured (same cuBLAS/SDPA kernels),
    unpacked under ``root`` (read lazily: ``root`` must outlive the pricing)."""
    import tarfile

    from perfdb import load_system

    with tarfile.open(ROOT / "benchmarks/results/gpu_collect_h200/graphs_seed0.tgz") as tar:
        tar.extractall(root, filter="data")
    return load_system("h200_sxm", backend="torch", root=root)


def _compose(rep: pd.DataFrame, db) -> list[dict]:
    """Per repeat step: the step model's GEMM / attention sums from ``db`` beside the step's."""
    rows = []
    for run, model in RUNS.items():
        ref = AnalyticalStepModel.from_names(model=model, system="h200_sxm")
        mine = AnalyticalStepModel(ref.model, ref.parallel, ref.precision, db, backend="vllm")
        for r in rep[rep.run == run].itertuples():
            parts = mine.breakdown_ms(_batch(r.kind, r.size, r.kv_len))
            attn = sum(v for k, v in parts.items() if "attention" in k)
            gemm = sum(v for k, v in parts.items() if k.endswith("proj") or k == "lm_head")
            rows.append(
                {
                    "run": run,
                    "step": f"{r.kind} {r.size}",
                    "gemm_model": gemm,
                    "gemm_step": r.kernel_gemm_ms,
                    "attn_model": attn,
                    "attn_step": r.kernel_attention_ms,
                    "other_step": r.kernel_other_ms,
                    "elementwise_model": parts.get("elementwise", 0.0),
                    "graph": r.graph_ms,
                }
            )
    return rows


def repeat_report(first: pd.DataFrame, src: Path) -> list[str]:
    """Repeatability of the eager and graph times, and the step model's sum of isolated
    kernel times against the composed step's kernels (by kind) from the repeat run."""
    if not src.is_dir():
        return []
    frames = []
    for run in RUNS:
        r = pd.read_csv(src / f"{run}.csv")
        r.insert(0, "run", run)
        frames.append(r)
    rep = pd.concat(frames, ignore_index=True)
    keys = ["run", "kind", "size", "kv_len"]
    both = first[[*keys, "eager_ms", "graph_ms"]].merge(rep, on=keys, suffixes=("_1", "_2"))
    eager_r = both.eager_ms_2 / both.eager_ms_1
    graph_r = both.graph_ms_2 / both.graph_ms_1
    with tempfile.TemporaryDirectory() as tmp:
        rows = _compose(rep, collected_db(Path(tmp)))
    c = pd.DataFrame(rows)
    gr = c.gemm_model / c.gemm_step
    ar = c.attn_model / c.attn_step
    lines = [
        "",
        "Repeat (`repeat2/`: the three runs again, later the same day, with every kernel of the "
        "eager step timed by the profiler): graph step times repeat within "
        f"{(graph_r - 1).abs().max() * 100:.1f}% (largest change), eager ones do not: "
        f"repeat / first from {eager_r.min():.2f} to {eager_r.max():.2f} (median "
        f"{eager_r.median():.2f}). The host side of that machine is noisy, so the fit above "
        "rests on single eager timings; read its errors with that spread in mind.",
        "",
        "Composition: the step model's sum of isolated kernel times (priced from the tables "
        "the collector measured on this H200, so the same cuBLAS and SDPA kernels) against "
        "the same kinds of kernel inside the composed step (profiler device time). GEMM: "
        f"model / step median {gr.median():.3f} (range {gr.min():.3f}-{gr.max():.3f}, "
        f"{len(gr)} steps); attention: median {ar.median():.3f} (range {ar.min():.3f}-"
        f"{ar.max():.3f}). The rest of the plain-PyTorch step (unfused norms, rotary, "
        "SiLU, residual adds, copies) takes "
        f"{(c.other_step / c.graph).median() * 100:.0f}% of its graph time (median), against "
        "the model's fused elementwise term at "
        f"{(c.elementwise_model / c.graph).median() * 100:.0f}%: that, not the GEMM or "
        "attention sums, is where this decoder and the model part.",
        "",
        "| run | step | GEMM model / step (ms) | attention model / step (ms) | other in step (ms) "
        "| model elementwise (ms) | graph step (ms) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in c.itertuples():
        lines.append(
            f"| {r.run} | {r.step} | {r.gemm_model:.2f} / {r.gemm_step:.2f} | "
            f"{r.attn_model:.2f} / {r.attn_step:.2f} | {r.other_step:.2f} | "
            f"{r.elementwise_model:.2f} | {r.graph:.2f} |"
        )
    return [*lines, ""]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--src", type=Path, default=SRC)
    ap.add_argument("--no-results", action="store_true", help="do not touch RESULTS.md")
    args = ap.parse_args(argv)
    d = load(args.src)
    h = fit(d[d.run == "llama8b_fit"])
    d["host_bound_ms"], d["additive_ms"] = predict(d, h)
    lines = [
        SECTION,
        "",
        "Command: `python benchmarks/eager_step_check.py` (CPU, seconds) on the CSVs that "
        "`python3 benchmarks/gpu_eager_step.py` wrote through the `device` tool on one NVIDIA "
        "H200 (torch 2.11.0+cu130; commands and logs beside them in "
        f"`{args.src.relative_to(ROOT)}`): a decoder written in plain PyTorch with the layer "
        "dimensions named, random bf16 weights, dense KV cache; each step timed with CUDA "
        "events, replayed from a CUDA graph and launched eagerly (median of 3 averages of 10 "
        "steps); kernels launched per eager step counted by `torch.profiler`.",
        "",
        f"Eager step = `max(graph, N x h)` with `N` the step model's kernel count of the "
        f"architecture (vLLM's fused ops; Llama-3.1-8B {int(d.model_kernels.iloc[0])}, "
        f"Qwen3-32B {int(d.model_kernels.iloc[-1])}) and `h` fitted on `llama8b_fit`: "
        f"**h = {h:g} us** per modelled kernel. The additive form is the step model's: "
        f"`graph + N x {OLD_US:g} us` (`EngineOverhead.eager_kernel_us`). Errors: "
        "predicted / measured eager step time, median absolute log error x 100.",
        "",
        "| run | steps | host-bound (fitted h) | additive (4 us) |",
        "|---|---|---|---|",
    ]
    for run, g in d.groupby("run", sort=False):
        lines.append(
            f"| {run}{' (fit)' if run == 'llama8b_fit' else ' (held out)'} | {len(g)} | "
            f"{mdale(g.host_bound_ms, g.eager_ms):.1f} | {mdale(g.additive_ms, g.eager_ms):.1f} |"
        )
    held = d[d.run != "llama8b_fit"]
    lines.append(
        f"| held out, pooled | {len(held)} | {mdale(held.host_bound_ms, held.eager_ms):.1f} | "
        f"{mdale(held.additive_ms, held.eager_ms):.1f} |"
    )
    lines += [
        "",
        "| run | step | tokens | graph ms | eager ms | kernels launched | gap us / launched kernel "
        "| host-bound ms | additive ms |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in d.itertuples():
        lines.append(
            f"| {r.run} | {r.kind} {r.size} (KV {r.kv_len}) | {r.tokens} | {r.graph_ms:.2f} | "
            f"{r.eager_ms:.2f} | {r.kernels} | {r.gap_us_per_kernel:.1f} | {r.host_bound_ms:.2f} "
            f"| {r.additive_ms:.2f} |"
        )
    big = d[(d.kind == "prefill") & (d.tokens >= 512)]
    lines += [
        "",
        "Reading: a step whose kernels outlast the host's launches hides them: prefill steps "
        f"of 512 tokens or more show {big.gap_us_per_kernel.min():.1f}-"
        f"{big.gap_us_per_kernel.max():.1f} us of gap per launched kernel, where small decode "
        "steps show several. The additive form charges every eager step the same gap; the "
        "host-bound one charges only host-bound steps. The decoder here is plain PyTorch "
        "(about 30 launched kernels a layer), not vLLM (about 10, each heavier on the host): "
        "`h` carries the measured host time of a layer over to the model's count of vLLM's "
        "ops, an assumption no vLLM measurement here checks (the GPU machine has no vLLM). "
        "Neither form wins on every held-out run (Qwen3-32B's small decode steps are "
        "neither fully host-bound nor fully hidden), and pooled over the held-out steps the "
        "additive form is closer (table), so the step model keeps the additive "
        f"{OLD_US:g} us: changing it would change every engine step with a prefill (the "
        "engine runs those eagerly) on evidence from plain PyTorch alone.",
        "",
    ]
    lines += repeat_report(d, args.src / "repeat2")
    text = "\n".join(lines)
    print(text)
    if not args.no_results:
        write_section(text, SECTION)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
