"""Model architectures parsed from Hugging Face ``config.json`` files.

A :class:`ModelSpec` holds what the analytical model needs to price a transformer: layer counts,
attention geometry (grouped-query or DeepSeek's multi-head latent attention), the feed-forward
block (dense or mixture-of-experts) and the vocabulary. Supported architectures:

* dense GQA: ``LlamaForCausalLM``, ``MistralForCausalLM``, ``Qwen2ForCausalLM``,
  ``Qwen3ForCausalLM``;
* MoE with GQA: ``MixtralForCausalLM``, ``Qwen3MoeForCausalLM``, ``GptOssForCausalLM``,
  ``MiniMaxM2ForCausalLM``;
* MLA + MoE: ``DeepseekV3ForCausalLM`` (DeepSeek-V3/R1, Kimi-K2.x).

Configs for the models we validate are bundled in ``simulator/model_configs`` (copied from
``aiconfigurator-core==0.12.0``, Apache-2.0; see the README there). Any local ``config.json`` path
(or a directory holding one) is accepted too.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

MODEL_CONFIG_DIR = Path(__file__).resolve().parent / "model_configs"

_DENSE_ARCHS = {"LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM", "Qwen3ForCausalLM"}
_MOE_ARCHS = {
    "MixtralForCausalLM",
    "Qwen3MoeForCausalLM",
    "GptOssForCausalLM",
    "MiniMaxM2ForCausalLM",
}
_MLA_ARCHS = {"DeepseekV3ForCausalLM"}
SUPPORTED_ARCHITECTURES = tuple(sorted(_DENSE_ARCHS | _MOE_ARCHS | _MLA_ARCHS))


@dataclass(frozen=True)
class ModelSpec:
    """The shape of a decoder-only transformer, as far as serving cost is concerned.

    Parameters
    ----------
    name : str
        Hugging Face repository id (or the path it was loaded from).
    architecture : str
        The ``architectures[0]`` entry of the config.
    num_layers, hidden_size, vocab_size : int
        Decoder layers, model width, vocabulary size.
    num_heads, num_kv_heads, head_dim : int
        Query heads, key/value heads and per-head width (GQA). For MLA models ``num_kv_heads``
        equals ``num_heads`` and ``head_dim`` is the query/key width (nope + rope).
    intermediate_size : int
        Width of the dense feed-forward block (used by dense layers).
    num_experts, experts_per_token, moe_intermediate_size : int
        Routed experts, experts chosen per token, width of one expert (0 for dense models).
    shared_expert_intermediate_size : int
        Total width of always-active shared experts in MoE layers (0 when none).
    num_dense_layers : int
        Layers whose feed-forward block is dense even in an MoE model (DeepSeek's first-k).
    kv_lora_rank, q_lora_rank, qk_nope_head_dim, qk_rope_head_dim, v_head_dim : int
        MLA geometry (0 for GQA models; ``q_lora_rank`` 0 means no query compression).
    sliding_window : int
        Window of sliding-window layers (0 when none).
    num_sliding_layers : int
        How many layers use the sliding window.
    tie_word_embeddings : bool
        Whether the LM head shares the embedding matrix.
    weight_dtype : str
        Precision the published checkpoint stores (``"bf16"``, ``"fp8"``, ``"fp4"``,
        ``"mxfp4"``, ``"int4"``).
    mtp_layers : int
        Multi-token-prediction modules the checkpoint ships (``num_nextn_predict_layers``,
        DeepSeek-V3's draft head for speculative decoding; 0 when none).
    qk_norm_across_heads : bool
        Query and key RMS-normalised over all heads together rather than per head
        (MiniMax-M2's ``use_qk_norm`` with ``qk_norm_type: per_layer``): under tensor
        parallelism the ranks all-reduce the norms' variances in every layer (vLLM's
        ``MiniMaxText01RMSNormTP.forward_qk``).
    """

    name: str
    architecture: str
    num_layers: int
    hidden_size: int
    vocab_size: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    num_experts: int = 0
    experts_per_token: int = 0
    moe_intermediate_size: int = 0
    shared_expert_intermediate_size: int = 0
    num_dense_layers: int = 0
    kv_lora_rank: int = 0
    q_lora_rank: int = 0
    qk_nope_head_dim: int = 0
    qk_rope_head_dim: int = 0
    v_head_dim: int = 0
    sliding_window: int = 0
    num_sliding_layers: int = 0
    tie_word_embeddings: bool = False
    weight_dtype: str = "bf16"
    mtp_layers: int = 0
    qk_norm_across_heads: bool = False

    def __post_init__(self) -> None:
        for field_name in ("num_layers", "hidden_size", "vocab_size", "num_heads", "num_kv_heads"):
            if getattr(self, field_name) <= 0:
                raise ValueError(
                    f"model {self.name!r}: {field_name} must be positive, got "
                    f"{getattr(self, field_name)}"
                )
        if self.num_heads % self.num_kv_heads:
            raise ValueError(
                f"model {self.name!r}: num_attention_heads ({self.num_heads}) is not a multiple of "
                f"num_key_value_heads ({self.num_kv_heads})"
            )
        if self.num_experts and not 0 < self.experts_per_token <= self.num_experts:
            raise ValueError(
                f"model {self.name!r}: experts_per_token={self.experts_per_token} must be in "
                f"[1, num_experts={self.num_experts}]"
            )
        if not 0 <= self.num_dense_layers <= self.num_layers:
            raise ValueError(f"model {self.name!r}: num_dense_layers out of range")

    # ----------------------------------------------------------------------------- structure
    @property
    def is_moe(self) -> bool:
        return self.num_experts > 0

    @property
    def is_mla(self) -> bool:
        return self.kv_lora_rank > 0

    @property
    def num_moe_layers(self) -> int:
        return self.num_layers - self.num_dense_layers if self.is_moe else 0

    @property
    def num_full_attention_layers(self) -> int:
        return self.num_layers - self.num_sliding_layers

    # ----------------------------------------------------------------------------- parameters
    @property
    def attention_params_per_layer(self) -> int:
        """Weights of one attention block (projections only; norms are negligible)."""
        h = self.hidden_size
        if self.is_mla:
            qk = self.qk_nope_head_dim + self.qk_rope_head_dim
            if self.q_lora_rank:
                q = h * self.q_lora_rank + self.q_lora_rank * self.num_heads * qk
            else:
                q = h * self.num_heads * qk
            kv_a = h * (self.kv_lora_rank + self.qk_rope_head_dim)
            kv_b = self.kv_lora_rank * self.num_heads * (self.qk_nope_head_dim + self.v_head_dim)
            o = self.num_heads * self.v_head_dim * h
            return q + kv_a + kv_b + o
        q = h * self.num_heads * self.head_dim
        kv = 2 * h * self.num_kv_heads * self.head_dim
        o = self.num_heads * self.head_dim * h
        return q + kv + o

    @property
    def dense_ffn_params_per_layer(self) -> int:
        return 3 * self.hidden_size * self.intermediate_size

    @property
    def expert_params(self) -> int:
        """Weights of one routed expert (gate, up and down projections)."""
        return 3 * self.hidden_size * self.moe_intermediate_size

    @property
    def shared_expert_params_per_layer(self) -> int:
        return 3 * self.hidden_size * self.shared_expert_intermediate_size

    @property
    def embedding_params(self) -> int:
        """Input embedding plus LM head (counted once when tied)."""
        return self.vocab_size * self.hidden_size * (1 if self.tie_word_embeddings else 2)

    @property
    def total_params(self) -> int:
        n = self.num_layers * self.attention_params_per_layer + self.embedding_params
        n += self.num_dense_layers * self.dense_ffn_params_per_layer
        if self.is_moe:
            n += self.num_moe_layers * (
                self.num_experts * self.expert_params
                + self.shared_expert_params_per_layer
                + self.hidden_size * self.num_experts
            )
        else:
            n += self.num_layers * self.dense_ffn_params_per_layer
        return n

    @property
    def active_params(self) -> int:
        """Weights touched per token (routed experts counted ``experts_per_token`` times)."""
        if not self.is_moe:
            return self.total_params
        return self.total_params - self.num_moe_layers * self.expert_params * (
            self.num_experts - self.experts_per_token
        )

    # ----------------------------------------------------------------------------- KV cache
    @property
    def kv_elements_per_token_per_layer(self) -> int:
        """Cached elements per token per attention layer, before tensor-parallel sharding.

        GQA caches K and V for every KV head; MLA caches the compressed latent plus the rope key
        (one copy, not split by heads).
        """
        if self.is_mla:
            return self.kv_lora_rank + self.qk_rope_head_dim
        return 2 * self.num_kv_heads * self.head_dim


def _int(cfg: dict, *keys: str, default: int | None = None) -> int:
    for key in keys:
        value = cfg.get(key)
        if value is not None:
            return int(value)
    if default is None:
        raise ValueError(f"config.json lacks any of {keys}")
    return default


def _weight_dtype(cfg: dict) -> str:
    quant = cfg.get("quantization_config") or {}
    method = str(quant.get("quant_method", "")).lower()
    if method == "fp8" or "fp8" in str(quant.get("fmt", "")).lower():
        return "fp8_block" if quant.get("weight_block_size") else "fp8"
    if method == "mxfp4":
        return "mxfp4"
    if method in {"modelopt_fp4", "nvfp4"}:
        return "fp4"
    if method == "compressed-tensors":
        return "int4"
    return "bf16"


def parse_config(cfg: dict, name: str) -> ModelSpec:
    """Build a :class:`ModelSpec` from a parsed Hugging Face ``config.json``.

    Parameters
    ----------
    cfg : dict
        The JSON object (a ``text_config`` entry is used when present).
    name : str
        Name recorded in the spec.

    Raises
    ------
    ValueError
        If the architecture is not supported or a required field is missing.
    """
    if "text_config" in cfg and "num_hidden_layers" not in cfg:
        text = cfg["text_config"]
        cfg = {**text, "architectures": text.get("architectures") or cfg.get("architectures")}
    archs = cfg.get("architectures") or []
    arch = archs[0] if archs else ""
    if arch not in SUPPORTED_ARCHITECTURES:
        raise ValueError(
            f"model {name!r}: architecture {arch or '(none)'!r} is not supported; supported: "
            f"{', '.join(SUPPORTED_ARCHITECTURES)}"
        )
    try:
        hidden = _int(cfg, "hidden_size")
        num_heads = _int(cfg, "num_attention_heads")
        common = dict(
            name=name,
            architecture=arch,
            num_layers=_int(cfg, "num_hidden_layers"),
            hidden_size=hidden,
            vocab_size=_int(cfg, "vocab_size"),
            num_heads=num_heads,
            intermediate_size=_int(cfg, "intermediate_size"),
            tie_word_embeddings=bool(cfg.get("tie_word_embeddings", False)),
            weight_dtype=_weight_dtype(cfg),
            mtp_layers=_int(cfg, "num_nextn_predict_layers", default=0),
        )
        if arch in _MLA_ARCHS:
            nope, rope = _int(cfg, "qk_nope_head_dim"), _int(cfg, "qk_rope_head_dim")
            return ModelSpec(
                **common,
                num_kv_heads=num_heads,
                head_dim=nope + rope,
                num_experts=_int(cfg, "n_routed_experts"),
                experts_per_token=_int(cfg, "num_experts_per_tok"),
                moe_intermediate_size=_int(cfg, "moe_intermediate_size"),
                shared_expert_intermediate_size=_int(cfg, "n_shared_experts", default=0)
                * _int(cfg, "moe_intermediate_size"),
                num_dense_layers=_int(cfg, "first_k_dense_replace", default=0),
                kv_lora_rank=_int(cfg, "kv_lora_rank"),
                q_lora_rank=_int(cfg, "q_lora_rank", default=0),
                qk_nope_head_dim=nope,
                qk_rope_head_dim=rope,
                v_head_dim=_int(cfg, "v_head_dim"),
            )
        head_dim = _int(cfg, "head_dim", default=hidden // num_heads)
        num_kv_heads = _int(cfg, "num_key_value_heads", default=num_heads)
        layer_types = cfg.get("layer_types") or []
        window = int(cfg.get("sliding_window") or 0)
        if arch in {"Qwen2ForCausalLM", "Qwen3ForCausalLM", "Qwen3MoeForCausalLM"} and not cfg.get(
            "use_sliding_window", False
        ):
            window = 0
        num_sliding = sum(t == "sliding_attention" for t in layer_types) if layer_types else 0
        if window and not layer_types:
            num_sliding = common["num_layers"]  # Mistral: every layer slides
        if arch in _DENSE_ARCHS:
            return ModelSpec(
                **common,
                num_kv_heads=num_kv_heads,
                head_dim=head_dim,
                sliding_window=window if num_sliding else 0,
                num_sliding_layers=num_sliding if window else 0,
            )
        num_experts = _int(cfg, "num_local_experts", "num_experts")
        if arch in {"MixtralForCausalLM", "GptOssForCausalLM", "MiniMaxM2ForCausalLM"}:
            # these configs name the expert width ``intermediate_size``
            moe_inter = _int(cfg, "moe_intermediate_size", "intermediate_size")
        else:
            moe_inter = _int(cfg, "moe_intermediate_size")
        mlp_only = cfg.get("mlp_only_layers") or []
        return ModelSpec(
            **common,
            num_kv_heads=num_kv_heads,
            head_dim=head_dim,
            num_experts=num_experts,
            experts_per_token=_int(cfg, "num_experts_per_tok", "experts_per_token"),
            moe_intermediate_size=moe_inter,
            shared_expert_intermediate_size=_int(
                cfg, "shared_expert_intermediate_size", "shared_intermediate_size", default=0
            ),
            num_dense_layers=len(mlp_only),
            sliding_window=window if num_sliding else 0,
            num_sliding_layers=num_sliding if window else 0,
            qk_norm_across_heads=bool(cfg.get("use_qk_norm"))
            and cfg.get("qk_norm_type") == "per_layer",
        )
    except (TypeError, KeyError) as exc:
        raise ValueError(f"model {name!r}: malformed config.json ({exc})") from exc


def _normalise(name: str) -> str:
    """Canonical key for matching repository ids to bundled files (case, org, suffixes)."""
    base = name.split("/")[-1].lower()
    base = base.removeprefix("meta-")
    base = re.sub(r"-(instruct|fp8|nvfp4|fp4|base|chat|v0\.1)(?=-|$)", "", base)
    base = re.sub(r"-(instruct|fp8|nvfp4|fp4|base|chat|v0\.1)(?=-|$)", "", base)
    return base


@lru_cache(maxsize=1)
def _bundled_index() -> dict[str, Path]:
    index: dict[str, Path] = {}
    # a base checkpoint (``Qwen3-32B``) wins over its quantised variants (``Qwen3-32B-FP8``)
    # for names that only match after normalisation: keep the shortest file name
    for path in sorted(MODEL_CONFIG_DIR.glob("*.json")):
        key = _normalise(path.stem.replace("--", "/"))
        if key not in index or len(path.stem) < len(index[key].stem):
            index[key] = path
    return index


def list_models() -> list[str]:
    """Hugging Face ids of the bundled model configs."""
    return sorted(p.stem.replace("--", "/") for p in MODEL_CONFIG_DIR.glob("*.json"))


@lru_cache(maxsize=64)
def load_model(name_or_path: str) -> ModelSpec:
    """Load a model by Hugging Face id (bundled configs) or by local path.

    Parameters
    ----------
    name_or_path : str
        A bundled id such as ``"Qwen/Qwen3-32B"`` (suffixes such as ``-Instruct``, ``-FP8``,
        ``-NVFP4`` and a ``Meta-`` prefix are ignored when matching), a path to a
        ``config.json``, or a directory that contains one.

    Returns
    -------
    ModelSpec

    Raises
    ------
    ValueError
        If the model is unknown or its architecture is unsupported.

    Examples
    --------
    >>> spec = load_model("meta-llama/Llama-3.1-8B")
    >>> spec.num_layers, spec.num_kv_heads
    (32, 8)
    """
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        path = path / "config.json"
    if path.is_file():
        try:
            cfg = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise ValueError(f"model config {str(path)!r} is not valid JSON: {exc}") from exc
        return parse_config(cfg, str(name_or_path))
    exact = MODEL_CONFIG_DIR / (name_or_path.replace("/", "--") + ".json")
    bundled = exact if exact.is_file() else _bundled_index().get(_normalise(name_or_path))
    if bundled is None:
        raise ValueError(
            f"unknown model {name_or_path!r}: not a local config.json and not bundled; bundled "
            f"models: {', '.join(list_models())}"
        )
    return parse_config(json.loads(bundled.read_text()), name_or_path)


#: Bytes per stored weight element, including block scales (nvfp4: one fp8 scale per 16
#: values; mxfp4: one e8m0 per 32; int4 weight-only: one bf16 scale per 128).
WEIGHT_BYTES: dict[str, float] = {
    "bf16": 2.0,
    "fp8": 1.0,
    "fp8_block": 1.0 + 4.0 / (128 * 128),
    "fp4": 0.5 + 1.0 / 16,
    "mxfp4": 0.5 + 1.0 / 32,
    "mxfp4_mxfp8": 0.5 + 1.0 / 32,  # mxfp4 weights, mxfp8 activations (Blackwell kernels)
    "int4_wo": 0.5 + 2.0 / 128,
}
KV_BYTES: dict[str, float] = {"bf16": 2.0, "fp8": 1.0}


@dataclass(frozen=True)
class Precision:
    """Numeric formats of one deployment.

    Parameters
    ----------
    gemm : str
        Format of the dense linear layers (attention projections, dense FFN): one of
        :data:`WEIGHT_BYTES`.
    moe : str
        Format of the routed and shared experts.
    kv_cache : str
        KV-cache format, ``"bf16"`` or ``"fp8"``.
    """

    gemm: str = "bf16"
    moe: str = "bf16"
    kv_cache: str = "bf16"

    def __post_init__(self) -> None:
        for field_name in ("gemm", "moe"):
            value = getattr(self, field_name)
            if value not in WEIGHT_BYTES:
                raise ValueError(
                    f"unknown {field_name} precision {value!r}; choose from {sorted(WEIGHT_BYTES)}"
                )
        if self.kv_cache not in KV_BYTES:
            raise ValueError(
                f"unknown kv_cache precision {self.kv_cache!r}; choose from {sorted(KV_BYTES)}"
            )

    @classmethod
    def from_name(cls, name: str) -> Precision:
        """Map a precision name to formats: ``bf16``; ``fp8`` (fp8 weights and KV);
        ``fp8_block``; ``fp4``/``nvfp4`` (nvfp4 weights, fp8 KV); ``int4``/``int4_wo``
        (int4 weight-only experts, bf16 dense, fp8 KV); ``mxfp4`` (mxfp4 experts, bf16 dense)."""
        key = name.lower().replace("bfloat16", "bf16")
        table = {
            "bf16": cls("bf16", "bf16", "bf16"),
            "fp8": cls("fp8", "fp8", "fp8"),
            "fp8_block": cls("fp8_block", "fp8_block", "fp8"),
            "fp4": cls("fp4", "fp4", "fp8"),
            "nvfp4": cls("fp4", "fp4", "fp8"),
            "int4": cls("bf16", "int4_wo", "fp8"),
            "int4_wo": cls("bf16", "int4_wo", "fp8"),
            "mxfp4": cls("bf16", "mxfp4", "bf16"),
        }
        if key not in table:
            raise ValueError(f"unknown precision {name!r}; choose from {sorted(table)}")
        return table[key]


def precision_for(model: ModelSpec, dtype: str, *, sm_version: int = 90) -> Precision:
    """The formats a deployment of ``model`` at precision ``dtype`` actually runs.

    Adjusts :meth:`Precision.from_name` to the checkpoint: gpt-oss ships mxfp4 experts and
    bf16 attention; its experts run w4a16 on Hopper and mxfp4 x mxfp8 on Blackwell (TensorRT-LLM
    and SGLang by default; vLLM with the environment of :func:`vllm_env`, as its published
    Blackwell serving recipes set). Published FP8 MoE checkpoints are 128x128 block-scaled, so
    their experts run block-scaled kernels.
    """
    prec = Precision.from_name(dtype)
    if model.weight_dtype == "mxfp4":
        moe = "mxfp4_mxfp8" if sm_version >= 100 else "mxfp4"
        gemm = prec.gemm if prec.gemm in ("fp8", "fp8_block", "fp4") else "bf16"
        return Precision(gemm=gemm, moe=moe, kv_cache=prec.kv_cache)
    if model.is_moe and prec.moe == "fp8" and model.weight_dtype == "fp8_block":
        return Precision(gemm=prec.gemm, moe="fp8_block", kv_cache=prec.kv_cache)
    return prec


#: vLLM's switch from its SM100 default (FlashInfer mxfp4 x bf16 MoE) to the mxfp4 x mxfp8
#: kernels: set by the Blackwell gpt-oss serving recipes (SemiAnalysis InferenceX
#: ``benchmarks/gptoss_fp4_b200.sh``), priced by :func:`precision_for`.
VLLM_MXFP8_MOE_ENV = "VLLM_USE_FLASHINFER_MOE_MXFP4_MXFP8"


def vllm_env(model: ModelSpec, *, sm_version: int) -> dict[str, str]:
    """Environment a ``vllm serve`` of ``model`` needs to run what :func:`precision_for` prices.

    Empty except for mxfp4 checkpoints (gpt-oss) on Blackwell, where the mxfp4 x mxfp8 MoE
    kernels are opt-in in vLLM.
    """
    if model.weight_dtype == "mxfp4" and sm_version >= 100:
        return {VLLM_MXFP8_MOE_ENV: "1"}
    return {}
