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
    with pytest.raises(ValueError, match="gemm_dtypes"):
        CollectConfig(system="x", gemm_dtypes=("fp8",))
    with pytest.raises(ValueError, match="gemm_dtypes"):
        CollectConfig(system="x", gemm_dtypes=("bf16", "fp4"))
    assert CollectConfig(system="x", gemm_dtypes=("bf16", "fp8", "fp8")).gemm_dtypes == (
        "bf16",
        "fp8",
    )


@pytest.mark.heavy
@pytest.mark.slow
def test_collect_fp8_gemms_on_cpu_gives_a_loadable_fp8_table(tmp_path):
    torch = pytest.importorskip("torch")
    if not hasattr(torch, "_scaled_mm"):
        pytest.skip("this torch has no _scaled_mm")
    from perfdb import CollectConfig, collect

    collect(
        CollectConfig(
            system="cpu_fp8",
            device="cpu",
            quick=True,
            world_size=1,
            iters=1,
            repeats=1,
            gemm_dtypes=("bf16", "fp8"),
        ),
        tmp_path,
    )
    db = load_system("cpu_fp8", backend="torch", root=tmp_path)
    gemm = db.table("gemm")
    assert set(gemm.dtype) == {"bf16", "fp8"}
    assert len(gemm[gemm.dtype == "fp8"]) == len(gemm[gemm.dtype == "bf16"])
    # the measured spec has an fp8 rate, so fp8 queries off the grid are priced too
    assert db.spec.flops_for("fp8") > 0
    assert db.latency(GemmOp(20, 100, 100, "fp8"))[1] == "interpolated"


def test_timer_runs_every_input_set_and_needs_iters_calls_at_least():
    torch = pytest.importorskip("torch")
    from perfdb.collector import CollectConfig, _Timer

    cfg = CollectConfig(system="x", device="cpu", warmup=0, iters=4, repeats=2)
    timer = _Timer(torch, "cpu", cfg)
    assert timer.sets_for(10) == 1  # no L2 to defeat on a CPU
    calls = [0, 0, 0]

    def bump(i):
        calls[i] += 1

    ms = timer([lambda i=i: bump(i) for i in range(3)])
    # each of the 2 repeats runs max(iters, sets) = 4 calls, cycling through the 3 sets
    assert calls == [4, 2, 2]
    assert ms >= 0.0
    timer.l2_bytes = 50 * 2**20  # as on a GPU: sets cover twice the L2, at most 256
    assert timer.sets_for(2**20) == 100
    assert timer.sets_for(1) == 256
    assert timer.sets_for(2**30) == 1


def test_moe_layer_call_matches_a_per_expert_loop():
    """The collector's MoE layer computes what a per-expert loop does (gather, two GEMMs with
    SiLU-and-multiply, weighted scatter), so its timings time that layer."""
    torch = pytest.importorskip("torch")
    from perfdb.collector import _moe_calls

    gen = torch.Generator().manual_seed(0)
    hidden, inter, topk, experts, tp, tokens = 32, 48, 2, 4, 2, 10
    (call,) = _moe_calls(torch, [hidden, inter, topk, experts, tp], tokens, 1, "cpu", gen)
    got = call().float()
    d = call.__defaults__  # (x, w1, w2, offs, src, gate) bound at construction
    x, w1, w2, offs, src, gate = (t.float() for t in d)
    local = inter // tp
    want = torch.zeros_like(x)
    start = 0
    for e, end in enumerate(int(o) for o in offs.tolist()):
        rows = src[start:end].long()
        h = x[rows] @ w1[e]
        y = (torch.nn.functional.silu(h[:, :local]) * h[:, local:]) @ w2[e]
        want.index_add_(0, rows, y * gate[start:end])
        start = end
    assert start == tokens * topk
    assert torch.allclose(got, want, rtol=0.05, atol=0.05 * want.abs().max().item())


def test_collect_moe_only_needs_a_known_system(tmp_path):
    pytest.importorskip("torch")
    from perfdb import CollectConfig, collect

    with pytest.raises(ValueError, match="add 'gemm' to ops"):
        CollectConfig(system="my_box", ops=("moe",))
    with pytest.raises(ValueError, match="subset"):
        CollectConfig(system="h100_sxm", ops=("moe", "fft"))
    path = collect(
        CollectConfig(
            system="h100_sxm",
            device="cpu",
            quick=True,
            world_size=1,
            iters=1,
            repeats=1,
            ops=("moe",),
        ),
        tmp_path,
    )
    db = load_system("h100_sxm", backend="torch", root=tmp_path)
    moe = db.table("moe")
    assert len(moe) == 6 and (moe.latency_ms > 0).all()
    assert set(moe.distribution) == {"balanced"}
    assert (path / "torch").is_dir() and not list((path / "torch").rglob("gemm.parquet"))


def test_bf16_gemm_is_timed_in_the_linear_layer_layout():
    """The weight is stored [n, k] and applied transposed, as F.linear runs an engine's layer."""
    torch = pytest.importorskip("torch")
    from perfdb.collector import _gemm_calls

    gen = torch.Generator().manual_seed(0)
    (call,) = _gemm_calls(torch, "bf16", 3, 5, 7, 1, "cpu", gen)
    a, w = call.__defaults__
    assert tuple(w.shape) == (5, 7)
    assert torch.equal(call(), a @ w.t())
