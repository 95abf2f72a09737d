"""Durable history of tuning rounds.

History lives in a store, not in policies (``STYLE.md`` #2, after Optuna's ``BaseStorage``): a
policy or a causal-structure learner is rebuilt from the store, so a restart is a replay. Every
round is a :class:`FrozenTrial` with a :class:`TrialState`. Two stores pass one parametrized test
suite: :class:`InMemoryStore` (benchmarks, notebooks) and :class:`SQLiteStore` (the daemon; WAL
journal, one transaction per state change, so a kill -9 at any instant leaves either the old or
the new row, never a torn one).

A trial's ``source`` says where its row came from, because the causal estimators treat them
differently: ``"experiment"`` rows were set by the tuner (the knob has no parents), ``"history"``
rows come from recorded logs (knobs may be confounded by load), ``"prior"`` rows are the
analytical model's prices.
"""

from __future__ import annotations

import json
import math
import sqlite3
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from pathlib import Path
from types import MappingProxyType
from typing import Any

__all__ = [
    "TRIAL_SOURCES",
    "FrozenTrial",
    "InMemoryStore",
    "SQLiteStore",
    "TrialState",
    "TrialStore",
]

#: Where a row came from; see the module docstring.
TRIAL_SOURCES = ("experiment", "history", "prior")

_Scalar = int | float | str | bool


class TrialState(StrEnum):
    """Life cycle of one round: RUNNING until told, then exactly one terminal state."""

    RUNNING = "running"
    COMPLETE = "complete"
    FAILED = "failed"  # the config could not be applied, or the window could not be measured

    @property
    def is_finished(self) -> bool:
        return self is not TrialState.RUNNING


def _frozen_mapping(name: str, values: Mapping[str, Any], *, numeric: bool) -> Mapping[str, Any]:
    out: dict[str, Any] = {}
    for key, value in dict(values).items():
        if not isinstance(key, str) or not key:
            raise ValueError(f"{name} keys must be non-empty strings, got {key!r}")
        if numeric:
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"{name}[{key!r}] must be a number, got {value!r}")
            if not math.isfinite(float(value)):
                raise ValueError(f"{name}[{key!r}] must be finite, got {value!r}")
            value = float(value)
        elif not isinstance(value, _Scalar):
            raise ValueError(
                f"{name}[{key!r}] must be a scalar (int, float, str, bool), got {value!r}"
            )
        out[key] = value
    return MappingProxyType(out)


@dataclass(frozen=True)
class FrozenTrial:
    """One tuning round, immutable once read from a store.

    Parameters
    ----------
    trial_id : int
        Store-assigned, increasing in creation order.
    config : mapping of str to scalar
        The knob assignment applied during the round.
    state : TrialState
    source : str
        One of :data:`TRIAL_SOURCES`.
    observation : mapping of str to float
        The window's observation (context, mediators, reward); empty until complete.
    started_s, finished_s : float
        Unix times; ``finished_s`` is ``None`` while running.
    note : str
        Why a trial failed, or any free-form remark.
    """

    trial_id: int
    config: Mapping[str, _Scalar]
    state: TrialState = TrialState.RUNNING
    source: str = "experiment"
    observation: Mapping[str, float] = field(default_factory=dict)
    started_s: float = 0.0
    finished_s: float | None = None
    note: str = ""

    def __post_init__(self) -> None:
        if self.source not in TRIAL_SOURCES:
            raise ValueError(f"source must be one of {TRIAL_SOURCES}, got {self.source!r}")
        object.__setattr__(self, "state", TrialState(self.state))
        object.__setattr__(self, "config", _frozen_mapping("config", self.config, numeric=False))
        object.__setattr__(
            self, "observation", _frozen_mapping("observation", self.observation, numeric=True)
        )
        if self.state is TrialState.COMPLETE and not self.observation:
            raise ValueError(f"trial {self.trial_id} is complete but has no observation")


class TrialStore(ABC):
    """The storage contract every store satisfies (checked by one shared test suite)."""

    @abstractmethod
    def create_trial(
        self,
        config: Mapping[str, _Scalar],
        *,
        source: str = "experiment",
        started_s: float | None = None,
    ) -> FrozenTrial:
        """Record a new RUNNING trial and return it with its id."""

    @abstractmethod
    def finish_trial(
        self,
        trial_id: int,
        state: TrialState,
        observation: Mapping[str, float] | None = None,
        *,
        note: str = "",
        finished_s: float | None = None,
    ) -> FrozenTrial:
        """Move a RUNNING trial to a terminal state; a finished trial cannot change again."""

    @abstractmethod
    def get_trial(self, trial_id: int) -> FrozenTrial:
        """The trial with that id, or ``KeyError``."""

    @abstractmethod
    def trials(self, states: Iterable[TrialState] | None = None) -> list[FrozenTrial]:
        """All trials in creation order, optionally only those in ``states``."""

    @abstractmethod
    def set_meta(self, key: str, value: Any) -> None:
        """Store a JSON-serializable value (the session's settings, the knob space)."""

    @abstractmethod
    def get_meta(self, key: str, default: Any = None) -> Any:
        """A value stored by :meth:`set_meta`, or ``default``."""

    def add_completed(
        self,
        config: Mapping[str, _Scalar],
        observation: Mapping[str, float],
        *,
        source: str = "history",
        started_s: float | None = None,
        finished_s: float | None = None,
    ) -> FrozenTrial:
        """Record a finished round in one step (imported logs, prior prices)."""
        trial = self.create_trial(config, source=source, started_s=started_s)
        return self.finish_trial(
            trial.trial_id, TrialState.COMPLETE, observation, finished_s=finished_s
        )

    @classmethod
    def _finished(
        cls,
        trial: FrozenTrial,
        state: TrialState,
        observation: Mapping[str, float] | None,
        note: str,
        finished_s: float | None,
    ) -> FrozenTrial:
        """The finished version of a RUNNING trial (validated; nothing written yet)."""
        return replace(
            trial,
            state=cls._check_transition(trial, state),
            observation=dict(observation or {}),
            note=note,
            finished_s=time.time() if finished_s is None else float(finished_s),
        )

    @staticmethod
    def _check_transition(trial: FrozenTrial, state: TrialState) -> TrialState:
        state = TrialState(state)
        if trial.state.is_finished:
            raise ValueError(
                f"trial {trial.trial_id} is already {trial.state.value}; it cannot become {state.value}"
            )
        if not state.is_finished:
            raise ValueError(f"finish_trial needs a terminal state, got {state.value}")
        return state


class InMemoryStore(TrialStore):
    """A store in a Python list; nothing survives the process."""

    def __init__(self) -> None:
        self._trials: list[FrozenTrial] = []
        self._meta: dict[str, str] = {}
        self._lock = threading.Lock()

    def create_trial(self, config, *, source="experiment", started_s=None):
        with self._lock:
            trial = FrozenTrial(
                trial_id=len(self._trials),
                config=config,
                source=source,
                started_s=time.time() if started_s is None else float(started_s),
            )
            self._trials.append(trial)
            return trial

    def finish_trial(self, trial_id, state, observation=None, *, note="", finished_s=None):
        with self._lock:
            trial = self.get_trial(trial_id)
            done = self._finished(trial, state, observation, note, finished_s)
            self._trials[trial_id] = done
            return done

    def get_trial(self, trial_id):
        if not 0 <= int(trial_id) < len(self._trials):
            raise KeyError(f"no trial with id {trial_id}")
        return self._trials[int(trial_id)]

    def trials(self, states=None):
        wanted = None if states is None else {TrialState(s) for s in states}
        return [t for t in self._trials if wanted is None or t.state in wanted]

    def set_meta(self, key, value):
        self._meta[key] = json.dumps(value)

    def get_meta(self, key, default=None):
        return json.loads(self._meta[key]) if key in self._meta else default


_SCHEMA = """
CREATE TABLE IF NOT EXISTS trials (
    trial_id INTEGER PRIMARY KEY AUTOINCREMENT,
    config TEXT NOT NULL,
    state TEXT NOT NULL,
    source TEXT NOT NULL,
    observation TEXT NOT NULL,
    started_s REAL NOT NULL,
    finished_s REAL,
    note TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


class SQLiteStore(TrialStore):
    """A durable store in one SQLite file (WAL journal, synchronous=FULL).

    Each state change is one transaction, so the file is consistent after a kill -9 at any point.
    Trials left RUNNING by a killed process stay RUNNING; the session that reopens the store
    decides what to do with them (``TuningSession`` marks them FAILED with a note).

    Parameters
    ----------
    path : str or Path
        The database file; created with its parent folder if missing.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=FULL")
            self._conn.executescript(_SCHEMA)
        except sqlite3.DatabaseError as err:
            raise ValueError(f"{self.path} is not a causal-tuner store: {err}") from None
        self._lock = threading.Lock()

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> SQLiteStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @staticmethod
    def _row_to_trial(row: tuple) -> FrozenTrial:
        trial_id, config, state, source, observation, started_s, finished_s, note = row
        return FrozenTrial(
            trial_id=int(trial_id),
            config=json.loads(config),
            state=TrialState(state),
            source=source,
            observation=json.loads(observation),
            started_s=float(started_s),
            finished_s=None if finished_s is None else float(finished_s),
            note=note,
        )

    def create_trial(self, config, *, source="experiment", started_s=None):
        started = time.time() if started_s is None else float(started_s)
        probe = FrozenTrial(trial_id=0, config=config, source=source, started_s=started)
        with self._lock:
            cur = self._conn.execute(
                "INSERT INTO trials (config, state, source, observation, started_s) "
                "VALUES (?, ?, ?, ?, ?)",
                (json.dumps(dict(probe.config)), TrialState.RUNNING.value, source, "{}", started),
            )
            return replace(probe, trial_id=int(cur.lastrowid) - 1)

    def finish_trial(self, trial_id, state, observation=None, *, note="", finished_s=None):
        with self._lock:
            trial = self.get_trial(trial_id)
            done = self._finished(trial, state, observation, note, finished_s)
            self._conn.execute(
                "UPDATE trials SET state=?, observation=?, finished_s=?, note=? "
                "WHERE trial_id=? AND state=?",
                (
                    done.state.value,
                    json.dumps(dict(done.observation)),
                    done.finished_s,
                    note,
                    int(trial_id) + 1,
                    TrialState.RUNNING.value,
                ),
            )
            return done

    def get_trial(self, trial_id):
        row = self._conn.execute(
            "SELECT * FROM trials WHERE trial_id=?", (int(trial_id) + 1,)
        ).fetchone()
        if row is None:
            raise KeyError(f"no trial with id {trial_id}")
        return self._row_to_trial((row[0] - 1, *row[1:]))

    def trials(self, states=None):
        rows = self._conn.execute("SELECT * FROM trials ORDER BY trial_id").fetchall()
        wanted = None if states is None else {TrialState(s) for s in states}
        out = [self._row_to_trial((r[0] - 1, *r[1:])) for r in rows]
        return [t for t in out if wanted is None or t.state in wanted]

    def set_meta(self, key, value):
        with self._lock:
            self._conn.execute(
                "INSERT INTO meta (key, value) VALUES (?, ?) "
                "ON CONFLICT(key) DO UPDATE SET value=excluded.value",
                (key, json.dumps(value)),
            )

    def get_meta(self, key, default=None):
        row = self._conn.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return default if row is None else json.loads(row[0])
