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
