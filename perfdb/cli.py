"""``causal-tuner perfdb``: inspect, query, import and collect kernel tables.

User mistakes (unknown system, bad path, bad size) print one clean line and exit with code 2.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

_USER_ERRORS = (ValueError, FileNotFoundError, NotADirectoryError, PermissionError)


def _clean_errors(func: Callable[..., Any]) -> Callable[..., Any]:
    """Turn user-facing errors into ``Error: ...`` and exit code 2 instead of a traceback."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except _USER_ERRORS as exc:
            click.echo(f"Error: {exc}", err=True)
            raise SystemExit(2) from None

    return wrapper


@click.group("perfdb")
def perfdb() -> None:
    """Measured GPU kernel latencies: list, query, import, collect."""


@perfdb.command("list")
@click.option("--root", type=click.Path(path_type=Path), default=None, help="Database root.")
@_clean_errors
def list_cmd(root: Path | None) -> None:
    """List the systems and their tables."""
    from perfdb.db import list_systems, load_system

    for system in list_systems(root):
        db = load_system(system, root=root)
        spec = db.spec
        click.echo(
            f"{system}: {spec.mem_capacity_bytes / 2**30:.0f} GiB, "
            f"{spec.mem_bw_bytes_s / 1e12:.2f} TB/s, bf16 {spec.tensor_flops['bf16'] / 1e12:.0f} TFLOP/s; "
            f"{db.backend} {db.version}: {', '.join(db.tables)}"
        )


_OP_HELP = (
    "Op type and fields as key=value, e.g. `gemm m=128 n=4096 k=4096 dtype=fp8` or "
    "`generation_attention batch_size=64 kv_len=2048 num_heads=32 num_kv_heads=8 head_dim=128`."
)


@perfdb.command("query", help=f"Price one op. {_OP_HELP}")
@click.argument("op_type")
@click.argument("fields", nargs=-1)
@click.option("--system", default="h100_sxm", show_default=True)
@click.option("--backend", default="vllm", show_default=True)
@click.option("--version", default=None)
@click.option("--root", type=click.Path(path_type=Path), default=None)
@_clean_errors
def query_cmd(
    op_type: str,
    fields: tuple[str, ...],
    system: str,
    backend: str,
    version: str | None,
    root: Path | None,
) -> None:
    from perfdb.db import load_system
    from perfdb.ops import op_class

    cls = op_class(op_type)
    kwargs: dict[str, Any] = {}
    for item in fields:
        if "=" not in item:
            raise ValueError(f"expected key=value, got {item!r}")
        key, value = item.split("=", 1)
        kwargs[key] = int(value) if value.lstrip("-").isdigit() else value
    try:
        op = cls(**kwargs)
    except TypeError as exc:
        raise ValueError(f"{cls.__name__}: {exc}") from None
    db = load_system(system, backend, version, root=root)
    ms, source = db.latency(op)
    click.echo(f"{op}: {ms:.6g} ms ({source}) on {system}/{db.backend} {db.version}")


@perfdb.command("import-aiconfigurator")
@click.argument("path", type=click.Path(path_type=Path))
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default=None,
    help="Database root to write (default: the bundled perfdb/data/systems).",
)
@click.option("--systems", "systems", multiple=True, help="System(s) to convert (repeatable).")
@click.option(
    "--backend", "backends", multiple=True, default=("vllm",), show_default=True, help="Repeatable."
)
@_clean_errors
def import_cmd(
    path: Path, out: Path | None, systems: tuple[str, ...], backends: tuple[str, ...]
) -> None:
    """Convert an AIConfigurator systems/ tree at PATH into our format."""
    from perfdb.db import BUNDLED_ROOT
    from perfdb.importer import import_aiconfigurator

    if not path.exists():
        raise ValueError(f"{path}: no such folder")
    systems_list = [s for item in systems for s in item.split(",") if s]
    report = import_aiconfigurator(path, out or BUNDLED_ROOT, systems_list or None, backends)
    click.echo(report.summary())


@perfdb.command("collect")
@click.option("--system", required=True, help="Name to store the measurements under.")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cuda", show_default=True)
@click.option("--quick", is_flag=True, help="Tiny sweeps (seconds); for smoke tests and CPUs.")
@click.option(
    "--out", type=click.Path(path_type=Path), required=True, help="Database root to write."
)
@click.option(
    "--world-size", type=int, default=2, show_default=True, help="GPUs/processes for all-reduce."
)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option(
    "--graphs/--no-graphs",
    default=True,
    show_default=True,
    help="On CUDA, time kernels replayed from a CUDA graph (no host launch gaps).",
)
@click.option(
    "--gemm-dtype",
    "gemm_dtypes",
    type=click.Choice(["bf16", "fp8"]),
    multiple=True,
    default=("bf16",),
    show_default=True,
    help="GEMM precisions (repeat; bf16 is always measured).",
)
@click.option(
    "--op",
    "ops",
    type=click.Choice(["gemm", "attention", "allreduce", "moe"]),
    multiple=True,
    default=("gemm", "attention", "allreduce", "moe"),
    show_default=True,
    help="Sweeps to run (repeat). Without gemm the system must be a known one.",
)
@_clean_errors
def collect_cmd(
    system: str,
    device: str,
    quick: bool,
    out: Path,
    world_size: int,
    seed: int,
    graphs: bool,
    gemm_dtypes: tuple[str, ...],
    ops: tuple[str, ...],
) -> None:
    """Measure GEMM, attention (SDPA), all-reduce and MoE layers with PyTorch on this machine."""
    from perfdb.collector import CollectConfig, collect

    config = CollectConfig(
        system=system,
        device=device,
        quick=quick,
        world_size=world_size,
        seed=seed,
        graphs=graphs,
        gemm_dtypes=("bf16", *(d for d in gemm_dtypes if d != "bf16")),
        ops=ops,
    )
    path = collect(config, out)
    click.echo(
        f"wrote {path}; load it with perfdb.load_system({system!r}, backend='torch', root={str(out)!r})"
    )
