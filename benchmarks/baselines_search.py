"""Baselines sections 1 and 3: text search end to end per configuration at one catalog size, and the scale
curve of kuamo's search (vector search alone and end to end) over catalog sizes."""

from __future__ import annotations

import gc
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from kuamo.benchmarks.baselines_configs import (
    Config,
    faiss_flat_search,
    index_search,
    pipeline_closed_loop,
    sklearn_search,
    threads_closed_loop,
    time_sequential,
    tune_ivf,
    vector_index,
)
from kuamo.benchmarks.baselines_data import (
    CONCURRENCY,
    REFERENCE,
    K,
    Log,
    default_log,
    exact_topk,
    expand_vectors,
    overlap_at_k,
    recall_at_k,
)
from kuamo.benchmarks.common import latency_stats
from kuamo.engine.encoders import TextEncoder
from kuamo.engine.index import IndexConfig, VectorIndex


# -- section 1 ----------------------------------------------------------------------------------------------
def bench_search(xb: np.ndarray, queries: list[str], tune: list[str], enc_fp32: TextEncoder, enc_int8: TextEncoder,
                 torch_encode: Callable[[list[str]], np.ndarray] | None, *, duration_s: float, log: Log = default_log,
                 torch_note: str = "", ivf_m: int | None = None) -> dict[str, Any]:
    n = len(xb)
    configs: list[Config] = []
    onnx32 = lambda xs: enc_fp32.encode(xs, kind="query")  # noqa: E731
    onnx8 = lambda xs: enc_int8.encode(xs, kind="query")  # noqa: E731
    if torch_encode is not None:
        configs.append(Config(REFERENCE, "PyTorch FP32", "sklearn cosine_similarity (every product, per query)",
                              torch_encode, sklearn_search(xb), kuamo=False))
        configs.append(Config("torch_fp32+faiss_flat", "PyTorch FP32", "FAISS IndexFlatIP (exact)", torch_encode,
                              faiss_flat_search(xb), kuamo=False))
    flat, flat_build = vector_index(xb, IndexConfig(flat_threshold=n + 1))
    configs.append(Config("kuamo_onnx_fp32+flat", "ONNX FP32", "VectorIndex flat (exact)", onnx32,
                          index_search(flat), kuamo=True))
    configs.append(Config("kuamo_onnx_int8+flat", "ONNX INT8", "VectorIndex flat (exact)", onnx8,
                          index_search(flat), kuamo=True))
    ivf, ivf_build = vector_index(xb, IndexConfig(flat_threshold=0, m=ivf_m))
    log(f"IVF-PQ over {n} vectors built in {ivf_build:.1f} s: {ivf.params}")
    (nprobe, rf), sweep = tune_ivf(ivf, xb, enc_int8.encode(tune, kind="query"))
    configs.append(Config("kuamo_onnx_int8+ivfpq_rerank", "ONNX INT8",
                          f"VectorIndex IVF-PQ nprobe {nprobe} + exact re-rank x{rf}", onnx8,
                          index_search(ivf, nprobe, rf), kuamo=True))
    out: dict[str, Any] = {"n_products": n, "queries": len(queries), "k": K, "configs": {},
                           "ivfpq": {"params": ivf.params, "build_s": ivf_build, "nprobe": nprobe, "rerank_factor": rf,
                                     "tuning_queries": len(tune), "sweep": sweep, "stats": _mem(ivf)},
                           "flat": {"build_s": flat_build, "stats": _mem(flat)}}
    if torch_encode is None:
        out["reference_missing"] = torch_note
    found: dict[str, np.ndarray] = {}
    for cfg in configs:
        r = time_sequential(cfg, queries)
        xq = r.pop("_qvecs")
        found[cfg.name] = r.pop("_found")
        gs, gi = exact_topk(xb, xq)
        r["recall10_vs_exact"] = recall_at_k(found[cfg.name], gi, xb=xb, xq=xq, gt_scores=gs)
        r["recall10_vs_exact_strict"] = recall_at_k(found[cfg.name], gi)
        if cfg.kuamo:
            r["concurrent_batching_off"] = pipeline_closed_loop(cfg, queries, batching=False, duration_s=duration_s)
            r["concurrent_batching_on"] = pipeline_closed_loop(cfg, queries, batching=True, duration_s=duration_s)
        else:
            r["concurrent_threads"] = threads_closed_loop(cfg.one, queries, CONCURRENCY, duration_s)
        qps = [r["qps_sequential"]] + [r[key]["qps"] for key in ("concurrent_batching_off", "concurrent_batching_on",
                                                                 "concurrent_threads") if key in r]
        r["qps_best"] = max(qps)
        out["configs"][cfg.name] = {"encoder": cfg.encoder, "search": cfg.search_name, "kuamo": cfg.kuamo, **r}
        log(f"{cfg.name:32} p50 {r['latency']['p50_ms']:7.2f} ms  p99 {r['latency']['p99_ms']:7.2f} ms  "
            f"seq {r['qps_sequential']:7.1f} q/s  best {r['qps_best']:7.1f} q/s  recall {r['recall10_vs_exact']:.4f}")
    if REFERENCE in found:
        for name, f in found.items():
            out["configs"][name]["overlap10_vs_reference"] = overlap_at_k(f, found[REFERENCE])
        ref_qps = out["configs"][REFERENCE]["qps_best"]
        for c in out["configs"].values():
            c["qps_vs_reference"] = c["qps_best"] / ref_qps
            c["p50_speedup_vs_reference"] = out["configs"][REFERENCE]["latency"]["p50_ms"] / c["latency"]["p50_ms"]
    del flat, ivf
    gc.collect()
    return out


def _mem(idx: VectorIndex) -> dict[str, Any]:
    s = idx.stats()
    return {"kind": s["kind"], "params": s["params"], "bytes_codes": s["bytes_codes"],
            "bytes_rerank_store": s["bytes_rerank_store"], "bytes_total": s["bytes_codes"] + s["bytes_rerank_store"]}


# -- section 3 ----------------------------------------------------------------------------------------------
def bench_scale(real: np.ndarray, sizes: Sequence[int], queries: list[str], tune: list[str], enc_int8: TextEncoder,
                *, duration_s: float, log: Log = default_log) -> dict[str, Any]:
    xq = enc_int8.encode(queries, kind="query")
    xq_tune = enc_int8.encode(tune, kind="query")
    out: dict[str, Any] = {}
    for n in sizes:
        xb = expand_vectors(real, n)
        idx, build_s = vector_index(xb, IndexConfig())
        row: dict[str, Any] = {"n_products": n, "real": min(n, len(real)), "synthetic": max(0, n - len(real)),
                               "build_s": build_s, **_mem(idx)}
        if idx.kind == "ivfpq":
            (nprobe, rf), sweep = tune_ivf(idx, xb, xq_tune)
            row.update(nprobe=nprobe, rerank_factor=rf, sweep=sweep)
        else:
            nprobe = rf = None
        search = index_search(idx, nprobe, rf)
        for q in xq[:5]:
            search(q[None])
        lat, found = [], []
        for q in xq:
            t0 = time.perf_counter()
            found.append(search(q[None])[0])
            lat.append(time.perf_counter() - t0)
        gs, gi = exact_topk(xb, xq)
        row["vector_search"] = {"latency": latency_stats(lat), "qps_sequential": len(lat) / sum(lat),
                                "recall10_vs_exact": recall_at_k(np.stack(found), gi, xb=xb, xq=xq, gt_scores=gs)}
        cfg = Config(f"int8+{idx.kind}", "ONNX INT8", idx.kind, lambda xs: enc_int8.encode(xs, kind="query"),
                     search, kuamo=True)
        e2e = time_sequential(cfg, queries)
        for key in ("_found", "_qvecs", "latencies_s"):
            e2e.pop(key)
        e2e["concurrent_batching_on"] = pipeline_closed_loop(cfg, queries, batching=True, duration_s=duration_s)
        row["end_to_end"] = e2e
        label = _size_label(n)
        out[label] = row
        vs = row["vector_search"]
        log(f"scale {label:>5} ({idx.kind}) build {build_s:6.1f} s  search p50 {vs['latency']['p50_ms']:.3f} ms  "
            f"{vs['qps_sequential']:8.0f} q/s  recall {vs['recall10_vs_exact']:.4f}  e2e p50 "
            f"{e2e['latency']['p50_ms']:.2f} ms  e2e 16-client {e2e['concurrent_batching_on']['qps']:.0f} q/s  "
            f"memory {row['bytes_total'] / 2**20:.0f} MiB")
        del idx, xb, search, cfg
        gc.collect()
    return out


def _size_label(n: int) -> str:
    return f"{n // 1_000_000}M" if n >= 1_000_000 and n % 1_000_000 == 0 else f"{n // 1000}k"
