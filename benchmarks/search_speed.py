"""Speed of the full configuration search (aggregated + disaggregated), beside AIConfigurator.

Runs, interleaved ``--repeats`` times on the same machine:

* ours in-process: :func:`simulator.search.search` (perfdb opened once per process, as the CLI
  does; the first repeat pays the table reads);
* ours as a user runs it: ``causal-tuner search ...`` in a fresh process (wall clock);
* AIConfigurator 0.12.0: ``aiconfigurator cli default ...`` from its own virtual environment
  (``--aic PATH`` to its executable; its log line "All experiments completed in X seconds" is its
  search time; wall clock around the process).

Usage::

    python benchmarks/search_speed.py --aic /tmp/aic-venv/bin/aiconfigurator [--repeats 3]
"""

from __future__ import annotations

import argparse
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from fidelity import machine, write_results  # noqa: E402

EXAMPLE = dict(
    model="Qwen/Qwen3-32B", system="h200_sxm", gpus=8, isl=4000, osl=500, ttft=2000, tpot=30
)


def ours_in_process() -> tuple[float, int]:
    from simulator.search import search

    t0 = time.perf_counter()
    res = search(
        EXAMPLE["model"],
        EXAMPLE["system"],
        EXAMPLE["gpus"],
        EXAMPLE["isl"],
        EXAMPLE["osl"],
        ttft_ms=EXAMPLE["ttft"],
        tpot_ms=EXAMPLE["tpot"],
        progress=False,
    )
    return time.perf_counter() - t0, len(res.table)


def ours_cli(out_dir: str) -> tuple[float, float]:
    exe = shutil.which("causal-tuner")
    cmd = [exe] if exe else [sys.executable, "-m", "causal_tuner.cli"]
    cmd += [
        "search", "--model", EXAMPLE["model"], "--system", EXAMPLE["system"], "--gpus",
        str(EXAMPLE["gpus"]), "--isl", str(EXAMPLE["isl"]), "--osl", str(EXAMPLE["osl"]),
        "--ttft", str(EXAMPLE["ttft"]), "--tpot", str(EXAMPLE["tpot"]), "--out", out_dir,
    ]  # fmt: skip
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
    wall = time.perf_counter() - t0
    m = re.search(r"evaluated in ([0-9.]+) s", proc.stdout)
    return wall, float(m.group(1)) if m else float("nan")


def aic_cli(exe: str, out_dir: str) -> tuple[float, float]:
    cmd = [
        exe, "cli", "default", "--model-path", EXAMPLE["model"], "--system", EXAMPLE["system"],
        "--total-gpus", str(EXAMPLE["gpus"]), "--isl", str(EXAMPLE["isl"]), "--osl",
        str(EXAMPLE["osl"]), "--ttft", str(EXAMPLE["ttft"]), "--tpot", str(EXAMPLE["tpot"]),
        "--backend", "vllm", "--save-dir", out_dir,
    ]  # fmt: skip
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"aiconfigurator failed: {proc.stderr[-500:]}")
    m = re.search(r"All experiments completed in ([0-9.]+) seconds", proc.stdout + proc.stderr)
    return wall, float(m.group(1)) if m else float("nan")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--aic", default=None, help="path to the aiconfigurator executable")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-results", action="store_true")
    args = ap.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.repeats):
            search_s, n_points = ours_in_process()
            cli_wall, cli_search = ours_cli(f"{tmp}/ours{i}")
            row = {
                "ours_search_s": search_s,
                "ours_cli_wall_s": cli_wall,
                "ours_cli_search_s": cli_search,
            }
            if args.aic:
                aic_wall, aic_search = aic_cli(args.aic, f"{tmp}/aic{i}")
                row.update(aic_wall_s=aic_wall, aic_search_s=aic_search)
            rows.append(row)
            print(row, flush=True)
    med = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
    load = Path("/proc/loadavg").read_text().split()[:3] if Path("/proc/loadavg").exists() else []
    cmd = "python benchmarks/search_speed.py" + (f" --aic {args.aic}" if args.aic else "")
    lines = [
        "### Search speed (`benchmarks/search_speed.py`)",
        "",
        f"Command: `{cmd} --repeats {args.repeats}`. Machine: {machine()}; shared with other "
        f"sessions (load average {' '.join(load)} at the end of the run), so compare the ratio "
        "within this run. Example: "
        "`causal-tuner search --model Qwen/Qwen3-32B --system h200_sxm --gpus 8 --isl 4000 "
        f"--osl 500 --ttft 2000 --tpot 30` (agg + disagg, {n_points} points evaluated).",
        "",
        "| measurement (median of repeats) | ours | AIConfigurator 0.12.0 |",
        "|---|---|---|",
        f"| search time (s) | {med['ours_cli_search_s']:.2f} (in-process {med['ours_search_s']:.2f}) "
        f"| {med.get('aic_search_s', float('nan')):.2f} |",
        f"| process wall time (s) | {med['ours_cli_wall_s']:.2f} | {med.get('aic_wall_s', float('nan')):.2f} |",
    ]
    if "aic_search_s" in med:
        lines.append(
            f"\nRatio AIC/ours: search {med['aic_search_s'] / med['ours_cli_search_s']:.1f}x, "
            f"wall {med['aic_wall_s'] / med['ours_cli_wall_s']:.1f}x."
        )
    else:
        lines.append("\nAIConfigurator not run (no --aic executable given).")
    text = "\n".join(lines)
    print(text)
    if not args.no_results:
        write_results(text, "search_speed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
