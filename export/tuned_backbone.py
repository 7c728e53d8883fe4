"""A fine-tuned EfficientNet-Lite0 shipped as a small int8 delta from the pretrained weights.

Only the tensors fine-tuning trains (every parameter but the ImageNet classifier; BN running statistics stay
frozen) are stored: delta = tuned - pretrained, int8 with one scale per output channel. The delta is small
next to the weights, so its rounding moves the embedding far less than the INT8 gate allows (the export's
parity check against the fp32 tuned network says how much).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch
from torch import nn

from kuamo.export.align_head import AlignHead
from kuamo.export.int8_rows import dequantise_rows, quantise_rows

PREFIX = "backbone."


def tuned_parameter_names(model: nn.Module) -> list[str]:
    """The parameters fine-tuning trains: all but the classifier, whose logits feed the zero-shot map."""
    return [name for name, _ in model.named_parameters() if not name.startswith("_fc.")]


def delta_arrays(tuned: dict[str, torch.Tensor], pretrained: dict[str, torch.Tensor],
                 names: list[str]) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for name in names:
        delta = (tuned[name].float() - pretrained[name].float()).numpy()
        out[f"{PREFIX}{name}.q"], out[f"{PREFIX}{name}.scale"] = quantise_rows(delta)
    return out


def apply_delta(model: nn.Module, arrays: dict[str, np.ndarray]) -> int:
    """Add the stored deltas to `model`'s pretrained weights in place; returns how many tensors moved."""
    params = dict(model.named_parameters())
    names = [k[len(PREFIX): -2] for k in arrays if k.startswith(PREFIX) and k.endswith(".q")]
    unknown = sorted(set(names) - set(params))
    if unknown:
        raise ValueError(f"backbone delta names tensors the network does not have: {unknown[:3]}")
    with torch.no_grad():
        for name in names:
            delta = dequantise_rows(arrays[f"{PREFIX}{name}.q"], arrays[f"{PREFIX}{name}.scale"])
            params[name].add_(torch.from_numpy(delta))
    return len(names)


def load_tuned(path: Path | str) -> tuple[nn.Module, AlignHead]:
    """Pretrained EfficientNet-Lite0 plus the file's backbone delta (if any), and the file's head."""
    from kuamo.export.effnet_lite import load_pretrained

    backbone, _ = load_pretrained()
    apply_delta(backbone, backbone_arrays(path))
    return backbone.eval(), AlignHead.load(path)


@torch.no_grad()
def tower_outputs(backbone: nn.Module, pixels: np.ndarray, batch: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """(features, logits) of preprocessed pixels through a torch backbone, on the CPU."""
    outs = [backbone(torch.from_numpy(pixels[i: i + batch])) for i in range(0, len(pixels), batch)]
    return torch.cat([o[0] for o in outs]).numpy(), torch.cat([o[1] for o in outs]).numpy()


def backbone_arrays(path: Path | str) -> dict[str, np.ndarray]:
    """The `backbone.*` arrays of a head file (empty for a head-only file)."""
    with np.load(path) as data:
        return {k: data[k] for k in data.files if k.startswith(PREFIX)}


def delta_digest(arrays: dict[str, np.ndarray]) -> str:
    """Names a backbone delta, so features made with it can be matched to it later."""
    h = hashlib.sha256()
    for k in sorted(arrays):
        h.update(k.encode())
        h.update(np.ascontiguousarray(arrays[k]).tobytes())
    return h.hexdigest()[:16]
