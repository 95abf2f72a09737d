"""Interpolation of measured efficiencies on one (possibly ragged) grid of shapes.

A :class:`EfficiencyGrid` holds the measurements of one table slice (fixed dtype and other
categorical fields) over ``d`` numeric axes. It stores ``y = log(latency / roofline)`` -- the log
of the inverse roofline efficiency -- on the full tensor-product grid of the axis values, in
``log2`` axis coordinates. Why that space: a kernel's efficiency changes slowly and smoothly with
log-size, while its latency spans six orders of magnitude and jumps with quadratic terms
(attention) that the roofline already carries; interpolating efficiency is therefore close to
linear, and holding it constant outside the grid *is* the "boundary efficiency against the
roofline" rule.

The measured grids are ragged (attention sweeps cap ``batch * isl``; GEMM skips a few shapes), so
missing cells are filled once, at build time:

1. interior holes: for each axis, the 1-D linear interpolation between the nearest known cells on
   both sides along that axis; the estimates of all axes that bracket the hole are averaged with
   inverse-variance weights (status ``INTERIOR``); repeated until no hole is bracketed on any
   axis. The variance of an axis's estimate is measured on the grid itself, before any fill: every
   measured cell with measured neighbours on both sides along the axis is predicted from them by
   the same 1-D rule, and the squared errors are averaged over the ``3**d`` index box around the
   hole, shrunk toward the axis-wide mean with one pseudo-count. Efficiency is smooth along some
   axes and jagged along others (wave quantization, kernel switches), and which one varies across
   a table; weighting the axes by how well linear interpolation works *there* cut the
   leave-one-out median error on every multi-axis table (h100_sxm: context attention 2.5% ->
   1.9%, GEMM 3.0% -> 2.1%, decode attention 1.9% -> 1.1%; ``benchmarks/RESULTS.md``).
   Measured values never change, and a query between measured cells still interpolates them
   multilinearly;
2. exterior cells: the mean of the nearest known cells along the axes that reach them (holding
   the boundary efficiency; status ``EXTERIOR``).

A query is multilinear in ``y`` over the ``2**d`` corners of its cell. Its source is
``measured`` for an exact hit on a measured cell, ``interpolated`` when it lies inside the axis
ranges and every corner it uses is measured or an interior fill, and ``roofline`` otherwise
(beyond an axis, or leaning on exterior fills).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

MEASURED, INTERIOR, EXTERIOR = 0, 1, 2

_WEIGHT_RADIUS = 1  # index half-width of the box over which an axis's fill error is averaged
_WEIGHT_PRIOR = 1.0  # pseudo-count of the axis-wide mean squared error in that average
_VARIANCE_FLOOR = 1e-8  # squared log error (0.01%) below which axes count as equally exact


class EfficiencyGrid:
    """Measured ``log(latency/roofline)`` on a tensor grid, with vectorized queries.

    Parameters
    ----------
    axes : sequence of numpy.ndarray
        Per axis, the raw (positive) axis value of each measurement, each of length ``n``.
    latency_ms : numpy.ndarray
        Measured latency of each of the ``n`` rows.
    roofline_ms : numpy.ndarray
        Roofline time of each row (same shapes).

    Raises
    ------
    ValueError
        On empty input, non-positive values, or NaN latencies.
    """

    def __init__(
        self,
        axes: Sequence[np.ndarray],
        latency_ms: np.ndarray,
        roofline_ms: np.ndarray,
    ) -> None:
        latency_ms = np.asarray(latency_ms, dtype=np.float64)
        roofline_ms = np.asarray(roofline_ms, dtype=np.float64)
        if latency_ms.size == 0:
            raise ValueError("EfficiencyGrid needs at least one measurement")
        if not (np.all(np.isfinite(latency_ms)) and np.all(latency_ms > 0)):
            raise ValueError("EfficiencyGrid: latencies must be finite and positive")
        if not np.all(roofline_ms > 0):
            raise ValueError("EfficiencyGrid: roofline times must be positive")
        self.values = []  # raw axis values per axis
        self.coords = []  # log2 axis values per axis
        index = []
        for raw in axes:
            raw = np.asarray(raw, dtype=np.float64)
            if raw.shape != latency_ms.shape or not np.all(raw > 0):
                raise ValueError("EfficiencyGrid: axis values must be positive, one per latency")
            values, inverse = np.unique(raw, return_inverse=True)
            self.values.append(values)
            self.coords.append(np.log2(values))
            index.append(inverse)
        self.shape = tuple(len(v) for v in self.values)
        self.strides = np.array(
            [int(np.prod(self.shape[i + 1 :])) for i in range(len(self.shape))], dtype=np.int64
        )
        flat = np.zeros(latency_ms.shape, dtype=np.int64)
        for i, inv in enumerate(index):
            flat += inv * self.strides[i]
        size = int(np.prod(self.shape))
        y = np.full(size, np.nan)
        lat = np.full(size, np.nan)
        # duplicates (should not occur after import) resolve to their mean
        counts = np.bincount(flat, minlength=size)
        y_sum = np.bincount(flat, weights=np.log(latency_ms / roofline_ms), minlength=size)
        lat_sum = np.bincount(flat, weights=latency_ms, minlength=size)
        have = counts > 0
        y[have] = y_sum[have] / counts[have]
        lat[have] = lat_sum[have] / counts[have]
        self.latency_ms = lat
        self.status = np.where(have, MEASURED, EXTERIOR).astype(np.int8)
        self.y = self._fill(y.reshape(self.shape)).ravel()
        self.n_measured = int(have.sum())

    # ------------------------------------------------------------------ build
    def _fill(self, y: np.ndarray) -> np.ndarray:
        status = self.status.reshape(self.shape)
        if not np.isnan(y).any():
            return y
        weights = self._axis_weights(y)
        while True:  # interior holes, bracketed along at least one axis
            missing = np.isnan(y)
            if not missing.any():
                return y
            est_sum = np.zeros_like(y)
            est_n = np.zeros_like(y)
            for ax in range(y.ndim):
                if self.shape[ax] < 3:
                    continue
                est = _bracketed_along(y, self.coords[ax], ax)
                ok = missing & np.isfinite(est)
                est_sum[ok] += weights[ax][ok] * est[ok]
                est_n[ok] += weights[ax][ok]
            new = missing & (est_n > 0)
            if not new.any():
                break
            y[new] = est_sum[new] / est_n[new]
            status[new] = INTERIOR
        while True:  # exterior: hold the nearest known efficiency along each reaching axis
            missing = np.isnan(y)
            if not missing.any():
                return y
            est_sum = np.zeros_like(y)
            est_n = np.zeros_like(y)
            for ax in range(y.ndim):
                est = _nearest_along(y, ax)
                ok = missing & np.isfinite(est)
                est_sum[ok] += est[ok]
                est_n[ok] += 1
            new = missing & (est_n > 0)
            if not new.any():  # pragma: no cover - impossible with >= 1 measurement
                raise ValueError("EfficiencyGrid: could not fill the grid")
            y[new] = est_sum[new] / est_n[new]
            status[new] = EXTERIOR

    def _axis_weights(self, y: np.ndarray) -> list[np.ndarray]:
        """Per axis, the inverse local variance of its 1-D linear estimate (see module doc)."""
        local: list[np.ndarray | None] = []
        overall = []
        for ax in range(y.ndim):
            if self.shape[ax] < 3:
                local.append(None)
                continue
            err = _linear_check(y, self.coords[ax], ax)
            checked = np.isfinite(err)
            if not checked.any():
                local.append(None)
                continue
            sq = np.where(checked, err * err, 0.0)
            mean = float(sq[checked].mean())
            overall.append(mean)
            box_sq = _box_sum(sq, _WEIGHT_RADIUS)
            box_n = _box_sum(checked.astype(np.float64), _WEIGHT_RADIUS)
            local.append((box_sq + _WEIGHT_PRIOR * mean) / (box_n + _WEIGHT_PRIOR))
        default = float(np.mean(overall)) if overall else 0.0
        return [
            1.0 / ((np.full(y.shape, default) if v is None else v) + _VARIANCE_FLOOR) for v in local
        ]

    # ------------------------------------------------------------------ query
    def query(self, points: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Interpolate at ``n`` points.

        Parameters
        ----------
        points : sequence of numpy.ndarray
            Per axis, the raw axis values of the queries (positive).

        Returns
        -------
        y : numpy.ndarray
            Interpolated ``log(latency/roofline)``.
        source : numpy.ndarray of int8
            0 measured (exact hit), 1 interpolated, 2 extrapolated (roofline-held).
        exact_latency_ms : numpy.ndarray
            The measured latency where ``source == 0``, NaN elsewhere.
        """
        n = len(np.asarray(points[0]))
        base = np.zeros(n, dtype=np.int64)
        lo_idx, fracs = [], []
        outside = np.zeros(n, dtype=bool)
        exact = np.ones(n, dtype=bool)
        for ax, raw in enumerate(points):
            c = self.coords[ax]
            t = np.log2(np.asarray(raw, dtype=np.float64))
            if len(c) == 1:
                idx = np.zeros(n, dtype=np.int64)
                frac = np.zeros(n)
                hit = np.isclose(t, c[0], rtol=0, atol=1e-9)
                outside |= ~hit
                exact &= hit
            else:
                idx = np.clip(np.searchsorted(c, t, side="right") - 1, 0, len(c) - 2)
                frac = (t - c[idx]) / (c[idx + 1] - c[idx])
                outside |= (frac < -1e-9) | (frac > 1 + 1e-9)
                frac = np.clip(frac, 0.0, 1.0)
                at_lo = frac <= 1e-9
                at_hi = frac >= 1 - 1e-9
                frac = np.where(at_lo, 0.0, np.where(at_hi, 1.0, frac))
                exact &= at_lo | at_hi
            lo_idx.append(idx)
            fracs.append(frac)
            base += idx * self.strides[ax]
        y = np.zeros(n)
        worst = np.zeros(n, dtype=np.int8)
        d = len(self.shape)
        for corner in range(1 << d):
            w = np.ones(n)
            offset = np.zeros(n, dtype=np.int64)
            for ax in range(d):
                if (corner >> ax) & 1:
                    if self.shape[ax] == 1:
                        w = w * 0.0
                        continue
                    w = w * fracs[ax]
                    offset += self.strides[ax]
                else:
                    w = w * (1.0 - fracs[ax])
            if not w.any():
                continue
            flat = base + offset
            y += w * self.y[flat]
            used = w > 0
            worst = np.where(used, np.maximum(worst, self.status[flat]), worst)
        source = np.where(outside | (worst == EXTERIOR), 2, np.where(exact, 0, 1)).astype(np.int8)
        flat_exact = base + sum(
            np.where(f >= 1.0, self.strides[ax], 0) for ax, f in enumerate(fracs)
        )
        exact_lat = np.where(source == 0, self.latency_ms[flat_exact], np.nan)
        measured_hit = (source == 0) & np.isfinite(exact_lat)
        # an exact hit on a filled (not measured) cell is an interpolation, not a measurement
        source = np.where((source == 0) & ~measured_hit, 1, source).astype(np.int8)
        source = np.where((source == 1) & (worst == EXTERIOR), 2, source).astype(np.int8)
        return y, source, exact_lat


def _bracketed_along(y: np.ndarray, coords: np.ndarray, axis: int) -> np.ndarray:
    """Linear interpolation along ``axis`` between the nearest finite neighbours on each side."""
    moved = np.moveaxis(y, axis, -1)
    lines = moved.reshape(-1, moved.shape[-1])
    n = lines.shape[1]
    known = np.isfinite(lines)
    pos = np.arange(n)
    left = np.maximum.accumulate(np.where(known, pos, -1), axis=1)
    right = np.flip(np.minimum.accumulate(np.flip(np.where(known, pos, n), axis=1), axis=1), axis=1)
    ok = (left >= 0) & (right < n) & ~known
    li = np.clip(left, 0, n - 1)
    ri = np.clip(right, 0, n - 1)
    rows = np.arange(lines.shape[0])[:, None]
    yl, yr = lines[rows, li], lines[rows, ri]
    cl, cr = coords[li], coords[ri]
    with np.errstate(invalid="ignore", divide="ignore"):
        frac = (coords[None, :] - cl) / (cr - cl)
    est = np.where(ok, yl + frac * (yr - yl), np.nan)
    return np.moveaxis(est.reshape(moved.shape), -1, axis)


def _linear_check(y: np.ndarray, coords: np.ndarray, axis: int) -> np.ndarray:
    """Error of predicting each finite cell from its nearest finite neighbours along ``axis``.

    The 1-D linear rule of :func:`_bracketed_along` applied to the known cells themselves
    (prediction minus value); NaN where a cell is unknown or lacks a neighbour on either side.
    """
    moved = np.moveaxis(y, axis, -1)
    lines = moved.reshape(-1, moved.shape[-1])
    n = lines.shape[1]
    known = np.isfinite(lines)
    pos = np.arange(n)
    left = np.maximum.accumulate(np.where(known, pos, -1), axis=1)
    right = np.flip(np.minimum.accumulate(np.flip(np.where(known, pos, n), axis=1), axis=1), axis=1)
    prev = np.concatenate([np.full((len(lines), 1), -1), left[:, :-1]], axis=1)
    nxt = np.concatenate([right[:, 1:], np.full((len(lines), 1), n)], axis=1)
    ok = known & (prev >= 0) & (nxt < n)
    pi = np.clip(prev, 0, n - 1)
    ni = np.clip(nxt, 0, n - 1)
    rows = np.arange(lines.shape[0])[:, None]
    yl, yr = lines[rows, pi], lines[rows, ni]
    with np.errstate(invalid="ignore", divide="ignore"):
        frac = (coords[None, :] - coords[pi]) / (coords[ni] - coords[pi])
        err = np.where(ok, yl + frac * (yr - yl) - lines, np.nan)
    return np.moveaxis(err.reshape(moved.shape), -1, axis)


def _box_sum(a: np.ndarray, radius: int) -> np.ndarray:
    """Sum of ``a`` over the ``(2 * radius + 1) ** ndim`` index box around each cell (zero-padded)."""
    out = a
    for ax in range(a.ndim):
        pad = [(0, 0)] * a.ndim
        pad[ax] = (radius + 1, radius)
        csum = np.cumsum(np.pad(out, pad), axis=ax)
        n = out.shape[ax]
        out = np.take(csum, np.arange(2 * radius + 1, 2 * radius + 1 + n), axis=ax) - np.take(
            csum, np.arange(n), axis=ax
        )
    return out


def _nearest_along(y: np.ndarray, axis: int) -> np.ndarray:
    """Value of the nearest finite cell along ``axis`` (by index), NaN if the line is empty."""
    moved = np.moveaxis(y, axis, -1)
    lines = moved.reshape(-1, moved.shape[-1])
    n = lines.shape[1]
    known = np.isfinite(lines)
    pos = np.arange(n)
    left = np.maximum.accumulate(np.where(known, pos, -1), axis=1)
    right = np.flip(np.minimum.accumulate(np.flip(np.where(known, pos, n), axis=1), axis=1), axis=1)
    dl = np.where(left >= 0, pos - left, n + 1)
    dr = np.where(right < n, right - pos, n + 1)
    pick = np.where(dl <= dr, left, right)
    valid = np.minimum(dl, dr) <= n
    rows = np.arange(lines.shape[0])[:, None]
    est = np.where(valid, lines[rows, np.clip(pick, 0, n - 1)], np.nan)
    est = np.where(known, np.nan, est)
    return np.moveaxis(est.reshape(moved.shape), -1, axis)
