"""The exported image tower, through the runtime encoder: parity with PyTorch, neighbours, bad input."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from kuamo.engine.artifacts import ModelArtifacts
from kuamo.engine.config import EncoderConfig
from kuamo.engine.encoders import ImageEncoder
from kuamo.engine.errors import InvalidInput

pytestmark = pytest.mark.models


@pytest.fixture(scope="module")
def encoder(model_dir: Path) -> ImageEncoder:
    return ImageEncoder(ModelArtifacts(model_dir), EncoderConfig(precision="fp32"))


def _catalog(fashion_dir: Path, n: int) -> list[dict]:
    with open(fashion_dir / "products.csv", newline="", encoding="utf-8") as f:
        rows = [r for r in csv.DictReader(f) if (fashion_dir / "images" / f"{r['id']}.jpg").is_file()]
    return rows[:n]


def test_onnx_matches_pytorch_on_real_photos(encoder: ImageEncoder, fashion_dir: Path) -> None:
    torch = pytest.importorskip("torch")
    from kuamo.export.effnet_lite import load_pretrained

    rows = _catalog(fashion_dir, 16)
    photos = [(fashion_dir / "images" / f"{r['id']}.jpg").read_bytes() for r in rows]
    got = encoder.encode_outputs(photos, ["features"])["features"]
    model, _ = load_pretrained()
    with torch.no_grad():
        ref = model(torch.from_numpy(np.stack([encoder.load(p) for p in photos])))[0].numpy()
    cos = (got * ref).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(ref, axis=1)
    assert cos.min() >= 0.9999


def test_shoe_photo_neighbours_are_footwear(encoder: ImageEncoder, fashion_dir: Path) -> None:
    rows = _catalog(fashion_dir, 300)
    feats = encoder.encode([(fashion_dir / "images" / f"{r['id']}.jpg").read_bytes() for r in rows],
                           output="features")
    shoes = [i for i, r in enumerate(rows) if r["articleType"] in ("Sports Shoes", "Casual Shoes")]
    hits = []
    for q in shoes[:5]:
        scores = feats @ feats[q]
        scores[q] = -np.inf
        hits += [rows[i]["masterCategory"] == "Footwear" for i in np.argsort(-scores)[:5]]
    assert np.mean(hits) >= 0.7


@pytest.mark.parametrize("data", [b"", b"\x00" * 100, b"GIF89a-not-really", b"\xff\xd8\xff\xe0" + b"\x00" * 50])
def test_bad_images_are_rejected(encoder: ImageEncoder, data: bytes) -> None:
    with pytest.raises(InvalidInput):
        encoder.encode([data])
