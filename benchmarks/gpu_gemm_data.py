"""Does a GEMM's timing depend on the data in its weights? (run on the device tool's machine)

AIConfigurator's vLLM GEMM collector (``collector/vllm/collect_gemm.py``) builds
``RowParallelLinear`` layers and times ``forward`` on a random input without initialising the
bf16 weights (vLLM allocates them with ``torch.empty``; the collector's own comment leaves the
impact of random weights to evaluate), so the weights hold whatever fresh device memory holds,
typically zeros. A tensor core multiplying zeros draws less power, and a GPU at its power cap then
clocks higher. This script times ``x @ W.T`` (the ``F.linear`` layout) per shape with three
weights: random normal, zeros, and ``torch.empty`` taken first in a fresh process (as the
collector's are), each replayed from a CUDA graph over rotating inputs as ``perfdb collect`` times
its GEMMs, in bf16 and in fp8 (``torch._scaled_mm``, per-tensor scales).

Writes ``$OUT/gemm_data.csv`` (dtype, weights, m, n, k, latency_ms). Usage (on the GPU machine,
from the repository root)::

    python3 benchmarks/gpu_gemm_data.py
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import torch

from perfdb.collector import CollectConfig, _Timer

MS = (1, 64, 512, 1024, 2048, 8192)
NK = ((8192, 8192), (28672, 8192), (8192, 28672), (10240, 8192))


def main() -> int:
    out = Path(os.environ.get("OUT", "/tmp/gpu_gemm_data_out"))
    out.mkdir(parents=True, exist_ok=True)
    fp8 = torch.float8_e4m3fn
    one = torch.ones((), device="cuda", dtype=torch.float32)
    # the collector's weights: the first allocations of this process, never written
    empty = {(n, k): torch.empty((n, k), device="cuda", dtype=torch.bfloat16) for n, k in NK}
    empty8 = {(n, k): torch.empty((n, k), device="cuda", dtype=fp8) for n, k in NK}
    nonzero = {key: int(torch.count_nonzero(w)) for key, w in empty.items()}
    gen = torch.Generator(device="cuda").manual_seed(0)
    timer = _Timer(torch, "cuda", CollectConfig(system="h200_sxm", ops=("gemm",)))
    rows = []
    for n, k in NK:
        weights = {
            "random": torch.randn((n, k), generator=gen, device="cuda", dtype=torch.bfloat16),
            "zeros": torch.zeros((n, k), device="cuda", dtype=torch.bfloat16),
            "empty": empty[(n, k)],
        }
        for m in MS:
            sets = timer.sets_for(2 * (m * k + n * k) + 2 * m * n)
            xs = [
                torch.randn((m, k), generator=gen, device="cuda", dtype=torch.bfloat16)
                for _ in range(sets)
            ]
            for name, w in weights.items():
                ms = timer([lambda x=x, w=w: x @ w.t() for x in xs])
                rows.append(("bf16", name, m, n, k, ms))
                w8 = empty8[(n, k)] if name == "empty" else w.to(fp8)
                x8 = [x.to(fp8) for x in xs]
                ms8 = timer(
                    [
                        lambda x=x, w=w8: torch._scaled_mm(
                            x, w.t(), scale_a=one, scale_b=one, out_dtype=torch.bfloat16
                        )
                        for x in x8
                    ]
                )
                rows.append(("fp8", name, m, n, k, ms8))
            del xs
    with open(out / "gemm_data.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["dtype", "weights", "m", "n", "k", "latency_ms"])
        w.writerows(rows)
    print(torch.cuda.get_device_name(0), torch.__version__)
    print("non-zero elements in the never-written weights:", nonzero)
    for dtype in ("bf16", "fp8"):
        for m in MS:
            r = {
                name: sum(x[5] for x in rows if x[0] == dtype and x[1] == name and x[2] == m)
                for name in ("random", "zeros", "empty")
            }
            print(
                f"{dtype} m={m:5d}  zeros/random {r['zeros'] / r['random']:.3f}  "
                f"empty/random {r['empty'] / r['random']:.3f}"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
