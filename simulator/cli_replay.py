"""``causal-tuner replay``: run a request trace through one or more engine configurations.

For each ``--config`` the trace is served by a simulated cluster (replicas priced by the
analytical step model of ``--model`` on ``--system``) with the same seed, so configurations are
compared on common random numbers. Writes, under ``--out``:

* ``requests_<label>.csv``: one row per request (TTFT, TPOT, end-to-end, queue time,
  preemptions, prefix hits, status);
* ``windows_<label>.csv``: the tuner's window observations (tiered vector, one row per window);
* ``metrics_<label>.prom``: the end state under vLLM's Prometheus metric names;
* ``summary.csv``: one row per configuration (also printed);
* ``latency_cdf.png`` (TTFT, TPOT, end-to-end CDFs) and ``throughput.png`` (tokens/s over time).
"""

from __future__ import annotations

import re
import sys
from dataclasses import fields
from pathlib import Path

import click
import numpy as np

from simulator.engine import EngineConfig

_BOOL = {
    "true": True,
    "on": True,
    "yes": True,
    "1": True,
    "false": False,
    "off": False,
    "no": False,
    "0": False,
}


def parse_config(text: str) -> tuple[str, dict]:
    """Parse ``"k=v,k=v"`` into EngineConfig keyword arguments; returns ``(label, kwargs)``.

    Raises
    ------
    ValueError
        Unknown knob (the message lists the valid ones), missing ``=``, or a value of the wrong
        type.
    """
    kwargs: dict = {}
    types = {f.name: f.type for f in fields(EngineConfig)}
    text = text.strip()
    if text in ("", "default"):
        return "default", {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        if "=" not in part:
            raise ValueError(f"config entry {part!r} is not key=value")
        key, value = (s.strip() for s in part.split("=", 1))
        key = key.replace("-", "_")
        if key not in types:
            raise ValueError(f"unknown engine knob {key!r}; valid knobs: {', '.join(types)}")
        kind = str(types[key])
        low = value.lower()
        try:
            if kind.startswith("bool"):
                if low not in _BOOL:
                    raise ValueError
                kwargs[key] = _BOOL[low]
            elif kind.startswith("int"):
                kwargs[key] = None if low == "none" and "None" in kind else int(value)
            elif kind.startswith("float"):
                kwargs[key] = float(value)
            else:
                kwargs[key] = value
        except ValueError:
            raise ValueError(f"knob {key}={value!r}: expected {kind}") from None
    label = re.sub(r"[^A-Za-z0-9_.=-]+", "_", text.replace(",", "_"))
    return label, kwargs


def _plots(out: Path, results: dict, windows: dict, window_s: float) -> list[Path]:
    from matplotlib.figure import Figure

    paths = []
    fig = Figure(figsize=(15, 4.2))
    axes = fig.subplots(1, 3)
    for label, res in results.items():
        ok = res.requests[res.requests["status"] == "ok"]
        for ax, col, name in zip(
            axes, ("ttft_ms", "tpot_ms", "e2e_ms"), ("TTFT", "TPOT", "end-to-end"), strict=True
        ):
            v = np.sort(ok[col].dropna().to_numpy())
            if v.size:
                ax.plot(v, np.arange(1, v.size + 1) / v.size, label=label)
            ax.set_xscale("log")
            ax.set_xlabel(f"{name} (ms)")
            ax.set_ylabel("fraction of requests")
            ax.grid(True, which="both", alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle("Latency CDFs (simulated replay)")
    fig.tight_layout()
    paths.append(out / "latency_cdf.png")
    fig.savefig(paths[-1], dpi=110)

    fig = Figure(figsize=(10, 4))
    ax = fig.subplots()
    for i, (label, frame) in enumerate(windows.items()):
        color = f"C{i}"
        ax.step(
            frame["window_start_s"],
            frame["throughput_tok_s"],
            where="post",
            color=color,
            label=f"{label}: generated",
        )
        ax.step(
            frame["window_start_s"],
            frame["goodput_tok_s"],
            where="post",
            color=color,
            ls="--",
            label=f"{label}: goodput (SLA met)",
        )
    ax.set_xlabel("time (s)")
    ax.set_ylabel(f"output tokens/s ({window_s:g} s windows)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("Throughput over time")
    fig.tight_layout()
    paths.append(out / "throughput.png")
    fig.savefig(paths[-1], dpi=110)
    return paths


@click.command("replay")
@click.option(
    "--trace",
    "trace_name",
    default="azure-conv",
    show_default=True,
    help="Bundled trace (azure-conv, azure-code, mooncake-conv, mooncake-synthetic, "
    "vidur-conv, vidur-code) or a path to an Azure CSV, Vidur CSV or Mooncake JSONL.",
)
@click.option(
    "--model",
    default="meta-llama/Llama-3.1-8B",
    show_default=True,
    help="Model id or config.json path.",
)
@click.option("--system", default="h100_sxm", show_default=True, help="GPU system (perfdb name).")
@click.option("--tp", default=1, show_default=True, type=int)
@click.option("--pp", default=1, show_default=True, type=int)
@click.option("--ep", default=1, show_default=True, type=int)
@click.option("--dtype", default="bf16", show_default=True)
@click.option("--backend", default="vllm", show_default=True)
@click.option(
    "--config",
    "configs",
    multiple=True,
    help="Engine knobs as k=v,k=v (repeat for several configs), e.g. "
    "max_num_seqs=64,max_num_batched_tokens=4096. Default: engine defaults.",
)
@click.option("--replicas", default=1, show_default=True, type=int, help="Replicas per config.")
@click.option(
    "--router",
    default="round_robin",
    show_default=True,
    type=click.Choice(["round_robin", "least_loaded"]),
)
@click.option(
    "--time-scale",
    default=1.0,
    show_default=True,
    type=float,
    help="Multiply inter-arrival times (2 = half the rate).",
)
@click.option(
    "--rate-scale", default=1.0, show_default=True, type=float, help="Multiply the request rate."
)
@click.option("--max-requests", default=None, type=int, help="Replay only the first N requests.")
@click.option("--sla-ttft-ms", default=2000.0, show_default=True, type=float)
@click.option("--sla-tpot-ms", default=100.0, show_default=True, type=float)
@click.option("--window-s", default=60.0, show_default=True, type=float, help="Observation window.")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option(
    "--out",
    "out_dir",
    default="replay-out",
    show_default=True,
    type=click.Path(file_okay=False, path_type=Path),
)
@click.option("--progress/--no-progress", default=True, show_default=True)
def replay(**options):
    """Replay a request trace through one or more engine configurations."""
    try:
        _replay(**options)
    except (ValueError, OSError, KeyError) as exc:
        msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        click.echo(f"Error: {msg}", err=True)
        sys.exit(2)


def _replay(
    trace_name,
    model,
    system,
    tp,
    pp,
    ep,
    dtype,
    backend,
    configs,
    replicas,
    router,
    time_scale,
    rate_scale,
    max_requests,
    sla_ttft_ms,
    sla_tpot_ms,
    window_s,
    seed,
    out_dir,
    progress,
):
    from simulator.cluster import Deployment
    from simulator.metrics import SLA, to_prometheus
    from simulator.replay import replay_configs
    from simulator.traces import load_trace

    if replicas < 1:
        raise ValueError(f"--replicas must be >= 1, got {replicas}")
    if max_requests is not None and max_requests < 1:
        raise ValueError(f"--max-requests must be >= 1, got {max_requests}")
    sla = SLA(ttft_ms=sla_ttft_ms, tpot_ms=sla_tpot_ms)
    parsed = [parse_config(c) for c in (configs or ("default",))]
    labels = [label for label, _ in parsed]
    if len(set(labels)) != len(labels):
        raise ValueError(f"duplicate --config values: {labels}")
    engine_configs = [(label, EngineConfig(**kw)) for label, kw in parsed]

    trace = load_trace(trace_name)
    report = trace.report
    if report is not None:
        click.echo(report.summary(), err=True)
    if max_requests is not None:
        trace = trace.head(max_requests)
    if time_scale != 1.0:
        trace = trace.scale_time(time_scale)
    if rate_scale != 1.0:
        trace = trace.scale_rate(rate_scale)

    deployment = Deployment(
        model=model, system=system, tp=tp, pp=pp, ep=ep, dtype=dtype, backend=backend
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    run = replay_configs(
        trace,
        deployment,
        dict(engine_configs),
        replicas=replicas,
        router=router,
        seed=seed,
        sla=sla,
        window_s=window_s,
        progress=progress,
    )
    for label, res in run.results.items():
        res.requests.to_csv(out_dir / f"requests_{label}.csv", index=False)
        run.windows[label].to_csv(out_dir / f"windows_{label}.csv", index=False)
        (out_dir / f"metrics_{label}.prom").write_text(to_prometheus(res, model_name=model))
    table = run.summary
    table.to_csv(out_dir / "summary.csv", index=False)
    plots = _plots(out_dir, run.results, run.windows, window_s)
    show = [
        "config",
        "completed",
        "rejected",
        "throughput_tok_s",
        "goodput_tok_s",
        "ttft_ms_p50",
        "ttft_ms_p99",
        "tpot_ms_p50",
        "tpot_ms_p99",
        "preemptions",
        "wall_s",
    ]
    click.echo(
        f"{trace.name}: {len(trace)} requests over {trace.duration_ms / 1000:.0f} s, {model} on "
        f"{system} (tp={tp}, pp={pp}), {replicas} replica(s), SLA TTFT<={sla_ttft_ms:g} ms "
        f"TPOT<={sla_tpot_ms:g} ms"
    )
    click.echo(table[show].to_string(index=False, float_format=lambda v: f"{v:.1f}"))
    click.echo(
        f"wrote {out_dir}/summary.csv, requests_*.csv, windows_*.csv, metrics_*.prom, "
        + ", ".join(p.name for p in plots)
    )
