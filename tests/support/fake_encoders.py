"""Small deterministic encoders for engine tests (no models): bag-of-words text vectors, and image
vectors from the photo's mean colour, both in one DIM-d space so text and image are "aligned"."""

from __future__ import annotations

import asyncio
import hashlib
import io
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from kuamo.engine.errors import InvalidInput
from kuamo.engine.imaging import decode_image

DIM = 16


def word_vec(word: str, dim: int = DIM) -> np.ndarray:
    seed = int.from_bytes(hashlib.sha256(word.lower().encode()).digest()[:8], "little")
    return np.random.default_rng(seed).standard_normal(dim).astype(np.float32)


def _norm(x: np.ndarray) -> np.ndarray:
    return x / max(float(np.linalg.norm(x)), 1e-12)


COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220), "black": (10, 10, 10),
           "white": (245, 245, 245)}


class FakeTextEncoder:
    fingerprint = "fake-text-v1"

    def __init__(self, dim: int = DIM) -> None:
        self.dim = dim
        self.calls = 0

    def validate(self, text: object) -> str:
        if not isinstance(text, str) or not text.strip():
            raise InvalidInput("text is empty", field="text")
        return text

    def encode(self, texts: Sequence[str], kind: str = "query") -> np.ndarray:
        self.calls += 1
        out = []
        for t in texts:
            self.validate(t)
            out.append(_norm(sum((word_vec(w, self.dim) for w in t.split()), np.zeros(self.dim, np.float32))))
        return np.stack(out).astype(np.float32)


class FakeImageEncoder:
    """An image's vector is the text vector of its nearest named colour (so a red photo ~ "red")."""

    fingerprint = "fake-image-v1"

    def __init__(self, dim: int = DIM) -> None:
        self.dim = dim

    def encode(self, items: Sequence[bytes]) -> np.ndarray:
        out = []
        for b in items:
            img = decode_image(b)
            mean = np.asarray(img, dtype=np.float32).reshape(-1, 3).mean(0)
            name = min(COLOURS, key=lambda c: float(np.sum((np.asarray(COLOURS[c]) - mean) ** 2)))
            out.append(_norm(word_vec(name, self.dim)))
        return np.stack(out).astype(np.float32)


def png(colour: str | tuple[int, int, int], size: tuple[int, int] = (12, 16)) -> bytes:
    rgb = COLOURS[colour] if isinstance(colour, str) else colour
    buf = io.BytesIO()
    Image.new("RGB", size, rgb).save(buf, format="PNG")
    return buf.getvalue()


@contextmanager
def fake_engine(data_dir: Path, **config: Any) -> Iterator[Any]:
    """An Engine over `data_dir` with the fake text and image towers (one space: "aligned"), closed after."""
    from kuamo.engine.engine import Engine, EngineConfig

    eng = Engine(EngineConfig(data_dir=data_dir, **config), text_encoder=FakeTextEncoder(),
                 image_encoder=FakeImageEncoder())
    try:
        yield eng
    finally:
        asyncio.run(eng.close(snapshot=False))
