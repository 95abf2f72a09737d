"""fp8 GEMMs priced without the activation-quantization kernel where the engine fuses it.

The bundled vLLM fp8 GEMM tables time ``RowParallelLinear.forward`` on a bf16 input, so they
include quantizing the activation to fp8; vLLM's compiled graphs fuse that quantization into the
preceding norm or activation (``fuse_norm_quant`` / ``fuse_act_quant``, or Inductor itself).
``benchmarks/collector_check.py`` measured bare fp8 GEMMs (``torch._scaled_mm``) on an H200 and
an H100. This script:

1. fits the quantization kernel as ``a + 3 m k bytes / (e x memory bandwidth)`` to bundled minus
   bare on the H200 sweep (median absolute log error of bundled - kernel against bare), and
   checks it on the H100 sweep, which the fit did not see; once for the vLLM tables (a static
   input scale: ``FUSED_INPUT_QUANT``) and once for the TensorRT-LLM tables (its collector loads
   no input scale, so the layer quantizes dynamically: ``TRTLLM_DYNAMIC_INPUT_QUANT``);
2. prices silicon_dev.csv with the fp8 GEMMs as the step model does
   (``simulator.step_time.FUSED_INPUT_QUANT``: ``max(bundled - kernel, bundled / 2)`` on the
   GEMMs ``fused_quant_roles`` names: every one under vLLM, ``o_proj`` and, for TensorRT-LLM's
   Llama decoder layer under TP, ``qkv_proj`` and ``gate_up_proj``; TensorRT-LLM's other fp8
   GEMMs swap the dynamic kernel for the static one a ModelOpt checkpoint's input scale gives,
   ``trtllm_static_input_scales``), as the bundled tables say (both terms switched off in this
   process) and with only the fused roles (the model before the static-scale swap): with the
   code's constants, and
   (``--calibrate``, about 5 minutes) with both refitted on the calibration half by
   ``benchmarks/fidelity.py``'s grid search; plus a what-if with every TensorRT-LLM fp8 GEMM
   fused.

Writes its block into the fidelity section of ``benchmarks/RESULTS.md`` unless
``--no-results``.

Usage::

    python benchmarks/fp8_input_quant.py [--calibrate] [--no-results]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.optimize import minimize

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import collector_check  # noqa: E402
import fidelity  # noqa: E402

import simulator.step_time as step_time  # noqa: E402
from perfdb import load_system  # noqa: E402

SWEEPS = {"h200_sxm": "gpu_collect_h200", "h100_sxm": "gpu_collect_h100"}


def fp8_points(system: str, backend: str = "vllm") -> pd.DataFrame:
    src = ROOT / "benchmarks" / "results" / SWEEPS[system]
    with tempfile.TemporaryDirectory() as tmp:
        roots = collector_check.unpack(src, Path(tmp))
        df = collector_check.points(roots, system, backend)
    df = df[df.op == "gemm fp8"].copy()
    df["bw"] = load_system(system, backend=backend).spec.mem_bw_bytes_s
    return df


def mdale(df: pd.DataFrame, a_us: float, eff: float) -> float:
    bare = np.maximum(
        df.latency_ms_bundled - step_time.InputQuantKernel(a_us, eff).ms(df.m, df.k, df.bw),
        df.latency_ms_bundled / 2,
    )
    return float(np.median(np.abs(np.log(bare / df.latency_ms_graphs_seed0))) * 100)


def fit(df: pd.DataFrame) -> tuple[float, float]:
    best = min(
        (
            minimize(lambda p: mdale(df, *p), x0, method="Nelder-Mead")
            for x0 in ([3, 0.5], [1, 0.2])
        ),
        key=lambda r: r.fun,
    )
    return float(best.x[0]), float(best.x[1])


@contextlib.contextmanager
def fused_roles(rule):
    """The step model with another ``fused_quant_roles`` rule, in this process."""
    saved = step_time.fused_quant_roles
    step_time.fused_quant_roles = rule
    try:
        yield
    finally:
        step_time.fused_quant_roles = saved


def _nothing_fused(backend, model, parallel):
    return frozenset()


@contextlib.contextmanager
def static_scales(rule):
    """The step model with another ``trtllm_static_input_scales`` rule, in this process."""
    saved = step_time.trtllm_static_input_scales
    step_time.trtllm_static_input_scales = rule
    try:
        yield
    finally:
        step_time.trtllm_static_input_scales = saved


def _never_static(backend, model):
    return False


_CODE_RULE = step_time.fused_quant_roles


def _all_trtllm_fused(backend, model, parallel):
    return None if backend == "trtllm" else _CODE_RULE(backend, model, parallel)


def run(calibrate: bool, out: Path) -> dict:
    """Held-out and per-backend fp8 median errors of one ``fidelity.py`` pass (and, when it
    refits, the constants it chose)."""
    args = ["--no-results", "--out", str(out)] + (["--calibrate"] if calibrate else [])
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        fidelity.main(args)
    constants = next(
        (
            ln.split(": ", 2)[-1]
            for ln in buffer.getvalue().splitlines()
            if ln.startswith("Constants:")
        ),
        "",
    ).split(". Split:")[0]
    d = pd.read_csv(out / "predictions.csv")
    d = d[d.our_status == "ok"]
    rows = pd.read_csv(fidelity.DATA / "silicon_dev.csv").set_index("id")
    fp8 = d[d.id.map(rows.gemm_quant_mode) == "fp8"]
    held = d[~d.calibration]

    def med(x, col):
        return float((x[f"our_{col}_ms"] / x[f"silicon_{col}_ms"] - 1).abs().median() * 100)

    result = {
        "held_ttft": med(held, "ttft"),
        "held_tpot": med(held, "tpot"),
        "constants": constants,
    }
    for backend in ("vllm", "trtllm"):
        rows_b = fp8[fp8.backend == backend]
        result[f"{backend}_ttft"] = med(rows_b, "ttft")
        result[f"{backend}_tpot"] = med(rows_b, "tpot")
        result[f"{backend}_rows"] = len(rows_b)
    trt = fp8[fp8.backend == "trtllm"]
    result["trtllm_groups"] = {
        key: (len(g), med(g, "tpot"), float((g.our_tpot_ms / g.silicon_tpot_ms).median()))
        for key, g in trt.groupby(["system", "model_path"])
    }
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--calibrate", action="store_true", help="also refit the constants (slow)")
    ap.add_argument("--no-results", action="store_true", help="do not touch RESULTS.md")
    args = ap.parse_args(argv)
    if not (fidelity.DATA / "silicon_dev.csv").exists():
        print(f"error: {fidelity.DATA / 'silicon_dev.csv'} not found", file=sys.stderr)
        return 2
    h200, h100 = fp8_points("h200_sxm"), fp8_points("h100_sxm")
    a_us, eff = fit(h200)
    t200, t100 = fp8_points("h200_sxm", "trtllm"), fp8_points("h100_sxm", "trtllm")
    ta_us, teff = fit(t200)
    runs = {}
    with tempfile.TemporaryDirectory() as tmp:
        for cal in [False, True] if args.calibrate else [False]:
            with fused_roles(_nothing_fused), static_scales(_never_static):
                runs[("bundled fp8 prices", cal)] = run(cal, Path(tmp) / f"base{cal}")
            with static_scales(_never_static):
                runs[("fused roles only", cal)] = run(cal, Path(tmp) / f"roles{cal}")
            runs[("fused quant and static scales (the model)", cal)] = run(
                cal, Path(tmp) / f"fused{cal}"
            )
        # what-if: the kernel taken off every TensorRT-LLM fp8 GEMM, not only the fused roles
        with fused_roles(_all_trtllm_fused):
            runs[("every TensorRT-LLM fp8 GEMM fused (what-if)", False)] = run(
                False, Path(tmp) / "t"
            )
    none = {s: mdale(d, 0.0, 1e9) for s, d in (("h200", h200), ("h100", h100))}
    tnone = {s: mdale(d, 0.0, 1e9) for s, d in (("h200", t200), ("h100", t100))}
    code = step_time.FUSED_INPUT_QUANT
    tcode = step_time.TRTLLM_DYNAMIC_INPUT_QUANT
    base, model = "bundled fp8 prices", "fused quant and static scales (the model)"
    lines = [
        "### fp8 GEMMs without the activation-quantization kernel where the engine fuses it",
        "",
        f"Command: `python benchmarks/fp8_input_quant.py{' --calibrate' if args.calibrate else ''}`"
        " (see its docstring). Quantization kernel fitted on the H200 fp8 sweep: "
        f"launch {a_us:.2f} us, {eff:.2f} of the datasheet bandwidth (the code has "
        f"{code.launch_us:g} us and {code.bandwidth_fraction:g}). Bundled minus the kernel "
        "against the bare fp8 GEMM measured there, median absolute log error x 100: H200 "
        f"(fit) {mdale(h200, a_us, eff):.1f} (bundled as is: {none['h200']:.1f}); H100 (held "
        f"out) {mdale(h100, a_us, eff):.1f} (as is: {none['h100']:.1f}). TensorRT-LLM's tables, "
        f"the same fit: launch {ta_us:.2f} us, {teff:.2f} of the bandwidth (the code has "
        f"{tcode.launch_us:g} us and {tcode.bandwidth_fraction:g}); H200 (fit) "
        f"{mdale(t200, ta_us, teff):.1f} (as is: {tnone['h200']:.1f}), H100 (held out) "
        f"{mdale(t100, ta_us, teff):.1f} (as is: {tnone['h100']:.1f}).",
        "",
        "| pricing | constants | held-out TTFT | held-out TPOT | vLLM fp8 rows TTFT "
        "| vLLM fp8 rows TPOT | TensorRT-LLM fp8 rows TTFT | TensorRT-LLM fp8 rows TPOT |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for (variant, cal), r in runs.items():
        lines.append(
            f"| {variant} | {'refitted on the calibration half' if cal else 'as in the code'} | "
            f"{r['held_ttft']:.1f} | {r['held_tpot']:.1f} | {r['vllm_ttft']:.1f} | "
            f"{r['vllm_tpot']:.1f} | {r['trtllm_ttft']:.1f} | {r['trtllm_tpot']:.1f} |"
        )
    lines += [
        "",
        f"{runs[(base, False)]['vllm_rows']} vLLM and {runs[(base, False)]['trtllm_rows']} "
        "TensorRT-LLM rows (calibration and held-out halves) have per-tensor fp8 GEMMs; cells "
        "are median absolute % errors. TensorRT-LLM's collector times its `Linear.forward` on "
        "a bf16 input too; its PyTorch backend fuses the quantization only where its source "
        "does (`o_proj`: the attention kernel's fp8 output; `qkv_proj`, `gate_up_proj`: "
        "`LlamaDecoderLayer`'s all-reduce + RMSNorm + quant under TP with hidden size > 4096), "
        "which the model follows. Its collector loads no input scale, so its `FP8QDQLinearMethod` "
        "quantizes dynamically (`quantize_e4m3_per_tensor`); a ModelOpt fp8 checkpoint's static "
        "input scale makes the served layers run `static_quantize_e4m3_per_tensor` instead, "
        "which the model prices as the vLLM kernel (row 'fused quant and static scales'; "
        "'fused roles only' keeps the dynamic kernel on TensorRT-LLM's unfused GEMMs). The "
        "what-if row fuses every TensorRT-LLM fp8 GEMM.",
    ]
    before, after = runs[("fused roles only", False)], runs[(model, False)]
    lines += [
        "",
        "TensorRT-LLM's per-tensor fp8 rows by system and model (constants as in the code): "
        "TPOT median absolute % error and median predicted / measured, with the table's "
        "dynamic quantization kept on the unfused GEMMs ('fused roles only') and swapped for "
        "the static one (the model):",
        "",
        "| system | model | rows | fused roles only | the model |",
        "|---|---|---:|---|---|",
    ]
    for key, (n, ape_after, ratio_after) in after["trtllm_groups"].items():
        _, ape_before, ratio_before = before["trtllm_groups"][key]
        lines.append(
            f"| {key[0]} | {key[1]} | {n} | {ape_before:.1f} ({ratio_before:.2f}x) | "
            f"{ape_after:.1f} ({ratio_after:.2f}x) |"
        )
    lines.append("")
    for (variant, cal), r in runs.items():
        if r["constants"] and cal:
            lines.append(f"Refitted constants, {variant}: {r['constants']}.")
    for cal in sorted({c for _, c in runs}):
        b, f = runs[(base, cal)], runs[(model, cal)]
        lines.append(
            f"With the constants {'refitted' if cal else 'as in the code'}, the model's "
            f"pricing moves the vLLM fp8 rows' TTFT by {f['vllm_ttft'] - b['vllm_ttft']:+.1f} "
            f"points and TPOT by {f['vllm_tpot'] - b['vllm_tpot']:+.1f}; held-out TTFT by "
            f"{f['held_ttft'] - b['held_ttft']:+.1f} and TPOT by "
            f"{f['held_tpot'] - b['held_tpot']:+.1f}."
        )
    text = "\n".join(lines)
    print(text)
    if not args.no_results:
        fidelity.write_results(text, "fp8-input-quant")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
