"""``causal-tuner search``: sweep serving configurations, print the frontier and the SLA pick."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import click


@click.command("search")
@click.option("--model", required=True, help="Bundled Hugging Face id or path to a config.json.")
@click.option("--system", required=True, help="GPU system, e.g. h100_sxm, h200_sxm, b200_sxm.")
@click.option("--gpus", "num_gpus", type=int, required=True, help="GPUs available.")
@click.option("--isl", type=float, required=True, help="Mean input length (tokens).")
@click.option("--osl", type=float, required=True, help="Mean output length (tokens).")
@click.option("--ttft", "ttft_ms", type=float, default=None, help="TTFT limit (ms).")
@click.option("--tpot", "tpot_ms", type=float, default=None, help="TPOT limit (ms).")
@click.option(
    "--backend", type=click.Choice(["vllm", "sglang", "trtllm"]), default="vllm", show_default=True
)
@click.option("--dtype", default="bf16", show_default=True, help="bf16, fp8, fp8_block, fp4...")
@click.option(
    "--mode",
    "modes",
    type=click.Choice(["agg", "disagg"]),
    multiple=True,
    default=("agg", "disagg"),
    show_default=True,
)
@click.option("--pp/--no-pp", "allow_pp", default=False, help="Include pipeline parallelism.")
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False),
    default="search_results",
    show_default=True,
    help="Folder for the CSV and PNG.",
)
@click.option("--top", type=int, default=15, show_default=True, help="Frontier rows printed.")
def search(
    model: str,
    system: str,
    num_gpus: int,
    isl: float,
    osl: float,
    ttft_ms: float | None,
    tpot_ms: float | None,
    backend: str,
    dtype: str,
    modes: tuple[str, ...],
    allow_pp: bool,
    out_dir: str,
    top: int,
) -> None:
    """Search parallelism x batching x serving mode for MODEL on GPUS x SYSTEM.

    Prints the Pareto frontier (output tokens/s per GPU vs per user) and the best configuration
    meeting the TTFT/TPOT SLA with its launch commands; writes search.csv and search.png.

    Example: causal-tuner search --model Qwen/Qwen3-32B --system h200_sxm --gpus 8 --isl 4000
    --osl 500 --ttft 2000 --tpot 30
    """
    from simulator.launch import render_all
    from simulator.search import SearchSpace
    from simulator.search import search as run_search

    started = time.perf_counter()
    try:
        space = SearchSpace(modes=tuple(dict.fromkeys(modes)), allow_pp=allow_pp)
        result = run_search(
            model,
            system,
            num_gpus,
            isl,
            osl,
            ttft_ms=ttft_ms,
            tpot_ms=tpot_ms,
            backend=backend,
            dtype=dtype,
            space=space,
            progress=sys.stderr.isatty(),
        )
    except (ValueError, FileNotFoundError, KeyError) as exc:
        message = exc.args[0] if exc.args else str(exc)
        click.echo(f"error: {message}", err=True)
        sys.exit(2)
    elapsed = time.perf_counter() - started
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    result.to_csv(str(out / "search.csv"))
    result.plot(
        str(out / "search.png"), title=f"{model} on {num_gpus}x {system}, ISL {isl:g} OSL {osl:g}"
    )
    cols = [
        "mode",
        "prefill_layout",
        "decode_layout",
        "replicas",
        "prefill_workers",
        "decode_workers",
        "concurrency",
        "max_num_batched_tokens",
        "ttft_ms",
        "tpot_ms",
        "tok_s_per_gpu",
        "tok_s_per_user",
        "meets_sla",
    ]
    click.echo(
        f"{len(result.table)} configurations evaluated in {elapsed:.2f} s "
        f"({len(result.skipped)} layouts/points skipped)"
    )
    click.echo("\nPareto frontier (tokens/s/GPU vs tokens/s/user):")
    front = result.frontier.sort_values("tok_s_per_gpu", ascending=False).head(top)
    click.echo(front[cols].to_string(index=False, float_format=lambda v: f"{v:.1f}"))
    if result.best is None:
        click.echo(
            f"\nno configuration meets TTFT <= {ttft_ms} ms and TPOT <= {tpot_ms} ms", err=True
        )
    else:
        best = result.best
        click.echo("\nbest configuration under the SLA:")
        click.echo(best[cols].to_string())
        if best["mode"] == "agg":
            cfg = result.launch_config()
            cmds = render_all(cfg)
            click.echo(f"\nlaunch ({int(best['replicas'])} replica(s)):")
            click.echo(f"  {cmds['vllm']}\n  {cmds['sglang']}\n  {cmds['trtllm']}")
            click.echo("  # extra_llm_api_options.yaml\n" + cmds["trtllm_yaml"])
        else:
            click.echo(
                f"\ndisaggregated: {int(best['prefill_workers'])} prefill worker(s) "
                f"{best['prefill_layout']} + {int(best['decode_workers'])} decode worker(s) "
                f"{best['decode_layout']}"
            )
    click.echo(f"\nwrote {out / 'search.csv'} and {out / 'search.png'}")
