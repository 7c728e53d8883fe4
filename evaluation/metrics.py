"""Retrieval metrics over a score matrix and relevance labels (numpy only)."""

from __future__ import annotations

import numpy as np

# re-exported (the names evaluation users import); defined in the engine, which the blend chooser reads them in
from kuamo.engine.average_precision import average_precision as average_precision
from kuamo.engine.average_precision import mean_average_precision as mean_average_precision

KS = (1, 5, 10)
METRIC_NAMES = (*(f"R@{k}" for k in KS), "MRR", "nDCG@10", "P@5", "Rfrac@5", "F1@5", "P@10", "Rfrac@10", "F1@10")


def ranked(scores: np.ndarray, k: int) -> np.ndarray:
    """Top-k column indices per row, best first."""
    k = min(k, scores.shape[1])
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    order = np.take_along_axis(scores, part, axis=1).argsort(axis=1)[:, ::-1]
    return np.take_along_axis(part, order, axis=1)


def retrieval_metrics(scores: np.ndarray, relevant: np.ndarray, k_max: int = 10) -> dict:
    """scores (nq, n), relevant (nq, n) bool. Recall@k = share of queries with >= 1 relevant in the top k
    (known-item style) and recall_frac@10 = share of all relevant items found in the top 10."""
    top = ranked(scores, max(k_max, max(KS)))
    hits = np.take_along_axis(relevant, top, axis=1)
    n_rel = relevant.sum(axis=1)
    valid = n_rel > 0
    hits, n_rel = hits[valid], n_rel[valid]
    out: dict = {"queries": int(valid.sum())}
    if not valid.any():  # e.g. no category big enough in a smoke-sized pool: say so, without numpy warnings
        return {**out, **{name: float("nan") for name in METRIC_NAMES}}
    for k in KS:
        out[f"R@{k}"] = float(hits[:, :k].any(axis=1).mean() * 100)
    first = np.where(hits.any(axis=1), hits.argmax(axis=1) + 1, np.inf)
    # MRR over the ranked top k_max (0 when nothing relevant in it)
    out["MRR"] = float(np.where(np.isfinite(first), 1.0 / first, 0.0).mean() * 100)
    discounts = 1.0 / np.log2(np.arange(2, 12))
    dcg = (hits[:, :10] * discounts).sum(axis=1)
    ideal = np.array([discounts[: min(int(r), 10)].sum() for r in n_rel])
    out["nDCG@10"] = float((dcg / ideal).mean() * 100)
    for k in (5, 10):
        p = hits[:, :k].sum(axis=1) / k
        r = hits[:, :k].sum(axis=1) / n_rel
        out[f"P@{k}"] = float(p.mean() * 100)
        out[f"Rfrac@{k}"] = float(r.mean() * 100)
        f1 = np.where(p + r > 0, 2 * p * r / np.maximum(p + r, 1e-12), 0.0)
        out[f"F1@{k}"] = float(f1.mean() * 100)
    return out
