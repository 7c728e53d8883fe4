"""The served towers are cross-modal: words (English or Chinese) find the right photos."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from kuamo.engine.artifacts import ModelArtifacts
from kuamo.engine.encoders import ImageEncoder, TextEncoder

pytestmark = pytest.mark.models


@pytest.fixture(scope="module")
def pool(model_dir: Path, fashion_dir: Path):
    from kuamo.evaluation.split import is_held_out
    from kuamo.export.samples import load_fashion

    art = ModelArtifacts(model_dir)
    if art.towers["image"]["embedding_output"] != "embedding":
        pytest.skip("this export has no aligned image tower")
    items = [it for it in load_fashion(fashion_dir) if is_held_out(it.id)][:300]
    img = ImageEncoder(art)
    emb = img.encode([it.image_path.read_bytes() for it in items])
    return items, emb, TextEncoder(art)


def test_aligned_embedding_is_384_d_in_the_text_space(pool) -> None:
    _, emb, text = pool
    assert emb.shape[1] == text.dim == 384
    assert np.allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-3)


@pytest.mark.parametrize(("query", "article"), [
    ("men's watch", "Watches"), ("男士手表", "Watches"), ("sports shoes", "Sports Shoes"),
    ("女士手提包", "Handbags"), ("sunglasses", "Sunglasses"),
])
def test_text_query_finds_photos_of_that_kind(pool, query: str, article: str) -> None:
    items, emb, text = pool
    present = sum(it.attrs["articleType"] == article for it in items)
    if present < 5:
        pytest.skip(f"only {present} {article} in this slice")
    top = np.argsort(-(emb @ text.encode(query, kind="query")))[:5]
    hits = sum(items[i].attrs["articleType"] == article for i in top)
    assert hits >= 3, [items[i].title for i in top]
