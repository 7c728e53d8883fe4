"""The loss every alignment recipe shares: symmetric InfoNCE where all samples with the same target id
in the batch count as positives (duplicate titles, shared attribute templates)."""

from __future__ import annotations

import numpy as np
import torch


def multi_positive_infonce(image: torch.Tensor, target: torch.Tensor, target_ids: np.ndarray,
                           logit_scale: torch.Tensor) -> torch.Tensor:
    """image, target: L2-normalised (B, D); target_ids (B,); logit_scale: log of 1/temperature."""
    sim = logit_scale.exp().clamp(max=100) * image @ target.T
    pos = torch.from_numpy(target_ids[:, None] == target_ids[None, :]).to(sim.device, sim.dtype)
    pos = pos / pos.sum(1, keepdim=True)
    return 0.5 * (-(pos * sim.log_softmax(1)).sum(1).mean() - (pos * sim.log_softmax(0).T).sum(1).mean())


def text_competitors(query: np.ndarray, doc: np.ndarray, k: int) -> np.ndarray:
    """(n, k) row indices: for each row's title query, the k other rows whose document text it matches best.
    These are the products a text search confuses it with, where the image block has to decide."""
    k = min(k, len(query) - 1)
    chunk = max(1, 2**25 // len(doc))  # rows per similarity block: 128 MiB of float32 at most
    out = np.empty((len(query), k), np.int64)
    for s in range(0, len(query), chunk):
        sim = query[s:s + chunk] @ doc.T
        sim[np.arange(len(sim)), np.arange(s, s + len(sim))] = -np.inf
        top = np.argpartition(-sim, k - 1, axis=1)[:, :k]
        out[s:s + chunk] = np.take_along_axis(top, np.argsort(-np.take_along_axis(sim, top, 1), 1), 1)
    return out


def fused_ranking_loss(query: torch.Tensor, doc: torch.Tensor, image: torch.Tensor, same: torch.Tensor,
                       weights: tuple[float, float], scale: float) -> torch.Tensor:
    """Cross-entropy of each title query over its candidates, scored as the engine fuses a text query:
    weights[0] x cos(query, document) + weights[1] x cos(query, image vector).

    query (B, D); doc, image (B, C, D): column 0 the query's own product, the rest its text competitors;
    same (B, C): 1 where a candidate has the query's title (all of those are right answers)."""
    fused = scale * (weights[0] * (query[:, None, :] * doc).sum(-1) + weights[1] * (query[:, None, :] * image).sum(-1))
    pos = same / same.sum(1, keepdim=True)
    return -(pos * fused.log_softmax(1)).sum(1).mean()
