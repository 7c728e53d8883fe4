"""The retrieval tasks over a pool of product photos (known-item, category, photo->photo, Chinese vs English
queries), scored by `evaluation.metrics`. Used by `kuamo align`, `kuamo eval` and the benchmarks.

- known-item: query = the product's own English title, relevant = its own photo and the photos of products
  with the very same title (one query text cannot tell them apart); `known_item_strict` counts its own photo;
- category: query = an articleType name with at least 10 photos in the pool, relevant = photos of that
  articleType; `category_all` keeps every articleType with at least 5 photos;
- image->image: query = a photo, relevant = other photos of the same articleType; on the aligned vector
  (`image_to_image_aligned`), the raw pooled features (`image_to_image_raw`), and as the engine serves a photo
  query (`image_to_image_served`: top 100 re-ranked by predicted-category agreement, engine/category_prior.py);
- Chinese: evaluation/data/zh_queries.tsv, relevant = expected articleType (and colour when given), scored
  beside the same queries in English.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from kuamo.engine.category_prior import DEFAULT_CANDIDATES, DEFAULT_WEIGHT, CategoryPrior, rerank_scores
from kuamo.engine.vectors import l2_normalize
from kuamo.evaluation.metrics import retrieval_metrics

ZH_QUERIES = Path(__file__).resolve().parent / "data" / "zh_queries.tsv"
MIN_CATEGORY_SIZE = 10  # P@10 can reach 100 only with >= 10 relevant photos
MIN_CATEGORY_SIZE_ALL = 5


def load_zh_queries(path: Path = ZH_QUERIES) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        lines = [line for line in f if not line.startswith("#")]
    return list(csv.DictReader(lines, delimiter="\t"))


def photo_query_scores(image_emb: np.ndarray, prior: CategoryPrior | None,
                       candidates: int = DEFAULT_CANDIDATES, weight: float = DEFAULT_WEIGHT) -> np.ndarray:
    """(n, n) scores of every pool photo as a query against the others, as the engine ranks a photo query:
    visual score, and for its top `candidates` the weighted category agreement; the rest stay below them."""
    v = l2_normalize(image_emb)
    s = v @ v.T
    np.fill_diagonal(s, -np.inf)
    if prior is None:
        return s
    top = np.argsort(-s, axis=1)[:, :candidates]
    out = np.full_like(s, -np.inf)
    for i in range(len(v)):
        out[i, top[i]] = rerank_scores(prior, v[i], v[top[i]], s[i, top[i]], weight)
    return out


def evaluate_embeddings(items: Sequence, image_emb: np.ndarray, title_emb: np.ndarray, text_encoder,
                        raw_features: np.ndarray | None = None, prior: CategoryPrior | None = None) -> dict:
    """All tasks for one set of held-out photo embeddings (n, 384) and title query vectors (n, 384)."""
    n = len(items)
    out: dict = {"pool": n}
    titles = np.asarray([it.title for it in items])
    scores = title_emb @ image_emb.T
    out["known_item"] = retrieval_metrics(scores, titles[:, None] == titles[None, :])
    out["known_item_strict"] = retrieval_metrics(scores, np.eye(n, dtype=bool))

    articles = np.asarray([it.attrs["articleType"] for it in items])
    names, counts = np.unique(articles, return_counts=True)
    cats = names[counts >= MIN_CATEGORY_SIZE_ALL]
    cat_scores = text_encoder.encode(list(cats), kind="query") @ image_emb.T
    cat_rel = articles[None, :] == cats[:, None]
    out["category_all"] = retrieval_metrics(cat_scores, cat_rel)
    big = counts[counts >= MIN_CATEGORY_SIZE_ALL] >= MIN_CATEGORY_SIZE
    out["category"] = retrieval_metrics(cat_scores[big], cat_rel[big])  # none in a smoke-sized pool: NaN

    same = articles[:, None] == articles[None, :]
    np.fill_diagonal(same, False)
    for name, vecs in (("image_to_image_aligned", image_emb), ("image_to_image_raw", raw_features)):
        if vecs is None:
            continue
        v = vecs / np.linalg.norm(vecs, axis=1, keepdims=True)
        s = v @ v.T
        np.fill_diagonal(s, -np.inf)
        out[name] = retrieval_metrics(s, same)
    if prior is not None:
        out["image_to_image_served"] = retrieval_metrics(photo_query_scores(image_emb, prior), same)

    colours = np.asarray([it.attrs.get("baseColour", "") for it in items])
    queries = load_zh_queries()
    rel = np.zeros((len(queries), n), dtype=bool)
    for i, q in enumerate(queries):
        rel[i] = np.isin(articles, q["articleType"].split("|"))
        if q.get("baseColour"):
            rel[i] &= colours == q["baseColour"]
    for lang in ("zh", "en"):
        qv = text_encoder.encode([q[lang] for q in queries], kind="query")
        out[f"queries_{lang}"] = retrieval_metrics(qv @ image_emb.T, rel)
    out["zh_vs_en_P@5_gap"] = out["queries_en"]["P@5"] - out["queries_zh"]["P@5"]
    return out
