"""Render a chosen configuration as launch commands for vLLM, SGLang and TensorRT-LLM.

* :func:`vllm_args`: arguments of ``vllm serve`` (checked with vLLM's own parser by
  :func:`check_vllm_args` when vLLM is importable, in this interpreter or a given one);
* :func:`sglang_args`: arguments of ``python -m sglang.launch_server``;
* :func:`trtllm_yaml`: the ``--extra_llm_api_options`` YAML of ``trtllm-serve`` (plus
  :func:`trtllm_args` for its command line).

Flag spellings follow vLLM 0.11+, SGLang 0.5 and TensorRT-LLM 1.x.
"""

from __future__ import annotations

import importlib.util
import json
import shlex
import subprocess
from dataclasses import dataclass, field

import yaml

from simulator.analytical import BatchingConfig
from simulator.parallel import ParallelConfig

_VLLM_QUANT = {"fp8": "fp8", "fp8_block": "fp8", "fp4": "modelopt_fp4", "int4": None, "bf16": None}
_SGLANG_QUANT = {
    "fp8": "fp8",
    "fp8_block": "fp8",
    "fp4": "modelopt_fp4",
    "int4": None,
    "bf16": None,
}


@dataclass(frozen=True)
class LaunchConfig:
    """Everything a launch command needs for one worker.

    Parameters
    ----------
    model : str
        Hugging Face id or local path served.
    parallel : ParallelConfig
        Worker layout.
    batching : BatchingConfig
        Scheduler knobs.
    dtype : str
        Precision name (``bf16``, ``fp8``, ``fp4``...); ``bf16`` means the checkpoint as is.
    kv_cache_dtype : str
        ``bf16`` (engine default) or ``fp8``.
    port : int
        HTTP port.
    vllm_env : dict
        Environment variables ``vllm serve`` needs to run the kernels the model priced
        (:func:`simulator.models.vllm_env`).
    """

    model: str
    parallel: ParallelConfig
    batching: BatchingConfig
    dtype: str = "bf16"
    kv_cache_dtype: str = "bf16"
    port: int = 8000
    vllm_env: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.model:
            raise ValueError("LaunchConfig.model must be a non-empty model id or path")
        if self.kv_cache_dtype not in ("bf16", "fp8"):
            raise ValueError(f"kv_cache_dtype must be 'bf16' or 'fp8', got {self.kv_cache_dtype!r}")
        if not 0 < self.port < 65536:
            raise ValueError(f"port must be in 1..65535, got {self.port}")


def vllm_args(cfg: LaunchConfig) -> list[str]:
    """``vllm serve`` arguments (model first) for ``cfg``.

    Attention-DP maps to ``--data-parallel-size`` with ``--enable-expert-parallel`` (vLLM's
    wide-EP layout); MoE expert parallelism under TP to ``--enable-expert-parallel``.
    """
    p, b = cfg.parallel, cfg.batching
    args = [
        cfg.model,
        "--port",
        str(cfg.port),
        "--tensor-parallel-size",
        str(p.tp),
        "--pipeline-parallel-size",
        str(p.pp),
    ]
    if p.attention_dp > 1:
        args += ["--data-parallel-size", str(p.attention_dp)]
    if p.moe_ep > 1:
        args.append("--enable-expert-parallel")
    args += [
        "--max-num-seqs",
        str(b.max_num_seqs),
        "--max-num-batched-tokens",
        str(b.max_num_batched_tokens),
        "--gpu-memory-utilization",
        f"{b.gpu_memory_utilization:g}",
        "--enable-chunked-prefill" if b.chunked_prefill else "--no-enable-chunked-prefill",
    ]
    # vLLM schedules asynchronously by default in recent releases (older ones need the flag); it cannot
    # with pipeline parallelism, and the model prices that case synchronously
    if not b.async_scheduling:
        args.append("--no-async-scheduling")
    elif p.pp == 1:
        args.append("--async-scheduling")
    quant = _VLLM_QUANT.get(cfg.dtype)
    if quant:
        args += ["--quantization", quant]
    if cfg.kv_cache_dtype == "fp8":
        args += ["--kv-cache-dtype", "fp8"]
    if not b.cuda_graphs:
        args.append("--enforce-eager")
    elif b.capture_sizes:
        args += ["--max-cudagraph-capture-size", str(max(b.capture_sizes))]
    if b.speculative_tokens:
        spec = {"method": "mtp", "num_speculative_tokens": b.speculative_tokens}
        args += ["--speculative-config", json.dumps(spec)]
    return args


def sglang_args(cfg: LaunchConfig) -> list[str]:
    """``python -m sglang.launch_server`` arguments. SGLang's ``--tp-size`` counts every GPU of
    the worker's stage (attention-DP ranks included); ``--dp-size`` with
    ``--enable-dp-attention`` splits attention."""
    p, b = cfg.parallel, cfg.batching
    args = [
        "--model-path",
        cfg.model,
        "--port",
        str(cfg.port),
        "--tp-size",
        str(p.tp * p.attention_dp),
    ]
    if p.pp > 1:
        args += ["--pp-size", str(p.pp)]
    if p.attention_dp > 1:
        args += ["--dp-size", str(p.attention_dp), "--enable-dp-attention"]
    if p.moe_ep > 1:
        args += ["--ep-size", str(p.moe_ep)]
    args += [
        "--max-running-requests",
        str(b.max_num_seqs),
        "--chunked-prefill-size",
        str(b.max_num_batched_tokens if b.chunked_prefill else -1),
        "--mem-fraction-static",
        f"{b.gpu_memory_utilization:g}",
    ]
    if b.mixed_batching:
        args.append("--enable-mixed-chunk")
    if not b.async_scheduling:
        args.append("--disable-overlap-schedule")
    if b.scheduler_recv_interval > 1:
        args += ["--scheduler-recv-interval", str(b.scheduler_recv_interval)]
    quant = _SGLANG_QUANT.get(cfg.dtype)
    if quant:
        args += ["--quantization", quant]
    if cfg.kv_cache_dtype == "fp8":
        args += ["--kv-cache-dtype", "fp8_e4m3"]
    if not b.cuda_graphs:
        args.append("--disable-cuda-graph")
    elif b.capture_sizes:
        args += ["--cuda-graph-max-bs", str(max(b.capture_sizes))]
    if b.speculative_tokens:
        # SGLang runs DeepSeek's MTP module as an EAGLE draft head (a chain: top-1 per step)
        k = b.speculative_tokens
        args += [
            "--speculative-algorithm",
            "EAGLE",
            "--speculative-num-steps",
            str(k),
            "--speculative-eagle-topk",
            "1",
            "--speculative-num-draft-tokens",
            str(k + 1),
        ]
    return args


def trtllm_options(cfg: LaunchConfig) -> dict:
    """The LLM-API options ``trtllm-serve`` reads from ``--extra_llm_api_options``."""
    p, b = cfg.parallel, cfg.batching
    opts: dict = {
        "tensor_parallel_size": p.tp * p.attention_dp,
        "pipeline_parallel_size": p.pp,
        "moe_expert_parallel_size": p.moe_ep,
        "moe_tensor_parallel_size": p.moe_tp,
        "enable_attention_dp": p.attention_dp > 1,
        "max_batch_size": b.max_num_seqs,
        "max_num_tokens": b.max_num_batched_tokens,
        "enable_chunked_prefill": b.chunked_prefill,
        "disable_overlap_scheduler": not b.async_scheduling,
        "kv_cache_config": {
            "free_gpu_memory_fraction": round(b.gpu_memory_utilization, 3),
            "dtype": "fp8" if cfg.kv_cache_dtype == "fp8" else "auto",
        },
    }
    if b.cuda_graphs and b.capture_sizes:
        opts["cuda_graph_config"] = {
            "enable_padding": True,
            "max_batch_size": int(max(b.capture_sizes)),
        }
    else:
        opts["cuda_graph_config"] = None
    if b.batch_wait_iters:
        opts["batch_wait_timeout_iters"] = b.batch_wait_iters
        opts["batch_wait_max_tokens_ratio"] = b.batch_wait_tokens_ratio
    if b.attention_dp_balance_iters and p.attention_dp > 1:
        opts["attention_dp_config"] = {
            "enable_balance": True,
            "timeout_iters": b.attention_dp_balance_iters,
            "batching_wait_iters": 0,
        }
    if b.speculative_tokens:
        opts["speculative_config"] = {
            "decoding_type": "MTP",
            "num_nextn_predict_layers": b.speculative_tokens,
        }
    return opts


def trtllm_yaml(cfg: LaunchConfig) -> str:
    """YAML text for ``trtllm-serve --extra_llm_api_options``."""
    return yaml.safe_dump(trtllm_options(cfg), sort_keys=False)


def trtllm_args(cfg: LaunchConfig, options_path: str = "extra_llm_api_options.yaml") -> list[str]:
    """``trtllm-serve`` command-line arguments pointing at the options YAML."""
    p, b = cfg.parallel, cfg.batching
    return [
        cfg.model,
        "--port",
        str(cfg.port),
        "--tp_size",
        str(p.tp * p.attention_dp),
        "--pp_size",
        str(p.pp),
        "--ep_size",
        str(p.moe_ep),
        "--max_batch_size",
        str(b.max_num_seqs),
        "--max_num_tokens",
        str(b.max_num_batched_tokens),
        "--kv_cache_free_gpu_memory_fraction",
        f"{b.gpu_memory_utilization:g}",
        "--extra_llm_api_options",
        options_path,
    ]


def render_all(cfg: LaunchConfig) -> dict[str, str]:
    """Shell-ready commands for the three engines (TensorRT-LLM with its YAML inline)."""
    return {
        "vllm": "".join(f"{k}={shlex.quote(v)} " for k, v in sorted(cfg.vllm_env.items()))
        + "vllm serve "
        + shlex.join(vllm_args(cfg)),
        "sglang": "python -m sglang.launch_server " + shlex.join(sglang_args(cfg)),
        "trtllm": "trtllm-serve " + shlex.join(trtllm_args(cfg)),
        "trtllm_yaml": trtllm_yaml(cfg),
    }


_CHECK_SNIPPET = """
import json, sys
try:
    from vllm.utils.argparse_utils import FlexibleArgumentParser
except ImportError:
    from vllm.utils import FlexibleArgumentParser
try:  # the parser behind `vllm serve` (moved between releases)
    from vllm.entrypoints.launchers.cli_args import make_arg_parser
except ImportError:
    from vllm.entrypoints.openai.cli_args import make_arg_parser
parser = make_arg_parser(FlexibleArgumentParser())
ns = parser.parse_args(json.loads(sys.argv[1]))
print(json.dumps({k: getattr(ns, k) for k in ("tensor_parallel_size", "max_num_seqs",
      "max_num_batched_tokens", "gpu_memory_utilization", "enforce_eager")}))
"""


def vllm_available(python: str | None = None) -> bool:
    """Whether vLLM can be imported (here, or by the interpreter ``python``)."""
    if python is None:
        return importlib.util.find_spec("vllm") is not None
    probe = subprocess.run(
        [python, "-c", "import vllm.engine.arg_utils"], capture_output=True, timeout=300
    )
    return probe.returncode == 0


def check_vllm_args(args: list[str], python: str | None = None) -> dict:
    """Parse ``args`` with vLLM's own ``vllm serve`` argument parser.

    Parameters
    ----------
    args : list of str
        Output of :func:`vllm_args`.
    python : str or None
        Interpreter that has vLLM installed (default: this one).

    Returns
    -------
    dict
        A few parsed values (tensor_parallel_size, max_num_seqs, ...).

    Raises
    ------
    RuntimeError
        If vLLM is not importable there.
    ValueError
        If vLLM's parser rejects the arguments (its message included).
    """
    import sys

    exe = python or sys.executable
    if not vllm_available(python):
        raise RuntimeError(f"vLLM is not importable by {exe}")
    proc = subprocess.run(
        [exe, "-c", _CHECK_SNIPPET, json.dumps(args)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    if proc.returncode != 0:
        raise ValueError(f"vLLM rejected the arguments: {proc.stderr.strip()[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])
