"""Parallel layouts of one serving worker: tensor, pipeline, expert and attention-data parallelism.

Conventions follow AIConfigurator and the serving engines: one worker spans
``tp * pp * attention_dp`` GPUs. Attention (and dense layers) run with tensor parallelism ``tp``
and are replicated ``attention_dp`` times, each replica holding its own requests; MoE layers
split across all ``tp * attention_dp`` GPUs of a pipeline stage as ``moe_tp * moe_ep``.
"""

from __future__ import annotations

from dataclasses import dataclass

from simulator.models import ModelSpec


@dataclass(frozen=True)
class ParallelConfig:
    """How one worker's model is split over GPUs.

    Parameters
    ----------
    tp : int
        Tensor-parallel width of attention and dense layers.
    pp : int
        Pipeline stages (layers split evenly).
    attention_dp : int
        Attention data-parallel replicas (each with its own batch and KV cache).
    moe_tp, moe_ep : int or None
        Tensor- and expert-parallel widths of MoE layers; their product must equal
        ``tp * attention_dp``. When both are ``None``, ``moe_tp = tp * attention_dp`` and
        ``moe_ep = 1``; when one is given the other is derived.
    """

    tp: int = 1
    pp: int = 1
    attention_dp: int = 1
    moe_tp: int | None = None
    moe_ep: int | None = None

    def __post_init__(self) -> None:
        for field_name in ("tp", "pp", "attention_dp"):
            value = getattr(self, field_name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{field_name} must be a positive integer, got {value!r}")
        width = self.tp * self.attention_dp
        moe_tp, moe_ep = self.moe_tp, self.moe_ep
        if moe_tp is None and moe_ep is None:
            moe_tp, moe_ep = width, 1
        elif moe_tp is None:
            if moe_ep < 1 or width % moe_ep:
                raise ValueError(
                    f"moe_ep={moe_ep} must divide tp*attention_dp={width} (the GPUs of one stage)"
                )
            moe_tp = width // moe_ep
        elif moe_ep is None:
            if moe_tp < 1 or width % moe_tp:
                raise ValueError(f"moe_tp={moe_tp} must divide tp*attention_dp={width}")
            moe_ep = width // moe_tp
        if moe_tp < 1 or moe_ep < 1 or moe_tp * moe_ep != width:
            raise ValueError(
                f"moe_tp*moe_ep must equal tp*attention_dp: {moe_tp}*{moe_ep} != {width}"
            )
        object.__setattr__(self, "moe_tp", int(moe_tp))
        object.__setattr__(self, "moe_ep", int(moe_ep))

    @property
    def num_gpus(self) -> int:
        """GPUs of one worker."""
        return self.tp * self.pp * self.attention_dp

    def label(self) -> str:
        parts = [f"tp{self.tp}"]
        if self.pp > 1:
            parts.append(f"pp{self.pp}")
        if self.attention_dp > 1:
            parts.append(f"dp{self.attention_dp}")
        if self.moe_ep > 1:
            parts.append(f"ep{self.moe_ep}")
        return "-".join(parts)

    def kv_heads_per_gpu(self, model: ModelSpec) -> int:
        """KV heads each GPU caches (KV heads are replicated when ``tp`` exceeds them)."""
        if model.is_mla:
            return 1
        return max(1, model.num_kv_heads // self.tp)

    def validate(self, model: ModelSpec) -> None:
        """Check that this layout can shard ``model``.

        Raises
        ------
        ValueError
            Naming the violated constraint (TP vs heads, PP vs layers, EP vs experts, MoE TP
            vs expert width).
        """
        if model.num_heads % self.tp:
            raise ValueError(
                f"tp={self.tp} does not divide num_attention_heads={model.num_heads} of "
                f"{model.name}"
            )
        if not model.is_mla:
            nkv = model.num_kv_heads
            if nkv % self.tp and self.tp % nkv:
                raise ValueError(
                    f"tp={self.tp} and num_key_value_heads={nkv} of {model.name}: one must divide "
                    "the other"
                )
        if self.pp > model.num_layers:
            raise ValueError(f"pp={self.pp} exceeds num_hidden_layers={model.num_layers}")
        if model.is_moe:
            if model.num_experts % self.moe_ep:
                raise ValueError(
                    f"moe_ep={self.moe_ep} does not divide num_experts={model.num_experts} of "
                    f"{model.name}"
                )
            if model.moe_intermediate_size % self.moe_tp:
                raise ValueError(
                    f"moe_tp={self.moe_tp} does not divide the expert width "
                    f"moe_intermediate_size={model.moe_intermediate_size} of {model.name}"
                )
        elif self.moe_ep > 1:
            raise ValueError(f"moe_ep={self.moe_ep} given for dense model {model.name}")
        if not model.is_moe and self.attention_dp > 1:
            raise ValueError(
                f"attention_dp={self.attention_dp} given for dense model {model.name}: use more "
                "workers (replicas) instead"
            )


def enumerate_parallel(
    model: ModelSpec, max_gpus: int, *, gpus_per_node: int = 8, allow_pp: bool = True
) -> list[ParallelConfig]:
    """Every valid layout of one worker on at most ``max_gpus`` GPUs (powers of two).

    Dense models: ``tp`` x ``pp``. MoE models additionally: attention-DP with expert
    parallelism (``moe_ep = tp * attention_dp``) and pure EP under TP. Layouts whose
    tensor-parallel group leaves a node are skipped (NVLink-only collectives are modelled).
    """
    sizes = [s for s in (1, 2, 4, 8, 16, 32, 64) if s <= max_gpus]
    out: list[ParallelConfig] = []
    seen: set[ParallelConfig] = set()

    def add(cfg: ParallelConfig) -> None:
        if cfg in seen or cfg.num_gpus > max_gpus:
            return
        try:
            cfg.validate(model)
        except ValueError:
            return
        seen.add(cfg)
        out.append(cfg)

    for pp in sizes if allow_pp else [1]:
        for tp in sizes:
            if tp > gpus_per_node:
                continue
            add(ParallelConfig(tp=tp, pp=pp))
            if model.is_moe:
                if tp > 1:
                    add(ParallelConfig(tp=tp, pp=pp, moe_ep=tp))
                for dp in sizes[1:]:
                    if tp * dp <= gpus_per_node:
                        add(ParallelConfig(tp=tp, pp=pp, attention_dp=dp, moe_ep=tp * dp))
    return out
