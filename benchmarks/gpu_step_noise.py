"""Step-to-step jitter of whole decoder steps on a GPU (calibrates the engine's per-step noise).

The serving engine multiplies each step's modelled time by a lognormal factor of coefficient of
variation ``simulator.engine.DEFAULT_STEP_NOISE_CV``. End-to-end means in silicon_dev.csv average
thousands of steps and cannot identify it, so this script times steps one at a time: the
decoder of ``benchmarks/gpu_eager_step.py`` (plain PyTorch, random bf16 weights, dense KV cache),
one step after another, each waited for as an engine's loop waits for its sampled tokens
(``torch.cuda.synchronize`` after every step). Per step it records the host wall time
(``time.perf_counter`` around launch and wait) and the GPU time (CUDA events around the step).

Cases: decode steps of ``b`` sequences replayed from a CUDA graph (vLLM's decode path) and
prefill steps launched eagerly (vLLM runs steps with prompt tokens outside full CUDA graphs).
Each case runs ``--blocks`` blocks of up to ``--steps`` steps (at most ``--block-seconds`` each)
after ``--warmup`` steps, so the spread within a block (step-to-step jitter) can be told from the
drift between blocks.

Writes ``steps.csv`` (one row per timed step) to ``--out``. Needs PyTorch with CUDA
(``--device cpu --tiny`` runs the same code on a CPU, eager only, as a smoke test).

Usage (on the lent GPU machine)::

    python3 benchmarks/gpu_step_noise.py --out "$OUT"
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gpu_eager_step import Decoder, add_decoder_args, decoder_dims


def make_inputs(dims: dict, kind: str, size: int, kv_len: int, device: str, gen):
    seqs, q_len, ctx = (size, 1, kv_len) if kind == "decode" else (1, size, size)
    tokens = torch.randint(0, dims["vocab"], (seqs * q_len,), generator=gen, device=device)
    half = dims["head_dim"] // 2
    cos = torch.rand(q_len, 1, half, generator=gen, device=device).to(torch.bfloat16)
    sin = torch.rand(q_len, 1, half, generator=gen, device=device).to(torch.bfloat16)
    shape = (seqs, dims["kv_heads"], ctx, dims["head_dim"])
    caches = [
        tuple(
            torch.randn(shape, generator=gen, device=device, dtype=torch.bfloat16) for _ in range(2)
        )
        for _ in range(dims["layers"])
    ]
    return tokens, cos, sin, caches, seqs, q_len


def time_steps(call, n: int, budget_s: float, cuda: bool) -> list[tuple[float, float]]:
    """Run ``call`` up to ``n`` times (stopping after ``budget_s``), waiting for each; returns
    (wall ms, GPU ms) per step (GPU ms is NaN on a CPU)."""
    out = []
    start = end = None
    if cuda:
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize()
    t_block = time.perf_counter()
    for _ in range(n):
        t0 = time.perf_counter()
        if cuda:
            start.record()
        call()
        if cuda:
            end.record()
            torch.cuda.synchronize()
        wall = (time.perf_counter() - t0) * 1e3
        gpu = start.elapsed_time(end) if cuda else float("nan")
        out.append((wall, gpu))
        if time.perf_counter() - t_block > budget_s and len(out) >= 20:
            break
    return out


def run_case(model: Decoder, kind: str, size: int, mode: str, args, gen) -> list[dict]:
    cuda = args.device == "cuda"
    tokens, cos, sin, caches, seqs, q_len = make_inputs(
        model.d, kind, size, args.kv_len, args.device, gen
    )

    def fn():
        return model.step(tokens, cos, sin, caches, seqs, q_len, kind == "prefill")

    call = fn
    graph = None
    with torch.inference_mode():
        if mode == "graph":
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                fn()
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                fn()
            call = graph.replay
        time_steps(call, args.warmup, 1e9, cuda)
        rows = []
        for block in range(args.blocks):
            for i, (wall, gpu) in enumerate(time_steps(call, args.steps, args.block_seconds, cuda)):
                rows.append(
                    {
                        "kind": kind,
                        "size": size,
                        "kv_len": args.kv_len if kind == "decode" else size,
                        "mode": mode,
                        "block": block,
                        "step": i,
                        "wall_ms": f"{wall:.4f}",
                        "gpu_ms": f"{gpu:.4f}",
                    }
                )
    del graph
    caches.clear()
    if cuda:
        torch.cuda.empty_cache()
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_decoder_args(ap)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/out/gpu_step_noise"))
    ap.add_argument("--decode-batches", default="1,16,64,256")
    ap.add_argument("--kv-len", type=int, default=1024)
    ap.add_argument("--prefill-tokens", default="512,2048")
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--blocks", type=int, default=3)
    ap.add_argument("--steps", type=int, default=500)
    ap.add_argument("--block-seconds", type=float, default=5.0)
    args = ap.parse_args(argv)
    dims = decoder_dims(args)
    if dims is None:
        return 2
    cuda = args.device == "cuda"
    gen = torch.Generator(device=args.device).manual_seed(0)
    model = Decoder(dims, args.device, gen)
    graph_mode = "graph" if cuda else "eager"
    cases = [("decode", int(b), graph_mode) for b in args.decode_batches.split(",") if b]
    cases += [("prefill", int(n), "eager") for n in args.prefill_tokens.split(",") if n]
    rows: list[dict] = []
    for kind, size, mode in cases:
        got = run_case(model, kind, size, mode, args, gen)
        walls = torch.tensor([float(r["wall_ms"]) for r in got], dtype=torch.float64)
        cv = float(walls.std() / walls.mean())
        print(
            f"{kind} {size} ({mode}): {len(got)} steps, wall median {walls.median():.3f} ms, "
            f"CV {cv:.4f}",
            flush=True,
        )
        rows.extend(got)
    args.out.mkdir(parents=True, exist_ok=True)
    with (args.out / "steps.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    info = torch.cuda.get_device_name(0) if cuda else "cpu"
    print(f"device: {info}; torch {torch.__version__}; dims {dims}; wrote {args.out}/steps.csv")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
