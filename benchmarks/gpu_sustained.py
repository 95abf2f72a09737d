"""Sustained versus short GEMM throughput on one GPU (run on the device tool's machine).

A prefill of thousands of tokens keeps a GPU's tensor cores busy for hundreds of milliseconds,
where a kernel benchmark (ours, AIConfigurator's) times a few calls after a warm-up. If the GPU
lowers its clocks under sustained load (power or thermal limits), long prefills run slower than
the tables say. This script measures that directly:

* ``burst``: one prefill-sized transformer layer's GEMMs (Llama-3.1-70B at TP 1, 8192 tokens:
  qkv, o, gate/up, down), timed per layer with CUDA events as a collector would: a 3-layer
  warm-up, then 10 layers;
* ``sustained``: the same layer back to back for ``--seconds`` (each layer timed), with the SM
  clock and power read by ``nvidia-smi`` every 100 ms in the background;
* ``duty``: 150 ms of those layers alternating with 150 ms of memory-bound copies (a decode-like
  phase), the layers timed, for ``--seconds``.

Writes ``$OUT/sustained_layers.csv`` (phase, elapsed s, layer ms), ``$OUT/sustained_smi.csv``
and prints a summary. Usage (on the GPU machine, from the repository root)::

    python3 benchmarks/gpu_sustained.py --seconds 8 --dtype bf16
"""

from __future__ import annotations

import argparse
import os
import subprocess
import time
from pathlib import Path

import torch

SHAPES = {  # (m, n, k) of Llama-3.1-70B's four projections for an 8192-token prefill at TP 1
    "qkv": (8192, 10240, 8192),
    "o": (8192, 8192, 8192),
    "gate_up": (8192, 57344, 8192),
    "down": (8192, 8192, 28672),
}


def make_layer(dtype: str):
    gen = torch.Generator(device="cuda").manual_seed(0)
    mats = []
    for m, n, k in SHAPES.values():
        a = torch.randn((m, k), generator=gen, device="cuda", dtype=torch.bfloat16)
        b = torch.randn((n, k), generator=gen, device="cuda", dtype=torch.bfloat16)
        if dtype == "fp8":
            a, b = a.to(torch.float8_e4m3fn), b.to(torch.float8_e4m3fn)
        mats.append((a, b))
    one = torch.ones((), device="cuda", dtype=torch.float32)

    def layer():
        for a, b in mats:
            if dtype == "fp8":
                torch._scaled_mm(a, b.t(), scale_a=one, scale_b=one, out_dtype=torch.bfloat16)
            else:
                a @ b.t()

    flops = sum(2.0 * m * n * k for m, n, k in SHAPES.values())
    return layer, flops


def timed_layers(layer, until: float, t0: float, phase: str, rows: list) -> None:
    """Run and time layers until ``until`` (perf_counter), appending (phase, elapsed, ms)."""
    pending = []
    while time.perf_counter() < until:
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        layer()
        e.record()
        pending.append((time.perf_counter() - t0, s, e))
        if len(pending) >= 8:  # keep the queue short so wall time tracks GPU time
            pending[-5][2].synchronize()
            for at, s0, e0 in pending[:-4]:
                rows.append((phase, at, s0.elapsed_time(e0)))
            pending = pending[-4:]
    torch.cuda.synchronize()
    rows.extend((phase, at, s0.elapsed_time(e0)) for at, s0, e0 in pending)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--dtype", choices=["bf16", "fp8"], default="bf16")
    ap.add_argument("--rest", type=float, default=5.0, help="idle seconds between phases")
    args = ap.parse_args()
    out = Path(os.environ.get("OUT", "/tmp/gpu_sustained_out"))
    out.mkdir(parents=True, exist_ok=True)
    smi = subprocess.Popen(
        [
            "nvidia-smi",
            "--query-gpu=timestamp,clocks.sm,clocks.mem,power.draw,temperature.gpu",
            "--format=csv",
            "-lms",
            "100",
        ],
        stdout=open(out / f"sustained_smi_{args.dtype}.csv", "w"),
        stderr=subprocess.DEVNULL,
    )
    try:
        layer, flops = make_layer(args.dtype)
        copy_src = torch.empty(2**28, device="cuda", dtype=torch.float32)
        copy_dst = torch.empty_like(copy_src)
        rows: list = []
        t0 = time.perf_counter()
        # burst: what a kernel collector sees
        for _ in range(3):
            layer()
        torch.cuda.synchronize()
        burst: list = []
        for _ in range(10):
            s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            s.record()
            layer()
            e.record()
            e.synchronize()
            burst.append(("burst", time.perf_counter() - t0, s.elapsed_time(e)))
        rows += burst
        time.sleep(args.rest)
        t1 = time.perf_counter()
        timed_layers(layer, t1 + args.seconds, t0, "sustained", rows)
        time.sleep(args.rest)
        t2 = time.perf_counter()
        while time.perf_counter() < t2 + args.seconds:
            timed_layers(layer, time.perf_counter() + 0.15, t0, "duty", rows)
            end = time.perf_counter() + 0.15
            while time.perf_counter() < end:
                copy_dst.copy_(copy_src)
                torch.cuda.synchronize()
    finally:
        time.sleep(0.3)
        smi.terminate()
    import csv

    with open(out / f"sustained_layers_{args.dtype}.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["phase", "elapsed_s", "layer_ms"])
        w.writerows(rows)
    print(torch.cuda.get_device_name(0), torch.__version__, args.dtype)
    for phase in ("burst", "sustained", "duty"):
        ms = sorted(r[2] for r in rows if r[0] == phase)
        if not ms:
            continue
        med = ms[len(ms) // 2]
        print(
            f"{phase:10s} layers {len(ms):5d}  median {med:8.3f} ms  "
            f"({flops / med / 1e9:7.1f} TFLOP/s)  p10 {ms[len(ms) // 10]:.3f}  p90 {ms[9 * len(ms) // 10]:.3f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
