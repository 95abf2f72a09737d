"""The query API on the bundled tables: exact hits, interpolation, extrapolation, errors."""

import shutil

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from perfdb import (
    AllGatherOp,
    AllReduceOp,
    AllToAllOp,
    ContextAttentionOp,
    ElementwiseOp,
    GemmOp,
    GenerationAttentionOp,
    MemoryOp,
    MLABmmOp,
    MLAContextOp,
    MLAGenerationOp,
    MoEOp,
    P2POp,
    ReduceScatterOp,
    list_systems,
    load_system,
)


@pytest.fixture(scope="module")
def h100():
    return load_system("h100_sxm")


def test_bundled_systems_cover_the_issue():
    assert {"h100_sxm", "h200_sxm", "b200_sxm", "a100_sxm", "l40s"} <= set(list_systems())


@pytest.mark.parametrize("system", ["h100_sxm", "h200_sxm", "b200_sxm", "a100_sxm"])
def test_every_required_table_is_bundled(system):
    db = load_system(system)
    need = {"gemm", "context_attention", "generation_attention", "moe", "nccl_all_reduce"}
    need |= {"nccl_all_gather", "nccl_all_to_all", "custom_all_reduce"}
    assert need <= set(db.tables)
    if system != "a100_sxm":  # AIConfigurator has no A100 MLA tables (PROVENANCE.md)
        assert {"mla_context", "mla_generation", "mla_bmm"} <= set(db.tables)


def test_loading_is_lazy(h100):
    fresh = load_system("h100_sxm")
    assert fresh._slices == {}
    fresh.latency(GemmOp(1, 1024, 1024))
    assert set(fresh._slices) == {"gemm"}


@pytest.mark.parametrize(
    ("table", "make"),
    [
        ("gemm", lambda r: GemmOp(r.m, r.n, r.k, r.dtype)),
        (
            "context_attention",
            lambda r: ContextAttentionOp(
                r.batch_size,
                r.isl,
                r.num_heads,
                r.num_kv_heads,
                r.head_dim,
                r.prefix_len,
                r.dtype,
                r.kv_dtype,
                r.window_size,
            ),
        ),
        (
            "generation_attention",
            lambda r: GenerationAttentionOp(
                r.batch_size,
                r.kv_len,
                r.num_heads,
                r.num_kv_heads,
                r.head_dim,
                r.dtype,
                r.kv_dtype,
                r.window_size,
            ),
        ),
        (
            "moe",
            lambda r: MoEOp(
                r.num_tokens,
                r.hidden_size,
                r.inter_size,
                r.topk,
                r.num_experts,
                r.moe_tp_size,
                r.moe_ep_size,
                r.dtype,
                r.distribution,
            ),
        ),
        (
            "mla_context",
            lambda r: MLAContextOp(
                r.batch_size, r.isl, r.num_heads, r.prefix_len, r.kv_dtype, r.gemm_dtype
            ),
        ),
        (
            "mla_generation",
            lambda r: MLAGenerationOp(
                r.batch_size, r.kv_len, r.num_heads, r.kv_dtype, r.gemm_dtype
            ),
        ),
        ("mla_bmm", lambda r: MLABmmOp(r.num_tokens, r.num_heads, r.phase, r.dtype)),
        ("nccl_all_gather", lambda r: AllGatherOp(r.message_bytes, r.num_gpus, r.dtype)),
        ("nccl_reduce_scatter", lambda r: ReduceScatterOp(r.message_bytes, r.num_gpus, r.dtype)),
        ("nccl_all_to_all", lambda r: AllToAllOp(r.message_bytes, r.num_gpus, r.dtype)),
    ],
)
def test_exact_hits_return_the_measured_value(h100, table, make):
    rows = h100.table(table).sample(25, random_state=0)
    for row in rows.itertuples():
        ms, source = h100.latency(make(row))
        assert source == "measured"
        assert ms == row.latency_ms


def test_all_reduce_takes_the_faster_of_nccl_and_custom(h100):
    nccl = h100.table("nccl_all_reduce")
    custom = h100.table("custom_all_reduce")
    custom = custom[custom["mode"] == "graph"]
    for size in (4096, 1 << 20, 1 << 26):
        n = nccl[(nccl.dtype == "fp16") & (nccl.num_gpus == 8) & (nccl.message_bytes == size)]
        c = custom[(custom.num_gpus == 8) & (custom.message_bytes == size)]
        ms, source = h100.latency(AllReduceOp(size, 8))
        assert source == "measured"
        assert ms == pytest.approx(min(n.latency_ms.min(), c.latency_ms.min()))


def test_single_gpu_collectives_cost_nothing(h100):
    assert h100.latency(AllReduceOp(1 << 20, 1)) == (0.0, "roofline")


def test_inside_the_grid_is_interpolated_between_neighbours(h100):
    gemm = h100.table("gemm")
    line = gemm[(gemm.dtype == "bf16") & (gemm.n == 4096) & (gemm.k == 4096)].set_index("m")
    ms, source = h100.latency(GemmOp(3000, 4096, 4096))
    assert source == "interpolated"
    lo, hi = line.loc[2817, "latency_ms"], line.loc[3072, "latency_ms"]
    assert min(lo, hi) * 0.9 <= ms <= max(lo, hi) * 1.1


def test_outside_the_grid_holds_the_boundary_efficiency(h100):
    from perfdb import reference_ms

    top = h100.latency(GemmOp(32768, 4096, 4096))
    far = h100.latency(GemmOp(65536, 4096, 4096))
    assert top[1] == "measured" and far[1] == "roofline"

    def ref(m):
        cols = {"m": np.array([m]), "n": np.array([4096]), "k": np.array([4096]), "dtype": "bf16"}
        return float(reference_ms(h100.spec, "gemm", cols)[0])

    assert ref(65536) / far[0] == pytest.approx(ref(32768) / top[0], rel=1e-9)
    assert far[0] > 1.9 * top[0]  # compute-bound: twice the work, about twice the time


def test_unmeasured_structure_is_roofline_not_interpolated(h100):
    ms, source = h100.latency(ContextAttentionOp(2, 1024, 32, 8, 128, prefix_len=3000))
    assert source == "roofline" and ms > h100.latency(ContextAttentionOp(2, 1024, 32, 8, 128))[0]


def test_prefix_attention_is_priced_as_the_prefill_of_equal_work(h100):
    from perfdb.ops import GenerationAttentionOp

    def ctx(isl, prefix):
        return h100.latency(ContextAttentionOp(1, isl, 32, 8, 128, prefix_len=prefix))[0]

    # one new token over 8191 cached ones reads the same keys as a decode step: within a few
    # times its measured cost (it came out 130x that when the roofline ratio scaled a
    # one-token prefill's launch-bound time)
    decode = h100.latency(GenerationAttentionOp(1, 8192, 32, 8, 128))[0]
    assert decode < ctx(1, 8191) < 3 * decode
    # a chunk's attention grows with the prefix and the chunk, and a full second half of a
    # 16k prompt costs about causal(16k) - causal(8k), as the tables measure them
    assert ctx(16, 1024) < ctx(16, 8191) < ctx(1024, 8191) < ctx(8192, 8191)
    assert ctx(8192, 8192) == pytest.approx(ctx(16384, 0) - ctx(8192, 0), rel=0.15)


def test_unmeasured_structure_keeps_the_fixed_cost():
    """h200/trtllm measures gpt-oss MoE only at moe_tp=1: a TP-split query rescales the
    work but keeps the fused module's fixed cost (it pays ~70 us even with one token)."""
    db = load_system("h200_sxm", backend="trtllm")

    def moe(tokens, tp=1, ep=1):
        op = MoEOp(tokens, 2880, 2880, 4, 128, tp, ep, "w4a16_mxfp4", "power_law_1.01")
        return db.latency(op)

    one_token, source = moe(1)
    assert source == "measured" and one_token > 0.05
    floor = db._fixed_floor_ms(
        db._table_slices("moe")[("w4a16_mxfp4", "power_law_1.01")],
        {"dtype": "w4a16_mxfp4", "distribution": "power_law_1.01"},
        "moe",
    )
    assert 0.04 < floor < one_token
    for tokens in (4, 16, 64):
        full, _ = moe(tokens)
        split = [moe(tokens, tp)[0] for tp in (2, 4, 8)]
        assert all(moe(tokens, tp)[1] == "roofline" for tp in (2, 4, 8))
        assert full > split[0] > split[1] > split[2] > floor  # less work, never below the floor
        # the size-dependent part shrinks at most in proportion to the split
        assert split[2] - floor >= (full - floor) / 8 * 0.5


def test_spec_priced_ops(h100):
    spec = h100.spec
    ms, source = h100.latency(ElementwiseOp(10**9))
    assert source == "roofline"
    assert ms == pytest.approx(
        (spec.launch_latency_s + 1e9 / (spec.mem_bw_bytes_s * spec.mem_bw_efficiency)) * 1e3
    )
    assert h100.latency(MemoryOp(10**6, 10**6))[0] == pytest.approx(
        h100.latency(ElementwiseOp(2 * 10**6))[0]
    )
    assert h100.latency(P2POp(10**6, inter_node=True))[0] > h100.latency(P2POp(10**6))[0]


def test_vectorized_path_matches_single_queries(h100):
    rng = np.random.default_rng(1)
    b = rng.integers(1, 300, 40)
    kv = rng.integers(1, 20000, 40)
    ms, src = h100.latency_many(
        "generation_attention", batch_size=b, kv_len=kv, num_heads=32, num_kv_heads=8, head_dim=128
    )
    for i in range(40):
        one = h100.latency(GenerationAttentionOp(int(b[i]), int(kv[i]), 32, 8, 128))
        assert one == (pytest.approx(ms[i]), src[i])


@given(
    m=st.integers(1, 10**6),
    n=st.integers(1, 10**5),
    k=st.integers(1, 10**5),
    dtype=st.sampled_from(["bf16", "fp8", "fp8_block", "int8", "fp16"]),
)
def test_gemm_is_finite_and_positive_everywhere(h100, m, n, k, dtype):
    ms, source = h100.latency(GemmOp(m, n, k, dtype))
    assert np.isfinite(ms) and ms > 0
    assert source in {"measured", "interpolated", "roofline"}


@given(
    b=st.integers(1, 4096),
    isl=st.integers(1, 65536),
    heads=st.sampled_from([1, 8, 28, 64, 128]),
    hd=st.sampled_from([64, 80, 128, 256]),
    prefix=st.integers(0, 10**5),
    window=st.sampled_from([0, 128, 4096]),
)
def test_attention_is_finite_and_positive_everywhere(h100, b, isl, heads, hd, prefix, window):
    for op in (
        ContextAttentionOp(b, isl, heads, 1, hd, prefix, window_size=window),
        GenerationAttentionOp(b, isl + prefix, heads, 1, hd, kv_dtype="fp8", window_size=window),
    ):
        ms, _ = h100.latency(op)
        assert np.isfinite(ms) and ms > 0


def test_a_dtype_the_hardware_lacks_is_an_error_listing_what_exists():
    a100 = load_system("a100_sxm")
    with pytest.raises(ValueError, match=r"no fp8 tensor cores.*supported dtypes: .*bf16"):
        a100.latency(GemmOp(128, 4096, 4096, "fp8"))


def test_unmeasured_but_supported_dtype_uses_default_efficiency(h100):
    from perfdb import fallback_ms

    ms, source = h100.latency(GemmOp(128, 4096, 4096, "int8_wo"))
    cols = {"m": np.array([128]), "n": np.array([4096]), "k": np.array([4096]), "dtype": "int8_wo"}
    assert source == "roofline"
    assert ms == pytest.approx(float(fallback_ms(h100.spec, "gemm", cols)[0]))


def test_unknown_system_backend_version_list_what_exists():
    with pytest.raises(ValueError, match="available: a100_sxm, b200_sxm"):
        load_system("h800")
    with pytest.raises(ValueError, match="available: sglang, trtllm, vllm"):
        load_system("h100_sxm", backend="tgi")
    with pytest.raises(ValueError, match=r"available: 0\.24\.0"):
        load_system("h100_sxm", version="0.1.0")


def test_vectorized_bad_sizes_raise(h100):
    with pytest.raises(ValueError, match=r"GemmOp\.m must be positive"):
        h100.latency_many("gemm", m=[4, 0], n=8, k=8)
    with pytest.raises(ValueError, match="no field"):
        h100.latency_many("gemm", m=[4], n=8, k=8, q=1)
    with pytest.raises(ValueError, match="unknown op type"):
        h100.latency_many("conv2d", m=[4])


def _copy_system(tmp_path):
    from perfdb import BUNDLED_ROOT

    src = BUNDLED_ROOT / "a100_sxm"
    shutil.copytree(src, tmp_path / "a100_sxm")
    return tmp_path / "a100_sxm" / "vllm" / "0.14.0" / "gemm.parquet"


def test_corrupt_table_names_the_file(tmp_path):
    path = _copy_system(tmp_path)
    path.write_bytes(b"not a parquet file")
    db = load_system("a100_sxm", root=tmp_path)
    with pytest.raises(ValueError, match=str(path)):
        db.latency(GemmOp(8, 1024, 1024))


def test_partial_table_names_the_file_and_column(tmp_path):
    path = _copy_system(tmp_path)
    pd.read_parquet(path).drop(columns=["k"]).to_parquet(path)
    db = load_system("a100_sxm", root=tmp_path)
    with pytest.raises(ValueError, match=rf"{path}.*'k'"):
        db.latency(GemmOp(8, 1024, 1024))


def test_nan_latency_in_a_table_is_rejected(tmp_path):
    path = _copy_system(tmp_path)
    frame = pd.read_parquet(path)
    frame.loc[3, "latency_ms"] = np.nan
    frame.to_parquet(path)
    with pytest.raises(ValueError, match="NaN"):
        load_system("a100_sxm", root=tmp_path).latency(GemmOp(8, 1024, 1024))


def test_malformed_system_file_is_named(tmp_path):
    _copy_system(tmp_path)
    (tmp_path / "a100_sxm" / "system.yaml").write_text("spec: [1, 2\n")
    with pytest.raises(ValueError, match=r"system\.yaml"):
        load_system("a100_sxm", root=tmp_path)


def test_batched_latencies_match_single_queries():
    mixed = [
        GemmOp(100, 4096, 4096),
        GemmOp(100, 4096, 4096, "fp8"),
        GenerationAttentionOp(33, 1000, 32, 8, 128),
        AllReduceOp(10**6, 4),
        AllReduceOp(10**6, 1),
        P2POp(10**6, inter_node=True),
        MoEOp(100, 4096, 14336, 2, 8, distribution="power_law_1.2"),
        MLABmmOp(10, 16, "pre"),
        GemmOp(100, 4096, 4096),
    ]
    batched = load_system("h100_sxm").latencies(mixed)
    single = load_system("h100_sxm")
    assert batched == [single.latency(op) for op in mixed]


def test_vectorized_string_arrays_group_by_dtype(h100):
    ms, _ = h100.latency_many(
        "gemm", m=[64, 64, 64], n=4096, k=4096, dtype=["bf16", "fp8", "bfloat16"]
    )
    assert ms[0] == ms[2] and ms[1] < ms[0]
    assert ms[1] == h100.latency(GemmOp(64, 4096, 4096, "fp8"))[0]


def test_extra_roots_from_the_environment_are_searched_first(tmp_path, monkeypatch):
    from perfdb import PATH_ENV

    _copy_system(tmp_path)
    (tmp_path / "a100_sxm").rename(tmp_path / "my_a100")
    monkeypatch.setenv(PATH_ENV, str(tmp_path))
    assert "my_a100" in list_systems() and "h100_sxm" in list_systems()
    mine = load_system("my_a100")
    assert mine.latency(GemmOp(8, 1024, 1024)) == load_system("a100_sxm").latency(
        GemmOp(8, 1024, 1024)
    )


@given(
    b=st.lists(st.integers(1, 512), min_size=1, max_size=6),
    isl=st.integers(1, 20000),
    kv_dtype=st.sampled_from(["bf16", "fp8"]),
)
def test_vectorized_context_attention_matches_single_queries(h100, b, isl, kv_dtype):
    ms, src = h100.latency_many(
        ContextAttentionOp,
        batch_size=b,
        isl=isl,
        num_heads=40,
        num_kv_heads=8,
        head_dim=128,
        kv_dtype=kv_dtype,
    )
    for i, bs in enumerate(b):
        one = h100.latency(ContextAttentionOp(bs, isl, 40, 8, 128, kv_dtype=kv_dtype))
        assert one == (pytest.approx(ms[i], rel=1e-12), src[i])


def test_fp8_kv_attention_uses_the_slice_that_measured_its_head_size():
    # SGLang's Hopper tables file fp8-KV prefill for head_dim 128 under (fp8, fp8) and keep
    # (bf16, fp8) for wide heads only: the query must not extrapolate from the wide heads.
    import glob

    sglang = load_system("h200_sxm", backend="sglang")
    path = glob.glob(str(sglang.table_dir / "context_attention.parquet"))[0]
    table = pd.read_parquet(path)
    row = table[
        (table.dtype == "fp8")
        & (table.kv_dtype == "fp8")
        & (table.head_dim == 128)
        & (table.num_kv_heads == 4)
        & (table.num_heads == 16)
        & (table.batch_size == 1)
        & (table.isl == 8192)
        & (table.prefix_len == 0)
        & (table.window_size == 0)
    ]
    assert len(row) == 1
    assert 128 not in set(table[(table.dtype == "bf16") & (table.kv_dtype == "fp8")].head_dim)
    ms, source = sglang.latency(ContextAttentionOp(1, 8192, 16, 4, 128, 0, "bf16", "fp8", 0))
    assert source == "measured"
    assert ms == pytest.approx(float(row.latency_ms.iloc[0]))
    # a wide head that (bf16, fp8) did measure still comes from its own slice
    wide = table[
        (table.dtype == "bf16") & (table.kv_dtype == "fp8") & (table.head_dim == 256)
    ].iloc[0]
    op = ContextAttentionOp(
        int(wide.batch_size),
        int(wide.isl),
        int(wide.num_heads),
        int(wide.num_kv_heads),
        256,
        int(wide.prefix_len),
        "bf16",
        "fp8",
        int(wide.window_size),
    )
    assert sglang.latency(op) == (pytest.approx(float(wide.latency_ms)), "measured")
    # where (bf16, fp8) covers the head size (TensorRT-LLM), nothing changes
    trtllm = load_system("h200_sxm", backend="trtllm")
    assert trtllm.latency(ContextAttentionOp(1, 8192, 16, 4, 128, 0, "bf16", "fp8", 0))[1] == (
        "measured"
    )
