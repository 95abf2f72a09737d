"""The declarative knob space: what the tuner may change, what it costs, and what is allowed.

A :class:`KnobSpace` is written in TOML (or built in Python) with one table per knob::

    backend = "vllm"

    [knobs.max_num_seqs]
    levels = [32, 64, 128, 256]
    default = 128
    restart_cost_s = 30

    [[constraints]]
    kind = "ge"                      # max_num_batched_tokens >= max_num_seqs
    left = "max_num_batched_tokens"
    right = "max_num_seqs"

Knob names are canonical (vLLM's engine-argument names, with ``cuda_graphs`` for the inverse of
``enforce_eager``); :data:`BACKEND_ARGUMENTS` maps each to the SGLang and TensorRT-LLM
equivalent. A config is a mapping from every knob name to one of its levels.

Encoding: a knob with L levels becomes L - 1 features so that a *linear* model can express any
per-level effect. Ordered (numeric) knobs use the step basis ``1[level >= l_k]`` (each
coefficient is the increment from one level to the next); unordered ones use indicators against
the default level. Both span the same space as a free per-level mean.
"""

from __future__ import annotations

import itertools
import math
import tomllib
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "BACKEND_ARGUMENTS",
    "Constraint",
    "Knob",
    "KnobSpace",
]

Level = int | float | str | bool

#: Canonical knob -> the engine argument that sets it, per backend. ``None``: no equivalent.
BACKEND_ARGUMENTS: dict[str, dict[str, str | None]] = {
    "max_num_seqs": {
        "vllm": "--max-num-seqs",
        "sglang": "--max-running-requests",
        "trtllm": "max_batch_size",
    },
    "max_num_batched_tokens": {
        "vllm": "--max-num-batched-tokens",
        "sglang": "--chunked-prefill-size",
        "trtllm": "max_num_tokens",
    },
    "enable_chunked_prefill": {
        "vllm": "--enable-chunked-prefill",
        "sglang": None,  # SGLang chunks whenever --chunked-prefill-size > 0
        "trtllm": "enable_chunked_prefill",
    },
    "gpu_memory_utilization": {
        "vllm": "--gpu-memory-utilization",
        "sglang": "--mem-fraction-static",
        "trtllm": "kv_cache_config.free_gpu_memory_fraction",
    },
    "cuda_graphs": {
        "vllm": "--enforce-eager",  # inverted: cuda_graphs=False renders --enforce-eager
        "sglang": "--disable-cuda-graph",  # inverted likewise
        "trtllm": "cuda_graph_config",  # null disables
    },
    "cuda_graph_max_batch": {
        "vllm": "--max-cudagraph-capture-size",
        "sglang": "--cuda-graph-max-bs",
        "trtllm": "cuda_graph_config.max_batch_size",
    },
    "tensor_parallel_size": {
        "vllm": "--tensor-parallel-size",
        "sglang": "--tp-size",
        "trtllm": "tensor_parallel_size",
    },
    "enable_prefix_caching": {
        "vllm": "--enable-prefix-caching",
        "sglang": "--disable-radix-cache",  # inverted
        "trtllm": "kv_cache_config.enable_block_reuse",
    },
    "async_scheduling": {
        "vllm": "--async-scheduling",  # the default since vLLM 0.14; --no-async-scheduling
        "sglang": "--disable-overlap-schedule",  # inverted
        "trtllm": "disable_overlap_scheduler",  # inverted
    },
    "scheduling_policy": {
        "vllm": "--scheduling-policy",
        "sglang": "--schedule-policy",
        "trtllm": "scheduler_config.capacity_scheduler_policy",
    },
}

_BACKENDS = ("vllm", "sglang", "trtllm")


def _same_level(a: Level, b: Level) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, str) or isinstance(b, str):
        return a == b
    return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-12)


@dataclass(frozen=True)
class Knob:
    """One tunable engine setting.

    Parameters
    ----------
    name : str
        Canonical name (a key of :data:`BACKEND_ARGUMENTS`, or any name for a custom knob).
    levels : tuple
        The values the tuner may choose; at least two, no duplicates, all of one type.
    default : scalar
        The engine's setting before tuning; must be one of ``levels``.
    restart_cost_s : float
        Seconds of lost serving when this knob changes (vLLM fixes every knob at start, so a
        change is a restart: about 30 s with ``--enforce-eager`` on the CPU engine, minutes on a
        large GPU model that captures CUDA graphs).
    description : str
    """

    name: str
    levels: tuple[Level, ...]
    default: Level
    restart_cost_s: float = 30.0
    description: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.isidentifier():
            raise ValueError(f"knob name must be an identifier, got {self.name!r}")
        levels = tuple(self.levels)
        if len(levels) < 2:
            raise ValueError(f"knob {self.name!r} needs at least two levels, got {levels!r}")
        kinds = {
            type(v) if not isinstance(v, int | float) or isinstance(v, bool) else float
            for v in levels
        }
        if len(kinds) != 1 or not kinds <= {bool, str, float}:
            raise ValueError(
                f"knob {self.name!r} levels must all be numbers, all strings or all booleans, got {levels!r}"
            )
        for i, a in enumerate(levels):
            if isinstance(a, float) and not math.isfinite(a):
                raise ValueError(f"knob {self.name!r} has a non-finite level {a!r}")
            if any(_same_level(a, b) for b in levels[:i]):
                raise ValueError(f"knob {self.name!r} lists level {a!r} twice")
        if self.ordered:
            levels = tuple(sorted(levels))
        object.__setattr__(self, "levels", levels)
        if not any(_same_level(self.default, v) for v in levels):
            raise ValueError(
                f"knob {self.name!r} default {self.default!r} is not one of its levels {levels!r}"
            )
        if not (math.isfinite(self.restart_cost_s) and self.restart_cost_s >= 0):
            raise ValueError(
                f"knob {self.name!r} restart_cost_s must be >= 0, got {self.restart_cost_s!r}"
            )

    @property
    def ordered(self) -> bool:
        """Numeric knobs are ordered (step-basis encoding); booleans and strings are not."""
        first = self.levels[0]
        return isinstance(first, int | float) and not isinstance(first, bool)

    def index(self, value: Level) -> int:
        """Position of ``value`` in :attr:`levels`; ``ValueError`` naming the knob if absent."""
        for i, level in enumerate(self.levels):
            if _same_level(value, level):
                return i
        raise ValueError(
            f"{value!r} is not a level of knob {self.name!r}; levels are {self.levels!r}"
        )

    def feature_names(self) -> list[str]:
        if self.ordered:
            return [f"{self.name}>={level}" for level in self.levels[1:]]
        base = self.index(self.default)
        return [f"{self.name}={level}" for i, level in enumerate(self.levels) if i != base]

    def encode(self, value: Level) -> np.ndarray:
        """The L - 1 features of ``value`` (step basis if ordered, else indicators vs default)."""
        i = self.index(value)
        if self.ordered:
            return (np.arange(1, len(self.levels)) <= i).astype(float)
        base = self.index(self.default)
        out = np.zeros(len(self.levels) - 1)
        if i != base:
            out[i if i < base else i - 1] = 1.0
        return out


_CONSTRAINT_KINDS = ("ge", "le", "divides")


@dataclass(frozen=True)
class Constraint:
    """A declarative rule a config must satisfy.

    Kinds: ``ge`` / ``le`` compare knob ``left`` to knob ``right`` (or to the number ``value``);
    ``divides``: knob ``left`` divides the integer ``value`` (e.g. tensor_parallel_size divides
    the model's attention-head count).
    """

    kind: str
    left: str
    right: str | None = None
    value: float | None = None
    reason: str = ""

    def __post_init__(self) -> None:
        if self.kind not in _CONSTRAINT_KINDS:
            raise ValueError(
                f"constraint kind must be one of {_CONSTRAINT_KINDS}, got {self.kind!r}"
            )
        if (self.right is None) == (self.value is None):
            raise ValueError(f"constraint on {self.left!r} needs exactly one of right= or value=")
        if self.kind == "divides" and (
            self.value is None or int(self.value) != self.value or self.value <= 0
        ):
            raise ValueError(
                f"'divides' constraint on {self.left!r} needs a positive integer value"
            )

    def knobs(self) -> tuple[str, ...]:
        return (self.left,) if self.right is None else (self.left, self.right)

    def violation(self, config: Mapping[str, Level]) -> str | None:
        """``None`` when satisfied, else a sentence naming the constraint."""
        left = config[self.left]
        if self.kind == "divides":
            ok = int(self.value) % int(left) == 0
            text = f"{self.left}={left} must divide {int(self.value)}"
        else:
            right = config[self.right] if self.right is not None else self.value
            bound = f"{self.right}={right}" if self.right is not None else f"{right:g}"
            ok = float(left) >= float(right) if self.kind == "ge" else float(left) <= float(right)
            text = f"{self.left}={left} must be {'>=' if self.kind == 'ge' else '<='} {bound}"
        if ok:
            return None
        return text + (f" ({self.reason})" if self.reason else "")


@dataclass(frozen=True)
class KnobSpace:
    """The knobs, their constraints and the backend they render for.

    Parameters
    ----------
    knobs : tuple of Knob
    constraints : tuple of Constraint
    backend : {"vllm", "sglang", "trtllm"}
    feasibility : callable, optional
        ``config -> None | str``: an extra check (e.g. memory feasibility from the analytical
        model) returning the reason a config is infeasible. Not serialized.
    """

    knobs: tuple[Knob, ...]
    constraints: tuple[Constraint, ...] = ()
    backend: str = "vllm"
    feasibility: Callable[[Mapping[str, Level]], str | None] | None = field(
        default=None, compare=False, repr=False
    )

    def __post_init__(self) -> None:
        knobs = tuple(self.knobs)
        if not knobs:
            raise ValueError("a knob space needs at least one knob")
        names = [k.name for k in knobs]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"knob names must be unique, repeated: {dupes}")
        if self.backend not in _BACKENDS:
            raise ValueError(f"backend must be one of {_BACKENDS}, got {self.backend!r}")
        for c in self.constraints:
            unknown = [n for n in c.knobs() if n not in names]
            if unknown:
                raise ValueError(
                    f"constraint {c.kind!r} names unknown knob(s) {unknown}; knobs are {names}"
                )
        object.__setattr__(self, "knobs", knobs)
        object.__setattr__(self, "constraints", tuple(self.constraints))
        default = self.default_config()
        reason = self.violation(default)
        if reason:
            raise ValueError(f"the default config violates a constraint: {reason}")

    # -- construction -------------------------------------------------------------------
    @classmethod
    def from_mapping(cls, spec: Mapping[str, Any]) -> KnobSpace:
        """Build from the TOML layout in the module docstring (as a dict)."""
        if not isinstance(spec, Mapping) or "knobs" not in spec:
            raise ValueError("a knob-space spec needs a [knobs] table")
        unknown = sorted(set(spec) - {"knobs", "constraints", "backend"})
        if unknown:
            raise ValueError(f"unknown top-level keys in knob space: {unknown}")
        knobs = []
        for name, body in dict(spec["knobs"]).items():
            if not isinstance(body, Mapping):
                raise ValueError(f"[knobs.{name}] must be a table")
            extra = sorted(set(body) - {"levels", "default", "restart_cost_s", "description"})
            if extra:
                raise ValueError(f"[knobs.{name}] has unknown keys {extra}")
            if "levels" not in body or "default" not in body:
                raise ValueError(f"[knobs.{name}] needs 'levels' and 'default'")
            knobs.append(
                Knob(
                    name=name,
                    levels=tuple(body["levels"]),
                    **{k: v for k, v in body.items() if k != "levels"},
                )
            )
        constraints = []
        for i, body in enumerate(spec.get("constraints", [])):
            try:
                constraints.append(Constraint(**body))
            except TypeError as err:
                raise ValueError(f"constraint #{i + 1} is malformed: {err}") from None
        return cls(
            knobs=tuple(knobs), constraints=tuple(constraints), backend=spec.get("backend", "vllm")
        )

    @classmethod
    def from_toml(cls, path: str | Path) -> KnobSpace:
        """Read a knob space from a TOML file; errors name the file."""
        path = Path(path)
        try:
            spec = tomllib.loads(path.read_text())
        except FileNotFoundError:
            raise ValueError(f"knob-space file not found: {path}") from None
        except tomllib.TOMLDecodeError as err:
            raise ValueError(f"{path} is not valid TOML: {err}") from None
        try:
            return cls.from_mapping(spec)
        except ValueError as err:
            raise ValueError(f"{path}: {err}") from None

    @classmethod
    def vllm_default(cls, *, num_attention_heads: int | None = None) -> KnobSpace:
        """A sensible vLLM space: batching, chunked prefill, KV fraction, CUDA graphs, caching.

        Parameters
        ----------
        num_attention_heads : int, optional
            When given, ``tensor_parallel_size`` joins the space, constrained to divide it.
        """
        knobs = [
            Knob(
                "max_num_seqs", (32, 64, 128, 256, 512), 256, 30.0, "concurrent sequences per step"
            ),
            Knob(
                "max_num_batched_tokens",
                (2048, 4096, 8192, 16384),
                8192,
                30.0,
                "token budget per step",
            ),
            Knob(
                "enable_chunked_prefill",
                (True, False),
                True,
                30.0,
                "split long prompts across steps",
            ),
            Knob(
                "gpu_memory_utilization",
                (0.8, 0.85, 0.9, 0.95),
                0.9,
                30.0,
                "memory fraction for weights + KV",
            ),
            Knob("cuda_graphs", (True, False), True, 60.0, "capture decode steps as CUDA graphs"),
            Knob(
                "enable_prefix_caching",
                (True, False),
                True,
                30.0,
                "reuse KV blocks of shared prefixes",
            ),
        ]
        constraints = [
            Constraint(
                "ge",
                "max_num_batched_tokens",
                "max_num_seqs",
                reason="one token per running sequence",
            ),
        ]
        if num_attention_heads is not None:
            tps = tuple(t for t in (1, 2, 4, 8) if num_attention_heads % t == 0)
            knobs.append(Knob("tensor_parallel_size", tps, 1, 120.0, "GPUs per replica"))
            constraints.append(
                Constraint(
                    "divides",
                    "tensor_parallel_size",
                    value=num_attention_heads,
                    reason="TP must divide the attention heads",
                )
            )
        return cls(knobs=tuple(knobs), constraints=tuple(constraints), backend="vllm")

    def with_feasibility(self, check: Callable[[Mapping[str, Level]], str | None]) -> KnobSpace:
        """The same space with an extra feasibility check (e.g. the memory model)."""
        return KnobSpace(self.knobs, self.constraints, self.backend, feasibility=check)

    def to_mapping(self) -> dict[str, Any]:
        """The TOML layout as a dict (the feasibility callable is not included)."""
        return {
            "backend": self.backend,
            "knobs": {
                k.name: {
                    "levels": list(k.levels),
                    "default": k.default,
                    "restart_cost_s": k.restart_cost_s,
                    "description": k.description,
                }
                for k in self.knobs
            },
            "constraints": [
                {key: val for key, val in vars(c).items() if val is not None and val != ""}
                for c in self.constraints
            ],
        }

    # -- queries ------------------------------------------------------------------------
    @property
    def names(self) -> tuple[str, ...]:
        return tuple(k.name for k in self.knobs)

    def knob(self, name: str) -> Knob:
        for k in self.knobs:
            if k.name == name:
                return k
        raise ValueError(f"unknown knob {name!r}; knobs are {list(self.names)}")

    def default_config(self) -> dict[str, Level]:
        return {k.name: k.levels[k.index(k.default)] for k in self.knobs}

    def violation(self, config: Mapping[str, Level]) -> str | None:
        """The first broken rule, as a sentence, or ``None`` if ``config`` is feasible."""
        for c in self.constraints:
            reason = c.violation(config)
            if reason:
                return reason
        if self.feasibility is not None:
            return self.feasibility(config)
        return None

    def validate(self, config: Mapping[str, Level]) -> dict[str, Level]:
        """Check a full config and return it with each value snapped to its canonical level.

        Raises
        ------
        ValueError
            Naming the missing or unknown knob, the value outside a knob's levels, or the
            violated constraint.
        """
        missing = [n for n in self.names if n not in config]
        unknown = sorted(set(config) - set(self.names))
        if missing or unknown:
            raise ValueError(
                f"config must set exactly the knobs {list(self.names)}: missing {missing}, unknown {unknown}"
            )
        out = {k.name: k.levels[k.index(config[k.name])] for k in self.knobs}
        reason = self.violation(out)
        if reason:
            raise ValueError(f"infeasible config: {reason}")
        return out

    def grid(self) -> Iterator[dict[str, Level]]:
        """Every feasible config, in a fixed order."""
        for values in itertools.product(*(k.levels for k in self.knobs)):
            config = dict(zip(self.names, values, strict=True))
            if self.violation(config) is None:
                yield config

    def neighbours(self, config: Mapping[str, Level]) -> list[dict[str, Level]]:
        """Feasible configs that differ from ``config`` in exactly one knob (atomic interventions)."""
        config = self.validate(config)
        out = []
        for k in self.knobs:
            for level in k.levels:
                if _same_level(level, config[k.name]):
                    continue
                candidate = {**config, k.name: level}
                if self.violation(candidate) is None:
                    out.append(candidate)
        return out

    def feature_names(self, pairs: bool = False) -> list[str]:
        """Names of :meth:`encode_many`'s columns (``pairs``: with the pairwise products)."""
        names = [name for k in self.knobs for name in k.feature_names()]
        if pairs:
            per_knob = [k.feature_names() for k in self.knobs]
            names += [
                f"{a} & {b}"
                for ka, kb in itertools.combinations(per_knob, 2)
                for a in ka
                for b in kb
            ]
        return names

    def encode(self, config: Mapping[str, Level]) -> np.ndarray:
        """Features of a config (see the module docstring); length ``sum(L_k - 1)``."""
        return np.concatenate([k.encode(config[k.name]) for k in self.knobs])

    def encode_many(
        self, configs: Iterable[Mapping[str, Level]], pairs: bool = False
    ) -> np.ndarray:
        """One row of features per config.

        ``pairs``: also the products of every two knobs' features (``(L_a - 1)(L_b - 1)``
        columns per pair of knobs), so that a linear model can give two knobs' levels together
        an effect of their own: an effect seen only at ``tensor_parallel_size >= 2`` with
        ``max_num_batched_tokens >= 8192`` need not be charged to every ``tensor_parallel_size
        >= 2`` config.
        """
        rows = [self.encode(c) for c in configs]
        if not rows:
            return np.zeros((0, len(self.feature_names(pairs))))
        x = np.vstack(rows)
        if not pairs:
            return x
        edges = np.cumsum([0] + [len(k.levels) - 1 for k in self.knobs])
        blocks = [slice(edges[i], edges[i + 1]) for i in range(len(self.knobs))]
        products = [
            (x[:, a, None] * x[:, None, b]).reshape(len(x), -1)
            for a, b in itertools.combinations(blocks, 2)
        ]
        return np.hstack([x, *products])

    def restart_cost_s(self, old: Mapping[str, Level], new: Mapping[str, Level]) -> float:
        """Serving time lost moving from ``old`` to ``new``: the costliest changed knob (one restart)."""
        changed = [
            k.restart_cost_s for k in self.knobs if not _same_level(old[k.name], new[k.name])
        ]
        return max(changed, default=0.0)

    def backend_arguments(self) -> dict[str, str | None]:
        """Each knob's argument name in this space's backend (``None``: no equivalent)."""
        return {n: BACKEND_ARGUMENTS.get(n, {}).get(self.backend, n) for n in self.names}
