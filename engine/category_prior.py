"""Category agreement for photo queries: a shopper's photo should bring back the same kind of product.

The aligned image vector lives in the text space, so it can be read against the names of the catalog's own
leaf categories ("Tshirts", "Heels", "Curtains"): a softmax over those name vectors is the photo's predicted
category. A photo query re-ranks its candidates by visual similarity plus the agreement of the two
predictions (the dot product of the normalised distributions), the category-prediction step of industrial
visual search (Alibaba's Pailitao, KDD 2018) without a trained classifier: the vocabulary is whatever
categories the catalog holds, and the category labels of the candidates are never read (a product filed
under the wrong category is judged by its photo). Held-out fashion: image->image P@10 79.6 -> 83.9
(benchmarks/results/quality.md); temperature and weight chosen on one half of the queries, same on the other.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import numpy as np

from kuamo.engine.types import CATEGORY_SEP
from kuamo.engine.vectors import l2_normalize, softmax_rows

DEFAULT_TEMPERATURE = 0.03
DEFAULT_WEIGHT = 1.0  # of the bonus, in units of the query's image weight
DEFAULT_CANDIDATES = 100  # photo queries re-rank at least this many candidates


def leaf_of(path: str) -> str:
    """A category path's last segment ("Apparel/Topwear/Tshirts" -> "Tshirts")."""
    return path.split(CATEGORY_SEP)[-1].strip()


def leaf_names(category_paths: Iterable[str]) -> list[str]:
    """Distinct leaf segments of category paths ("Apparel/Topwear/Tshirts" -> "Tshirts"), sorted."""
    leaves = {leaf_of(p) for p in category_paths if p and p.strip(CATEGORY_SEP)}
    return sorted(x for x in leaves if x)


class CategoryPrior:
    """Predicted-category distributions over a fixed vocabulary of category names."""

    def __init__(self, names: Sequence[str], name_vectors: np.ndarray, temperature: float = DEFAULT_TEMPERATURE):
        if len(names) != len(name_vectors):
            raise ValueError(f"{len(names)} names but {len(name_vectors)} vectors")
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.names = tuple(names)
        self.vectors = l2_normalize(np.asarray(name_vectors, dtype=np.float32))
        self.temperature = float(temperature)

    @classmethod
    def from_names(cls, names: Sequence[str], encode: Callable[[list[str]], np.ndarray],
                   temperature: float = DEFAULT_TEMPERATURE) -> CategoryPrior:
        """`encode` = the text tower in query mode (a category name is what a shopper would type)."""
        return cls(list(names), encode(list(names)), temperature)

    def distribution(self, vectors: np.ndarray) -> np.ndarray:
        """(n, names) unit-length softmax distributions of (n, d) vectors in the text space; a zero vector
        (a product without a photo) gets a zero row, so it earns no agreement."""
        v = np.atleast_2d(np.asarray(vectors, dtype=np.float32))
        p = l2_normalize(softmax_rows(l2_normalize(v) @ self.vectors.T / self.temperature))
        p[~v.any(axis=1)] = 0
        return p

    def agreement(self, query: np.ndarray, candidates: np.ndarray) -> np.ndarray:
        """(n,) agreement in 0..1 of one query vector with each candidate's."""
        if not len(candidates):
            return np.zeros(0, dtype=np.float32)
        return self.distribution(candidates) @ self.distribution(query)[0]


def rerank_scores(prior: CategoryPrior, query: np.ndarray, candidates: np.ndarray, base: np.ndarray,
                  weight: float = DEFAULT_WEIGHT) -> np.ndarray:
    """Visual score plus the weighted agreement: the photo query's final base score."""
    return np.asarray(base, dtype=np.float32) + weight * prior.agreement(query, candidates)
