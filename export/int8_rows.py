"""Int8 with one scale per row (per output channel for conv weights): how kuamo ships weight matrices,
backbone deltas and target vectors compactly. Error per value is at most half a step, |row|max / 254."""

from __future__ import annotations

import numpy as np


def quantise_rows(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(int8 array shaped like x, float32 scale per first-axis row); an all-zero row gets scale 1."""
    rows = np.asarray(x, dtype=np.float32).reshape(len(x), -1)
    scale = np.abs(rows).max(1) / 127.0
    scale[scale == 0] = 1.0
    return np.round(rows / scale[:, None]).astype(np.int8).reshape(np.shape(x)), scale.astype(np.float32)


def dequantise_rows(q: np.ndarray, scale: np.ndarray) -> np.ndarray:
    return (q.reshape(len(q), -1).astype(np.float32) * scale[:, None]).reshape(q.shape)
