"""perfdb query speed: vectorized throughput, forward-pass pricing, system load time.

1. Vectorized path: ``PerfDB.latency_many`` on N random shapes (GEMM over m, n, k and decode
   attention over batch and KV length), after one warm-up call; queries/s, median of R runs
   with the min-max range.
2. Forward pass of a Qwen3-32B-like model (64 layers; hidden 5120, 64 query / 8 KV heads of
   128, FFN 25600, TP=2 per-GPU shapes): per layer norm, QKV GEMM, rotary, KV-cache write,
   attention, O GEMM, all-reduce, norm, gate/up GEMM, activation, down GEMM, all-reduce; plus
   embedding, final norm and LM head. Priced op by op through ``PerfDB.latency`` (memoized on the
   op shape) for a decode step of batch B with KV length L. Reported: the first (cold) pricing of
   each step shape, and the warm pricing (the same step shape again), median of R runs.
3. Load time: ``import perfdb; load_system(...)`` in a fresh interpreter (median of 3), and the
   first query of each table (lazy table read + slice build).

Usage::

    python3 benchmarks/perfdb_speed.py --write-results
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

import numpy as np

from perfdb import (
    AllReduceOp,
    ContextAttentionOp,
    ElementwiseOp,
    GemmOp,
    GenerationAttentionOp,
    MemoryOp,
    MoEOp,
    load_system,
)

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parent))
from perfdb_accuracy import machine, write_section

HIDDEN, HEADS, KV_HEADS, HEAD_DIM, FFN, VOCAB, LAYERS, TP = 5120, 64, 8, 128, 25600, 151936, 64, 2


def forward_ops(batch: int, kv_len: int, prefill: bool = False) -> list:
    """Per-GPU ops of one step of the Qwen3-32B-like model (decode unless ``prefill``)."""
    tokens = batch * (kv_len if prefill else 1)
    h, kvh = HEADS // TP, KV_HEADS // TP
    act = tokens * HIDDEN * 2
    attn = (
        ContextAttentionOp(batch, kv_len, h, kvh, HEAD_DIM)
        if prefill
        else GenerationAttentionOp(batch, kv_len, h, kvh, HEAD_DIM)
    )
    layer = [
        ElementwiseOp(2 * act),  # input RMSNorm: read + write
        GemmOp(tokens, (h + 2 * kvh) * HEAD_DIM, HIDDEN),
        ElementwiseOp(2 * tokens * (h + kvh) * HEAD_DIM * 2),  # rotary on q and k
        MemoryOp(tokens * 2 * kvh * HEAD_DIM * 2, tokens * 2 * kvh * HEAD_DIM * 2),  # KV write
        attn,
        GemmOp(tokens, HIDDEN, h * HEAD_DIM),
        AllReduceOp(act, TP),
        ElementwiseOp(2 * act),  # post-attention RMSNorm
        GemmOp(tokens, 2 * FFN // TP, HIDDEN),
        ElementwiseOp(3 * tokens * FFN // TP * 2),  # SiLU-and-mul
        GemmOp(tokens, HIDDEN, FFN // TP),
        AllReduceOp(act, TP),
    ]
    head = [MemoryOp(tokens * HIDDEN * 2, act)]
    tail = [ElementwiseOp(2 * act), GemmOp(batch, VOCAB // TP, HIDDEN)]
    return head + layer * LAYERS + tail


def price(db, ops) -> float:
    return sum(db.latency(op)[0] for op in ops)


def vectorized(db, n: int, runs: int, rng: np.random.Generator) -> list[str]:
    out = []
    cases = {
        "gemm": dict(
            m=rng.integers(1, 16384, n),
            n=rng.choice([1024, 2048, 4096, 5120, 6144, 8192, 12800, 25600], n),
            k=rng.choice([1024, 2048, 4096, 5120, 8192], n),
        ),
        "generation_attention": dict(
            batch_size=rng.integers(1, 512, n),
            kv_len=rng.integers(1, 16384, n),
            num_heads=32,
            num_kv_heads=8,
            head_dim=128,
        ),
        "moe": dict(
            num_tokens=rng.integers(1, 8192, n),
            hidden_size=4096,
            inter_size=14336,
            topk=2,
            num_experts=8,
        ),
    }
    for op_type, arrays in cases.items():
        db.latency_many(op_type, **arrays)  # warm-up: table read, slice grids built
        times = []
        for _ in range(runs):
            t0 = time.perf_counter()
            ms, _src = db.latency_many(op_type, **arrays)
            times.append(time.perf_counter() - t0)
        assert np.all(np.isfinite(ms))
        rates = sorted(n / t for t in times)
        out.append(
            f"| {op_type} | {n:,} | {statistics.median(rates):,.0f} | {rates[0]:,.0f} – {rates[-1]:,.0f} |"
        )
        print(out[-1], flush=True)
    return out


def forward(system: str, runs: int) -> list[str]:
    out = []
    for batch, kv_len, prefill in ((64, 2048, False), (256, 8192, False), (4, 2048, True)):
        ops = forward_ops(batch, kv_len, prefill)
        colds, batched, warms = [], [], []
        for _ in range(runs):
            for mode in ("loop", "batched"):
                db = load_system(system)
                price(db, forward_ops(1, 128))  # tables read + grids built outside the timing
                price(db, forward_ops(1, 128, prefill=True))
                t0 = time.perf_counter()
                if mode == "loop":
                    total = price(db, ops)
                    colds.append(time.perf_counter() - t0)
                else:
                    total_b = sum(ms for ms, _ in db.latencies(ops))
                    batched.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            again = price(db, ops)
            warms.append(time.perf_counter() - t0)
            assert _round9(again) == _round9(total) == _round9(total_b)
        kind = "prefill" if prefill else "decode"
        out.append(
            f"| {kind} B={batch}, L={kv_len} | {len(ops)} | {len({*ops})} | {total:.2f} | "
            f"{statistics.median(colds) * 1e3:.3f} | {statistics.median(batched) * 1e3:.3f} | "
            f"{statistics.median(warms) * 1e3:.3f} ({min(warms) * 1e3:.3f} – {max(warms) * 1e3:.3f}) |"
        )
        print(out[-1], flush=True)
    return out


def _round9(x: float) -> float:
    """Round to 9 significant digits so that two summation orders compare equal."""
    return float(f"{x:.9g}")


def load_times(system: str) -> list[str]:
    code = (
        "import time; t=time.perf_counter(); import perfdb; "
        f"db=perfdb.load_system({system!r}); print(time.perf_counter()-t)"
    )
    loads = sorted(
        float(
            subprocess.run(
                [sys.executable, "-c", code], capture_output=True, text=True, check=True
            ).stdout
        )
        for _ in range(3)
    )
    out = [
        f"| import perfdb + load_system({system!r}), fresh interpreter | {statistics.median(loads):.3f} |"
    ]
    db = load_system(system)
    firsts = {
        "gemm": GemmOp(100, 4096, 4096),
        "context_attention": ContextAttentionOp(2, 1000, 32, 8, 128),
        "generation_attention": GenerationAttentionOp(64, 1000, 32, 8, 128),
        "moe": MoEOp(100, 4096, 14336, 2, 8),
        "all_reduce (NCCL + custom)": AllReduceOp(10**6, 8),
    }
    for name, op in firsts.items():
        t0 = time.perf_counter()
        db.latency(op)
        out.append(
            f"| first {name} query (lazy read + slice build) | {time.perf_counter() - t0:.3f} |"
        )
    for line in out:
        print(line, flush=True)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--system", default="h100_sxm")
    ap.add_argument("--n", type=int, default=200_000, help="shapes per vectorized call")
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--write-results", action="store_true")
    args = ap.parse_args(argv)
    rng = np.random.default_rng(args.seed)
    db = load_system(args.system)
    lines = [
        f"Command: `python3 benchmarks/perfdb_speed.py --system {args.system} --n {args.n} "
        f"--runs {args.runs} --seed {args.seed} --write-results`",
        f"Machine: {machine()} (shared with other jobs: compare within this run).",
        "",
        "Vectorized path (`latency_many`, random shapes, after one warm-up call; median of runs):",
        "",
        "| op type | shapes per call | queries/s (median) | range |",
        "|---|---|---|---|",
        *vectorized(db, args.n, args.runs, rng),
        "",
        f"Forward pass of a Qwen3-32B-like model ({LAYERS} layers, TP={TP} per-GPU shapes). "
        "Cold: first pricing of that step shape (tables already read, grids built), either op by "
        "op with `latency` or with one `latencies(ops)` call (one vectorized query per op type); "
        "warm: the same step again op by op (memoized on op shape). Median of runs, ms:",
        "",
        "| step | ops | distinct ops | step latency (ms) | cold, op by op (ms) | cold, `latencies` (ms) | warm (ms, range) |",
        "|---|---|---|---|---|---|---|",
        *forward(args.system, args.runs),
        "",
        "Load time (s):",
        "",
        "| what | seconds |",
        "|---|---|",
        *load_times(args.system),
        "",
        "Targets: >= 200,000 queries/s vectorized; forward-pass pricing <= 1 ms after warm-up; "
        "system load < 1 s.",
    ]
    body = "\n".join(lines)
    print(body)
    if args.write_results:
        write_section(f"Speed: {args.system}", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
