"""A benchmark never loses a run at the end: the results directory is created, the JSON is written before any
plot, and a plot that fails leaves the JSON and the Markdown in place."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kuamo.benchmarks import common, server
from kuamo.benchmarks.loadgen import LoadResult
from kuamo.benchmarks.plots import figure, latency_cdf


def _draw(path: Path) -> None:
    with figure(path, figsize=(4, 3)) as (_, ax):
        latency_cdf(ax, "calls", [0.001, 0.002, 0.004])


def test_write_results_creates_the_directory_and_every_file(tmp_path: Path) -> None:
    out = tmp_path / "not" / "made" / "yet"
    common.write_results("tiny", {"quick": True, "figure": 1.5}, "Tiny", lambda: "body\n", common.machine_info(),
                         plots={"tiny_cdf.png": _draw}, results_dir=out)
    assert json.loads((out / "tiny.json").read_text()) == {"quick": True, "figure": 1.5}
    assert (out / "tiny.md").read_text().startswith("# Tiny\n\nMachine: ")
    assert (out / "tiny_cdf.png").stat().st_size > 1000


def test_a_failing_plot_keeps_the_json_and_the_markdown(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    def broken(path: Path) -> None:
        raise ValueError("no data to plot")

    common.write_results("tiny", {"a": 1}, "Tiny", lambda: "body\n", common.machine_info(),
                         plots={"tiny_broken.png": broken, "tiny_cdf.png": _draw}, results_dir=tmp_path / "fresh")
    assert {p.name for p in (tmp_path / "fresh").iterdir()} == {"tiny.json", "tiny.md", "tiny_cdf.png"}
    assert "tiny_broken.png failed (ValueError: no data to plot)" in capsys.readouterr().err


def test_a_failing_report_still_leaves_the_json(tmp_path: Path) -> None:
    def body() -> str:
        raise KeyError("a report bug")

    with pytest.raises(KeyError):
        common.write_results("tiny", {"a": 1}, "Tiny", body, common.machine_info(), results_dir=tmp_path / "d")
    assert json.loads((tmp_path / "d" / "tiny.json").read_text()) == {"a": 1}


def test_server_plots_go_into_a_directory_that_does_not_exist(tmp_path: Path) -> None:
    # `KUAMO_RESULTS_DIR=<new dir> kuamo bench server` died here after minutes of measuring
    lat = {"p50_ms": 2.0, "p99_ms": 5.0}
    out = {"load": {"closed_loop_text": {str(c): {"throughput_qps": 10.0 * c, "latency": lat} for c in (1, 8, 32)}}}
    res = LoadResult(latencies=[0.002, 0.003, 0.01])
    server._plot_throughput(out, tmp_path / "new" / "server_quick_throughput.png")
    server._plot_latency_cdf({"one client, text": res}, tmp_path / "new2" / "server_quick_latency_cdf.png")
    assert (tmp_path / "new" / "server_quick_throughput.png").stat().st_size > 1000
    assert (tmp_path / "new2" / "server_quick_latency_cdf.png").stat().st_size > 1000
