"""Batch invariance: does an item get the same vector alone as inside a batch of other items?

A search engine must answer the same query the same way at any load (a query cache, replicas and A/B
comparisons depend on it). The exporter measures it for every served graph and records it in the manifest.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

import numpy as np

from kuamo.export.gate import cosine_rows

T = TypeVar("T")
BATCH_SIZES = (2, 3, 5, 8, 16, 32, 64)


def batch_invariance(encode_batch: Callable[[Sequence[T]], np.ndarray], items: Sequence[T], *,
                     batch_sizes: Sequence[int] = BATCH_SIZES, rounds: int = 2, seed: int = 0) -> dict:
    """Encode each item alone, then `rounds` times inside shuffled batches of `batch_sizes` (cycled), and
    compare. `encode_batch` must run its items as ONE batch (one graph run, padded together) so neighbours
    and padding really share the run."""
    if not items:
        raise ValueError("batch_invariance needs items")
    alone = np.concatenate([encode_batch([x]) for x in items])
    rng = np.random.default_rng(seed)
    cos_min, max_abs = 1.0, 0.0
    for _ in range(rounds):
        order = rng.permutation(len(items))
        got = np.empty_like(alone)
        start, k = 0, 0
        while start < len(order):
            idx = order[start: start + batch_sizes[k % len(batch_sizes)]]
            got[idx] = encode_batch([items[i] for i in idx])
            start, k = start + len(idx), k + 1
        cos_min = min(cos_min, float(cosine_rows(alone, got).min()))
        max_abs = max(max_abs, float(np.abs(alone - got).max()))
    return {"items": len(items), "batch_sizes": list(batch_sizes), "rounds": rounds,
            "cosine_min": cos_min, "max_abs_diff": max_abs, "bit_identical": max_abs == 0.0}
