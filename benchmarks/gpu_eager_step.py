"""Eager launches vs CUDA-graph replay for whole decoder steps, on a GPU (the launch-gap check).

A Llama-3.1-8B-shaped decoder (32 layers, hidden 4096, 32 query / 8 KV heads of 128, MLP 14336,
vocabulary 128256; random bf16 weights) written with plain PyTorch ops (``F.rms_norm``, one
matmul per projection, rotary embedding, ``scaled_dot_product_attention`` over a dense KV cache,
SiLU-and-multiply). Each step (decode of ``b`` sequences at a KV length, or one prompt's prefill)
is timed two ways with CUDA events: replayed from a CUDA graph, and launched eagerly from Python.
The CUDA kernels one eager step launches are counted with ``torch.profiler``. The step model
charges ``kernels x eager_kernel_us`` on top of the kernel times for an eager step
(``simulator.step_time.EngineOverhead``); this measures what a kernel's launch costs when the
GPU waits for the host, and how much of it long kernels hide.

The eager step's kernels are also timed one by one (profiler device time) and summed by kind
(GEMM, attention, other), to compare with the step model's sum of isolated kernel times.

Writes ``$OUT/eager_step.csv`` and ``$OUT/kernels.csv`` (``--out``). Needs PyTorch with CUDA (``--device cpu --tiny``
runs the same code on a CPU, eager only, as a smoke test).

Usage (on the lent GPU machine)::

    python3 benchmarks/gpu_eager_step.py --out "$OUT"
"""

from __future__ import annotations

import argparse
import csv
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

FULL = {
    "layers": 32,
    "hidden": 4096,
    "heads": 32,
    "kv_heads": 8,
    "head_dim": 128,
    "inter": 14336,
    "vocab": 128256,
}
TINY = {
    "layers": 2,
    "hidden": 64,
    "heads": 4,
    "kv_heads": 2,
    "head_dim": 16,
    "inter": 128,
    "vocab": 256,
}


class Decoder:
    """Weights and one step's forward pass (no module machinery: the lightest eager host path)."""

    def __init__(self, dims: dict, device: str, gen: torch.Generator) -> None:
        self.d = dims
        h, hd = dims["hidden"], dims["head_dim"]
        qkv = (dims["heads"] + 2 * dims["kv_heads"]) * hd

        def w(*shape):
            return torch.randn(shape, generator=gen, device=device, dtype=torch.bfloat16) * 0.02

        self.layers = [
            {
                "norm1": torch.ones(h, device=device, dtype=torch.bfloat16),
                "norm2": torch.ones(h, device=device, dtype=torch.bfloat16),
                "wqkv": w(h, qkv),
                "wo": w(dims["heads"] * hd, h),
                "wgu": w(h, 2 * dims["inter"]),
                "wd": w(dims["inter"], h),
            }
            for _ in range(dims["layers"])
        ]
        self.embed = w(dims["vocab"], h)
        self.norm = torch.ones(h, device=device, dtype=torch.bfloat16)
        self.lm_head = w(h, dims["vocab"])

    def rotary(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        x1, x2 = x.chunk(2, dim=-1)
        return torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1)

    def step(self, tokens, cos, sin, caches, seqs: int, q_len: int, causal: bool):
        d = self.d
        nh, kvh, hd = d["heads"], d["kv_heads"], d["head_dim"]
        x = self.embed[tokens]
        for layer, (k_cache, v_cache) in zip(self.layers, caches, strict=True):
            h = F.rms_norm(x, (d["hidden"],), layer["norm1"])
            q, k, v = (h @ layer["wqkv"]).split((nh * hd, kvh * hd, kvh * hd), dim=-1)
            q = self.rotary(q.view(seqs, q_len, nh, hd), cos, sin).transpose(1, 2)
            k = self.rotary(k.view(seqs, q_len, kvh, hd), cos, sin).transpose(1, 2)
            k_cache[:, :, -q_len:] = k
            v_cache[:, :, -q_len:] = v.view(seqs, q_len, kvh, hd).transpose(1, 2)
            a = F.scaled_dot_product_attention(
                q, k_cache, v_cache, is_causal=causal, enable_gqa=True
            )
            x = x + a.transpose(1, 2).reshape(seqs * q_len, nh * hd) @ layer["wo"]
            h = F.rms_norm(x, (d["hidden"],), layer["norm2"])
            gate, up = (h @ layer["wgu"]).chunk(2, dim=-1)
            x = x + (F.silu(gate) * up) @ layer["wd"]
        last = x.view(seqs, q_len, -1)[:, -1]
        return F.rms_norm(last, (d["hidden"],), self.norm) @ self.lm_head


def kernel_kind(name: str) -> str:
    """``gemm``, ``attention`` or ``other``, from a CUDA kernel's name."""
    low = name.lower()
    if any(t in low for t in ("flash", "fmha", "attention", "attn", "sdpa")):
        return "attention"
    if any(t in low for t in ("gemm", "nvjet", "cutlass", "cublas", "xmma", "matmul", "splitk")):
        return "gemm"
    return "other"


def timed_ms(call, reps: int, cuda: bool) -> float:
    """Mean ms of ``reps`` back-to-back calls: CUDA events on a GPU, the wall clock on a CPU."""
    if cuda:
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize()
        start.record()
        for _ in range(reps):
            call()
        end.record()
        torch.cuda.synchronize()
        return start.elapsed_time(end) / reps
    t0 = time.perf_counter()
    for _ in range(reps):
        call()
    return (time.perf_counter() - t0) * 1e3 / reps


def add_decoder_args(ap: argparse.ArgumentParser) -> None:
    """The device and decoder-dimension options the GPU step scripts share."""
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    ap.add_argument("--tiny", action="store_true", help="tiny dimensions (smoke test)")
    ap.add_argument(
        "--dims",
        default=None,
        help="layers,hidden,heads,kv_heads,head_dim,inter,vocab (default: Llama-3.1-8B's)",
    )


def decoder_dims(args: argparse.Namespace) -> dict | None:
    """The decoder's dimensions from :func:`add_decoder_args`' options, or None (with the
    reason printed) when CUDA is asked for but missing or ``--dims`` is malformed."""
    if args.device == "cuda" and not torch.cuda.is_available():
        print(
            "error: --device cuda but torch.cuda.is_available() is False (use --device cpu --tiny)"
        )
        return None
    if not args.dims:
        return TINY if args.tiny else FULL
    values = [int(v) for v in args.dims.split(",")]
    if len(values) != len(FULL):
        print(f"error: --dims needs {len(FULL)} integers ({','.join(FULL)})")
        return None
    return dict(zip(FULL, values, strict=True))


def run_case(
    model: Decoder, kind: str, size: int, kv_len: int, device: str, args, gen, names: dict
) -> dict:
    d = model.d
    seqs, q_len, ctx = (size, 1, kv_len) if kind == "decode" else (1, size, size)
    tokens = torch.randint(0, d["vocab"], (seqs * q_len,), generator=gen, device=device)
    cos = torch.rand(q_len, 1, d["head_dim"] // 2, generator=gen, device=device).to(torch.bfloat16)
    sin = torch.rand(q_len, 1, d["head_dim"] // 2, generator=gen, device=device).to(torch.bfloat16)
    caches = [
        tuple(
            torch.randn(
                seqs,
                d["kv_heads"],
                ctx,
                d["head_dim"],
                generator=gen,
                device=device,
                dtype=torch.bfloat16,
            )
            for _ in range(2)
        )
        for _ in range(d["layers"])
    ]

    def fn():
        return model.step(tokens, cos, sin, caches, seqs, q_len, kind == "prefill")

    row = {"kind": kind, "size": size, "kv_len": ctx, "tokens": seqs * q_len}
    cuda = device == "cuda"

    with torch.inference_mode():
        for _ in range(args.warmup):
            fn()
        row["eager_ms"] = statistics.median(
            timed_ms(fn, args.iters, cuda) for _ in range(args.repeats)
        )
        if cuda:
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                fn()
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                fn()
            graph.replay()
            row["graph_ms"] = statistics.median(
                timed_ms(graph.replay, args.iters, cuda) for _ in range(args.repeats)
            )
            del graph
            acts = [torch.profiler.ProfilerActivity.CPU, torch.profiler.ProfilerActivity.CUDA]
            with torch.profiler.profile(activities=acts) as prof:
                fn()
                torch.cuda.synchronize()
            kernels = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
            row["kernels"] = len(kernels)
            row["gap_us_per_kernel"] = (row["eager_ms"] - row["graph_ms"]) * 1e3 / row["kernels"]
            for e in kernels:  # device time of each kernel of the eager step, by kind
                kind_ = kernel_kind(e.name)
                us = e.time_range.elapsed_us()
                row[f"kernel_{kind_}_ms"] = row.get(f"kernel_{kind_}_ms", 0.0) + us / 1e3
                names[(kind_, e.name[:120])] = names.get((kind_, e.name[:120]), 0.0) + us
    caches.clear()
    if cuda:
        torch.cuda.empty_cache()
    return row


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_decoder_args(ap)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/out/gpu_eager_step"))
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--decode-batches", default="1,8,64,256")
    ap.add_argument("--kv-len", type=int, default=1024)
    ap.add_argument("--prefill-tokens", default="128,512,2048,8192")
    args = ap.parse_args(argv)
    dims = decoder_dims(args)
    if dims is None:
        return 2
    gen = torch.Generator(device=args.device).manual_seed(0)
    model = Decoder(dims, args.device, gen)
    cases = [("decode", int(b)) for b in args.decode_batches.split(",")]
    cases += [("prefill", int(n)) for n in args.prefill_tokens.split(",")]
    rows, kernel_rows = [], []
    for kind, size in cases:
        names: dict = {}
        row = run_case(model, kind, size, args.kv_len, args.device, args, gen, names)
        for (k, name), us in names.items():
            kernel_rows.append({"kind": kind, "size": size, "class": k, "kernel": name, "us": us})
        rows.append(row)
        print(
            ", ".join(
                f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()
            ),
            flush=True,
        )
    args.out.mkdir(parents=True, exist_ok=True)
    keys = list(dict.fromkeys(k for r in rows for k in r))
    with (args.out / "eager_step.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)
    if kernel_rows:
        with (args.out / "kernels.csv").open("w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=["kind", "size", "class", "kernel", "us"])
            writer.writeheader()
            writer.writerows({**r, "us": f"{r['us']:.2f}"} for r in kernel_rows)
    info = torch.cuda.get_device_name(0) if args.device == "cuda" else "cpu"
    print(
        f"device: {info}; torch {torch.__version__}; dims {dims}; wrote {args.out / 'eager_step.csv'}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
