"""What silicon_dev.csv's rows ran besides the columns it records: the benchmark client's lengths
and the scheduler mode, from the published harness and engine defaults (shared by
``fidelity.py`` and ``engine_fidelity.py``).

* **Client lengths.** Rows from SemiAnalysis InferenceX results (``source_file`` is a dated
  ``YYYY-MM-DD.csv`` export, or a ``db-dump/`` of its results database, whose rows carry the
  GitHub ``workflow_run_id`` of the run and InferenceX's ``config_id``; all on its ISL/OSL grid of
  1024 and 8192) ran its ``utils/bench_serving/benchmark_serving.py`` with
  ``--dataset-name random --random-range-ratio 0.8 --ignore-eos`` (``RANDOM_RANGE_RATIO: 0.8`` in
  its single- and multi-node workflow templates): every prompt and output length is drawn
  uniformly from the integers ``[floor(0.8 L), L]`` for the row's nominal ``L``, so the mean is
  ``0.9 L``. The other sources (AIConfigurator's own gap-analysis runs) do not say; their rows
  keep the nominal lengths.
* **Asynchronous scheduling.** vLLM plans step ``k + 1`` while step ``k`` runs by default since
  vllm-project/vllm#27614 (merged in December 2025, after the 0.12.0 release; the threshold is
  placed at 0.14, and no row runs 0.13 or 0.14: they run 0.11.2, 0.12.0 or 0.15.1 and later).
  InferenceX rows without a version (its autumn-2025 runs) count as asynchronous: its
  Llama-3.1-70B recipes of that time pass ``--async-scheduling``. SGLang's overlap scheduler and
  TensorRT-LLM's PyTorch-backend overlap scheduler are on by default. Rows of vLLM versions
  below 0.14 ran the synchronous scheduler.
* **SGLang's receive interval.** InferenceX's single-node SGLang DeepSeek-R1 recipes for B200
  (``benchmarks/single_node/fixed_seq_len/dsr1_fp8_b200.sh`` and ``dsr1_fp4_b200.sh``) pass
  ``--scheduler-recv-interval 30`` at 16 or more clients and 10 below (the fp8 recipe at TP 4:
  10), without attention DP; the H200 recipe does not set it (1, SGLang's default). Its
  scheduler then takes in new requests only every that many decode steps.
* **vLLM's token budget.** InferenceX's vLLM MiniMax-M2.5 recipes for B200
  (``minimaxm2.5_fp8_b200.sh``, ``minimaxm2.5_fp4_b200.sh``) and its Kimi-K2.5 nvfp4 recipe for
  B200 (``kimik2.5_fp4_b200.sh``) pass ``--max-num-batched-tokens`` of twice the nominal ISL.
  Its H100 and H200 MiniMax recipes and its Kimi-K2.5 int4 recipes keep vLLM's default (8192 on
  these GPUs); its gpt-oss recipes pass 8192. The benchmarks use 8192 elsewhere.
* **MTP speculative decoding.** InferenceX runs TensorRT-LLM DeepSeek-R1 on B200 under two
  config keys per precision in ``.github/configs/nvidia-master.yaml``: ``dsr1-fp8-b200-trt`` and
  ``dsr1-fp4-b200-trt`` on ``nvcr.io/nvidia/tensorrt-llm/release:1.2.0rc6.post2`` (PRs #594,
  #620), and ``dsr1-fp8-b200-trt-mtp`` and ``dsr1-fp4-b200-trt-mtp`` (every search-space entry
  ``spec-decoding: mtp``) on ``1.2.0rc6.post3`` (PRs #632, #642). A B200 TensorRT-LLM
  DeepSeek row of version 1.2.0rc6.post3 is therefore an MTP run; its scripts
  (``dsr1_fp8_b200_trt_mtp.sh``, ``dsr1_fp4_b200_trt_mtp.sh``) set
  ``speculative_config: {decoding_type: MTP, num_nextn_predict_layers: 3}``, 1 with attention
  DP, and their client passes ``--use-chat-template`` (without it, InferenceX's changelog notes,
  MTP acceptance on its random prompts is artificially high). The H200 MTP and non-MTP keys share
  one image (1.1.0rc2.post2), so H200 rows cannot be told apart and count as non-MTP, as do
  SGLang's (its MTP recipes share the image too) and the disaggregated rows.
* **KV admission.** TensorRT-LLM's default capacity scheduler (``GUARANTEED_NO_EVICT``) admits a
  request only when its whole lifetime's KV blocks fit; vLLM V1 admits on the next chunk's
  blocks and preempts. InferenceX's SGLang recipes (``dsr1_fp8_h200.sh``, ``dsr1_fp8_b200.sh``)
  pass ``--disable-radix-cache`` and its client ``--ignore-eos``, so SGLang's ``PrefillAdder``
  takes its ``add_one_req_ignore_eos`` path (a look-ahead that every admitted request can
  decode to its end); for SGLang rows of other sources, whose launch is not documented, its
  general path (reserve ``new_token_ratio`` of the remaining output, retract on shortage).
  See ``simulator.engine.EngineConfig.kv_admission``.
* **TensorRT-LLM's batching delays.** InferenceX's TensorRT-LLM Llama-3.1-70B scripts
  (``benchmarks/70b_fp8_b200_trt_slurm.sh``, ``70b_fp4_b200_trt_slurm.sh``,
  ``70b_fp8_h200_trt_slurm.sh``) set ``batch_wait_timeout_iters: 20`` and
  ``batch_wait_max_tokens_ratio: 0.9`` for 1k/1k at TP below 8, and pass ``--max_num_tokens``
  16384 (fp8 B200) or the workflow's max-model-len (fp4 B200, fp8 H200: 2048 for 1k/1k, 9216
  otherwise, ``.github/workflows/full-sweep-tmpl.yml``). Its non-MTP fp8 B200 DeepSeek-R1 script
  (``dsr1_fp8_b200_trt.sh``, image 1.2.0rc6.post2) sets 40 and 0.8 for 1k/1k at 64 clients or
  more. Every DeepSeek-R1 TensorRT-LLM script with attention DP sets ``attention_dp_config:
  {enable_balance: true, timeout_iters: 60, batching_wait_iters: 0}``; the gpt-oss B200 script
  with attention DP sets ``enable_balance: true`` with TensorRT-LLM's default ``timeout_iters``
  of 50. (Semantics: TensorRT-LLM's ``py_executor``; see ``BatchingConfig``.)
"""

from __future__ import annotations

import re

import pandas as pd

from simulator.engine import KV_ADMISSION_DEFAULT

#: InferenceX's ``RANDOM_RANGE_RATIO`` (lengths uniform in ``[floor(r L), L]``)
INFERENCEX_RANGE_RATIO = 0.8
_INFERENCEX = re.compile(r"source_file=\d{4}-\d{2}-\d{2}\.csv|^db-dump/.*workflow_run_id=")
_VERSION = re.compile(r"^(\d+)\.(\d+)")


def is_inferencex(row: pd.Series) -> bool:
    """Whether the row comes from InferenceX's results (an export or a database dump)."""
    return bool(_INFERENCEX.search(str(row.get("silicon_data_source", ""))))


def length_range(row: pd.Series, which: str) -> tuple[int, int]:
    """``(low, high)`` of the row's prompt (``which="isl"``) or output (``"osl"``) lengths."""
    nominal = int(row[which])
    if is_inferencex(row):
        return max(1, int(nominal * INFERENCEX_RANGE_RATIO)), nominal
    return nominal, nominal


def mean_and_p90(row: pd.Series, which: str) -> tuple[float, float]:
    """Mean and 90th percentile of the uniform integer lengths of :func:`length_range`."""
    lo, hi = length_range(row, which)
    return (lo + hi) / 2.0, lo + 0.9 * (hi - lo)


def async_scheduling(row: pd.Series) -> bool:
    """Whether the row's engine ran an asynchronous (overlap) scheduler."""
    if row["backend"] != "vllm":
        return True
    m = _VERSION.match(str(row.get("backend_version", "")))
    if m is None:  # InferenceX rows without a version: its 70B recipes then passed the flag
        return True
    return (int(m.group(1)), int(m.group(2))) >= (0, 14)


def scheduler_recv_interval(row: pd.Series) -> int:
    """SGLang's ``--scheduler-recv-interval`` in the row's recipe (1 where none is documented)."""
    if not (
        row["backend"] == "sglang"
        and row["mode"] == "agg"
        and row["system"] == "b200_sxm"
        and "DeepSeek" in str(row["model_path"])
        and is_inferencex(row)
    ):
        return 1
    dp = row.get("attention_dp_size", 1)
    if pd.notna(dp) and dp > 1:
        return 1  # the recipes turn it off with attention DP
    if row.get("gemm_quant_mode") == "fp8" and row.get("tp_size") == 4:
        return 10
    return 30 if row["concurrency"] >= 16 else 10


def kv_admission(row: pd.Series) -> str:
    """The engine's KV admission policy for the row (``EngineConfig.kv_admission``)."""
    if row["backend"] == "sglang" and is_inferencex(row):
        return "lookahead"
    return KV_ADMISSION_DEFAULT[row["backend"]]


def max_num_batched_tokens(row: pd.Series) -> int:
    """The token budget per step in the row's recipe (vLLM's default, 8192, where none is set)."""
    if _trt_llama70(row):
        if row["system"] == "b200_sxm" and row["precision"] == "fp8":
            return 16384
        return 2048 if int(row["isl"]) == int(row["osl"]) == 1024 else 9216
    if row["backend"] != "vllm" or row["system"] != "b200_sxm" or not is_inferencex(row):
        return 8192
    model = str(row["model_path"])
    if "MiniMax" in model or ("Kimi" in model and row.get("gemm_quant_mode") == "nvfp4"):
        return 2 * int(row["isl"])
    return 8192


#: TensorRT-LLM release of InferenceX's B200 DeepSeek-R1 MTP configs (its non-MTP ones: .post2)
_TRT_MTP_IMAGE = "1.2.0rc6.post3"


def speculative_tokens(row: pd.Series) -> int:
    """MTP draft tokens per step in the row's recipe (0: no speculative decoding)."""
    if (
        _trt_agg_inferencex(row)
        and row["system"] == "b200_sxm"
        and "DeepSeek" in str(row["model_path"])
        and str(row.get("backend_version", "")) == _TRT_MTP_IMAGE
    ):
        dp = row.get("attention_dp_size")
        return 1 if pd.notna(dp) and int(dp) > 1 else 3
    return 0


def _trt_agg_inferencex(row: pd.Series) -> bool:
    """An aggregated TensorRT-LLM row from InferenceX (whose recipes the rules below read)."""
    return row["backend"] == "trtllm" and row["mode"] == "agg" and is_inferencex(row)


def _trt_llama70(row: pd.Series) -> bool:
    return _trt_agg_inferencex(row) and "Llama-3.1-70B" in str(row["model_path"])


def batch_wait(row: pd.Series) -> tuple[int, float]:
    """TensorRT-LLM's ``(batch_wait_timeout_iters, batch_wait_max_tokens_ratio)`` in the row's
    recipe (``(0, 0.0)``: no batch waiting, TensorRT-LLM's default)."""
    one_k = int(row["isl"]) == int(row["osl"]) == 1024
    if _trt_llama70(row) and one_k and int(row["tp_size"]) < 8:
        return 20, 0.9
    if (
        _trt_agg_inferencex(row)
        and row["system"] == "b200_sxm"
        and row["precision"] == "fp8"
        and "DeepSeek" in str(row["model_path"])
        and str(row.get("backend_version", "")) == "1.2.0rc6.post2"
        and one_k
        and int(row["concurrency"]) >= 64
        and not (pd.notna(row.get("attention_dp_size")) and int(row["attention_dp_size"]) > 1)
    ):
        return 40, 0.8
    return 0, 0.0


def attention_dp_balance(row: pd.Series) -> int:
    """TensorRT-LLM's attention-DP balance ``timeout_iters`` in the row's recipe (0: off)."""
    dp = row.get("attention_dp_size")
    if not (_trt_agg_inferencex(row) and pd.notna(dp) and int(dp) > 1):
        return 0
    model = str(row["model_path"])
    if "DeepSeek" in model:
        return 60
    if "gpt-oss" in model and row["system"] == "b200_sxm":
        return 50
    return 0
