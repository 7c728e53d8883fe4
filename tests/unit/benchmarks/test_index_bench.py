"""Smoke test of the index benchmark on tiny synthetic data: exact search is exact, the report is complete."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from kuamo.benchmarks import common
from kuamo.benchmarks import index as bench
from kuamo.benchmarks import index_datasets as datasets
from kuamo.benchmarks import index_report as report
from kuamo.benchmarks import index_sweep as sweep


def test_bench_functions_on_tiny_data(tmp_path: Path) -> None:
    ds = datasets.synthetic(3000, 40, dim=32, centres=20)
    assert ds.xb.shape == (3000, 32) and np.allclose(np.linalg.norm(ds.xb, axis=1), 1.0, atol=1e-5)
    r = sweep.bench_dataset(ds, nprobes=(1, 8), rerank_factors=(1, 10), single_budget_s=0.05, flat_budget_s=0.05,
                            add_batches=2, n_deletes=20, ivf_overrides={"nlist": 32}, log=lambda s: None)
    assert r["flat"]["recall10"] == 1.0 and r["flat"]["one_recall10"] == 1.0
    assert len(r["sweep"]) == 4 and all(0.0 <= s["recall10"] <= 1.0 for s in r["sweep"])
    assert r["ivfpq"]["bytes_codes_per_vector"] < r["ivfpq"]["bytes_flat_per_vector"]
    assert r["filter"]["exact_path"]["k_fraction"] == 1.0 and r["filter"]["exact_path"]["only_allowed"]
    assert r["delete"]["n"] == 20 and r["add"]["ntotal_after"] == 5000

    res = {"suite": "index", "quick": True, "machine": common.machine_info(), "threads": sweep.default_threads(),
           "params": {"k": sweep.K, "queries": 40}, "datasets": {ds.name: {**r, "synthetic": True}},
           "skipped": {"glove": "not run in this test"}, "wall_s": 0.0}
    res["targets"] = report.targets(res)
    assert set(res["targets"]) == {"recall_at_10x_flat_glove_400k", "recall_at_10x_flat_synthetic_1m",
                                   "pq_codes_le_eighth_of_flat", "delete_one_le_1ms_at_1m", "filter_1pct_returns_k"}
    assert all({"target", "measured", "met"} <= set(t) for t in res["targets"].values())
    assert res["targets"]["recall_at_10x_flat_glove_400k"]["met"] is None  # not run: not claimed
    assert res["targets"]["pq_codes_le_eighth_of_flat"]["met"] is True
    out = tmp_path / "fresh"  # a results directory that does not exist yet
    report.write_report(res, out)
    saved = json.loads((out / "index_quick.json").read_text())
    assert saved["targets"].keys() == res["targets"].keys()
    md = (out / "index_quick.md").read_text()
    assert "## Targets" in md and "synthetic-3k" in md and "![recall vs QPS](index_quick_recall_qps.png)" in md
    assert (out / "index_quick_recall_qps.png").stat().st_size > 1000


def test_recall_at() -> None:
    gt = np.arange(20).reshape(2, 10)
    found = gt.copy()
    found[1, :5] = -1
    assert sweep.recall_at(found, gt) == (0.75, 0.5)


def test_large_catalog_path_without_flat_index() -> None:
    # the 5M path: no flat VectorIndex (memory), no add measurement (the store would double)
    ds = datasets.synthetic(2000, 120, dim=16, centres=10)
    r = sweep.bench_dataset(ds, nprobes=(4,), rerank_factors=(10,), single_budget_s=0.02, flat_budget_s=0.02,
                            add_batches=0, n_deletes=5, flat_index=False, ivf_overrides={"nlist": 16},
                            log=lambda s: None)
    assert r["flat"]["recall10"] == 1.0 and r["add"]["batches"] == 0 and r["add"]["ms_per_1k_p50"] is None
    assert "n/a" in report._dataset_section({**r, "synthetic": True})


def test_scratch_array_is_file_backed_and_leaves_no_file(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("KUAMO_BENCH_TMP", str(tmp_path))
    a = datasets._scratch_array((100, 8))
    a[:] = 3.0
    assert isinstance(a, np.memmap) and float(a.sum()) == 2400.0
    assert list(tmp_path.iterdir()) == []  # unlinked at once: nothing left behind, even after a kill


def test_only_run_merges_into_previous_results() -> None:
    previous = {"machine": {"cpu": {"model": "A"}}, "wall_s": 400.0,
                "datasets": {"glove-400k": {"name": "glove-400k", "n": 1}},
                "skipped": {"synthetic-5m": "not run"}}
    new = {"machine": {"cpu": {"model": "B"}}, "wall_s": 50.0,
           "datasets": {"synthetic-5m": {"name": "synthetic-5m", "n": 5, "separate_run": True}}, "skipped": {}}
    out = bench._merge(previous, new)
    assert list(out["datasets"]) == ["glove-400k", "synthetic-5m"]
    assert out["skipped"] == {} and out["machine"]["cpu"]["model"] == "A" and out["wall_s"] == 400.0
    assert out["merged_runs"] == [{"datasets": ["synthetic-5m"], "machine": new["machine"], "wall_s": 50.0}]
    assert previous["datasets"].keys() == {"glove-400k"}  # the previous results are not mutated


def test_only_rejects_an_unknown_dataset(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"unknown dataset\(s\) glov; choose from glove"):
        bench.run(results_dir=tmp_path, only=["glov"])
    assert list(tmp_path.iterdir()) == []  # refused before anything ran or was written
