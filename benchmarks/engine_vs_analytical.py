"""How far the serving engine's TTFT errors under load are the analytical estimate's own errors.

Reads the per-row output of ``benchmarks/engine_fidelity.py`` (``engine_fidelity_rows.csv``) and
reports, on the loaded rows (concurrency >= 32) that both models price:

* how closely the two models' signed log errors of mean TTFT move together (Pearson and Spearman
  correlation; robust spreads, the normal-consistent median absolute deviation, of each model's
  log error and of their difference). Both models price a step with the same kernel tables and
  step model, so an error in a step's price shows in both; only the part of the error that is not
  shared can separate them;
* per model (the served checkpoint), the median of the row-by-row difference engine minus
  analytical TTFT APE and the share of rows where the engine is closer;
* per data source (the file or dump a row came from), on every row both models priced, the
  median TTFT and TPOT APE of each model: where both miss together, the measurement's client
  or set-up may differ from what both assume.

Usage: ``python benchmarks/engine_vs_analytical.py [--rows CSV] [--no-results]``.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

sys.path.insert(0, str(Path(__file__).resolve().parent))

from results_md import emit, machine

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_ROWS = ROOT / "benchmarks" / "out" / "engine_fidelity" / "engine_fidelity_rows.csv"
SECTION = "## Serving engine against the analytical estimate under load: shared and own errors"
LOAD_CONCURRENCY = 32


def loaded_rows(rows: pd.DataFrame) -> pd.DataFrame:
    """The loaded rows both models priced, with each model's signed log TTFT error."""
    ok = rows["sim_status"].eq("ok") & rows["our_status"].eq("ok")
    out = rows[ok & (rows["concurrency"] >= LOAD_CONCURRENCY)].copy()
    out["log_err_engine"] = np.log(out["sim_ttft_ms"] / out["silicon_ttft_ms"])
    out["log_err_analytical"] = np.log(out["our_ttft_ms"] / out["silicon_ttft_ms"])
    out["ape_diff"] = out["sim_ttft_ape"] - out["ana_ttft_ape"]
    return out


def shared_error(load: pd.DataFrame) -> dict[str, float]:
    """Correlation of the two models' log errors and robust spreads of each and of the gap."""
    e, a = load["log_err_engine"], load["log_err_analytical"]

    def mad(x: pd.Series) -> float:
        return float(stats.median_abs_deviation(x, scale="normal"))

    return {
        "n": len(load),
        "pearson": float(stats.pearsonr(e, a).statistic),
        "spearman": float(stats.spearmanr(e, a).statistic),
        "mad_engine": mad(e),
        "mad_analytical": mad(a),
        "mad_gap": mad(e - a),
    }


def by_model(load: pd.DataFrame) -> pd.DataFrame:
    """Per served model: rows, median TTFT APE of each, median paired difference, share closer."""
    g = load.groupby("model_path")
    table = pd.DataFrame(
        {
            "rows": g.size(),
            "engine": g["sim_ttft_ape"].median(),
            "analytical": g["ana_ttft_ape"].median(),
            "diff": g["ape_diff"].median(),
            "closer": g["ape_diff"].apply(lambda d: float((d < 0).mean())),
        }
    )
    return table.sort_values("diff")


def source_name(source: str) -> str:
    """A row's data source, short: the file's last three folders and name for the AIConfigurator
    gap-analysis files, else the text before the first ``;``."""
    head = str(source).split(";")[0].strip()
    if head.startswith("source_file=") and "/data/" in head:
        return "/".join(head.split("/data/", 1)[1].split("/")[-4:])
    return head.removeprefix("source_file=")


def by_source(rows: pd.DataFrame) -> pd.DataFrame:
    """Per data source, on the rows both models priced: rows and each model's median APEs."""
    ok = rows[rows["sim_status"].eq("ok") & rows["our_status"].eq("ok")]
    g = ok.groupby(ok["silicon_data_source"].map(source_name))
    return pd.DataFrame(
        {
            "rows": g.size(),
            "engine_ttft": g["sim_ttft_ape"].median(),
            "analytical_ttft": g["ana_ttft_ape"].median(),
            "engine_tpot": g["sim_tpot_ape"].median(),
            "analytical_tpot": g["ana_tpot_ape"].median(),
        }
    ).sort_index()


def report(rows_path: Path) -> str:
    rows = pd.read_csv(rows_path)
    load = loaded_rows(rows)
    if load.empty:
        raise SystemExit(f"{rows_path}: no loaded rows that both models priced")
    s = shared_error(load)
    table = by_model(load)
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT
    ).stdout.strip()
    lines = [
        SECTION,
        "",
        f"Command: `python benchmarks/engine_vs_analytical.py` — {machine()}. Input: "
        f"`{rows_path.relative_to(ROOT) if rows_path.is_relative_to(ROOT) else rows_path}` "
        f"(the latest `benchmarks/engine_fidelity.py` run; code at git {commit}). Rows: the "
        f"{s['n']} rows with concurrency >= {LOAD_CONCURRENCY} that both the engine and the "
        "analytical estimate priced. Log error = ln(predicted / measured mean TTFT).",
        "",
        "| | value |",
        "|---|---:|",
        f"| Pearson correlation of the two models' log errors | {s['pearson']:.2f} |",
        f"| Spearman correlation | {s['spearman']:.2f} |",
        f"| spread (MAD, normal-consistent) of the engine's log error | {s['mad_engine']:.3f} |",
        f"| spread of the analytical estimate's log error | {s['mad_analytical']:.3f} |",
        f"| spread of their difference (engine minus analytical) | {s['mad_gap']:.3f} |",
        "",
        "By served model: median TTFT APE (%) of each model, the median of the row-by-row "
        "difference engine minus analytical (points; negative: the engine is closer) and the "
        "share of rows where the engine is closer.",
        "",
        "| model | rows | engine | analytical | difference | engine closer |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for model, r in table.iterrows():
        lines.append(
            f"| {model} | {int(r['rows'])} | {r['engine']:.1f} | {r['analytical']:.1f} | "
            f"{r['diff']:+.1f} | {r['closer']:.0%} |"
        )
    lines += [
        "",
        "By data source, every row both models priced (any concurrency): median TTFT and TPOT "
        "APE (%) of the engine and of the analytical estimate.",
        "",
        "| source | rows | engine TTFT | analytical TTFT | engine TPOT | analytical TPOT |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for source, r in by_source(rows).iterrows():
        lines.append(
            f"| {source} | {int(r['rows'])} | {r['engine_ttft']:.1f} | "
            f"{r['analytical_ttft']:.1f} | {r['engine_tpot']:.1f} | {r['analytical_tpot']:.1f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=Path, default=DEFAULT_ROWS, help="engine_fidelity_rows.csv")
    ap.add_argument("--no-results", action="store_true", help="do not write RESULTS.md")
    args = ap.parse_args(argv)
    if not args.rows.exists():
        ap.error(f"{args.rows} not found: run benchmarks/engine_fidelity.py first")
    emit(report(args.rows.resolve()), SECTION, write=not args.no_results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
