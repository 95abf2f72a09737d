"""The ``causal-tuner paper-demo`` command: runs end to end, and bad options exit 2 without a traceback."""

from click.testing import CliRunner

from causal_tuner.cli import main


def test_demo_writes_png_and_table(tmp_path):
    out = tmp_path / "demo"
    result = CliRunner().invoke(
        main, ["paper-demo", "--out", str(out), "--graphs", "2", "--horizon", "60", "--jobs", "1"]
    )
    assert result.exit_code == 0, result.output
    assert "mean regret at T" in result.output
    assert "BA-UCB regret / UCB1 regret" in result.output
    assert (out / "regret.png").stat().st_size > 10_000
    assert (out / "runs.csv").read_text().startswith("policy,graph")


def test_demo_bad_option_is_a_clean_usage_error(tmp_path):
    result = CliRunner().invoke(main, ["paper-demo", "--out", str(tmp_path), "--graphs", "0"])
    assert result.exit_code == 2
    assert "n_graphs must be an int >= 1" in result.output
    assert "Traceback" not in result.output
