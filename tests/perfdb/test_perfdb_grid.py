"""EfficiencyGrid against closed-form oracles; specs; importer; CLI."""

import numpy as np
import pandas as pd
import pytest
import yaml
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

from perfdb import BUILTIN_SPECS, EfficiencyGrid, GemmOp, HardwareSpec, load_system


def _power_law_grid(drop=()):
    m = np.array([1, 4, 16, 64, 256])
    n = np.array([128, 512, 2048])
    mm, nn = (a.ravel() for a in np.meshgrid(m, n, indexing="ij"))
    lat = 0.01 * mm**0.7 * nn**0.4
    keep = np.ones(len(mm), bool)
    for i in drop:
        keep[i] = False
    return EfficiencyGrid([mm[keep], nn[keep]], lat[keep], np.ones(keep.sum())), mm, nn, lat


@given(m=st.floats(1, 256), n=st.floats(128, 2048))
def test_log_log_interpolation_is_exact_for_power_laws(m, n):
    grid, *_ = _power_law_grid()
    y, source, _ = grid.query([np.array([m]), np.array([n])])
    assert np.exp(y[0]) == pytest.approx(0.01 * m**0.7 * n**0.4, rel=1e-9)
    assert source[0] in (0, 1)


def test_exact_hits_are_measured_and_return_the_stored_latency():
    grid, mm, nn, lat = _power_law_grid()
    _, source, exact = grid.query([mm, nn])
    assert (source == 0).all() and np.array_equal(exact, lat)


def test_interior_holes_are_filled_linearly_and_stay_interpolated():
    grid, mm, nn, lat = _power_law_grid(drop=(7,))  # (m=16, n=512): bracketed on both axes
    y, source, _ = grid.query([mm[7:8], nn[7:8]])
    assert source[0] == 1
    assert np.exp(y[0]) == pytest.approx(lat[7], rel=1e-9)


def test_hole_fill_trusts_the_axis_that_interpolates_well_there():
    # smooth (a power law) along m, jagged (alternating +-20%) along n: a hole is filled from m
    m = np.array([1, 2, 4, 8, 16, 32, 64])
    n = np.array([1, 2, 3, 4, 5, 6, 7])
    mm, nn = (a.ravel() for a in np.meshgrid(m, n, indexing="ij"))
    lat = 0.01 * mm**0.5 * np.where(nn % 2 == 0, 1.2, 0.8)
    hole = int(np.flatnonzero((mm == 8) & (nn == 4))[0])
    keep = np.arange(len(mm)) != hole
    grid = EfficiencyGrid([mm[keep], nn[keep]], lat[keep], np.ones(keep.sum()))
    y, source, _ = grid.query([mm[hole : hole + 1], nn[hole : hole + 1]])
    assert source[0] == 1
    assert np.exp(y[0]) == pytest.approx(lat[hole], rel=1e-6)


def test_outside_holds_the_boundary_value_and_is_flagged():
    grid, *_ = _power_law_grid()
    y, source, _ = grid.query([np.array([10_000.0]), np.array([512.0])])
    assert source[0] == 2
    assert np.exp(y[0]) == pytest.approx(0.01 * 256**0.7 * 512**0.4)


def test_exterior_fills_are_flagged_as_roofline():
    grid, mm, nn, _ = _power_law_grid(drop=(14,))  # corner (m=256, n=2048): not bracketed
    _, source, _ = grid.query([mm[14:15], nn[14:15]])
    assert source[0] == 2


def test_grid_rejects_bad_input():
    with pytest.raises(ValueError, match="at least one"):
        EfficiencyGrid([np.array([])], np.array([]), np.array([]))
    with pytest.raises(ValueError, match="finite and positive"):
        EfficiencyGrid([np.array([1.0])], np.array([np.nan]), np.array([1.0]))
    with pytest.raises(ValueError, match="positive"):
        EfficiencyGrid([np.array([0.0])], np.array([1.0]), np.array([1.0]))


def test_builtin_specs_cite_every_figure():
    need = {
        "mem_capacity_bytes",
        "mem_bw_bytes_s",
        "tensor_flops",
        "nvlink_bw_bytes_s",
        "internode_bw_bytes_s",
    }
    for name in ("h100_sxm", "h200_sxm", "b200_sxm", "a100_sxm", "l40s"):
        spec = BUILTIN_SPECS[name]
        assert need <= set(spec.sources), name
        assert HardwareSpec.from_dict(spec.to_dict()) == spec
    assert "fp4" in BUILTIN_SPECS["b200_sxm"].tensor_flops
    assert "fp8" not in BUILTIN_SPECS["a100_sxm"].tensor_flops


def test_spec_validation():
    base = BUILTIN_SPECS["h100_sxm"].to_dict()
    with pytest.raises(ValueError, match="mem_bw_bytes_s"):
        HardwareSpec.from_dict({**base, "mem_bw_bytes_s": 0})
    with pytest.raises(ValueError, match="bf16"):
        HardwareSpec.from_dict({**base, "tensor_flops": {"fp8": 1e15}})


def test_builtin_specs_match_the_aiconfigurator_yamls(shared_data):
    from perfdb import spec_from_aiconfigurator_yaml

    systems = shared_data / "perfdb-aiconfigurator-0.12.0" / "systems"
    for name, spec in BUILTIN_SPECS.items():
        theirs = spec_from_aiconfigurator_yaml(systems / f"{name}.yaml")
        assert dict(theirs.tensor_flops) == dict(spec.tensor_flops), name
        for field in (
            "mem_capacity_bytes",
            "mem_bw_bytes_s",
            "nvlink_bw_bytes_s",
            "internode_bw_bytes_s",
            "gpus_per_node",
            "nccl_version",
        ):
            assert getattr(theirs, field) == getattr(spec, field), (name, field)


def _mini_tree(shared_data, tmp_path):
    """A two-table AIConfigurator tree: 300 GEMM rows and the NCCL table of h100_sxm."""
    src = shared_data / "perfdb-aiconfigurator-0.12.0" / "systems"
    dst = tmp_path / "systems"
    (dst / "data" / "h100_sxm" / "gemm" / "vllm" / "0.24.0").mkdir(parents=True)
    (dst / "data" / "h100_sxm" / "comm" / "nccl" / "2.27.3").mkdir(parents=True)
    (dst / "h100_sxm.yaml").write_text((src / "h100_sxm.yaml").read_text())
    (dst / "query_versions.yaml").write_text((src / "query_versions.yaml").read_text())
    gemm = pd.read_parquet(src / "data/h100_sxm/gemm/vllm/0.24.0/gemm_perf.parquet")
    gemm = gemm[
        (gemm.gemm_dtype == "bfloat16") & gemm.n.isin([4096, 8192]) & gemm.k.isin([4096, 8192])
    ]
    gemm.to_parquet(dst / "data/h100_sxm/gemm/vllm/0.24.0/gemm_perf.parquet")
    nccl = pd.read_parquet(src / "data/h100_sxm/comm/nccl/2.27.3/nccl_perf.parquet")
    nccl.to_parquet(dst / "data/h100_sxm/comm/nccl/2.27.3/nccl_perf.parquet")
    return dst, gemm, nccl


def test_importer_round_trips_measured_values(shared_data, tmp_path):
    from perfdb import import_aiconfigurator

    tree, gemm, nccl = _mini_tree(shared_data, tmp_path)
    report = import_aiconfigurator(tree, tmp_path / "db", progress=False)
    assert any("attention" in m for m in report.missing)  # absent families are reported
    db = load_system("h100_sxm", root=tmp_path / "db")
    assert db.version == "0.24.0"
    for row in gemm.sample(20, random_state=0).itertuples():
        assert db.latency(GemmOp(row.m, row.n, row.k, "bf16")) == (row.latency, "measured")
    # message_size counts elements: half -> 2 bytes each
    row = nccl[(nccl.op_name == "all_gather") & (nccl.nccl_dtype == "half")].iloc[5]
    from perfdb import AllGatherOp

    assert db.latency(AllGatherOp(int(row.message_size) * 2, int(row.num_gpus))) == (
        row.latency,
        "measured",
    )
    manifest = yaml.safe_load((tmp_path / "db/h100_sxm/vllm/0.24.0/manifest.yaml").read_text())
    assert manifest["tables"]["gemm"]["rows"] == len(gemm)


def test_importer_errors_name_what_is_wrong(shared_data, tmp_path):
    from perfdb import import_aiconfigurator

    tree, *_ = _mini_tree(shared_data, tmp_path)
    with pytest.raises(ValueError, match="present: h100_sxm"):
        import_aiconfigurator(tree, tmp_path / "db", systems=["x100"], progress=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="not an AIConfigurator"):
        import_aiconfigurator(tmp_path / "empty", tmp_path / "db", progress=False)
    bad = tree / "data/h100_sxm/gemm/vllm/0.24.0/gemm_perf.parquet"
    pd.DataFrame({"m": [1]}).to_parquet(bad)
    with pytest.raises(ValueError, match=str(bad)):
        import_aiconfigurator(tree, tmp_path / "db", progress=False)


def test_cli_query_list_and_clean_errors(tmp_path):
    from causal_tuner.cli import main

    runner = CliRunner()
    ok = runner.invoke(main, ["perfdb", "query", "gemm", "m=4096", "n=4096", "k=4096"])
    assert ok.exit_code == 0 and "(measured)" in ok.output
    listed = runner.invoke(main, ["perfdb", "list"])
    assert listed.exit_code == 0 and "b200_sxm" in listed.output
    for args, text in [
        (["perfdb", "query", "gemm", "m=0", "n=1", "k=1"], "GemmOp.m"),
        (["perfdb", "query", "gemm", "m=1", "n=1", "k=1", "--system", "nope"], "available:"),
        (["perfdb", "query", "conv", "m=1"], "unknown op type"),
        (["perfdb", "query", "gemm", "m=1"], "GemmOp"),
        (
            ["perfdb", "import-aiconfigurator", str(tmp_path / "missing"), "--out", str(tmp_path)],
            "no such folder",
        ),
    ]:
        result = runner.invoke(main, args)
        assert result.exit_code == 2, (args, result.output)
        assert text in result.output
        assert "Traceback" not in result.output


def test_cli_import_writes_a_loadable_database(shared_data, tmp_path):
    from causal_tuner.cli import main

    tree, gemm, _ = _mini_tree(shared_data, tmp_path)
    out = tmp_path / "db"
    result = CliRunner().invoke(
        main,
        ["perfdb", "import-aiconfigurator", str(tree), "--out", str(out), "--systems", "h100_sxm"],
    )
    assert result.exit_code == 0, result.output
    assert "gemm" in result.output
    row = gemm.iloc[0]
    query = CliRunner().invoke(
        main,
        ["perfdb", "query", "gemm", f"m={row.m}", f"n={row.n}", f"k={row.k}", "--root", str(out)],
    )
    assert query.exit_code == 0 and "(measured)" in query.output
