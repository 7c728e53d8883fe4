"""The alignment head: EfficientNet-Lite0 features + logits -> the 384-d multilingual-e5 space.

embedding = normalize(alpha * normalize(mlp(standardise([features, logits])))
                      + (1 - alpha) * normalize(softmax(logits) @ class_text))

`mlp` is trained on (photo, title) pairs; `class_text` holds e5("query: a photo of a <class>") for the
1000 ImageNet classes, the zero-shot map that keeps non-fashion goods searchable. Everything here is
plain tensors so the head traces into the image tower's ONNX graph.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import torch
from torch import nn

from kuamo.export.int8_rows import dequantise_rows, quantise_rows

DEFAULT_HEAD_FILE = "align_head.npz"
TRAINED_KEYS = "trained_keys"  # the training products' keys (engine/trained_products.py)
NOT_WEIGHTS = ("shape", "centroids", "near_cosine", TRAINED_KEYS)  # arrays a head file carries beside its weights
DEFAULT_CARD_FILE = "align.json"


@dataclass(frozen=True, kw_only=True)
class HeadShape:
    features: int = 1280
    logits: int = 1000
    hidden: int = 512
    out: int = 384


class AlignHead(nn.Module):
    def __init__(self, shape: HeadShape | None = None, *, alpha: float = 1.0) -> None:
        super().__init__()
        s = shape or HeadShape()
        self.shape = s
        d_in = s.features + s.logits
        self.register_buffer("mean", torch.zeros(d_in))
        self.register_buffer("std", torch.ones(d_in))
        self.register_buffer("class_text", torch.zeros(s.logits, s.out))
        self.register_buffer("alpha", torch.tensor(float(alpha)))
        self.mlp = nn.Sequential(nn.Linear(d_in, s.hidden), nn.GELU(), nn.Dropout(0.1), nn.Linear(s.hidden, s.out))

    def trained(self, feats: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        x = (torch.cat([feats, logits], dim=1) - self.mean) / self.std
        return nn.functional.normalize(self.mlp(x), dim=1)

    def zero_shot(self, logits: torch.Tensor) -> torch.Tensor:
        return nn.functional.normalize(torch.softmax(logits, dim=1) @ self.class_text, dim=1)

    def forward(self, feats: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        a = self.alpha
        return nn.functional.normalize(a * self.trained(feats, logits) + (1 - a) * self.zero_shot(logits), dim=1)

    # Shipping: fp16 weights in one .npz next to its model card (a few MB).
    # Shipping: the MLP's weight matrices as int8 with one scale per row (`<name>.q` / `<name>.scale`; cosine
    # to fp32 > 0.9999), everything else fp16. Older files hold fp16 only and still load. A fine-tuned
    # backbone travels in the same file as `backbone.*` arrays (export/tuned_backbone.py).
    def save(self, path: Path, extra: dict[str, np.ndarray] | None = None) -> None:
        arrays: dict[str, np.ndarray] = {}
        for k, v in self.state_dict().items():
            a = v.detach().cpu().numpy()
            if k.startswith("mlp.") and a.ndim == 2:
                arrays[f"{k}.q"], arrays[f"{k}.scale"] = quantise_rows(a)
            else:
                arrays[k] = a.astype(np.float16)
        arrays["shape"] = np.asarray([self.shape.features, self.shape.logits, self.shape.hidden, self.shape.out])
        np.savez_compressed(path, **arrays, **(extra or {}))

    @staticmethod
    def add_arrays(path: Path, arrays: dict[str, np.ndarray]) -> None:
        """Write `arrays` into a head file beside what it holds (a shipped head trained before they existed:
        export/centroids.py, export/trained_keys.py)."""
        with np.load(path) as data:
            held = {k: data[k] for k in data.files}
        np.savez_compressed(path, **{**held, **arrays})

    @classmethod
    def load(cls, path: Path | str) -> AlignHead:
        with np.load(path) as data:
            centroids = data["centroids"].astype(np.float32) if "centroids" in data.files else None
            near = float(data["near_cosine"]) if "near_cosine" in data.files else None
            trained = data[TRAINED_KEYS] if TRAINED_KEYS in data.files else None
            f, lg, h, o = (int(x) for x in data["shape"])
            head = cls(HeadShape(features=f, logits=lg, hidden=h, out=o))
            state = {}
            for k in data.files:
                if k in NOT_WEIGHTS or k.startswith("backbone.") or k.endswith(".scale"):
                    continue
                if k.endswith(".q"):
                    state[k[:-2]] = torch.from_numpy(dequantise_rows(data[k], data[f"{k[:-2]}.scale"]))
                else:
                    state[k] = torch.from_numpy(data[k].astype(np.float32))
        head.load_state_dict(state, strict=True)
        head.centroids = centroids  # training photos' feature centroids (export/centroids.py), when the file has them
        head.near_cosine = near  # export/centroids.py near_cosine, when the file has it
        head.trained_keys = trained  # engine/trained_products.py keys of its training products, when it has them
        return head.eval()


# The shipped heads are model weights (14.5 MB together) that only `kuamo export` reads: they live in the source
# checkout (export/heads/) and stay out of the wheel, so a serve-only `pip install kuamo[cpu]` does not carry them.
HEADS_DIR = "heads"


def default_head_path() -> Path:
    return Path(str(resources.files("kuamo.export").joinpath(HEADS_DIR, DEFAULT_HEAD_FILE)))


def generic_head_path() -> Path:
    """The head-only alternative (frozen ImageNet backbone): weaker on fashion, kinder to other goods
    (benchmarks/results/align_generalisation.md). `kuamo export --head generic` picks it."""
    return Path(str(resources.files("kuamo.export").joinpath(HEADS_DIR, "generic", DEFAULT_HEAD_FILE)))


def shape_dict(shape: HeadShape) -> dict:
    return asdict(shape)
