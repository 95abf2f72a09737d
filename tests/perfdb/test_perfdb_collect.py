"""The PyTorch collector end to end on CPU with tiny sizes (gloo all-reduce, 2 processes)."""

import pytest

from perfdb import AllReduceOp, ContextAttentionOp, GemmOp, GenerationAttentionOp, load_system


@pytest.mark.heavy
@pytest.mark.slow
def test_collect_quick_on_cpu_is_loadable(tmp_path):
    pytest.importorskip("torch")
    from perfdb import CollectConfig, collect

    out = collect(
        CollectConfig(
            system="cpu_smoke", device="cpu", quick=True, world_size=2, iters=2, repeats=1
        ),
        tmp_path,
    )
    assert (out / "PROVENANCE.md").is_file()
    db = load_system("cpu_smoke", backend="torch", root=tmp_path)
    assert {"gemm", "context_attention", "generation_attention", "nccl_all_reduce"} <= set(
        db.tables
    )
    assert "measured by perfdb collect" in db.spec.sources["tensor_flops"]
    gemm = db.table("gemm").iloc[0]
    assert db.latency(GemmOp(int(gemm.m), int(gemm.n), int(gemm.k))) == (
        gemm.latency_ms,
        "measured",
    )
    assert db.latency(GemmOp(20, 100, 100))[1] == "interpolated"
    assert db.latency(ContextAttentionOp(2, 24, 4, 2, 64))[1] == "interpolated"
    assert db.latency(GenerationAttentionOp(1, 16, 2, 2, 64))[1] == "measured"
    assert db.latency(AllReduceOp(16384, 2))[1] == "measured"


def test_collect_config_validation():
    from perfdb import CollectConfig

    with pytest.raises(ValueError, match="device"):
        CollectConfig(system="x", device="tpu")
    with pytest.raises(ValueError, match="system"):
        CollectConfig(system="a/b")
    with pytest.raises(ValueError, match="world_size"):
        CollectConfig(system="x", world_size=0)
