"""Context attention over a cached prefix against prefix-free prefills, on a GPU.

The kernel tables time prefills from an empty cache only, so ``perfdb`` prices a chunk of
``c`` new tokens over ``p`` cached ones as the prefix-free prefill of the length whose roofline
does the same work (``PerfDatabase._prefix_as_equal_work``). Chunked prefill makes such chunks
common under load. This script times both with one kernel family (PyTorch's
``scaled_dot_product_attention``, FlashAttention backend where it runs, bf16, causal masks
aligned to the bottom right for chunks): prefix-free prefills on a grid of lengths, and chunks
over prefixes. ``benchmarks/prefix_attention_check.py`` maps each chunk to its equal-work length
with the product's code and compares.

Writes ``prefix_attention.csv`` to ``--out``. Needs PyTorch with CUDA (``--device cpu --tiny``
runs the same code on a CPU as a smoke test).

Usage (on the lent GPU machine)::

    python3 benchmarks/gpu_prefix_attention.py --out "$OUT"
"""

from __future__ import annotations

import argparse
import csv
import statistics
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.nn.attention.bias import causal_lower_right

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gpu_eager_step import timed_ms


def measure(chunk: int, prefix: int, args, gen) -> dict:
    cuda = args.device == "cuda"
    total = chunk + prefix

    def rnd(heads, n):
        return torch.randn(
            1, heads, n, args.head_dim, generator=gen, device=args.device, dtype=torch.bfloat16
        )

    q, k, v = rnd(args.heads, chunk), rnd(args.kv_heads, total), rnd(args.kv_heads, total)
    mask = causal_lower_right(chunk, total) if prefix else None

    def fn():
        if mask is None:
            return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=True)

    backend = "flash"
    try:
        with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
            fn()
        ctx = SDPBackend.FLASH_ATTENTION
    except RuntimeError:
        backend, ctx = "default", list(SDPBackend)
    with torch.inference_mode(), sdpa_kernel(ctx):
        for _ in range(args.warmup):
            fn()
        ms = statistics.median(timed_ms(fn, args.iters, cuda) for _ in range(args.repeats))
    return {"chunk": chunk, "prefix": prefix, "ms": f"{ms:.5f}", "backend": backend}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    ap.add_argument("--tiny", action="store_true", help="short lengths (smoke test)")
    ap.add_argument("--heads", type=int, default=32)
    ap.add_argument("--kv-heads", type=int, default=8)
    ap.add_argument("--head-dim", type=int, default=128)
    ap.add_argument("--grid-step", type=int, default=256, help="prefix-free lengths: step")
    ap.add_argument("--grid-max", type=int, default=16384, help="prefix-free lengths: largest")
    ap.add_argument("--chunks", default="256,512,1024,2048,4096")
    ap.add_argument("--prefixes", default="512,2048,4096,8192")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/out/gpu_prefix_attention"))
    args = ap.parse_args(argv)
    cuda = args.device == "cuda"
    if cuda and not torch.cuda.is_available():
        print("error: --device cuda but torch.cuda.is_available() is False (use --device cpu)")
        return 2
    chunks = [int(c) for c in args.chunks.split(",")]
    prefixes = [int(p) for p in args.prefixes.split(",")]
    grid = list(range(args.grid_step, args.grid_max + 1, args.grid_step))
    if args.tiny:
        chunks, prefixes, grid = [16, 32], [32, 64], [16, 32, 48, 64, 80, 96]
    gen = torch.Generator(device=args.device).manual_seed(0)
    cases = [(n, 0) for n in grid] + [(c, p) for c in chunks for p in prefixes]
    rows = []
    for chunk, prefix in cases:
        row = {"heads": args.heads, "kv_heads": args.kv_heads, "head_dim": args.head_dim}
        row.update(measure(chunk, prefix, args, gen))
        rows.append(row)
        print(", ".join(f"{k}={v}" for k, v in row.items()), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    with (args.out / "prefix_attention.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    info = torch.cuda.get_device_name(0) if cuda else "cpu"
    print(f"device: {info}; torch {torch.__version__}; wrote {args.out}/prefix_attention.csv")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
