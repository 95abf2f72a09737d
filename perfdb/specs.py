"""Hardware specifications: memory, bandwidth, tensor-core FLOP/s per dtype, interconnect.

Every figure carries its source. The numbers for the five bundled GPUs are the ones in
AIConfigurator 0.12.0's ``systems/<system>.yaml`` (Apache-2.0), which in turn are NVIDIA's
datasheet figures (dense tensor-core FLOP/s, no sparsity; bandwidths per GPU, one direction);
``sources`` names both. A spec can also be read from such a YAML (:func:`spec_from_aiconfigurator_yaml`)
or from our own ``spec.yaml`` (:meth:`HardwareSpec.to_dict` / :meth:`HardwareSpec.from_dict`).
"""

from __future__ import annotations

import types
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from perfdb.ops import normalize_dtype

#: The dtype whose tensor-core rate prices a GEMM/attention of each dtype (weight-only
#: quantised kernels compute in bf16; block-scaled fp8 runs on fp8 tensor cores).
COMPUTE_DTYPE: dict[str, str] = {
    "fp32": "bf16",  # tensor cores run fp32 matmuls as tf32/bf16; closest priced rate
    "bf16": "bf16",
    "fp16": "bf16",
    "fp8": "fp8",
    "fp8_block": "fp8",
    "int8": "int8",
    "fp4": "fp4",
    "mxfp4": "fp4",
    "w4a16_mxfp4": "bf16",
    "int4_wo": "bf16",
    "w4afp8": "fp8",
    "w4a8_mxfp4_mxfp8": "fp8",
    "int8_wo": "bf16",
}


@dataclass(frozen=True)
class HardwareSpec:
    """One GPU model inside its node.

    Parameters
    ----------
    name : str
        System name (``"h100_sxm"``).
    mem_capacity_bytes : int
        HBM/GDDR capacity.
    mem_bw_bytes_s : float
        Peak memory bandwidth (datasheet).
    tensor_flops : Mapping[str, float]
        Dense tensor-core FLOP/s per canonical dtype (``bf16``, ``fp8``, ``int8``, ``fp4``).
    nvlink_bw_bytes_s : float
        Intra-node GPU-to-GPU bandwidth per GPU, one direction (PCIe for L40S).
    internode_bw_bytes_s : float
        Inter-node bandwidth per GPU, one direction.
    gpus_per_node : int
        GPUs in one node.
    sources : Mapping[str, str]
        Field name -> citation.
    mem_bw_efficiency : float
        Fraction of peak bandwidth memory-bound kernels reach (AIConfigurator's empirical 0.8).
    launch_latency_s : float
        Fixed cost of one memory-bound kernel (AIConfigurator's empirical 3 us).
    p2p_latency_s : float
        Fixed cost of one point-to-point transfer (AIConfigurator's empirical 10 us).
    sm_version : int
        CUDA compute capability x10 (90 for Hopper).
    nccl_version : str
        NCCL version whose measured table this system uses.
    """

    name: str
    mem_capacity_bytes: int
    mem_bw_bytes_s: float
    tensor_flops: Mapping[str, float] = field(hash=False)
    nvlink_bw_bytes_s: float
    internode_bw_bytes_s: float
    gpus_per_node: int
    sources: Mapping[str, str] = field(hash=False, compare=False)
    mem_bw_efficiency: float = 0.8
    launch_latency_s: float = 3e-6
    p2p_latency_s: float = 1e-5
    sm_version: int = 0
    nccl_version: str = ""

    def __post_init__(self) -> None:
        if not self.name or not isinstance(self.name, str):
            raise ValueError(f"HardwareSpec.name must be a non-empty string, got {self.name!r}")
        for attr in (
            "mem_capacity_bytes",
            "mem_bw_bytes_s",
            "nvlink_bw_bytes_s",
            "internode_bw_bytes_s",
            "gpus_per_node",
            "launch_latency_s",
            "p2p_latency_s",
        ):
            value = getattr(self, attr)
            if not isinstance(value, int | float) or not value > 0:
                raise ValueError(
                    f"HardwareSpec({self.name}).{attr} must be positive, got {value!r}"
                )
        if not 0 < self.mem_bw_efficiency <= 1:
            raise ValueError(
                f"HardwareSpec({self.name}).mem_bw_efficiency must be in (0, 1], "
                f"got {self.mem_bw_efficiency!r}"
            )
        flops = {}
        for dtype, rate in dict(self.tensor_flops).items():
            key = normalize_dtype(dtype, owner=f"HardwareSpec({self.name}).tensor_flops")
            if not rate > 0:
                raise ValueError(f"HardwareSpec({self.name}).tensor_flops[{dtype}] must be > 0")
            flops[key] = float(rate)
        if "bf16" not in flops:
            raise ValueError(f"HardwareSpec({self.name}).tensor_flops needs a 'bf16' rate")
        object.__setattr__(self, "tensor_flops", types.MappingProxyType(flops))
        object.__setattr__(self, "sources", types.MappingProxyType(dict(self.sources)))

    def supported_dtypes(self) -> list[str]:
        """Dtypes whose compute this GPU's tensor cores can price."""
        return sorted(d for d, c in COMPUTE_DTYPE.items() if c in self.tensor_flops)

    def flops_for(self, dtype: str) -> float:
        """Dense tensor-core FLOP/s for compute in ``dtype``.

        Raises
        ------
        ValueError
            If the GPU has no tensor cores for that dtype (e.g. fp8 on A100); the message lists
            the dtypes it supports.
        """
        key = normalize_dtype(dtype)
        compute = COMPUTE_DTYPE[key]
        if compute not in self.tensor_flops:
            raise ValueError(
                f"{self.name} has no {compute} tensor cores (needed by dtype {dtype!r}); "
                f"supported dtypes: {', '.join(self.supported_dtypes())}"
            )
        return self.tensor_flops[compute]

    def to_dict(self) -> dict[str, Any]:
        """A plain, YAML-ready dictionary (inverse of :meth:`from_dict`)."""
        return {
            "name": self.name,
            "mem_capacity_bytes": int(self.mem_capacity_bytes),
            "mem_bw_bytes_s": float(self.mem_bw_bytes_s),
            "tensor_flops": dict(self.tensor_flops),
            "nvlink_bw_bytes_s": float(self.nvlink_bw_bytes_s),
            "internode_bw_bytes_s": float(self.internode_bw_bytes_s),
            "gpus_per_node": int(self.gpus_per_node),
            "mem_bw_efficiency": float(self.mem_bw_efficiency),
            "launch_latency_s": float(self.launch_latency_s),
            "p2p_latency_s": float(self.p2p_latency_s),
            "sm_version": int(self.sm_version),
            "nccl_version": str(self.nccl_version),
            "sources": dict(self.sources),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, origin: str = "spec") -> HardwareSpec:
        """Build a spec from :meth:`to_dict` output; ``origin`` names the file in errors."""
        try:
            return cls(**dict(data))
        except TypeError as exc:
            raise ValueError(f"{origin}: malformed hardware spec ({exc})") from None


_AIC = "AIConfigurator 0.12.0 systems/{system}.yaml (Apache-2.0)"
_EMPIRICAL = "AIConfigurator 0.12.0 systems/{system}.yaml, marked there as an empirical correction"


def _sources(system: str, datasheet: str, **overrides: str) -> dict[str, str]:
    aic = _AIC.format(system=system)
    both = f"{datasheet}; as recorded in {aic}"
    out = {
        "mem_capacity_bytes": both,
        "mem_bw_bytes_s": both,
        "tensor_flops": f"{both} (dense, no sparsity)",
        "nvlink_bw_bytes_s": f"{both} (per GPU, one direction)",
        "internode_bw_bytes_s": f"{aic} (NIC per GPU, one direction)",
        "gpus_per_node": aic,
        "mem_bw_efficiency": _EMPIRICAL.format(system=system),
        "launch_latency_s": _EMPIRICAL.format(system=system),
        "p2p_latency_s": _EMPIRICAL.format(system=system),
        "nccl_version": aic,
    }
    out.update(overrides)
    return out


_H100_SHEET = (
    "NVIDIA H100 Tensor Core GPU datasheet, SXM5 column (nvidia.com/en-us/data-center/h100)"
)
_H200_SHEET = (
    "NVIDIA H200 Tensor Core GPU datasheet, SXM column (nvidia.com/en-us/data-center/h200)"
)
_B200_SHEET = (
    "NVIDIA HGX B200 / DGX B200 datasheet, per-GPU figures (nvidia.com/en-us/data-center/hgx)"
)
_A100_SHEET = (
    "NVIDIA A100 Tensor Core GPU datasheet, 80GB SXM column (nvidia.com/en-us/data-center/a100)"
)
_L40S_SHEET = "NVIDIA L40S datasheet (nvidia.com/en-us/data-center/l40s)"

#: The bundled GPUs (values from the AIConfigurator YAMLs, which quote NVIDIA's datasheets).
BUILTIN_SPECS: dict[str, HardwareSpec] = {
    "h100_sxm": HardwareSpec(
        name="h100_sxm",
        mem_capacity_bytes=85_899_345_920,  # 80 GiB HBM3
        mem_bw_bytes_s=3.35e12,
        tensor_flops={"bf16": 989e12, "fp8": 1978e12, "int8": 1978e12},
        nvlink_bw_bytes_s=450e9,  # NVLink 4: 900 GB/s bidirectional
        internode_bw_bytes_s=50e9,  # ConnectX-7 NDR 400 Gb/s per GPU
        gpus_per_node=8,
        sources=_sources("h100_sxm", _H100_SHEET),
        sm_version=90,
        nccl_version="2.27.3",
    ),
    "h200_sxm": HardwareSpec(
        name="h200_sxm",
        mem_capacity_bytes=151_397_597_184,  # 141 GiB HBM3e
        mem_bw_bytes_s=4.8e12,
        tensor_flops={"bf16": 989e12, "fp8": 1978e12, "int8": 1978e12},
        nvlink_bw_bytes_s=450e9,
        internode_bw_bytes_s=50e9,
        gpus_per_node=8,
        sources=_sources("h200_sxm", _H200_SHEET),
        sm_version=90,
        nccl_version="2.26.2",
    ),
    "b200_sxm": HardwareSpec(
        name="b200_sxm",
        mem_capacity_bytes=193_273_528_320,  # 180 GiB HBM3e
        mem_bw_bytes_s=7.7e12,
        tensor_flops={"bf16": 2250e12, "fp8": 4500e12, "int8": 4500e12, "fp4": 9000e12},
        nvlink_bw_bytes_s=900e9,  # NVLink 5: 1.8 TB/s bidirectional
        internode_bw_bytes_s=100e9,  # ConnectX-8 XDR 800 Gb/s per GPU
        gpus_per_node=8,
        sources=_sources("b200_sxm", _B200_SHEET),
        sm_version=100,
        nccl_version="2.27.3",
    ),
    "a100_sxm": HardwareSpec(
        name="a100_sxm",
        mem_capacity_bytes=85_899_345_920,  # 80 GiB HBM2e
        mem_bw_bytes_s=2.039e12,
        tensor_flops={"bf16": 312e12, "int8": 624e12},  # no fp8 tensor cores on Ampere
        nvlink_bw_bytes_s=300e9,  # NVLink 3: 600 GB/s bidirectional
        internode_bw_bytes_s=25e9,
        gpus_per_node=8,
        sources=_sources("a100_sxm", _A100_SHEET),
        sm_version=80,
        nccl_version="2.27.3",
    ),
    "l40s": HardwareSpec(
        name="l40s",
        mem_capacity_bytes=48_305_799_168,  # 48 GB GDDR6 (46068 MiB usable)
        mem_bw_bytes_s=864e9,
        tensor_flops={"bf16": 362.05e12, "fp8": 733e12, "int8": 733e12},
        nvlink_bw_bytes_s=32e9,  # no NVLink: PCIe 4.0 x16, one direction
        internode_bw_bytes_s=50e9,
        gpus_per_node=8,
        sources=_sources(
            "l40s",
            _L40S_SHEET,
            nvlink_bw_bytes_s=f"{_L40S_SHEET}: no NVLink, PCIe Gen4 x16; "
            f"as recorded in {_AIC.format(system='l40s')}",
        ),
        sm_version=89,
        nccl_version="2.27.3",
    ),
}


def spec_from_aiconfigurator_yaml(path: str | Path, name: str | None = None) -> HardwareSpec:
    """Read an AIConfigurator ``systems/<system>.yaml`` into a :class:`HardwareSpec`.

    Parameters
    ----------
    path : str or Path
        The YAML file.
    name : str, optional
        System name; defaults to the file stem.

    Raises
    ------
    ValueError
        If the file is missing, not YAML, or lacks a required field (the message names the file).
    """
    path = Path(path)
    system = name or path.stem
    try:
        doc = yaml.safe_load(path.read_text())
        gpu, node = doc["gpu"], doc["node"]
        flops = {"bf16": float(gpu["bfloat16_tc_flops"])}
        for key, dtype in (
            ("fp8_tc_flops", "fp8"),
            ("int8_tc_flops", "int8"),
            ("fp4_tc_flops", "fp4"),
        ):
            if gpu.get(key):
                flops[dtype] = float(gpu[key])
        cite = f"{path.name} (AIConfigurator system spec)"
        return HardwareSpec(
            name=system,
            mem_capacity_bytes=int(gpu["mem_capacity"]),
            mem_bw_bytes_s=float(gpu["mem_bw"]),
            tensor_flops=flops,
            nvlink_bw_bytes_s=float(node["intra_node_bw"]),
            internode_bw_bytes_s=float(node["inter_node_bw"]),
            gpus_per_node=int(node["num_gpus_per_node"]),
            sources={"all": cite},
            mem_bw_efficiency=float(gpu.get("mem_bw_empirical_scaling_factor", 0.8)),
            launch_latency_s=float(gpu.get("mem_empirical_constant_latency", 3e-6)),
            p2p_latency_s=float(node.get("p2p_latency", 1e-5)),
            sm_version=int(gpu.get("sm_version", 0)),
            nccl_version=str((doc.get("misc") or {}).get("nccl_version", "")),
        )
    except (OSError, yaml.YAMLError, KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"{path}: not a readable AIConfigurator system spec ({exc!r})") from None
