"""Request traces: the Azure LLM inference CSV, Mooncake JSONL and Vidur-format CSV.

A :class:`Trace` is a column store of requests (arrival time, prompt and output lengths, and,
for Mooncake traces, the prefix-block hash ids that drive prefix caching). Loaders never drop a
row silently: every row they cannot use is counted, with its line number and reason, in the
trace's :class:`LoadReport`.

The project ships the public traces it replays by default in ``simulator/data`` (gzip-compressed,
unchanged; provenance in ``simulator/data/SOURCES.md``); :func:`load_trace` accepts those names
(:data:`BUNDLED_TRACES`) or any path.

Examples
--------
>>> trace = load_trace("azure-code")
>>> len(trace), trace.report.num_bad
(8819, 0)
>>> round(trace.scale_rate(2.0).duration_ms / trace.duration_ms, 3)
0.5
"""

from __future__ import annotations

import gzip
import io
import json
import math
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd

DATA_DIR = Path(__file__).resolve().parent / "data"

#: Traces bundled with the package: name -> (file in ``simulator/data``, format).
BUNDLED_TRACES: dict[str, tuple[str, str]] = {
    "azure-conv": ("AzureLLMInferenceTrace_conv.csv.gz", "azure"),
    "azure-code": ("AzureLLMInferenceTrace_code.csv.gz", "azure"),
    "mooncake-conv": ("mooncake_conversation_trace.jsonl.gz", "mooncake"),
    "mooncake-synthetic": ("mooncake_synthetic_trace.jsonl.gz", "mooncake"),
    "vidur-conv": ("vidur_splitwise_conv.csv.gz", "vidur"),
    "vidur-code": ("vidur_splitwise_code.csv.gz", "vidur"),
}

#: Mooncake's hash ids each cover this many prompt tokens.
MOONCAKE_HASH_BLOCK_TOKENS = 512

FORMATS = ("azure", "mooncake", "vidur")


@dataclass(frozen=True)
class LoadReport:
    """What a loader read: rows seen, rows kept, and every rejected row with its reason.

    Parameters
    ----------
    source : str
        File or bundled name.
    rows_read : int
        Data rows in the file (header excluded).
    bad_rows : tuple of (int, str)
        ``(line number, reason)`` for each row not loaded (1-based line numbers of the file).
    reordered : int
        Rows whose timestamp was earlier than the previous row's (kept; the trace is sorted
        stably by arrival).
    """

    source: str
    rows_read: int
    bad_rows: tuple[tuple[int, str], ...] = ()
    reordered: int = 0

    @property
    def num_bad(self) -> int:
        return len(self.bad_rows)

    @property
    def rows_loaded(self) -> int:
        return self.rows_read - self.num_bad

    def summary(self, max_examples: int = 5) -> str:
        """One paragraph for a log or the CLI."""
        text = f"{self.source}: {self.rows_loaded} of {self.rows_read} rows loaded"
        if self.bad_rows:
            shown = "; ".join(f"line {n}: {why}" for n, why in self.bad_rows[:max_examples])
            more = (
                f" (and {self.num_bad - max_examples} more)" if self.num_bad > max_examples else ""
            )
            text += f", {self.num_bad} bad rows skipped: {shown}{more}"
        if self.reordered:
            text += f"; {self.reordered} rows out of time order were sorted"
        return text


def _as_int_array(values: np.ndarray | list, name: str) -> np.ndarray:
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise ValueError(f"Trace.{name} must be one-dimensional, got shape {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        as_float = arr.astype(np.float64)
        if not np.all(np.isfinite(as_float)) or np.any(as_float != np.round(as_float)):
            raise ValueError(f"Trace.{name} must hold integers")
    return arr.astype(np.int64)


@dataclass(frozen=True, eq=False)
class Trace:
    """Requests to replay, sorted by arrival.

    Parameters
    ----------
    arrival_ms : array of float
        Arrival times in milliseconds from the start of the trace (non-decreasing, >= 0).
    prompt_tokens, output_tokens : array of int
        Prompt (input) and output lengths in tokens (>= 1).
    priority : array of int or None
        Scheduling priority per request (lower runs first under the priority policy).
    hash_ids : tuple of tuple of int, or None
        Per request, the ids of its prompt's prefix blocks of ``hash_block_tokens`` tokens
        (equal ids mean an equal prefix up to that block).
    hash_block_tokens : int
        Tokens covered by one hash id.
    name : str
        Where it came from.
    report : LoadReport or None
        The loader's account of skipped rows.
    """

    arrival_ms: np.ndarray
    prompt_tokens: np.ndarray
    output_tokens: np.ndarray
    priority: np.ndarray | None = None
    hash_ids: tuple[tuple[int, ...], ...] | None = None
    hash_block_tokens: int = MOONCAKE_HASH_BLOCK_TOKENS
    name: str = "trace"
    report: LoadReport | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        arrival = np.asarray(self.arrival_ms, dtype=np.float64)
        if arrival.ndim != 1:
            raise ValueError(f"Trace.arrival_ms must be one-dimensional, got shape {arrival.shape}")
        object.__setattr__(self, "arrival_ms", arrival)
        prompt = _as_int_array(self.prompt_tokens, "prompt_tokens")
        output = _as_int_array(self.output_tokens, "output_tokens")
        object.__setattr__(self, "prompt_tokens", prompt)
        object.__setattr__(self, "output_tokens", output)
        n = len(arrival)
        if len(prompt) != n or len(output) != n:
            raise ValueError(
                "Trace columns must have equal lengths, got arrival_ms "
                f"{n}, prompt_tokens {len(prompt)}, output_tokens {len(output)}"
            )
        if n and (not np.all(np.isfinite(arrival)) or arrival.min() < 0):
            raise ValueError("Trace.arrival_ms must be finite and >= 0")
        if n > 1 and np.any(np.diff(arrival) < 0):
            raise ValueError("Trace.arrival_ms must be non-decreasing (sort the requests first)")
        if n and (prompt.min() < 1 or output.min() < 1):
            raise ValueError("Trace prompt_tokens and output_tokens must all be >= 1")
        if self.priority is not None:
            priority = _as_int_array(self.priority, "priority")
            if len(priority) != n:
                raise ValueError(f"Trace.priority has {len(priority)} entries for {n} requests")
            object.__setattr__(self, "priority", priority)
        if self.hash_ids is not None:
            if len(self.hash_ids) != n:
                raise ValueError(
                    f"Trace.hash_ids has {len(self.hash_ids)} entries for {n} requests"
                )
            object.__setattr__(
                self, "hash_ids", tuple(tuple(int(h) for h in hs) for hs in self.hash_ids)
            )
        if not (isinstance(self.hash_block_tokens, int) and self.hash_block_tokens >= 1):
            raise ValueError(
                f"Trace.hash_block_tokens must be a positive int, got {self.hash_block_tokens!r}"
            )

    def __len__(self) -> int:
        return len(self.arrival_ms)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Trace):
            return NotImplemented
        arrays = ("arrival_ms", "prompt_tokens", "output_tokens", "priority")
        return (
            all(np.array_equal(getattr(self, a), getattr(other, a)) for a in arrays)
            and self.hash_ids == other.hash_ids
            and self.hash_block_tokens == other.hash_block_tokens
        )

    __hash__ = None  # type: ignore[assignment]  # arrays: equality by value, not hashable

    @property
    def duration_ms(self) -> float:
        """Time from the first to the last arrival."""
        return float(self.arrival_ms[-1] - self.arrival_ms[0]) if len(self) else 0.0

    @property
    def mean_rate_rps(self) -> float:
        """Requests per second over the trace's span."""
        return (len(self) - 1) / (self.duration_ms / 1000.0) if self.duration_ms > 0 else math.nan

    def _take(self, index: np.ndarray | slice, name: str | None = None) -> Trace:
        idx = np.arange(len(self))[index]
        return replace(
            self,
            arrival_ms=self.arrival_ms[idx],
            prompt_tokens=self.prompt_tokens[idx],
            output_tokens=self.output_tokens[idx],
            priority=None if self.priority is None else self.priority[idx],
            hash_ids=None if self.hash_ids is None else tuple(self.hash_ids[i] for i in idx),
            name=name or self.name,
        )

    def head(self, n: int) -> Trace:
        """The first ``n`` requests."""
        if n < 0:
            raise ValueError(f"head(n) needs n >= 0, got {n}")
        return self._take(slice(0, n))

    def between(self, start_ms: float, end_ms: float) -> Trace:
        """Requests arriving in ``[start_ms, end_ms)``, re-timed to start at zero."""
        if end_ms <= start_ms:
            raise ValueError(f"between() needs start_ms < end_ms, got {start_ms}, {end_ms}")
        mask = (self.arrival_ms >= start_ms) & (self.arrival_ms < end_ms)
        out = self._take(np.flatnonzero(mask))
        return replace(out, arrival_ms=out.arrival_ms - start_ms)

    def rebase(self) -> Trace:
        """The same trace with its first arrival at time zero."""
        if not len(self):
            return self
        return replace(self, arrival_ms=self.arrival_ms - self.arrival_ms[0])

    def scale_time(self, factor: float) -> Trace:
        """Stretch inter-arrival times by ``factor`` (2 = half the request rate)."""
        if not (math.isfinite(factor) and factor > 0):
            raise ValueError(f"time scale factor must be finite and > 0, got {factor!r}")
        start = self.arrival_ms[0] if len(self) else 0.0
        return replace(self, arrival_ms=start + (self.arrival_ms - start) * factor)

    def scale_rate(self, factor: float) -> Trace:
        """Multiply the request rate by ``factor`` (inter-arrival times divided by it)."""
        if not (math.isfinite(factor) and factor > 0):
            raise ValueError(f"rate scale factor must be finite and > 0, got {factor!r}")
        return self.scale_time(1.0 / factor)

    def tile(self, n_requests: int) -> Trace:
        """Repeat the trace back to back until it holds ``n_requests`` requests (for scaling
        studies); each copy starts one mean inter-arrival gap after the previous one ends."""
        if n_requests < 1 or not len(self):
            raise ValueError(
                f"tile() needs n_requests >= 1 and a non-empty trace, got {n_requests}"
            )
        reps = -(-n_requests // len(self))
        gap = self.duration_ms / max(len(self) - 1, 1)
        period = self.duration_ms + gap
        base = self.rebase()
        arrival = np.concatenate([base.arrival_ms + r * period for r in range(reps)])[:n_requests]
        idx = np.tile(np.arange(len(self)), reps)[:n_requests]
        hash_ids = None
        if self.hash_ids is not None:
            # later copies must not share prefix blocks with earlier ones by accident
            offset = 1 + max((max(h) for h in self.hash_ids if h), default=0)
            hash_ids = tuple(
                tuple(h + (i // len(self)) * offset for h in self.hash_ids[j])
                for i, j in enumerate(idx)
            )
        return replace(
            self,
            arrival_ms=arrival,
            prompt_tokens=self.prompt_tokens[idx],
            output_tokens=self.output_tokens[idx],
            priority=None if self.priority is None else self.priority[idx],
            hash_ids=hash_ids,
            name=f"{self.name}x{reps}",
        )

    def to_frame(self) -> pd.DataFrame:
        """Columns ``arrival_ms, prompt_tokens, output_tokens`` (and ``priority``)."""
        frame = pd.DataFrame(
            {
                "arrival_ms": self.arrival_ms,
                "prompt_tokens": self.prompt_tokens,
                "output_tokens": self.output_tokens,
            }
        )
        if self.priority is not None:
            frame["priority"] = self.priority
        return frame


def shared_block_keys(
    hash_ids: tuple[int, ...], hash_block_tokens: int, prompt_tokens: int, block_size: int
) -> tuple:
    """Prefix-cache keys of a prompt's full KV blocks of ``block_size`` tokens, derived from the
    trace's hash ids (one per ``hash_block_tokens`` tokens).

    Raises
    ------
    ValueError
        If one block size does not divide the other (the ids cannot be mapped onto blocks).
    """
    if not hash_ids:
        return ()
    n_full = prompt_tokens // block_size
    if hash_block_tokens % block_size == 0:
        per = hash_block_tokens // block_size
        n = min(n_full, len(hash_ids) * per)
        return tuple([(hash_ids[j // per], j % per) for j in range(n)])
    if block_size % hash_block_tokens == 0:
        m = block_size // hash_block_tokens
        n = min(n_full, len(hash_ids) // m)
        return tuple((hash_ids[(j + 1) * m - 1], 0) for j in range(n))
    raise ValueError(
        f"KV block_size {block_size} and the trace's hash block of {hash_block_tokens} tokens "
        "must divide one another to map prefix hashes onto KV blocks"
    )


# ---------------------------------------------------------------------------------- loaders
def _open_text(path: Path) -> io.TextIOBase:
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8")
    return open(path, encoding="utf-8")


def _read_csv_text(path: Path, required: tuple[str, ...]) -> pd.DataFrame:
    with _open_text(path) as fh:
        frame = pd.read_csv(fh, dtype=str, keep_default_na=False, skipinitialspace=True)
    frame.columns = [c.strip() for c in frame.columns]
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise ValueError(f"{path}: missing column(s) {missing}; found {list(frame.columns)}")
    return frame


def _check_lengths(
    frame: pd.DataFrame, prompt_col: str, output_col: str, bad: dict[int, str]
) -> tuple[np.ndarray, np.ndarray]:
    prompt = pd.to_numeric(frame[prompt_col], errors="coerce").to_numpy(dtype=np.float64)
    output = pd.to_numeric(frame[output_col], errors="coerce").to_numpy(dtype=np.float64)
    for col, values in ((prompt_col, prompt), (output_col, output)):
        invalid = ~np.isfinite(values) | (values < 1) | (values != np.round(values))
        for i in np.flatnonzero(invalid):
            bad.setdefault(int(i), f"{col}={frame[col].iloc[i]!r} is not an integer >= 1")
    return prompt, output


def _finish(
    source: str,
    rows_read: int,
    arrival_ms: np.ndarray,
    prompt: np.ndarray,
    output: np.ndarray,
    bad: dict[int, str],
    header_lines: int,
    hash_ids: list | None = None,
    name: str = "trace",
) -> Trace:
    keep = np.ones(rows_read, dtype=bool)
    keep[list(bad)] = False
    idx = np.flatnonzero(keep)
    arrival = arrival_ms[idx]
    reordered = int(np.sum(np.diff(arrival) < 0)) if len(arrival) > 1 else 0
    order = np.argsort(arrival, kind="stable")
    idx = idx[order]
    arrival = arrival[order]
    report = LoadReport(
        source=source,
        rows_read=rows_read,
        bad_rows=tuple(sorted((i + 1 + header_lines, why) for i, why in bad.items())),
        reordered=reordered,
    )
    start = arrival[0] if len(arrival) else 0.0
    return Trace(
        arrival_ms=arrival - start,
        prompt_tokens=prompt[idx].astype(np.int64),
        output_tokens=output[idx].astype(np.int64),
        hash_ids=None if hash_ids is None else tuple(tuple(hash_ids[i]) for i in idx),
        name=name,
        report=report,
    )


def load_azure_csv(path: str | Path, name: str | None = None) -> Trace:
    """Load an Azure LLM inference trace (``TIMESTAMP, ContextTokens, GeneratedTokens``).

    Timestamps are wall-clock strings (``2023-11-16 18:17:03.9799600``); arrivals are measured
    from the first request. Rows with an unparseable time or a length that is not an integer
    >= 1 are counted in ``report.bad_rows``.
    """
    path = Path(path)
    frame = _read_csv_text(path, ("TIMESTAMP", "ContextTokens", "GeneratedTokens"))
    bad: dict[int, str] = {}
    stamps = pd.to_datetime(frame["TIMESTAMP"].str.strip(), errors="coerce", format="mixed")
    for i in np.flatnonzero(stamps.isna().to_numpy()):
        bad[int(i)] = f"TIMESTAMP={frame['TIMESTAMP'].iloc[i]!r} is not a time"
    prompt, output = _check_lengths(frame, "ContextTokens", "GeneratedTokens", bad)
    valid = stamps.notna().to_numpy()
    arrival_ms = np.zeros(len(frame))
    if valid.any():
        first = stamps[valid].min()
        arrival_ms[valid] = (stamps[valid] - first).dt.total_seconds().to_numpy() * 1000.0
    return _finish(
        str(path), len(frame), arrival_ms, prompt, output, bad, 1, name=name or path.stem
    )


def load_vidur_csv(path: str | Path, name: str | None = None) -> Trace:
    """Load a Vidur-format trace (``arrived_at`` in seconds, ``num_prefill_tokens``,
    ``num_decode_tokens``)."""
    path = Path(path)
    frame = _read_csv_text(path, ("arrived_at", "num_prefill_tokens", "num_decode_tokens"))
    bad: dict[int, str] = {}
    arrival_s = pd.to_numeric(frame["arrived_at"], errors="coerce").to_numpy(dtype=np.float64)
    for i in np.flatnonzero(~np.isfinite(arrival_s) | (arrival_s < 0)):
        bad[int(i)] = f"arrived_at={frame['arrived_at'].iloc[i]!r} is not a time >= 0"
    prompt, output = _check_lengths(frame, "num_prefill_tokens", "num_decode_tokens", bad)
    arrival_ms = np.where(np.isfinite(arrival_s), arrival_s, 0.0) * 1000.0
    return _finish(
        str(path), len(frame), arrival_ms, prompt, output, bad, 1, name=name or path.stem
    )


def load_mooncake_jsonl(path: str | Path, name: str | None = None) -> Trace:
    """Load a Mooncake trace: one JSON object per line with ``timestamp`` (ms),
    ``input_length``, ``output_length`` and ``hash_ids`` (512-token prefix blocks)."""
    path = Path(path)
    arrival: list[float] = []
    prompt: list[float] = []
    output: list[float] = []
    hashes: list[tuple[int, ...]] = []
    bad: dict[int, str] = {}
    with _open_text(path) as fh:
        for i, line in enumerate(fh):
            arrival.append(0.0)
            prompt.append(1.0)
            output.append(1.0)
            hashes.append(())
            if not line.strip():
                bad[i] = "empty line"
                continue
            try:
                row = json.loads(line)
                t = float(row["timestamp"])
                p = row["input_length"]
                o = row["output_length"]
                h = tuple(int(x) for x in row.get("hash_ids", ()))
            except (ValueError, KeyError, TypeError) as exc:
                bad[i] = f"unreadable record ({type(exc).__name__}: {exc})"
                continue
            if not (math.isfinite(t) and t >= 0):
                bad[i] = f"timestamp={t!r} is not a time >= 0"
            elif not (isinstance(p, int) and p >= 1):
                bad[i] = f"input_length={p!r} is not an integer >= 1"
            elif not (isinstance(o, int) and o >= 1):
                bad[i] = f"output_length={o!r} is not an integer >= 1"
            else:
                arrival[i], prompt[i], output[i], hashes[i] = t, float(p), float(o), h
    return _finish(
        str(path),
        len(arrival),
        np.asarray(arrival),
        np.asarray(prompt),
        np.asarray(output),
        bad,
        0,
        hash_ids=hashes,
        name=name or path.name.split(".")[0],
    )


_LOADERS = {"azure": load_azure_csv, "mooncake": load_mooncake_jsonl, "vidur": load_vidur_csv}


def detect_format(path: str | Path) -> str:
    """Guess a trace file's format from its first line."""
    path = Path(path)
    with _open_text(path) as fh:
        first = fh.readline().strip()
    if first.startswith("{"):
        return "mooncake"
    if "TIMESTAMP" in first and "ContextTokens" in first:
        return "azure"
    if "arrived_at" in first:
        return "vidur"
    raise ValueError(
        f"{path}: cannot tell the trace format from its first line {first[:80]!r}; expected an "
        "Azure CSV (TIMESTAMP,ContextTokens,GeneratedTokens), a Vidur CSV (arrived_at,...) or "
        "Mooncake JSONL"
    )


def load_trace(name_or_path: str | Path, fmt: str | None = None) -> Trace:
    """Load a bundled trace by name (:data:`BUNDLED_TRACES`) or a file of any known format.

    Raises
    ------
    ValueError
        Unknown name, missing file, or an unrecognized format.
    """
    key = str(name_or_path)
    if key in BUNDLED_TRACES:
        file_name, bundled_fmt = BUNDLED_TRACES[key]
        return _LOADERS[bundled_fmt](DATA_DIR / file_name, name=key)
    path = Path(name_or_path)
    if not path.is_file():
        raise ValueError(
            f"trace {key!r} is neither a bundled trace ({', '.join(BUNDLED_TRACES)}) nor a file"
        )
    if fmt is None:
        fmt = detect_format(path)
    if fmt not in _LOADERS:
        raise ValueError(f"unknown trace format {fmt!r}; choose from {FORMATS}")
    return _LOADERS[fmt](path)
