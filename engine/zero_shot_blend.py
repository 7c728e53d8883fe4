"""Per-catalog blend of the aligned image vector with the zero-shot ImageNet-class map.

The shipped image tower is tuned on fashion: on goods unlike it (watches, eyewear, personal care held out
in benchmarks/results/align_generalisation.md) its `embedding` finds the right category less often than the
plain zero-shot map (normalise(softmax(logits) @ class_text), the map the head itself blends in). No single
fixed blend serves both, so the blend is chosen per catalog, by measurement on the catalog itself, when its
first products are indexed:

    image vector = normalise(beta * embedding + (1 - beta) * zero_shot),  beta in BETAS

scored on a sample of the catalog's own products: each leaf category name as a query (precision@10 over
photos of that category, categories with >= MIN_CATEGORY_PHOTOS photos) plus each product's title as a
query (recall@10 of its own photo). The best beta wins only when it beats the exported vector (beta 1) by
MARGIN points: on the fashion catalog the betas near 1 differ by under a point, and that is noise (the
served and FP32 towers chose differently on the same sample before the margin), while on goods unlike
fashion the zero-shot side wins by 20 points. The choice is stored with the catalog and fixed for it:
every vector in one index must share one beta.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from kuamo.engine.errors import KuamoError
from kuamo.engine.vectors import l2_normalize, softmax_rows

ZERO_SHOT_FILE = "image_zero_shot.npy"
BETAS = (1.0, 0.75, 0.5, 0.25, 0.0)
MIN_SAMPLE = 50  # fewer photos than this: too few to choose by; keep beta = 1
MIN_CATEGORY_PHOTOS = 5
MARGIN = 2.0  # points of (category P@10 + title R@10) a blend must gain over the exported vector
SAMPLE = 800  # photos read for the choice (about 12 s of image encoding on 2 cores)


class ZeroShotMap:
    """The class-text matrix (classes, d) exported beside the image graph."""

    def __init__(self, class_text: np.ndarray) -> None:
        self.class_text = np.asarray(class_text, dtype=np.float32)

    def vectors(self, logits: np.ndarray) -> np.ndarray:
        return l2_normalize(softmax_rows(logits) @ self.class_text)

    def blend(self, embedding: np.ndarray, logits: np.ndarray, beta: float) -> np.ndarray:
        emb = l2_normalize(np.asarray(embedding, dtype=np.float32))
        return emb if beta >= 1.0 else l2_normalize(beta * emb + (1 - beta) * self.vectors(logits))


@dataclass
class BlendChoice:
    beta: float
    photos: int
    scores: dict[float, dict[str, float]] = field(default_factory=dict)  # beta -> task -> score
    reason: str = ""

    def to_dict(self) -> dict:
        return {"beta": self.beta, "photos": self.photos, "reason": self.reason,
                "scores": {str(b): s for b, s in self.scores.items()}}


def _precision_at_10(scores: np.ndarray, relevant: np.ndarray) -> float:
    top = np.argsort(-scores, axis=1)[:, :10]
    return float(np.take_along_axis(relevant, top, 1).mean() * 100)


def _recall_at_10_own(scores: np.ndarray) -> float:
    own = np.diag(scores)[:, None]
    return float(((scores > own).sum(axis=1) < 10).mean() * 100)


def choose_beta(zero_shot: ZeroShotMap, embedding: np.ndarray, logits: np.ndarray, title_vecs: np.ndarray,
                leaves: Sequence[str], encode_names, betas: Sequence[float] = BETAS) -> BlendChoice:
    """Pick beta for one catalog sample. `title_vecs` = the products' titles as queries (n, d); `leaves` =
    each product's leaf category ("" when it has none); `encode_names(list[str])` = text tower, query mode."""
    n = len(embedding)
    if n < MIN_SAMPLE:
        return BlendChoice(1.0, n, reason=f"{n} photos < {MIN_SAMPLE}: kept the shipped vector")
    labels = np.asarray(list(leaves), dtype=object)
    names, counts = np.unique(labels[labels != ""], return_counts=True)
    names = [str(x) for x, c in zip(names, counts, strict=True) if c >= MIN_CATEGORY_PHOTOS]
    name_vecs = encode_names(names) if len(names) >= 2 else None
    titles = l2_normalize(np.asarray(title_vecs, dtype=np.float32))
    choice = BlendChoice(1.0, n, reason=f"category P@10 + title R@10 on the catalog's own products; "
                                        f"beta < 1 only when {MARGIN:g} points better than 1")
    totals = {}
    for beta in sorted({1.0, *betas}, reverse=True):
        v = zero_shot.blend(embedding, logits, beta)
        task = {"title_R@10": _recall_at_10_own(titles @ v.T)}
        if name_vecs is not None:
            relevant = labels[None, :] == np.asarray(names, dtype=object)[:, None]
            task["category_P@10"] = _precision_at_10(l2_normalize(name_vecs) @ v.T, relevant)
        choice.scores[beta] = task
        totals[beta] = sum(task.values())
    best = max(totals, key=lambda b: (totals[b], b))  # ties keep the larger beta
    if totals[best] >= totals[1.0] + MARGIN:
        choice.beta = float(best)
    return choice


def spread(total: int, n: int = SAMPLE) -> range:
    """Indices of up to `n` of `total` rows spread evenly over them (catalog files are often sorted by
    category, so the first rows would be one kind of product)."""
    return range(0, total, max(1, total // n))[:n]


def choose_for_photos(image_encoder, encode_query: Callable[[list[str]], np.ndarray], photos: Sequence[bytes],
                      titles: Sequence[str], leaves: Sequence[str]) -> BlendChoice:
    """choose_beta for a catalog sample straight from its photos (an ImageEncoder with a zero-shot map);
    photos that do not decode are left out of the sample."""
    names = [image_encoder.embedding_output, "logits"]
    try:
        outs, keep = image_encoder.encode_outputs(list(photos), names), list(range(len(photos)))
    except KuamoError:  # one bad photo fails the batch: encode one by one and leave the bad ones out
        parts, keep = [], []
        for i, photo in enumerate(photos):
            try:
                parts.append(image_encoder.encode_outputs([photo], names))
            except KuamoError:
                continue
            keep.append(i)
        outs = {n: np.concatenate([x[n] for x in parts]) if parts else np.zeros((0, 1), np.float32) for n in names}
    title_vecs = encode_query([titles[i] for i in keep]) if keep else np.zeros((0, 1), np.float32)
    return choose_beta(image_encoder.zero_shot, outs[names[0]], outs["logits"], title_vecs,
                       [leaves[i] for i in keep], encode_query)
