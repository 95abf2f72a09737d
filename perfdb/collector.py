"""Measure kernel latencies on this machine with PyTorch and store them in our format.

What is measured (size sweeps below; ``--quick`` uses tiny ones that finish in seconds on a CPU):

- GEMM: ``x @ w.T`` with ``x`` ``[m, k]`` and the weight ``w`` ``[n, k]`` (an engine's linear layer) in bf16;
- context attention: ``torch.nn.functional.scaled_dot_product_attention`` with ``is_causal``
  over ``isl`` tokens (GQA through ``enable_gqa``);
- generation attention: SDPA of one query token against ``kv_len`` keys;
- all-reduce: ``torch.distributed.all_reduce`` across ``world_size`` processes (NCCL on GPUs,
  one per process; gloo on CPU);
- MoE: one expert layer on one GPU as a grouped-GEMM engine runs it: the routed tokens gathered
  into expert order, ``torch._grouped_mm`` for the gate/up projection (bf16; CUTLASS on Hopper),
  SiLU-and-multiply, ``torch._grouped_mm`` for the down projection, the weighted scatter back to
  token order. Routing is ``balanced`` (each token picks ``topk`` distinct experts uniformly at
  random, drawn once per point outside the timed call, as the bundled tables' collectors fix
  their routing); expert-parallel degree 1, the intermediate size split ``moe_tp_size`` ways.

Timing: ``warmup`` untimed calls, then ``iters`` timed calls; on CUDA with CUDA events (device
time, averaged), on CPU with ``time.perf_counter``; the median of ``repeats`` such averages is
stored. Output: ``<out>/<system>/system.yaml`` (spec), ``<out>/<system>/torch/<torch version>/``
(GEMM and attention tables + ``manifest.yaml``), ``<out>/<system>/nccl/<label>/nccl_all_reduce.parquet``
and ``<out>/<system>/PROVENANCE.md``; load with ``load_system(system, backend="torch", root=out)``.

For an unknown system the hardware spec is *measured* (best GEMM FLOP/s, copy bandwidth,
all-reduce bus bandwidth) and says so in its ``sources``; for a known one (``h100_sxm``...) the
datasheet spec is kept.
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import pandas as pd
import yaml
from tqdm import tqdm

from perfdb.specs import BUILTIN_SPECS, HardwareSpec
from perfdb.tables import SCHEMAS, write_table

#: The sweeps ``perfdb collect`` can run (see :class:`CollectConfig`).
OPS = ("gemm", "attention", "allreduce", "moe")


@dataclass(frozen=True)
class CollectConfig:
    """What to measure and how.

    Parameters
    ----------
    system : str
        Name to store the measurements under (``[a-z0-9_]+``).
    device : {"cpu", "cuda"}
        Where to run.
    quick : bool
        Tiny sweeps (a smoke test; seconds on a CPU).
    world_size : int
        Processes (GPUs) in the all-reduce group; 1 skips the all-reduce sweep.
    warmup, iters, repeats : int
        Untimed calls, timed calls per average (at least one per rotating input set),
        averages per point (median kept).
    seed : int
        Seed of the random input tensors.
    graphs : bool
        On CUDA, time the calls replayed from a CUDA graph (no host launch gaps).
    gemm_dtypes : tuple of str
        GEMM precisions to sweep: ``bf16`` (always first; it sets the measured FLOP/s) and
        ``fp8`` (e4m3 with per-tensor scales, through ``torch._scaled_mm``).
    ops : tuple of str
        Which sweeps to run, from ``gemm``, ``attention``, ``allreduce`` (only with
        ``world_size`` > 1) and ``moe``. Without ``gemm`` the system must be a known one
        (its datasheet spec is kept; an unknown system's spec needs the measured GEMM FLOP/s).
    """

    system: str
    device: str = "cuda"
    quick: bool = False
    world_size: int = 2
    warmup: int = 3
    iters: int = 10
    repeats: int = 3
    seed: int = 0
    graphs: bool = True
    gemm_dtypes: tuple[str, ...] = ("bf16",)
    ops: tuple[str, ...] = OPS

    def __post_init__(self) -> None:
        if not self.system or not all(ch.isalnum() or ch in "_-." for ch in self.system):
            raise ValueError(f"CollectConfig.system must be a simple name, got {self.system!r}")
        if self.device not in ("cpu", "cuda"):
            raise ValueError(f"CollectConfig.device must be 'cpu' or 'cuda', got {self.device!r}")
        for name in ("world_size", "iters", "repeats"):
            if getattr(self, name) < 1:
                raise ValueError(f"CollectConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.warmup < 0:
            raise ValueError(f"CollectConfig.warmup must be >= 0, got {self.warmup}")
        dtypes = tuple(self.gemm_dtypes)
        if not dtypes or dtypes[0] != "bf16" or not set(dtypes) <= {"bf16", "fp8"}:
            raise ValueError(
                "CollectConfig.gemm_dtypes must start with 'bf16' and hold only 'bf16' and "
                f"'fp8', got {self.gemm_dtypes!r}"
            )
        object.__setattr__(self, "gemm_dtypes", tuple(dict.fromkeys(dtypes)))
        ops = tuple(dict.fromkeys(self.ops))
        if not ops or not set(ops) <= set(OPS):
            raise ValueError(
                f"CollectConfig.ops must be a non-empty subset of {OPS}, got {self.ops!r}"
            )
        if "gemm" not in ops and self.system not in BUILTIN_SPECS:
            raise ValueError(
                f"system {self.system!r} is not a known one, so its spec is measured from the GEMM "
                f"sweep: add 'gemm' to ops (known systems: {sorted(BUILTIN_SPECS)})"
            )
        object.__setattr__(self, "ops", ops)

    def sweeps(self) -> dict[str, Any]:
        """The size sweeps."""
        if self.quick:
            return {
                "gemm_m": [1, 8, 32],
                "gemm_nk": [64, 128],
                "attn_batch": [1, 2],
                "attn_isl": [16, 32],
                "attn_heads": [2, 4],
                "attn_kv_heads": [2],
                "attn_head_dim": 64,
                "gen_kv_len": [16, 64],
                "allreduce_bytes": [1024, 16384, 262144],
                # hidden, inter, topk, experts, moe_tp
                "moe_shapes": [[64, 64, 2, 4, 1], [64, 128, 2, 8, 2]],
                "moe_tokens": [1, 16, 64],
            }
        return {
            "gemm_m": [1, 8, 32, 64, 128, 512, 1024, 2048, 8192],
            "gemm_nk": [1024, 2048, 4096, 8192, 16384],
            "attn_batch": [1, 4, 16],
            "attn_isl": [128, 512, 2048, 4096, 8192],
            "attn_heads": [8, 16, 32],
            "attn_kv_heads": [8],
            "attn_head_dim": 128,
            "gen_kv_len": [128, 512, 2048, 8192],
            "allreduce_bytes": [2**p for p in range(10, 29, 2)],
            # (hidden, inter, topk, experts, moe_tp): points the bundled tables also hold
            # (Qwen3-30B-A3B, Qwen3-235B-A22B and Mixtral-8x7B layers at several TP splits)
            "moe_shapes": [
                [2048, 768, 8, 128, 1],
                [2048, 768, 8, 128, 4],
                [4096, 1536, 8, 128, 1],
                [4096, 1536, 8, 128, 4],
                [4096, 1536, 8, 128, 8],
                [4096, 14336, 2, 8, 1],
                [4096, 14336, 2, 8, 4],
            ],
            "moe_tokens": [1, 8, 32, 128, 512, 2048, 8192],
        }


def _import_torch():
    try:
        import torch
    except ImportError:
        raise ValueError(
            "perfdb collect needs PyTorch: pip install 'causal-tuner[collect]' "
            "(or torch==2.13.0 for a local CPU build)"
        ) from None
    return torch


class _Timer:
    """Times a kernel over rotating input sets (so repeated calls do not hit a warm L2).

    On CUDA the timed calls are captured once in a CUDA graph and the graph is replayed, as a
    serving engine does for its steps: the time is the kernels', not the host's launch gaps
    (``graphs=False``, or a kernel that cannot be captured, times eager launches instead).
    """

    def __init__(self, torch, device: str, config: CollectConfig) -> None:
        self.torch, self.device, self.config = torch, device, config
        self.eager_fallbacks = 0
        self.l2_bytes = 0
        if device == "cuda":
            props = torch.cuda.get_device_properties(0)
            self.l2_bytes = int(getattr(props, "L2_cache_size", 0) or 50 * 2**20)

    def sets_for(self, bytes_per_set: int) -> int:
        """Input sets to rotate through: together at least twice the L2 (one on CPU)."""
        if not self.l2_bytes:
            return 1
        return int(min(256, max(1, -(-2 * self.l2_bytes // max(bytes_per_set, 1)))))

    def __call__(self, fns: Callable[[], Any] | Sequence[Callable[[], Any]]) -> float:
        """Median over repeats of the mean time of one call, in ms.

        ``fns`` is one call or one per input set; each timed run goes through all of them
        (``iters`` calls at least).
        """
        cfg = self.config
        fns = [fns] if callable(fns) else list(fns)
        seq = [fns[i % len(fns)] for i in range(max(cfg.iters, len(fns)))]
        if self.device == "cuda" and cfg.graphs:
            try:
                return self._graph_time(fns, seq)
            except RuntimeError:
                self.eager_fallbacks += 1
                self.torch.cuda.synchronize()
        for i in range(cfg.warmup):
            fns[i % len(fns)]()
        means = []
        for _ in range(cfg.repeats):
            means.append(self._elapsed_ms(lambda: [f() for f in seq]) / len(seq))
        return float(statistics.median(means))

    def _elapsed_ms(self, run: Callable[[], Any]) -> float:
        torch = self.torch
        if self.device != "cuda":
            t0 = time.perf_counter()
            run()
            return (time.perf_counter() - t0) * 1e3
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize()
        start.record()
        run()
        end.record()
        torch.cuda.synchronize()
        return start.elapsed_time(end)

    def _graph_time(self, fns: list, seq: list) -> float:
        torch, cfg = self.torch, self.config
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # warm-up off the capture stream, as torch asks
            for i in range(max(cfg.warmup, len(fns))):
                fns[i % len(fns)]()
        torch.cuda.current_stream().wait_stream(side)
        torch.cuda.synchronize()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            for f in seq:
                f()
        graph.replay()
        means = [self._elapsed_ms(graph.replay) / len(seq) for _ in range(cfg.repeats)]
        del graph
        return float(statistics.median(means))


def _randn(torch, shape: tuple[int, ...], device: str, gen):
    return torch.randn(shape, generator=gen, device=device, dtype=torch.bfloat16)


def _gemm_calls(torch, dtype: str, m: int, n: int, k: int, sets: int, device: str, gen):
    """``sets`` calls of one GEMM on fresh inputs: bf16 ``a @ w.T`` with the weight stored
    ``[n, k]``, the layout of an engine's linear layer (``F.linear``; cuBLAS picks other kernels
    for ``[k, n]``: 5-10% slower at m >= 1024 on an H200, benchmarks/RESULTS.md), or fp8 (e4m3, per-tensor
    scales, bf16 out) through ``torch._scaled_mm`` (cuBLASLt)."""
    if dtype == "bf16":
        pairs = [
            (_randn(torch, (m, k), device, gen), _randn(torch, (n, k), device, gen))
            for _ in range(sets)
        ]
        return [lambda a=a, w=w: a @ w.t() for a, w in pairs]
    fp8 = torch.float8_e4m3fn
    scale = torch.ones((), device=device, dtype=torch.float32)
    pairs = [
        (
            _randn(torch, (m, k), device, gen).to(fp8),
            _randn(torch, (n, k), device, gen).to(fp8).t(),  # column-major, as cuBLASLt wants
        )
        for _ in range(sets)
    ]
    return [
        lambda a=a, b=b: torch._scaled_mm(
            a, b, scale_a=scale, scale_b=scale, out_dtype=torch.bfloat16
        )
        for a, b in pairs
    ]


def _measure_gemm(
    torch, timer: _Timer, device: str, sweeps: dict, gen, dtypes: tuple[str, ...] = ("bf16",)
) -> tuple[pd.DataFrame, int]:
    """The GEMM table, and the number of (dtype, shape) points the backend refused."""
    rows, refused = [], 0
    shapes = [
        (d, m, n, k)
        for d in dtypes
        for m in sweeps["gemm_m"]
        for n in sweeps["gemm_nk"]
        for k in sweeps["gemm_nk"]
    ]
    for dtype, m, n, k in tqdm(shapes, desc="gemm", unit="shape"):
        width = 2 if dtype == "bf16" else 1
        sets = timer.sets_for(width * (m * k + k * n) + 2 * m * n)
        try:
            calls = _gemm_calls(torch, dtype, m, n, k, sets, device, gen)
            ms = timer(calls)
        except RuntimeError:  # e.g. a shape cuBLASLt's fp8 path does not take
            refused += 1
            continue
        rows.append({"dtype": dtype, "m": m, "n": n, "k": k, "latency_ms": ms})
        del calls
    return pd.DataFrame(rows), refused


def _moe_calls(torch, shape: Sequence[int], tokens: int, sets: int, device, gen):
    """``sets`` calls of one MoE layer (see the module notes) on fresh weights and tokens."""
    hidden, inter, topk, experts, tp = shape
    local = inter // tp
    silu = torch.nn.functional.silu
    calls = []
    for _ in range(sets):
        # balanced routing: topk distinct experts per token, uniformly at random
        scores = torch.rand((tokens, experts), generator=gen, device=device)
        ids = scores.topk(topk, dim=1).indices.flatten()
        order = torch.argsort(ids, stable=True)
        offs = torch.cumsum(torch.bincount(ids, minlength=experts), 0).to(torch.int32)
        src = order // topk  # the token of each routed pair, in expert order
        gate = torch.rand((tokens * topk, 1), generator=gen, device=device).to(torch.bfloat16)
        x = _randn(torch, (tokens, hidden), device, gen)
        # weights stored [experts, out, in] and passed transposed (column-major), as the
        # grouped GEMM kernels take them
        w1 = _randn(torch, (experts, 2 * local, hidden), device, gen).transpose(-2, -1)
        w2 = _randn(torch, (experts, hidden, local), device, gen).transpose(-2, -1)

        def call(x=x, w1=w1, w2=w2, offs=offs, src=src, gate=gate):
            h = torch._grouped_mm(x.index_select(0, src), w1, offs=offs)
            y = torch._grouped_mm(silu(h[:, :local]) * h[:, local:], w2, offs=offs)
            return torch.zeros_like(x).index_add_(0, src, y * gate)

        calls.append(call)
    return calls


def _measure_moe(torch, timer: _Timer, device: str, sweeps: dict, gen) -> tuple[pd.DataFrame, int]:
    """The MoE table (bf16, balanced routing), and the number of points the backend refused."""
    rows, refused = [], 0
    points = [(s, t) for s in sweeps["moe_shapes"] for t in sweeps["moe_tokens"]]
    for shape, tokens in tqdm(points, desc="moe", unit="shape"):
        hidden, inter, topk, experts, tp = shape
        weight_bytes = 2 * 3 * experts * hidden * (inter // tp)
        sets = timer.sets_for(weight_bytes + 2 * tokens * hidden * (1 + topk))
        try:
            calls = _moe_calls(torch, shape, tokens, sets, device, gen)
            ms = timer(calls)
        except (RuntimeError, NotImplementedError):  # a shape the grouped GEMM does not take
            refused += 1
            continue
        rows.append(
            {
                "dtype": "bf16",
                "distribution": "balanced",
                "hidden_size": hidden,
                "inter_size": inter,
                "topk": topk,
                "num_experts": experts,
                "moe_tp_size": tp,
                "moe_ep_size": 1,
                "num_tokens": tokens,
                "latency_ms": ms,
            }
        )
        del calls
    return pd.DataFrame(rows), refused


def _measure_attention(
    torch, timer: _Timer, device: str, sweeps: dict, gen
) -> tuple[pd.DataFrame, pd.DataFrame]:
    sdpa = torch.nn.functional.scaled_dot_product_attention
    d = sweeps["attn_head_dim"]
    ctx, dec = [], []
    combos = [
        (b, h, kvh)
        for b in sweeps["attn_batch"]
        for h in sweeps["attn_heads"]
        for kvh in sweeps["attn_kv_heads"]
        if h % kvh == 0
    ]
    common = {"dtype": "bf16", "kv_dtype": "bf16", "window_size": 0, "head_dim": d}

    def time_sdpa(b, h, kvh, q_len, kv_len, causal):
        sets = [
            (
                _randn(torch, (b, h, q_len, d), device, gen),
                _randn(torch, (b, kvh, kv_len, d), device, gen),
            )
            for _ in range(timer.sets_for(2 * b * d * (2 * h * q_len + 2 * kvh * kv_len)))
        ]
        gqa = kvh != h
        return timer(
            [lambda q=q, kv=kv: sdpa(q, kv, kv, is_causal=causal, enable_gqa=gqa) for q, kv in sets]
        )

    for b, h, kvh in tqdm(combos, desc="attention", unit="shape"):
        for isl in sweeps["attn_isl"]:
            ctx.append(
                {
                    **common,
                    "num_kv_heads": kvh,
                    "prefix_len": 0,
                    "batch_size": b,
                    "isl": isl,
                    "num_heads": h,
                    "latency_ms": time_sdpa(b, h, kvh, isl, isl, causal=True),
                }
            )
        for kv_len in sweeps["gen_kv_len"]:
            dec.append(
                {
                    **common,
                    "num_kv_heads": kvh,
                    "batch_size": b,
                    "kv_len": kv_len,
                    "num_heads": h,
                    "latency_ms": time_sdpa(b, h, kvh, 1, kv_len, causal=False),
                }
            )
    return pd.DataFrame(ctx), pd.DataFrame(dec)


def _allreduce_worker(
    rank: int,
    world_size: int,
    device: str,
    init_file: str,
    config: dict,
    sizes: list[int],
    out_file: str,
) -> None:
    import torch
    import torch.distributed as dist

    backend = "nccl" if device == "cuda" else "gloo"
    dist.init_process_group(
        backend, init_method=f"file://{init_file}", rank=rank, world_size=world_size
    )
    try:
        dev = f"cuda:{rank}" if device == "cuda" else "cpu"
        if device == "cuda":
            torch.cuda.set_device(rank)
        # eager: NCCL calls are not captured in a CUDA graph here
        cfg = CollectConfig(**{**config, "graphs": False})
        timer = _Timer(torch, device, cfg)
        rows = []
        for size in sizes:
            x = torch.ones(size // 2, dtype=torch.bfloat16, device=dev)

            def op(x=x):
                dist.all_reduce(x)

            dist.barrier()
            ms = timer(op)
            # the slowest rank defines the collective's time
            t = torch.tensor([ms], dtype=torch.float64, device=dev)
            dist.all_reduce(t, op=dist.ReduceOp.MAX)
            rows.append(
                {
                    "dtype": "bf16",
                    "num_gpus": world_size,
                    "message_bytes": size,
                    "latency_ms": float(t.item()),
                }
            )
        if rank == 0:
            pd.DataFrame(rows).to_parquet(out_file, index=False)
    finally:
        dist.destroy_process_group()


def _measure_allreduce(torch, config: CollectConfig, sizes: list[int]) -> pd.DataFrame:
    import torch.multiprocessing as mp

    if config.device == "cuda" and torch.cuda.device_count() < config.world_size:
        raise ValueError(
            f"all-reduce over {config.world_size} GPUs needs {config.world_size} visible GPUs, "
            f"found {torch.cuda.device_count()} (use --world-size)"
        )
    with tempfile.TemporaryDirectory() as tmp:
        init_file = os.path.join(tmp, "init")
        out_file = os.path.join(tmp, "allreduce.parquet")
        mp.start_processes(
            _allreduce_worker,
            args=(config.world_size, config.device, init_file, asdict(config), sizes, out_file),
            nprocs=config.world_size,
            join=True,
            start_method="spawn",
        )
        return pd.read_parquet(out_file)


def _ceilings(torch, config: CollectConfig, gemm: pd.DataFrame) -> dict[str, float]:
    """The measured ceilings: best GEMM FLOP/s of the sweep per precision, copy bandwidth."""
    rate = 2.0 * gemm.m * gemm.n * gemm.k / (gemm.latency_ms * 1e-3)
    best = {f"{d}_gemm_flops": float(r.max()) for d, r in rate.groupby(gemm.dtype)}
    n = 1 << (22 if config.quick else 28)  # fp32 elements: 1 GiB on a GPU, far over any L2
    src = torch.rand(n, dtype=torch.float32, device=config.device)
    dst = torch.empty_like(src)
    # eager: a copy captured in a CUDA graph becomes a memcpy node, which an H200 ran at
    # 2.8 TB/s against 4.2 TB/s launched eagerly (benchmarks/RESULTS.md, perfdb collect on GPU)
    eager = replace(config, graphs=False)
    ms = _Timer(torch, config.device, eager)(lambda: dst.copy_(src))
    return {**best, "copy_bw_bytes_s": 2.0 * n * 4 / (ms * 1e-3)}


def _measured_spec(
    torch, config: CollectConfig, ceilings: dict[str, float], allreduce: pd.DataFrame | None
) -> HardwareSpec:
    if config.system in BUILTIN_SPECS:
        return BUILTIN_SPECS[config.system]
    bw = ceilings["copy_bw_bytes_s"]
    if config.device == "cuda":
        props = torch.cuda.get_device_properties(0)
        capacity = int(props.total_memory)
        name = props.name
        gpus = torch.cuda.device_count()
    else:
        capacity = int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
        name = platform.processor() or platform.machine()
        gpus = 1
    link = bw
    link_src = "not measured (no all-reduce run): set to the copy bandwidth"
    if allreduce is not None and len(allreduce):
        top = allreduce.sort_values("message_bytes").iloc[-1]
        w = float(top.num_gpus)
        link = 2.0 * (w - 1.0) / w * float(top.message_bytes) / (float(top.latency_ms) * 1e-3)
        link_src = "measured by perfdb collect: all-reduce bus bandwidth at the largest message"
    measured = f"measured by perfdb collect on {name}"
    return HardwareSpec(
        name=config.system,
        mem_capacity_bytes=capacity,
        mem_bw_bytes_s=bw,
        tensor_flops={
            key.removesuffix("_gemm_flops"): value
            for key, value in ceilings.items()
            if key.endswith("_gemm_flops")
        },
        nvlink_bw_bytes_s=link,
        internode_bw_bytes_s=link,
        gpus_per_node=max(gpus, 1),
        sources={
            "mem_capacity_bytes": f"{measured} (device/physical memory size)",
            "mem_bw_bytes_s": f"{measured}: fp32 copy, read + write bytes / time",
            "tensor_flops": f"{measured}: best GEMM FLOP/s of the sweep per precision (a lower bound)",
            "nvlink_bw_bytes_s": link_src,
            "internode_bw_bytes_s": "not measured: set equal to the intra-node figure",
            "gpus_per_node": f"{measured}: visible devices",
        },
        mem_bw_efficiency=1.0,  # the bandwidth is already an achieved one
    )


def collect(config: CollectConfig, out: str | Path) -> Path:
    """Run the sweeps and write a loadable database for ``config.system`` under ``out``.

    Returns
    -------
    Path
        The system folder written.

    Raises
    ------
    ValueError
        If torch is missing, CUDA is requested but unavailable, or too few GPUs are visible.
    """
    torch = _import_torch()
    if config.device == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            "--device cuda requested but torch.cuda.is_available() is False (use --device cpu)"
        )
    sweeps = config.sweeps()
    gen = torch.Generator(device=config.device).manual_seed(config.seed)
    timer = _Timer(torch, config.device, config)
    ops = set(config.ops)
    gemm, refused = (
        _measure_gemm(torch, timer, config.device, sweeps, gen, config.gemm_dtypes)
        if "gemm" in ops
        else (None, 0)
    )
    ctx, dec = (
        _measure_attention(torch, timer, config.device, sweeps, gen)
        if "attention" in ops
        else (None, None)
    )
    moe, moe_refused = (
        _measure_moe(torch, timer, config.device, sweeps, gen) if "moe" in ops else (None, 0)
    )
    allreduce = (
        _measure_allreduce(torch, config, sweeps["allreduce_bytes"])
        if config.world_size > 1 and "allreduce" in ops
        else None
    )
    ceilings = _ceilings(torch, config, gemm) if gemm is not None else {}
    spec = _measured_spec(torch, config, ceilings, allreduce)

    version = str(torch.__version__).split("+")[0]
    sys_dir = Path(out) / config.system
    table_dir = sys_dir / "torch" / version
    written = {}
    tables = {"gemm": gemm, "context_attention": ctx, "generation_attention": dec, "moe": moe}
    for name, frame in tables.items():
        if frame is not None and len(frame):
            written[name] = write_table(frame, SCHEMAS[name], table_dir / f"{name}.parquet")
    comm_label = None
    if allreduce is not None:
        comm_label = (
            "nccl-" + ".".join(map(str, torch.cuda.nccl.version()))
            if config.device == "cuda"
            else f"gloo-torch{version}"
        )
        written["nccl_all_reduce"] = write_table(
            allreduce,
            SCHEMAS["nccl_all_reduce"],
            sys_dir / "nccl" / comm_label / "nccl_all_reduce.parquet",
        )
    device_name = (
        torch.cuda.get_device_name(0)
        if config.device == "cuda"
        else (platform.processor() or platform.machine())
    )
    when = _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
    provenance = {
        "collected_at": when,
        "tool": "causal-tuner perfdb collect",
        "config": {
            **asdict(config),
            "gemm_dtypes": list(config.gemm_dtypes),
            "ops": list(config.ops),
        },
        "sweeps": sweeps,
        "torch": str(torch.__version__),
        "device": device_name,
        "timing": (
            "CUDA events around CUDA-graph replays (device time; all-reduce eager)"
            if config.graphs
            else "CUDA events (device time, eager launches)"
        )
        if config.device == "cuda"
        else "time.perf_counter (host)",
        "rotating_input_sets": f"enough to cover 2x the L2 ({timer.l2_bytes} bytes), at most 256"
        if timer.l2_bytes
        else "one (CPU)",
        "eager_fallbacks": timer.eager_fallbacks,
        "gemm_points_refused": refused,
        "moe_points_refused": moe_refused,
        "ops": list(config.ops),
        "measured_ceilings": ceilings,
        "host": platform.node(),
        "python": platform.python_version(),
        "rows": written,
    }
    manifest = {
        "system": config.system,
        "backend": "torch",
        "version": version,
        "provenance": provenance,
    }
    (table_dir / "manifest.yaml").write_text(yaml.safe_dump(manifest, sort_keys=False))
    doc = {"spec": spec.to_dict(), "current": {"torch": version}, "nccl_version": comm_label}
    (sys_dir / "system.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    (sys_dir / "PROVENANCE.md").write_text(
        f"# {config.system}: measured by `causal-tuner perfdb collect`\n\n"
        f"- when: {when}\n- device: {device_name} ({config.device}), torch {torch.__version__}\n"
        f"- timing: {provenance['timing']}; warm-up {config.warmup}, {config.iters} timed calls, "
        f"median of {config.repeats} averages\n- rows: {written}\n"
        f"- hardware spec sources: see system.yaml (`sources`)\n"
    )
    return sys_dir
