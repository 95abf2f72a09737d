"""The shared RESULTS.md writer used by the benchmark scripts touches only its own section."""

import importlib.util
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "results_md.py"
spec = importlib.util.spec_from_file_location("results_md", SCRIPT)
results_md = importlib.util.module_from_spec(spec)
spec.loader.exec_module(results_md)

DOC = "# Benchmark results\n\n## A\n\nold a\n\n## B\n\nkeep b\n"


def test_write_section_replaces_only_its_section_and_appends_new_ones(tmp_path):
    path = tmp_path / "RESULTS.md"
    path.write_text(DOC)
    results_md.write_section("## A\n\nnew a\n", "## A", path)
    # the section keeps its blank line before the next heading
    assert path.read_text() == "# Benchmark results\n\n## A\n\nnew a\n\n## B\n\nkeep b\n"
    results_md.write_section("## C\n\nc\n", "## C", path)
    assert path.read_text().endswith("keep b\n\n## C\n\nc\n")


def test_marked_block_is_added_once_then_replaced_in_place(tmp_path):
    path = tmp_path / "RESULTS.md"
    path.write_text(DOC)
    results_md.write_marked_block("first", "## A", "speed", path)
    once = path.read_text()
    assert once.count("<!-- speed:start -->") == 1 and "first" in once and "keep b" in once
    assert once.index("first") < once.index("## B")
    results_md.write_marked_block("second", "## A", "speed", path)
    twice = path.read_text()
    assert "first" not in twice and twice.count("<!-- speed:start -->") == 1
    assert twice == once.replace("first", "second")
    results_md.write_marked_block("x", "## New", "m", path)
    assert path.read_text().rstrip().endswith("## New\n\n<!-- m:start -->\nx\n<!-- m:end -->")


def test_machine_line_names_cores_cpu_and_python():
    import platform

    line = results_md.machine()
    cores = int(line.split(" cores", 1)[0])
    assert cores >= 1
    assert f"Python {platform.python_version()}" in line
