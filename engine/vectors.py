"""Row-wise vector helpers shared by the encoders, the category prior and the zero-shot blend."""

from __future__ import annotations

import numpy as np


def l2_normalize(x: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """Unit rows along the last axis; an all-zero row stays zero."""
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), eps)


def softmax_rows(logits: np.ndarray) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float32)
    p = np.exp(z - z.max(axis=-1, keepdims=True))
    return p / p.sum(axis=-1, keepdims=True)
