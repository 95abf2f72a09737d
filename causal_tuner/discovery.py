"""Learn a causal graph from a table of measurements: ``causal-tuner discover``.

Reads a CSV or Parquet table, keeps the chosen numeric columns, optionally log-transforms some
(latencies and sizes act multiplicatively), learns a CPDAG with :class:`~causal_tuner.PC`
under tiered background knowledge, and, for each requested ``TREATMENT:OUTCOME`` pair, lists the
backdoor adjustment sets of :func:`~causal_tuner.find_adjustment` with the OLS estimate of the
total effect under each (one estimate per candidate set where the CPDAG leaves the parents of
the treatment ambiguous, as in IDA). Rows with a missing value in a chosen column are dropped and
counted in the report, never silently.

Example (measured serving results; knobs cannot cause the workload, latencies cause nothing)::

    causal-tuner discover silicon_dev.csv --query "mode == 'agg'" \\
        --columns isl,osl,batch_size,tp_size,silicon_ttft_ms,silicon_tpot_ms \\
        --log isl,osl,batch_size,tp_size,silicon_ttft_ms,silicon_tpot_ms \\
        --tier isl,osl --tier batch_size,tp_size --tier silicon_ttft_ms,silicon_tpot_ms \\
        --effect batch_size:silicon_tpot_ms --plot graph.png
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

import click
import numpy as np
import pandas as pd

from causal_tuner.backdoor import find_adjustment
from causal_tuner.estimators import GramStatistics
from causal_tuner.structure import PC, PartiallyDirectedGraph

__all__ = ["DiscoveryResult", "EffectEstimate", "discover", "discover_command"]

_Z95 = 1.959963984540054


@dataclass(frozen=True)
class EffectEstimate:
    """OLS estimate of a total effect under one backdoor adjustment set.

    Attributes
    ----------
    treatment, outcome : str
    adjustment : tuple of str
        The adjustment set (column names).
    effect : float
        Coefficient of the treatment in the OLS of the outcome on ``[1, treatment, adjustment]``
        (in the transformed units: a log-log coefficient is an elasticity).
    std_error : float
    ci95 : (float, float)
    n_rows : int
    """

    treatment: str
    outcome: str
    adjustment: tuple[str, ...]
    effect: float
    std_error: float
    ci95: tuple[float, float]
    n_rows: int


@dataclass(frozen=True)
class DiscoveryResult:
    """What :func:`discover` learned.

    Attributes
    ----------
    columns : tuple of str
    cpdag : PartiallyDirectedGraph
        With ``names = columns``.
    n_rows : int
        Rows used.
    dropped : dict {column: rows}
        Rows dropped for a missing value, by the first offending column.
    effects : tuple of (treatment, outcome, causal_path, n_zero_effect_candidates, estimates)
    notes : tuple of str
        Warnings worth showing (constant columns, ...).
    """

    columns: tuple[str, ...]
    cpdag: PartiallyDirectedGraph
    n_rows: int
    dropped: dict[str, int]
    effects: tuple[tuple[str, str, str, int, tuple[EffectEstimate, ...]], ...]
    notes: tuple[str, ...] = field(default=())

    def edges(self) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
        """(directed, undirected) edges by column name."""
        names = self.columns
        directed = [(names[i], names[j]) for i, j in self.cpdag.directed_edges()]
        undirected = [(names[i], names[j]) for i, j in self.cpdag.undirected_edges()]
        return directed, undirected

    def to_dict(self) -> dict:
        """A JSON-ready summary."""
        directed, undirected = self.edges()
        return {
            "columns": list(self.columns),
            "n_rows": self.n_rows,
            "dropped_rows_by_column": self.dropped,
            "directed_edges": [list(e) for e in directed],
            "undirected_edges": [list(e) for e in undirected],
            "effects": [
                {
                    "treatment": t,
                    "outcome": o,
                    "causal_path": path,
                    "zero_effect_candidates": zero,
                    "estimates": [asdict(e) for e in estimates],
                }
                for t, o, path, zero, estimates in self.effects
            ],
            "notes": list(self.notes),
        }


def _split(text: str | None) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()] if text else []


def _edge(text: str, what: str) -> tuple[str, str]:
    parts = [p.strip() for p in text.split("->")]
    if len(parts) != 2 or not all(parts):
        raise ValueError(f"{what} edge {text!r} must look like A->B")
    return parts[0], parts[1]


def read_table(path: str | Path) -> pd.DataFrame:
    """Read a CSV or Parquet file (by suffix); ``ValueError`` with the reason if unreadable."""
    path = Path(path)
    try:
        if path.suffix.lower() in {".parquet", ".pq"}:
            return pd.read_parquet(path)
        return pd.read_csv(path)
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise ValueError(f"cannot read {path}: {exc}") from None


def discover(
    frame: pd.DataFrame,
    columns: list[str] | None = None,
    tiers: list[list[str]] | None = None,
    forbidden: list[tuple[str, str]] = (),  # type: ignore[assignment]
    required: list[tuple[str, str]] = (),  # type: ignore[assignment]
    log_columns: list[str] = (),  # type: ignore[assignment]
    effects: list[tuple[str, str]] = (),  # type: ignore[assignment]
    alpha: float = 0.01,
    max_cond_size: int | None = None,
    max_sets: int = 4,
) -> DiscoveryResult:
    """Learn a CPDAG over columns of ``frame`` and estimate requested total effects.

    Parameters
    ----------
    frame : pandas.DataFrame
        The measurements, one row per observation.
    columns : list of str, optional
        Columns to use (default: every numeric column).
    tiers : list of lists of str, optional
        Tiered background knowledge, earliest first (see :class:`~causal_tuner.PC`).
    forbidden, required : list of (str, str)
        Forbidden / required directed edges by name.
    log_columns : list of str
        Columns replaced by their natural log (values must be > 0).
    effects : list of (str, str)
        ``(treatment, outcome)`` pairs to estimate.
    alpha : float
        PC significance level.
    max_cond_size : int, optional
        PC's largest conditioning set.
    max_sets : int
        Most adjustment sets estimated per pair.

    Returns
    -------
    DiscoveryResult

    Raises
    ------
    ValueError
        Naming the offending column, edge or value.
    """
    if columns is None or not columns:
        columns = [c for c in frame.columns if pd.api.types.is_numeric_dtype(frame[c])]
        if len(columns) < 2:
            raise ValueError("the table has fewer than two numeric columns; pass --columns")
    columns = list(dict.fromkeys(columns))
    for name in columns:
        if name not in frame.columns:
            raise ValueError(
                f"column {name!r} is not in the table (have: {', '.join(map(str, frame.columns))})"
            )
        if not pd.api.types.is_numeric_dtype(frame[name]):
            raise ValueError(f"column {name!r} is not numeric (dtype {frame[name].dtype})")
    if len(columns) < 2:
        raise ValueError("need at least two columns to learn a graph")
    index = {name: k for k, name in enumerate(columns)}

    def node(name: str, what: str) -> int:
        if name not in index:
            raise ValueError(
                f"{what} {name!r} is not one of the chosen columns ({', '.join(columns)})"
            )
        return index[name]

    table = frame[columns].astype(float)
    missing = table.isna() | ~np.isfinite(table)
    dropped: dict[str, int] = {}
    if missing.to_numpy().any():
        first = missing.to_numpy().argmax(axis=1)
        bad_rows = missing.any(axis=1).to_numpy()
        for k in first[bad_rows]:
            dropped[columns[k]] = dropped.get(columns[k], 0) + 1
        table = table[~bad_rows]
    for name in log_columns:
        node(name, "log column")
        values = table[name]
        if (values <= 0).any():
            row = values.index[int(np.argmax((values <= 0).to_numpy()))]
            raise ValueError(f"--log column {name!r} has a value <= 0 (row {row}: {values[row]})")
        table[name] = np.log(values)
    data = table.to_numpy()
    if data.shape[0] < 5:
        raise ValueError(f"only {data.shape[0]} complete rows remain; need at least 5")
    notes = [
        f"column {c!r} is constant in the rows used; it stays isolated"
        for c in columns
        if table[c].nunique() <= 1
    ]

    pc = PC(
        alpha=alpha,
        tiers=[[node(n, "tier column") for n in tier] for tier in tiers] if tiers else None,
        forbidden=[
            (node(a, "forbidden edge column"), node(b, "forbidden edge column"))
            for a, b in forbidden
        ],
        required=[
            (node(a, "required edge column"), node(b, "required edge column")) for a, b in required
        ],
        max_cond_size=max_cond_size,
    ).fit(data)
    cpdag = PartiallyDirectedGraph(pc.adjacency_, names=tuple(columns))

    gram = GramStatistics(len(columns))
    gram.update_many(data)
    estimated = []
    for treatment, outcome in effects:
        t, o = node(treatment, "effect treatment"), node(outcome, "effect outcome")
        result = find_adjustment(cpdag, t, o, max_sets=max_sets)
        estimates = []
        for z in result.sets:
            fit = gram.ols([t, *sorted(z)], o)
            coef, se = float(fit.coef[1]), float(np.sqrt(max(fit.cov[1, 1], 0.0)))
            estimates.append(
                EffectEstimate(
                    treatment=treatment,
                    outcome=outcome,
                    adjustment=tuple(columns[k] for k in sorted(z)),
                    effect=coef,
                    std_error=se,
                    ci95=(coef - _Z95 * se, coef + _Z95 * se),
                    n_rows=fit.n,
                )
            )
        estimated.append(
            (
                treatment,
                outcome,
                result.causal_path,
                result.n_zero_effect_candidates,
                tuple(estimates),
            )
        )
    return DiscoveryResult(
        columns=tuple(columns),
        cpdag=cpdag,
        n_rows=int(data.shape[0]),
        dropped=dropped,
        effects=tuple(estimated),
        notes=tuple(notes),
    )


def plot_graph(
    result: DiscoveryResult, path: str | Path, tiers: list[list[str]] | None = None
) -> None:
    """Draw the learned graph (tiers as columns, left to right) into a PNG."""
    import networkx as nx
    from matplotlib.figure import Figure

    names = result.columns
    graph = nx.DiGraph()
    graph.add_nodes_from(names)
    directed, undirected = result.edges()
    layers: dict[str, int] = {}
    for t, tier in enumerate(tiers or []):
        for name in tier:
            layers[name] = t
    rest = len(tiers or [])
    for name in names:
        layers.setdefault(name, rest)
    for name, layer in layers.items():
        graph.nodes[name]["layer"] = layer
    pos = nx.multipartite_layout(graph, subset_key="layer") if tiers else nx.circular_layout(graph)
    fig = Figure(figsize=(1.8 * (max(layers.values()) + 2), 4.5))
    ax = fig.subplots()
    nx.draw_networkx_nodes(
        graph, pos, ax=ax, node_color="#dbe9f6", node_size=2200, edgecolors="#35608f"
    )
    nx.draw_networkx_labels(graph, pos, ax=ax, font_size=7)
    nx.draw_networkx_edges(
        graph, pos, edgelist=directed, ax=ax, arrows=True, arrowsize=18, node_size=2200
    )
    nx.draw_networkx_edges(
        graph.to_undirected(), pos, edgelist=undirected, ax=ax, style="dashed", node_size=2200
    )
    ax.set_title(f"PC CPDAG, {result.n_rows} rows (dashed: orientation not identified)", fontsize=9)
    ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def _report(result: DiscoveryResult) -> str:
    lines = [f"rows used: {result.n_rows}"]
    if result.dropped:
        parts = ", ".join(f"{c}: {n}" for c, n in result.dropped.items())
        lines.append(f"rows dropped for a missing value ({sum(result.dropped.values())}): {parts}")
    lines += [f"note: {note}" for note in result.notes]
    directed, undirected = result.edges()
    lines.append("directed edges:")
    lines += [f"  {a} -> {b}" for a, b in directed] or ["  (none)"]
    lines.append("undirected edges (orientation not identified):")
    lines += [f"  {a} -- {b}" for a, b in undirected] or ["  (none)"]
    for treatment, outcome, path, zero, estimates in result.effects:
        lines.append(f"effect of {treatment} on {outcome} (causal path: {path}):")
        if zero:
            lines.append(
                f"  {zero} candidate parent set(s) contain {outcome}: there the effect is 0"
            )
        if not estimates:
            lines.append("  no backdoor adjustment set in this graph")
        for e in estimates:
            adjust = ", ".join(e.adjustment) or "(nothing)"
            lines.append(
                f"  adjusting for {adjust}: {e.effect:+.4g} (95% CI {e.ci95[0]:+.4g} .. {e.ci95[1]:+.4g})"
            )
    return "\n".join(lines)


@click.command("discover")
@click.argument("data", type=click.Path(exists=True, dir_okay=False))
@click.option("--columns", help="Comma-separated columns to use (default: all numeric).")
@click.option(
    "--tier",
    "tiers",
    multiple=True,
    help="Comma-separated columns of one tier; repeat, earliest first.",
)
@click.option("--forbid", multiple=True, help="Forbidden edge A->B (repeatable).")
@click.option("--require", multiple=True, help="Required edge A->B (repeatable).")
@click.option("--log", "log_columns", help="Comma-separated columns to replace by their log (> 0).")
@click.option("--query", help="pandas query selecting rows first, e.g. \"mode == 'agg'\".")
@click.option(
    "--effect",
    "effects",
    multiple=True,
    help="TREATMENT:OUTCOME total effect to estimate (repeatable).",
)
@click.option("--alpha", type=float, default=0.01, show_default=True, help="PC significance level.")
@click.option("--max-cond-size", type=int, default=None, help="Largest PC conditioning set.")
@click.option(
    "--plot", "plot_path", type=click.Path(dir_okay=False), help="Write the graph as a PNG."
)
@click.option(
    "--json", "json_path", type=click.Path(dir_okay=False), help="Write the result as JSON."
)
def discover_command(
    data: str,
    columns: str | None,
    tiers: tuple[str, ...],
    forbid: tuple[str, ...],
    require: tuple[str, ...],
    log_columns: str | None,
    query: str | None,
    effects: tuple[str, ...],
    alpha: float,
    max_cond_size: int | None,
    plot_path: str | None,
    json_path: str | None,
) -> None:
    """Learn a causal graph (PC + background knowledge) from a CSV/Parquet table of measurements
    and estimate total effects by backdoor adjustment."""
    try:
        frame = read_table(data)
        if query:
            try:
                frame = frame.query(query)
            except Exception as exc:  # pandas raises many types for a bad expression
                raise ValueError(f"--query {query!r} failed: {exc}") from None
        tier_lists = [_split(t) for t in tiers] or None
        pairs = []
        for text in effects:
            parts = [p.strip() for p in text.split(":")]
            if len(parts) != 2 or not all(parts):
                raise ValueError(f"--effect {text!r} must look like TREATMENT:OUTCOME")
            pairs.append((parts[0], parts[1]))
        result = discover(
            frame,
            columns=_split(columns) or None,
            tiers=tier_lists,
            forbidden=[_edge(e, "--forbid") for e in forbid],
            required=[_edge(e, "--require") for e in require],
            log_columns=_split(log_columns),
            effects=pairs,
            alpha=alpha,
            max_cond_size=max_cond_size,
        )
        click.echo(_report(result))
        if plot_path:
            plot_graph(result, plot_path, tier_lists)
            click.echo(f"graph written to {plot_path}")
        if json_path:
            Path(json_path).write_text(json.dumps(result.to_dict(), indent=2))
            click.echo(f"result written to {json_path}")
    except ValueError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except OSError as exc:  # an output path that cannot be written
        click.echo(f"error: cannot write output: {exc}", err=True)
        sys.exit(2)
