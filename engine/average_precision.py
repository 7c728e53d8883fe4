"""Average precision over a score matrix: the category measure of the image blend chooser
(engine/zero_shot_blend.py) and of its benchmark. Here, not in evaluation/, because the engine may not import
evaluation/ (which imports the engine); evaluation/metrics.py re-exports both."""

from __future__ import annotations

import numpy as np


def average_precision(scores: np.ndarray, relevant: np.ndarray) -> np.ndarray:
    """Average precision of each query over the whole ranking, in % (NaN for a query with no relevant item).
    Unlike P@10 it is not capped for a category of fewer than 10 items, and it reads every relevant item's
    rank, not only the ones that make the top 10 (a steadier verdict for a query over a small catalog)."""
    relevant = np.asarray(relevant, bool)
    order = np.argsort(-scores, axis=1, kind="stable")
    hits = np.take_along_axis(relevant, order, axis=1)
    precision = np.cumsum(hits, axis=1) / np.arange(1, hits.shape[1] + 1)
    n_rel = hits.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n_rel > 0, (precision * hits).sum(axis=1) / n_rel * 100, np.nan)


def mean_average_precision(scores: np.ndarray, relevant: np.ndarray) -> float:
    """Mean of average_precision over the queries with >= 1 relevant item, in % (NaN when none has one)."""
    ap = average_precision(scores, relevant)
    return float(np.nanmean(ap)) if np.isfinite(ap).any() else float("nan")
