"""perfdb interpolation accuracy: leave-one-out on the measured tables, plus extrapolation.

Leave-one-out (LOO): for a seeded random sample of *interior* measured points (strictly inside
the measured range on every grid axis with >= 3 values, and with a measured neighbour on both
sides along at least one axis so that the point is bracketed), the point is removed from its
slice, the slice's :class:`perfdb.grid.EfficiencyGrid` is rebuilt from the remaining rows
exactly as the product builds it, and the point is predicted. Error = |predicted / measured - 1|.
Medians and 90th percentiles get 95% bootstrap confidence intervals (2,000 resamples, seeded).

Extrapolation: for every slice, all points at the largest value of one grid axis are removed and
predicted from the rest (held boundary efficiency); reported per axis.

Ablation, on the same sampled points (common random numbers): the same grid, fill and
multilinear query, but interpolating log latency itself instead of log(latency / roofline).

Usage::

    python3 benchmarks/perfdb_accuracy.py --system h100_sxm --samples 1500 --write-results
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from results_md import machine
from tqdm import tqdm

from perfdb import load_system
from perfdb.grid import EfficiencyGrid
from perfdb.roofline import reference_ms, roofline_ms
from perfdb.tables import SCHEMAS

TABLES = ("gemm", "context_attention", "generation_attention")  # the acceptance targets
EXTRA_TABLES = ("moe", "mla_context", "mla_generation", "nccl_all_reduce")  # reported too
REFERENCE = {  # AIConfigurator's interpolator, as quoted in the issue (median %, p90 %)
    "gemm": (4.9, 15.6),
    "context_attention": (2.0, 9.7),
}
HEADING = "## perfdb: interpolation accuracy (leave-one-out) and query speed"
RESULTS = Path(__file__).resolve().parent / "RESULTS.md"


def _slices(db, name: str):
    """Yield (cat dict, struct rows DataFrame) for every slice of a table."""
    schema = SCHEMAS[name]
    frame = db.table(name)
    by = list(schema.categorical) + list(schema.structural)
    for key, part in frame.groupby(by, sort=True):
        key = key if isinstance(key, tuple) else (key,)
        cat = {c: str(v) for c, v in zip(schema.categorical, key, strict=False)}
        yield cat, part.reset_index(drop=True)


def _roof(db, name: str, part: pd.DataFrame, cat: dict, *, pure: bool = False) -> np.ndarray:
    """The reference time of each row as the product uses it (``pure``: bare roofline)."""
    schema = SCHEMAS[name]
    cols = {c: part[c].to_numpy() for c in (*schema.structural, *schema.grid)}
    cols.update(cat)
    return (roofline_ms if pure else reference_ms)(db.spec, schema.op_type, cols)


def _interior_mask(part: pd.DataFrame, grid_cols) -> np.ndarray:
    """Strictly inside the range on every axis with >= 3 values; bracketed on >= 1 axis."""
    inside = np.ones(len(part), dtype=bool)
    bracketed = np.zeros(len(part), dtype=bool)
    for c in grid_cols:
        values = np.sort(part[c].unique())
        if len(values) >= 3:
            inside &= (part[c] > values[0]).to_numpy() & (part[c] < values[-1]).to_numpy()
        others = [o for o in grid_cols if o != c]
        # a measured neighbour on both sides along axis c (same other coordinates)
        key = (
            part[others].astype(str).agg("|".join, axis=1)
            if others
            else pd.Series("", index=part.index)
        )
        for _, idx in part.groupby(key).groups.items():
            line = part.loc[idx].sort_values(c)
            if len(line) >= 3:
                bracketed[line.index[1:-1]] = True
    return inside & bracketed


def loo(db, name: str, samples: int, rng: np.random.Generator):
    """Leave-one-out relative errors (ours, linear baseline) on sampled interior points."""
    schema = SCHEMAS[name]
    candidates = []
    slices = list(_slices(db, name))
    for s_idx, (_cat, part) in enumerate(slices):
        if len(part) < 8:
            continue
        mask = _interior_mask(part, schema.grid)
        candidates.extend((s_idx, int(i)) for i in np.flatnonzero(mask))
    if not candidates:
        return np.array([]), np.array([]), 0
    picks = rng.choice(len(candidates), size=min(samples, len(candidates)), replace=False)
    ours, base = [], []
    for p in tqdm(sorted(picks), desc=f"LOO {name}", unit="pt"):
        s_idx, row = candidates[p]
        cat, part = slices[s_idx]
        rest = part.drop(index=row)
        roof = _roof(db, name, part, cat)
        grid = EfficiencyGrid(
            [rest[c].to_numpy() for c in schema.grid],
            rest["latency_ms"].to_numpy(),
            np.delete(roof, row),
        )
        q = [np.array([part.at[row, c]]) for c in schema.grid]
        y, _, _ = grid.query(q)
        pred = float(np.exp(y[0]) * roof[row])
        truth = float(part.at[row, "latency_ms"])
        ours.append(abs(pred / truth - 1.0))
        # ablation: the same grid and fill, but on log latency itself (roofline := 1)
        plain = EfficiencyGrid(
            [rest[c].to_numpy() for c in schema.grid],
            rest["latency_ms"].to_numpy(),
            np.ones(len(rest)),
        )
        yb, _, _ = plain.query(q)
        base.append(abs(float(np.exp(yb[0])) / truth - 1.0))
    return np.array(ours), np.array(base), len(candidates)


def extrapolation(db, name: str):
    """Errors predicting the largest value of each grid axis from the rest, per axis."""
    schema = SCHEMAS[name]
    out = {}
    for axis in schema.grid:
        errs = []
        for cat, part in _slices(db, name):
            top = part[axis].max()
            held = part[axis] == top
            if held.all() or part[axis].nunique() < 3:
                continue
            roof = _roof(db, name, part, cat)
            rest = part[~held]
            grid = EfficiencyGrid(
                [rest[c].to_numpy() for c in schema.grid],
                rest["latency_ms"].to_numpy(),
                roof[~held.to_numpy()],
            )
            test = part[held]
            y, _, _ = grid.query([test[c].to_numpy() for c in schema.grid])
            pred = np.exp(y) * roof[held.to_numpy()]
            errs.append(np.abs(pred / test["latency_ms"].to_numpy() - 1.0))
        out[axis] = np.concatenate(errs) if errs else np.array([])
    return out


FALLBACK_TABLES = {
    "gemm": "gemm",
    "context_attention": "context_attention",
    "generation_attention": "generation_attention",
    "moe": "moe",
    "mla_context": "mla_context",
    "mla_generation": "mla_generation",
    "mla_bmm": "mla_bmm",
    "nccl_all_reduce": "all_reduce",
    "nccl_all_gather": "all_gather",
    "nccl_reduce_scatter": "reduce_scatter",
    "nccl_all_to_all": "all_to_all",
}


def _all_rows(db, name: str):
    """(roofline, measured) over every row of a table whose dtype the GPU can price."""
    roofs, lats = [], []
    for cat, part in _slices(db, name):
        try:
            roofs.append(_roof(db, name, part, cat, pure=True))
        except ValueError:  # e.g. fp8 rows on a GPU without fp8 tensor cores
            continue
        lats.append(part["latency_ms"].to_numpy())
    return np.concatenate(roofs), np.concatenate(lats)


def fit_fallback(fit_system: str, check_systems: tuple[str, ...], backend: str) -> list[str]:
    """Fit latency = launch + roofline / efficiency per table on one system; check on others."""
    from scipy.optimize import least_squares

    from perfdb.roofline import DEFAULT_EFFICIENCY, DEFAULT_LAUNCH_MS

    fit_db = load_system(fit_system, backend)
    lines = [
        f"Fallback (no table) model `launch + roofline / efficiency`, robust fit (soft-L1 on log "
        f"latency) on every row of {fit_system}/{backend}; error = |model/measured - 1| on the "
        f"fitting system and on held-out systems, with the constants shipped in "
        f"`perfdb/roofline.py`:",
        "",
        "| table | fitted launch (us) | fitted efficiency | shipped launch (us) / efficiency | "
        + " | ".join(f"{s} median / p90" for s in (fit_system, *check_systems))
        + " |",
        "|---|---|---|---|" + "---|" * (1 + len(check_systems)),
    ]
    for name, op_type in FALLBACK_TABLES.items():
        if name not in fit_db.tables:
            continue
        r, lat = _all_rows(fit_db, name)

        def resid(p, r=r, lat=lat):
            return np.log(np.exp(p[0]) + r / np.exp(p[1])) - np.log(lat)

        res = least_squares(resid, x0=[np.log(0.005), np.log(0.3)], loss="soft_l1", f_scale=0.1)
        launch, eff = np.exp(res.x)
        shipped_a, shipped_e = DEFAULT_LAUNCH_MS[op_type], DEFAULT_EFFICIENCY[op_type]
        cells = []
        for system in (fit_system, *check_systems):
            db = load_system(system, backend)
            if name not in db.tables:
                cells.append("—")
                continue
            r2, l2 = _all_rows(db, name)
            err = np.abs((shipped_a + r2 / shipped_e) / l2 - 1.0)
            cells.append(f"{np.median(err):.1%} / {np.quantile(err, 0.9):.1%}")
        lines.append(
            f"| {name} | {launch * 1e3:.1f} | {eff:.3f} | {shipped_a * 1e3:.1f} / {shipped_e:.3f} | "
            + " | ".join(cells)
            + " |"
        )
        print(lines[-1], flush=True)
    return lines


def plot_cdf(
    errors: dict[str, np.ndarray], ablation: dict[str, np.ndarray], path: Path, title: str
):
    """Error CDFs of the LOO predictions (ours solid, ablation dashed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for i, (name, errs) in enumerate(errors.items()):
        color = f"C{i}"
        for data, style, label in ((errs, "-", name), (ablation[name], "--", f"{name} (ablation)")):
            x = np.sort(data) * 100
            ax.plot(x, np.arange(1, len(x) + 1) / len(x), style, color=color, label=label)
    ax.axvline(5, color="grey", lw=0.5)
    ax.axvline(15, color="grey", lw=0.5)
    ax.set_xscale("log")
    ax.set_xlabel("leave-one-out |error| (%)")
    ax.set_ylabel("fraction of points")
    ax.set_title(title)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def structural_transfer(db, name: str, rng: np.random.Generator, max_slices: int = 60):
    """Errors when a whole structural slice (e.g. one KV-head count) is unmeasured.

    For a seeded sample of slices, every point of the slice is predicted from the nearest
    *other* slice with the same categorical values (the product's rule for an unmeasured
    structure): its efficiency grid, queried at the point, times the point's own reference.
    """
    schema = SCHEMAS[name]
    if not schema.structural:
        return np.array([])
    frame = db.table(name)
    errs = []
    for cat_key, part in frame.groupby(list(schema.categorical), sort=True):
        cat_key = cat_key if isinstance(cat_key, tuple) else (cat_key,)
        cat = {c: str(v) for c, v in zip(schema.categorical, cat_key, strict=True)}
        groups = part.groupby(list(schema.structural), sort=True).indices
        keys = np.array(list(groups.keys()), dtype=np.float64).reshape(len(groups), -1)
        if len(keys) < 2:
            continue
        order = rng.permutation(len(keys))[: max(1, max_slices // 8)]
        for i in order:
            dist = np.abs(np.log2(1 + keys) - np.log2(1 + keys[i])).sum(axis=1)
            dist[i] = np.inf
            j = int(np.argmin(dist))
            held = part.iloc[list(groups.values())[i]]
            src = part.iloc[list(groups.values())[j]]
            grid = EfficiencyGrid(
                [src[c].to_numpy() for c in schema.grid],
                src["latency_ms"].to_numpy(),
                _roof(db, name, src, cat),
            )
            y, _, _ = grid.query([held[c].to_numpy() for c in schema.grid])
            pred = np.exp(y) * _roof(db, name, held, cat)
            errs.append(np.abs(pred / held["latency_ms"].to_numpy() - 1.0))
    return np.concatenate(errs) if errs else np.array([])


def bootstrap_ci(errors: np.ndarray, q: float, rng: np.random.Generator, n_boot: int = 2000):
    """95% percentile-bootstrap interval of the q-quantile."""
    draws = rng.integers(0, len(errors), size=(n_boot, len(errors)))
    stats = np.quantile(errors[draws], q, axis=1)
    return np.quantile(stats, [0.025, 0.975])


def write_section(subheading: str, body: str) -> None:
    """Replace (or add) ``### subheading`` inside the perfdb section of RESULTS.md."""
    text = RESULTS.read_text()
    after = text.index(HEADING) + len(HEADING)
    nxt = text.find("\n## ", after)
    end = nxt if nxt >= 0 else len(text)
    section = text[after:end]
    block = f"\n### {subheading}\n\n{body.strip()}\n"
    pattern = re.compile(rf"\n### {re.escape(subheading)}\n.*?(?=\n### |\Z)", re.S)
    if pattern.search(section):
        section = pattern.sub(lambda _: block, section)
    else:
        section = section.rstrip("\n") + "\n" + block
    RESULTS.write_text(text[:after] + "\n" + section.strip("\n").join(["\n", "\n"]) + text[end:])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--system", default="h100_sxm")
    ap.add_argument("--backend", default="vllm")
    ap.add_argument("--samples", type=int, default=1500, help="LOO points per table")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--write-results", action="store_true")
    ap.add_argument(
        "--fit-fallback",
        action="store_true",
        help="fit the no-table fallback constants on --system and check them on h200/b200",
    )
    args = ap.parse_args(argv)
    if args.fit_fallback:
        checks = tuple(s for s in ("h200_sxm", "b200_sxm") if s != args.system)
        lines = [
            f"Command: `python3 benchmarks/perfdb_accuracy.py --system {args.system} --backend "
            f"{args.backend} --fit-fallback --write-results`",
            f"Machine: {machine()}.",
            "",
            *fit_fallback(args.system, checks, args.backend),
        ]
        if args.write_results:
            write_section("No-table fallback (roofline with fitted efficiency)", "\n".join(lines))
        return 0
    rng = np.random.default_rng(args.seed)
    db = load_system(args.system, args.backend)
    t0 = time.perf_counter()
    lines = [
        f"Command: `python3 benchmarks/perfdb_accuracy.py --system {args.system} --backend "
        f"{args.backend} --samples {args.samples} --seed {args.seed} --write-results`",
        f"Machine: {machine()}. Data: bundled {db.spec.name} / {db.backend} {db.version}.",
        "",
        "Leave-one-out on interior measured points (error = |pred/measured - 1|; "
        "95% bootstrap CI in brackets). Ablation: same grid on log latency (no roofline normalisation).",
        "",
        "| table | interior pts | sampled | median | p90 | ablation median | ablation p90 | AIConfigurator ref (median / p90) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    summary = {}
    all_errors, all_ablation = {}, {}
    for name in (*TABLES, *(t for t in EXTRA_TABLES if t in db.tables)):
        ours, base, n_cand = loo(db, name, args.samples, rng)
        if not len(ours):
            continue
        all_errors[name], all_ablation[name] = ours, base
        med, p90 = np.median(ours), np.quantile(ours, 0.9)
        ci_m = bootstrap_ci(ours, 0.5, rng)
        ci_9 = bootstrap_ci(ours, 0.9, rng)
        ref = REFERENCE.get(name)
        ref_s = f"{ref[0]}% / {ref[1]}%" if ref else "—"
        lines.append(
            f"| {name} | {n_cand} | {len(ours)} | {med:.1%} [{ci_m[0]:.1%}, {ci_m[1]:.1%}] | "
            f"{p90:.1%} [{ci_9[0]:.1%}, {ci_9[1]:.1%}] | {np.median(base):.1%} | "
            f"{np.quantile(base, 0.9):.1%} | {ref_s} |"
        )
        if name in TABLES:
            summary[name] = (med, p90)
        print(lines[-1], flush=True)
    lines += [
        "",
        "Extrapolation (all points at the largest value of one axis removed, predicted by "
        "holding the boundary efficiency against the roofline):",
        "",
        "| table | held-out axis | points | median | p90 |",
        "|---|---|---|---|---|",
    ]
    for name in TABLES:
        for axis, errs in extrapolation(db, name).items():
            if len(errs):
                lines.append(
                    f"| {name} | {axis} | {len(errs)} | {np.median(errs):.1%} | {np.quantile(errs, 0.9):.1%} |"
                )
                print(lines[-1], flush=True)
    lines += [
        "",
        "Unmeasured structure (a whole slice -- one head_dim / KV-head count / window / MoE "
        "shape -- removed and predicted from the nearest other slice, as the product does; "
        "priced `roofline`):",
        "",
        "| table | points | median | p90 |",
        "|---|---|---|---|",
    ]
    for name in ("context_attention", "generation_attention", "moe"):
        if name not in db.tables:
            continue
        errs = structural_transfer(db, name, rng)
        if len(errs):
            lines.append(
                f"| {name} | {len(errs)} | {np.median(errs):.1%} | {np.quantile(errs, 0.9):.1%} |"
            )
            print(lines[-1], flush=True)
    verdict = all(m <= 0.05 and p <= 0.15 for m, p in summary.values())
    lines += [
        "",
        f"Target (median <= 5%, p90 <= 15% for GEMM and attention): {'met' if verdict else 'NOT met'}. "
        f"Wall time {time.perf_counter() - t0:.0f} s.",
    ]
    png = RESULTS.parent / f"perfdb_accuracy_{args.system}_{args.backend}.png"
    plot_cdf(all_errors, all_ablation, png, f"perfdb LOO error, {args.system} / {args.backend}")
    lines.append(f"Error CDFs: `benchmarks/{png.name}`.")
    body = "\n".join(lines)
    print(body)
    if args.write_results:
        write_section(f"Accuracy: {args.system} / {args.backend}", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
