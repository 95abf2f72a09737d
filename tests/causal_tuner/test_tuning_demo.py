"""``causal-tuner demo`` (the README's main job) runs end to end on a small budget."""

from click.testing import CliRunner

from causal_tuner.cli import main


def test_tuning_demo_end_to_end(tmp_path):
    out = tmp_path / "demo"
    result = CliRunner().invoke(
        main, ["demo", "--out", str(out), "--windows", "6", "--pool-size", "2"]
    )
    assert result.exit_code == 0, result.output
    assert "Oracle best:" in result.output and "ba-ucb" in result.output and "ucb1" in result.output
    assert (out / "regret.png").stat().st_size > 1000
    assert (out / "windows.csv").read_text().count("\n") == 1 + 3 * 6  # header + 3 policies x 6
    for name in ("ba-ucb", "ucb1", "tpe"):
        assert (out / f"{name}.sqlite").exists()


def test_tuning_demo_rejects_bad_options(tmp_path):
    result = CliRunner().invoke(main, ["demo", "--windows", "0", "--out", str(tmp_path)])
    assert result.exit_code == 2 and "Traceback" not in result.output
