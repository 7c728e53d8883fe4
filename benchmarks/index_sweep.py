"""Index benchmark on one dataset: exact flat vs IVF-PQ over an nprobe x re-rank sweep (recall against faiss
brute force, single-query and batched QPS), a 1% allowed_ids filter, upsert and delete costs."""

from __future__ import annotations

import dataclasses
import gc
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext

import faiss
import numpy as np

from kuamo.benchmarks.common import fmt_na, latency_stats
from kuamo.benchmarks.index_datasets import Dataset, normalise
from kuamo.engine.index import IndexConfig, VectorIndex

K = 10
NPROBES = (1, 2, 4, 8, 16, 32, 64, 128)
NPROBES_QUICK = (1, 4, 16, 64)
RERANK_FACTORS = (1, 4, 10, 20)  # 1 = IVF-PQ alone, no exact re-rank
RECALL_TARGET = 0.95
SPEEDUP_TARGET = 10.0
CODE_FRACTION_TARGET = 1 / 8
DELETE_MS_TARGET = 1.0

# -- measurement helpers ----------------------------------------------------------------------------
def ground_truth(xb: np.ndarray, xq: np.ndarray, k: int = K) -> np.ndarray:
    """Row numbers of the exact top-k by inner product (faiss brute force; blocks internally, no copy of xb)."""
    _, rows = faiss.knn(np.ascontiguousarray(xq, dtype=np.float32), np.ascontiguousarray(xb, dtype=np.float32), k,
                        metric=faiss.METRIC_INNER_PRODUCT)
    return rows


def recall_at(found: np.ndarray, gt: np.ndarray, k: int = K) -> tuple[float, float]:
    """(10-NN recall@10, 1-recall@10): the fraction of the true top-k among the returned top-k, and the
    fraction of queries whose true nearest neighbour is among them."""
    hits = [len(set(f[:k].tolist()) & set(g[:k].tolist())) / k for f, g in zip(found, gt, strict=True)]
    first = [g[0] in set(f[:k].tolist()) for f, g in zip(found, gt, strict=True)]
    return float(np.mean(hits)), float(np.mean(first))


def default_threads() -> dict:
    out = {"faiss_omp": faiss.omp_get_max_threads()}
    try:
        from threadpoolctl import threadpool_info

        out["blas"] = {i["internal_api"] + ":" + i["prefix"]: i["num_threads"] for i in threadpool_info()}
    except ImportError:
        out["blas"] = "threadpoolctl not installed: not measured"
    return out


@contextmanager
def single_thread() -> Iterator[None]:
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        try:
            from threadpoolctl import threadpool_limits

            limit = threadpool_limits(limits=1)
        except ImportError:  # numpy's BLAS then keeps its default threads; faiss is still pinned
            limit = nullcontext()
        with limit:
            yield
    finally:
        faiss.omp_set_num_threads(before)


def time_loop(search: Callable[[np.ndarray], object], xq: np.ndarray, budget_s: float,
              min_queries: int = 20) -> dict:
    """One query per call after 3 warm-up calls; stops after `budget_s` (at least `min_queries` queries)."""
    for i in range(min(3, len(xq))):
        search(xq[i: i + 1])
    times = []
    t_start = time.perf_counter()
    for i in range(len(xq)):
        t0 = time.perf_counter()
        search(xq[i: i + 1])
        times.append(time.perf_counter() - t0)
        if len(times) >= min_queries and time.perf_counter() - t_start > budget_s:
            break
    return {"qps": len(times) / sum(times), **latency_stats(times)}


def time_single(search: Callable[[np.ndarray], object], xq: np.ndarray, budget_s: float,
                min_queries: int = 20) -> dict:
    """time_loop with faiss and BLAS pinned to one thread."""
    with single_thread():
        return time_loop(search, xq, budget_s, min_queries)


def time_batch(search: Callable[[np.ndarray], tuple], xq: np.ndarray) -> tuple[tuple, float]:
    t0 = time.perf_counter()
    out = search(xq)
    return out, len(xq) / (time.perf_counter() - t0)


def _bytes_serialised(index: faiss.Index) -> int:
    return int(faiss.serialize_index(index).nbytes)


# -- one dataset ------------------------------------------------------------------------------------
def bench_dataset(ds: Dataset, *, nprobes: Sequence[int] = NPROBES, rerank_factors: Sequence[int] = RERANK_FACTORS,
                  single_budget_s: float = 1.5, flat_budget_s: float = 3.0, add_batches: int = 20,
                  n_deletes: int = 200, flat_index: bool = True, ivf_overrides: dict | None = None,
                  log: Callable[[str], None] = print) -> dict:
    xb, xq = ds.xb, ds.xq
    n, dim = xb.shape
    nq = len(xq)
    ids = np.arange(n, dtype=np.int64) * 7 + 100_003  # sparse product-like ids, never row numbers
    t0 = time.perf_counter()
    gt = ids[ground_truth(xb, xq)]
    out: dict = {"name": ds.name, "source": ds.source, "note": ds.note, "n": n, "dim": dim, "queries": nq,
                 "metric": "inner product", "ground_truth_s": time.perf_counter() - t0}
    log(f"{ds.name}: n={n} dim={dim} queries={nq}, ground truth {out['ground_truth_s']:.1f}s")

    # exact flat: VectorIndex forced flat (flat_threshold above n)
    if flat_index:
        flat = VectorIndex(dim, IndexConfig(flat_threshold=n + 1))
        t0 = time.perf_counter()
        flat.build(ids, xb)
        build_s = time.perf_counter() - t0
        search = lambda q: flat.search(q, K)  # noqa: E731
        via = "VectorIndex (kind=flat)"
    else:  # the flat VectorIndex would hold two more copies of xb: time the same numpy scan on xb itself
        shim = VectorIndex(dim)
        shim._set_store(ids, xb)
        build_s = 0.0
        search = lambda q: shim._exact(np.ascontiguousarray(q, dtype=np.float32), K, None)  # noqa: E731
        via = "VectorIndex._exact on the raw array (no flat index built: memory), batch of the first 100 queries"
    n_flat = nq if flat_index else min(nq, 100)  # a full exact batch at 5M would scan 7.7 GB per 3 queries
    (_, found), qps_batch = time_batch(search, xq[:n_flat])
    r10, r1 = recall_at(found, gt[:n_flat])
    single = time_single(search, xq, flat_budget_s, min_queries=10)
    out["flat"] = {"via": via, "build_s": build_s, "recall10": r10, "one_recall10": r1, "qps_single": single["qps"],
                   "qps_batch": qps_batch, "latency_single": single, "bytes_per_vector": dim * 4,
                   "qps_single_default_threads": time_loop(search, xq, flat_budget_s, min_queries=10)["qps"]}
    log(f"  flat: recall@10 {r10:.4f}, single {single['qps']:.1f} q/s, batch {qps_batch:.1f} q/s")
    if flat_index:
        del flat
    else:
        del shim
    gc.collect()

    # IVF-PQ with the index's automatic parameters (flat_threshold=0 forces IVF-PQ at any size)
    ivf = VectorIndex(dim, IndexConfig(flat_threshold=0, **(ivf_overrides or {})))
    t0 = time.perf_counter()
    ivf.build(ids, xb)
    build_s = time.perf_counter() - t0
    st = ivf.stats()
    codes_bpv = st["bytes_codes"] / n
    out["ivfpq"] = {"params": st["params"], "overrides": ivf_overrides or {}, "build_s": build_s,
                    "bytes_codes_per_vector": codes_bpv,
                    "bytes_flat_per_vector": dim * 4, "codes_fraction_of_flat": codes_bpv / (dim * 4),
                    "bytes_rerank_store_per_vector": st["bytes_rerank_store"] / n,
                    "faiss_index_bytes_per_vector": _bytes_serialised(ivf._faiss) / n,
                    "defaults": {"nprobe": ivf.cfg.nprobe, "rerank_factor": ivf.cfg.rerank_factor}}
    log(f"  ivfpq {st['params']}: build {build_s:.1f}s, codes {codes_bpv:.0f} B/vector vs flat {dim * 4}")

    sweep = []
    for nprobe in nprobes:
        if nprobe > st["params"]["nlist"]:
            continue
        for rf in rerank_factors:
            def search(q: np.ndarray, nprobe: int = nprobe, rf: int = rf) -> tuple:
                return ivf.search(q, K, nprobe=nprobe, rerank_factor=rf)

            (_, found), qps_batch = time_batch(search, xq)
            r10, r1 = recall_at(found, gt)
            single = time_single(search, xq, single_budget_s)
            sweep.append({"nprobe": nprobe, "rerank_factor": rf, "recall10": r10, "one_recall10": r1,
                          "qps_single": single["qps"], "qps_batch": qps_batch, "p50_ms": single["p50_ms"],
                          "p99_ms": single["p99_ms"], "speedup_vs_flat": single["qps"] / out["flat"]["qps_single"]})
        row = sweep[-1] if sweep else None
        if row and row["nprobe"] == nprobe:
            log(f"  nprobe {nprobe:4}: recall@10 " + " ".join(
                f"rf{s['rerank_factor']}={s['recall10']:.3f}" for s in sweep if s["nprobe"] == nprobe)
                + f", single q/s (rf{row['rerank_factor']}) {row['qps_single']:.0f}")
    out["sweep"] = sweep
    out["best"] = best_point(sweep)
    out["best_reranked"] = best_point([s for s in sweep if s["rerank_factor"] > 1])
    dflt = [s for s in sweep if (s["nprobe"], s["rerank_factor"]) == (ivf.cfg.nprobe, ivf.cfg.rerank_factor)]
    out["default_point"] = dflt[0] if dflt else None
    if out["best"]:
        b = out["best"]

        def best_search(q: np.ndarray) -> tuple:
            return ivf.search(q, K, nprobe=b["nprobe"], rerank_factor=b["rerank_factor"])

        # the same point with faiss/BLAS at their default thread counts, for reference
        b["qps_single_default_threads"] = time_loop(best_search, xq, single_budget_s)["qps"]

    rng = np.random.default_rng(1)
    out["filter"] = bench_filter(ivf, ids, xb, xq, rng, nprobe=(out["best"] or {}).get("nprobe", ivf.cfg.nprobe),
                                 budget_s=single_budget_s)
    f = out["filter"]
    log(f"  1% filter ({f['allowed']} ids): k returned for {f['exact_path']['k_fraction']:.3f} / "
        f"{f['selector_path']['k_fraction']:.3f} of queries (exact / in-faiss paths)")
    out["add"] = bench_add(ivf, xb, rng, add_batches)
    out["delete"] = bench_delete(ivf, rng, n_deletes)
    log(f"  add {fmt_na(out['add']['ms_per_1k_p50'], '.1f')} ms/1k (p50), "
        f"delete one {out['delete']['p50_ms']:.3f} ms (p50)")
    return out


def best_point(sweep: Sequence[dict]) -> dict | None:
    """The highest single-query QPS with recall@10 >= RECALL_TARGET, or None if no point reaches it."""
    ok = [s for s in sweep if s["recall10"] >= RECALL_TARGET]
    return dict(max(ok, key=lambda s: s["qps_single"])) if ok else None


def bench_filter(ivf: VectorIndex, ids: np.ndarray, xb: np.ndarray, xq: np.ndarray, rng: np.random.Generator,
                 nprobe: int, budget_s: float) -> dict:
    """allowed_ids = a random 1% of the catalog. Measured twice: with the index's config (small allowed sets
    are searched exactly) and with exact_filter_below=0 (FAISS IDSelector inside IVF, exact fallback when
    the probed lists hold fewer than k allowed products)."""
    n_allowed = max(1, len(ids) // 100)
    rows = np.sort(rng.choice(len(ids), n_allowed, replace=False))
    allowed = ids[rows]
    kk = min(K, n_allowed)
    gt = allowed[ground_truth(xb[rows], xq, kk)]
    allowed_set = set(allowed.tolist())
    out = {"allowed": int(n_allowed), "fraction": n_allowed / len(ids), "k": K, "k_exist": kk == K}
    cfg = ivf.cfg
    try:
        for path, below in (("exact_path", cfg.exact_filter_below), ("selector_path", 0)):
            ivf.cfg = dataclasses.replace(cfg, exact_filter_below=below)

            def search(q: np.ndarray) -> tuple:
                return ivf.search(q, K, nprobe=nprobe, allowed_ids=allowed)

            (_, found), qps_batch = time_batch(search, xq)
            single = time_single(search, xq, budget_s, min_queries=10)
            out[path] = {"exact_filter_below": below, "nprobe": nprobe,
                         "k_fraction": float(np.mean((found[:, :kk] >= 0).all(axis=1))),
                         "only_allowed": bool(set(found[found >= 0].tolist()) <= allowed_set),
                         "recall10_vs_filtered_exact": recall_at(found, gt, kk)[0],
                         "qps_single": single["qps"], "qps_batch": qps_batch, "p50_ms": single["p50_ms"]}
    finally:
        ivf.cfg = cfg
    out["path_used_by_default"] = "exact" if n_allowed <= cfg.exact_filter_below else "selector"
    return out


def bench_add(ivf: VectorIndex, xb: np.ndarray, rng: np.random.Generator, batches: int, size: int = 1000) -> dict:
    """Upsert `batches` batches of `size` new products (perturbed copies of catalog rows) into the built
    index; also times one np.concatenate of the whole store, what every upsert used to cost."""
    n, dim = xb.shape
    if not batches:  # at 5M the first upsert would double a 7.7 GB store
        return {"batch_size": size, "batches": 0, "ms_per_1k_p50": None, "ms_per_1k_mean": None,
                "ms_per_1k_max": None, "old_concatenate_ms_per_batch": None, "ntotal_after": len(ivf),
                "note": "not measured at this size (memory)"}
    next_id = int(ivf._ids.max()) + 1
    times = []
    for _ in range(batches):
        v = xb[rng.integers(0, n, size)] + 0.05 * rng.standard_normal((size, dim), dtype=np.float32) / np.sqrt(dim)
        new_ids = np.arange(next_id, next_id + size, dtype=np.int64)
        next_id += size
        t0 = time.perf_counter()
        ivf.upsert(new_ids, normalise(v))
        times.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    np.concatenate([ivf._vecs, xb[:size]])
    concat_ms = (time.perf_counter() - t0) * 1e3
    ms = np.asarray(times) * 1e3 * (1000 / size)
    return {"batch_size": size, "batches": batches, "ms_per_1k_p50": float(np.median(ms)),
            "ms_per_1k_mean": float(ms.mean()), "ms_per_1k_max": float(ms.max()),
            "old_concatenate_ms_per_batch": concat_ms, "ntotal_after": len(ivf)}


def bench_delete(ivf: VectorIndex, rng: np.random.Generator, n: int) -> dict:
    """Remove `n` random products one id per call."""
    victims = rng.choice(ivf._ids, min(n, len(ivf)), replace=False)
    times = []
    for v in victims.tolist():
        t0 = time.perf_counter()
        removed = ivf.remove(np.asarray([v], dtype=np.int64))
        times.append(time.perf_counter() - t0)
        assert removed == 1
    return {"ntotal": len(ivf) + len(victims), **latency_stats(times)}
