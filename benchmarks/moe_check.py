"""MoE layers measured on a GPU by ``perfdb collect --op moe`` against the bundled tables and
against the memory-bandwidth floor.

Input: the runs ``benchmarks/gpu_moe.sh`` made on a lent GPU (``<run>.tgz`` or unpacked folders,
each a ``perfdb collect`` database root). Reports:

1. repeatability (the seed-1 CUDA-graph run over the seed-0 one) and the eager run over the
   graph run;
2. the measured layer (PyTorch's grouped GEMM, ``perfdb.collector``) against the bundled tables
   of the three engines (AIConfigurator 0.12.0's measurements of each engine's fused MoE kernel,
   fastest kernel per shape) at the same points, bf16, balanced routing;
3. every one of those against the HBM floor: the bytes of the experts the tokens reach (expected
   distinct experts under balanced routing, ``E (1 - (1 - k/E)^T)``, times the per-GPU expert
   weights) over the datasheet memory bandwidth;
4. without a GPU: the bundled tables at the decode shapes of the MoE models in
   ``silicon_dev.csv`` (their precisions, TP 8), over the same floor, per backend.

Writes ``<out>/moe_check.csv``, ``<out>/moe_check.png`` and, unless ``--no-results``, its section
of ``benchmarks/RESULTS.md``.

Usage::

    python benchmarks/moe_check.py benchmarks/results/gpu_moe_h200 --system h200_sxm
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from collector_check import unpack  # noqa: E402
from results_md import emit  # noqa: E402

from perfdb import MoEOp, load_system  # noqa: E402
from perfdb.ops import DTYPE_BYTES  # noqa: E402

RUNS = ("moe_graphs_seed0", "moe_graphs_seed1", "moe_eager_seed0")
BACKENDS = ("vllm", "sglang", "trtllm")
KEYS = [
    "dtype",
    "distribution",
    "hidden_size",
    "inter_size",
    "topk",
    "num_experts",
    "moe_tp_size",
    "moe_ep_size",
    "num_tokens",
]
#: decode shapes of the MoE models in silicon_dev.csv at TP 8 (hidden, inter, topk, experts) and
#: the expert formats their rows run per system (``benchmarks/fidelity.py``'s mapping)
VALIDATION_SHAPES = {
    "DeepSeek-R1 (fp8 block)": ((7168, 2048, 8, 256), "fp8_block"),
    "Kimi-K2.5 (int4 weight-only)": ((7168, 2048, 8, 384), "int4_wo"),
    "Qwen3-235B-A22B (fp8 block)": ((4096, 1536, 8, 128), "fp8_block"),
    "MiniMax-M2.5 (fp8 block)": ((3072, 1536, 8, 256), "fp8_block"),
    "gpt-oss-120b (mxfp4)": ((2880, 2880, 4, 128), "w4a16_mxfp4"),
}
DECODE_TOKENS = (1, 8, 32, 128)


def section(system: str) -> str:
    return f"## MoE layers on a GPU ({system}): measured, bundled and the bandwidth floor"


def floor_ms(
    tokens: np.ndarray | float,
    hidden: int,
    inter: int,
    topk: int,
    experts: int,
    tp: int,
    dtype: str,
    bw: float,
) -> np.ndarray:
    """HBM floor of one MoE layer: the reached experts' weights (and the tokens in and out)."""
    tokens = np.asarray(tokens, dtype=float)
    reached = experts * (1.0 - (1.0 - topk / experts) ** tokens)
    # element bytes without scales: the floor is a lower bound
    weights = reached * 3.0 * hidden * (inter / tp) * DTYPE_BYTES[dtype]
    acts = tokens * hidden * 2.0 * 2.0
    return (weights + acts) / bw * 1e3


def points(roots: dict[str, Path], system: str) -> pd.DataFrame:
    def table(run: str) -> pd.DataFrame:
        return load_system(system, backend="torch", root=roots[run]).table("moe")[
            [*KEYS, "latency_ms"]
        ]

    t = table(RUNS[0])
    for run in RUNS[1:]:
        t = t.merge(table(run), on=KEYS, suffixes=("", f"_{run}"))
    t = t.rename(columns={"latency_ms": f"latency_ms_{RUNS[0]}"})
    for backend in BACKENDS:
        ref = load_system(system, backend=backend).table("moe")
        ref = ref.groupby(KEYS, as_index=False).latency_ms.median()
        t = t.merge(ref.rename(columns={"latency_ms": backend}), on=KEYS, how="left")
    bw = load_system(system, backend="vllm").spec.mem_bw_bytes_s
    t["floor_ms"] = [
        float(
            floor_ms(
                r.num_tokens,
                r.hidden_size,
                r.inter_size,
                r.topk,
                r.num_experts,
                r.moe_tp_size,
                r.dtype,
                bw,
            )
        )
        for r in t.itertuples()
    ]
    return t


def validation_floors(system: str) -> pd.DataFrame:
    """Bundled MoE prices at the validation models' decode shapes, over the HBM floor."""
    rows = []
    for backend in BACKENDS:
        db = load_system(system, backend=backend)
        bw = db.spec.mem_bw_bytes_s
        for label, ((h, i, k, e), dtype) in VALIDATION_SHAPES.items():
            for tokens in DECODE_TOKENS:
                op = MoEOp(
                    num_tokens=tokens,
                    hidden_size=h,
                    inter_size=i,
                    topk=k,
                    num_experts=e,
                    moe_tp_size=8,
                    moe_ep_size=1,
                    dtype=dtype,
                    distribution="balanced",
                )
                ms, source = db.latency(op)
                rows.append(
                    {
                        "backend": backend,
                        "model": label,
                        "num_tokens": tokens,
                        "bundled_ms": ms,
                        "source": source,
                        "floor_ms": float(floor_ms(tokens, h, i, k, e, 8, dtype, bw)),
                    }
                )
    df = pd.DataFrame(rows)
    df["over_floor"] = df.bundled_ms / df.floor_ms
    return df


def plot(df: pd.DataFrame, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shapes = list(
        df.groupby(["hidden_size", "inter_size", "topk", "num_experts", "moe_tp_size"]).groups
    )
    cols = 4
    rows = -(-len(shapes) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.4 * rows), squeeze=False)
    for ax, key in zip(axes.flat, shapes, strict=False):
        g = df[
            (df.hidden_size == key[0])
            & (df.inter_size == key[1])
            & (df.topk == key[2])
            & (df.num_experts == key[3])
            & (df.moe_tp_size == key[4])
        ].sort_values("num_tokens")
        ax.loglog(g.num_tokens, g[f"latency_ms_{RUNS[0]}"], "o-", label="measured (grouped GEMM)")
        for backend in BACKENDS:
            ax.loglog(g.num_tokens, g[backend], ".--", label=f"bundled {backend}")
        ax.loglog(g.num_tokens, g.floor_ms, "k:", label="HBM floor")
        ax.set_title(f"H {key[0]} I {key[1]} top{key[2]}/{key[3]} TP {key[4]}", fontsize=9)
        ax.set_xlabel("tokens")
        ax.set_ylabel("ms")
    for ax in list(axes.flat)[len(shapes) :]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _shown(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def _q(s: pd.Series) -> str:
    s = s.dropna()
    return f"{s.median():.2f} [{s.quantile(0.1):.2f}, {s.quantile(0.9):.2f}]"


def report(df: pd.DataFrame, val: pd.DataFrame, manifest: dict, args) -> str:
    m = manifest["provenance"]
    meas = df[f"latency_ms_{RUNS[0]}"]
    small = df.num_tokens <= 32
    lines = [
        section(args.system),
        "",
        f"Command: `python benchmarks/moe_check.py {args.src} --system {args.system}` (CPU, "
        "seconds), on the tables that `bash benchmarks/gpu_moe.sh` measured through the `device` "
        f"tool on one {m['device']} (torch {m['torch']}, collected {m['collected_at']}); the three "
        f"runs and their logs are in `{args.src}`. The measured layer is `perfdb collect`'s "
        "(`perfdb/collector.py`): the routed tokens gathered into expert order, "
        "`torch._grouped_mm` for gate/up, SiLU-and-multiply, `torch._grouped_mm` for down, the "
        "weighted scatter back; bf16, balanced routing, each point the median of 3 averages of "
        "at least 10 CUDA-graph replays over rotating input sets. Bundled: AIConfigurator "
        "0.12.0's measurements of each engine's fused MoE kernel at the same points (the fastest "
        "kernel per shape). Floor: the weights of the experts the tokens reach plus the tokens "
        f"in and out, over the datasheet {load_system(args.system, backend='vllm').spec.mem_bw_bytes_s / 1e12:.1f} "
        "TB/s. Ratio columns: median [p10, p90] over the points.",
        "",
        "| quantity | points | all token counts | tokens <= 32 |",
        "|---|---:|---|---|",
        f"| seed 1 / seed 0 (graphs) | {len(df)} | "
        f"{_q(df[f'latency_ms_{RUNS[1]}'] / meas)} | "
        f"{_q(df[f'latency_ms_{RUNS[1]}'][small] / meas[small])} |",
        f"| eager / graphs | {len(df)} | {_q(df[f'latency_ms_{RUNS[2]}'] / meas)} | "
        f"{_q(df[f'latency_ms_{RUNS[2]}'][small] / meas[small])} |",
    ]
    for backend in BACKENDS:
        ok = df[backend].notna()
        lines.append(
            f"| measured / bundled {backend} | {int(ok.sum())} | "
            f"{_q(meas[ok] / df[backend][ok])} | {_q(meas[ok & small] / df[backend][ok & small])} |"
        )
    lines.append(
        f"| measured / floor | {len(df)} | {_q(meas / df.floor_ms)} | "
        f"{_q(meas[small] / df.floor_ms[small])} |"
    )
    for backend in BACKENDS:
        ok = df[backend].notna()
        lines.append(
            f"| bundled {backend} / floor | {int(ok.sum())} | "
            f"{_q(df[backend][ok] / df.floor_ms[ok])} | "
            f"{_q(df[backend][ok & small] / df.floor_ms[ok & small])} |"
        )
    lines += [
        "",
        "Bundled MoE prices at the decode shapes of the validation rows' MoE models (TP 8, "
        "balanced routing, each row's expert format; `source` says where a price came from), "
        "over the same floor:",
        "",
        "| model | tokens | " + " | ".join(f"{b} ms (x floor)" for b in BACKENDS) + " | floor ms |",
        "|---|---:|" + "---|" * len(BACKENDS) + "---:|",
    ]
    for (model, tokens), g in val.groupby(["model", "num_tokens"], sort=False):
        cells = []
        for backend in BACKENDS:
            r = g[g.backend == backend].iloc[0]
            tag = "" if r.source == "measured" else f", {r.source}"
            cells.append(f"{r.bundled_ms:.3f} ({r.over_floor:.1f}{tag})")
        lines.append(
            f"| {model} | {tokens} | " + " | ".join(cells) + f" | {g.floor_ms.iloc[0]:.3f} |"
        )
    ds = val[val.model.str.startswith("DeepSeek") & val.num_tokens.isin([8, 32])]
    faster = int(sum((meas < df[b]).sum() for b in BACKENDS))
    by_backend = ds.groupby("backend").over_floor.median()
    below = val[(val.over_floor < 1) & (val.source == "measured")]
    lines += [
        "",
        "Reading: a PyTorch grouped-GEMM layer is not an engine's fused MoE kernel (it is "
        f"{(meas[small] / df['vllm'][small]).median():.2f}x vLLM's bundled time at <= 32 tokens), "
        "so these measurements are no substitute for the bundled tables (the grouped GEMM is "
        f"faster than a bundled time at {faster} of {3 * len(df)} engine-point pairs). At "
        "decode sizes the bundled bf16 tables sit "
        f"{(df['vllm'][small] / df.floor_ms[small]).median():.2f}x (vLLM), "
        f"{(df['sglang'][small] / df.floor_ms[small]).median():.2f}x (SGLang) and "
        f"{(df['trtllm'][small] / df.floor_ms[small]).median():.2f}x (TensorRT-LLM) above the "
        "bandwidth floor, so on this GPU they leave little room for an overpriced MoE at small "
        "batch. TensorRT-LLM's fp8-block DeepSeek table at 8 and 32 tokens is "
        f"{by_backend.get('trtllm', np.nan):.1f}x its floor against "
        f"{by_backend.get('vllm', np.nan):.1f}x (vLLM) and {by_backend.get('sglang', np.nan):.1f}x "
        "(SGLang). "
        + (
            f"{len(below)} measured bundled prices fall below the floor (the rows with a ratio "
            "under 1): their collector's routing reaches fewer experts than balanced routing "
            "would, or a shape's TP split differs from the floor's reading of it."
            if len(below)
            else "No measured bundled price falls below its floor."
        ),
        "",
        f"Figure: `{_shown(args.out)}/moe_check.png`. Points: `{_shown(args.out)}/moe_check.csv`.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("src", type=Path, help="folder with the gpu_moe.sh runs")
    ap.add_argument("--system", default="h200_sxm")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "out" / "moe_check")
    ap.add_argument("--no-results", action="store_true", help="do not write RESULTS.md")
    args = ap.parse_args(argv)
    args.out = args.out.resolve()
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        roots = unpack(args.src, Path(tmp), RUNS)
        df = points(roots, args.system)
        manifest_path = next((roots[RUNS[0]] / args.system / "torch").glob("*/manifest.yaml"))
        manifest = yaml.safe_load(manifest_path.read_text())
    val = validation_floors(args.system)
    df.to_csv(args.out / "moe_check.csv", index=False)
    plot(df, args.out / "moe_check.png")
    emit(report(df, val, manifest, args), section(args.system), write=not args.no_results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
