"""Retrieval tasks that need nothing but what any catalog has: titles, photos and (maybe) category leaves.
Used by `kuamo align --catalog` to score an adapted head against the shipped one.

Every task ranks the WHOLE pool (products trained on and products never seen mixed, as in a catalog that
grows after adapting), with queries from one subset of it, so a head that learned its training photos by
heart shows up: its trained-on products outrank the unseen ones.

- title -> product (image block only): query e5("query: " + title), relevant = the product and any product
  with the very same title; R@1, R@10;
- title -> product fused: as the engine ranks a text query by default, 0.5 x cos(query, e5("passage: " +
  document text)) + 0.5 x cos(query, image vector); R@1, R@10;
- photo -> photo: query a photo, relevant = other photos with the same category leaf; P@10;
- category: the leaf names with >= 5 photos in the pool as queries, relevant = that leaf's photos; P@10.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from kuamo.evaluation.metrics import ranked, retrieval_metrics

FUSED_WEIGHTS = (0.5, 0.5)  # (text, image): the engine's default weights (engine/engine.py)
MIN_LEAF_PHOTOS = 5


def _pick(m: dict, *names: str) -> dict[str, float]:
    return {n: round(float(m[n]), 2) for n in names}


def subset_tasks(rows: np.ndarray, *, image: np.ndarray, title_query: np.ndarray, doc: np.ndarray,
                 titles: Sequence[str], leaves: Sequence[str], weights: tuple[float, float] = FUSED_WEIGHTS,
                 fused: dict[str, np.ndarray] | None = None) -> dict[str, dict[str, float]]:
    """Title -> product (image only and fused) and photo -> photo for the query rows `rows` of the pool.

    image, title_query, doc: (n, d) L2-normalised vectors of every product in the pool. `fused`: fused_hits of
    the same rows and vectors when the caller already has them (they are not ranked again)."""
    leaves_a = np.asarray(leaves, dtype=object)
    if fused is None:
        fused = fused_hits(rows, image=image, title_query=title_query, doc=doc, titles=titles, weights=weights)
    # every query's own product is relevant, so retrieval_metrics' R@k is the share of queries with a hit
    out = {"title_to_product_image": _pick(retrieval_metrics(title_query[rows] @ image.T, _same_title(rows, titles)),
                                           "R@1", "R@10"),
           "title_to_product_fused": _pick({m: 100 * float(h.mean()) for m, h in fused.items()}, "R@1", "R@10")}
    s = image[rows] @ image.T
    s[np.arange(len(rows)), rows] = -np.inf
    same_leaf = (leaves_a[rows][:, None] == leaves_a[None, :]) & (leaves_a[rows][:, None] != "")
    same_leaf[np.arange(len(rows)), rows] = False
    out["photo_to_photo"] = _pick(retrieval_metrics(s, same_leaf), "P@10")
    return out


def _same_title(rows: np.ndarray, titles: Sequence[str]) -> np.ndarray:
    titles_a = np.asarray(titles, dtype=object)
    same = titles_a[rows][:, None] == titles_a[None, :]
    same[np.arange(len(rows)), rows] = True  # its own photo, also when its title is empty
    return same


def _fused(q: np.ndarray, image: np.ndarray, doc: np.ndarray, weights: tuple[float, float]) -> np.ndarray:
    return weights[0] * q @ doc.T + weights[1] * q @ image.T


def fused_hits(rows: np.ndarray, *, image: np.ndarray, title_query: np.ndarray, doc: np.ndarray,
               titles: Sequence[str], weights: tuple[float, float] = FUSED_WEIGHTS) -> dict[str, np.ndarray]:
    """Per query row of subset_tasks' fused title -> product: found at rank 1 ("R@1") and in the top 10
    ("R@10"), bool arrays, to compare two heads query by query (paired_change)."""
    scores, same = _fused(title_query[rows], image, doc, weights), _same_title(rows, titles)
    hits = np.take_along_axis(same, ranked(scores, 10), axis=1)  # as retrieval_metrics ranks
    return {"R@1": hits[:, 0], "R@10": hits.any(axis=1)}


def paired_change(new: np.ndarray, old: np.ndarray) -> dict[str, int]:
    """Queries one head finds and the other misses: {"better": new only, "worse": old only}."""
    new, old = np.asarray(new, bool), np.asarray(old, bool)
    return {"better": int((new & ~old).sum()), "worse": int((old & ~new).sum())}


def sign_test_p(better: int, worse: int) -> float:
    """Two-sided sign test over the queries that changed: how likely a split at least this uneven is when
    either head is as likely to win each (1.0 when none changed)."""
    n, k = better + worse, min(better, worse)
    if n == 0:
        return 1.0
    return min(1.0, 2 * sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n)


def category_task(image: np.ndarray, leaves: Sequence[str], leaf_vec: dict[str, np.ndarray]) -> dict[str, float]:
    """Category P@10 over the pool, leaf names (>= MIN_LEAF_PHOTOS photos) as queries."""
    names, counts = np.unique(np.asarray([x for x in leaves if x], dtype=object), return_counts=True)
    names = [str(n) for n in names[counts >= MIN_LEAF_PHOTOS]]
    if not names:
        return {"queries": 0, "P@10": float("nan")}
    q = np.stack([leaf_vec[n] for n in names])
    rel = np.asarray(leaves, dtype=object)[None, :] == np.asarray(names, dtype=object)[:, None]
    m = retrieval_metrics(q @ image.T, rel)
    return {"queries": m["queries"], "P@10": round(float(m["P@10"]), 2)}


def headline(t: dict[str, dict[str, float]]) -> float:
    """One number to early-stop on: the mean of photo -> photo P@10, fused title R@1 and image-only title R@10
    (what adapting should lift, and what memorising would lower for products it did not train on)."""
    return float(np.nanmean([t["photo_to_photo"]["P@10"], t["title_to_product_fused"]["R@1"],
                             t["title_to_product_image"]["R@10"]]))
