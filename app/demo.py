"""`kuamo neighbours`: nearest neighbours on a real sample of the fashion catalog, straight from the
exported encoders (no index, no server): text->title, and photo->photo."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

from kuamo.engine.artifacts import ModelArtifacts
from kuamo.engine.encoders import ImageEncoder, TextEncoder

DEMO_QUERIES = ("men's watch", "男士手表", "red dress for women", "红色连衣裙", "running shoes", "女士手提包")
PHOTO_QUERY_TYPES = ("Sports Shoes", "Watches", "Handbags")


def _sample(catalog: Path, n: int, seed: int = 7) -> list:
    from kuamo.export.samples import sample_fashion

    return sample_fashion(n, seed=seed, root=catalog)


def show_neighbours(*, model_dir: Path, sample: int = 2000, catalog: Path | None = None, k: int = 5) -> int:
    from kuamo.export.samples import DEFAULT_FASHION_DIR

    catalog = catalog or DEFAULT_FASHION_DIR
    art = ModelArtifacts(model_dir)
    text, image = TextEncoder(art), ImageEncoder(art)
    items = _sample(catalog, sample)
    out = sys.stdout
    print(f"models: text {text.tower.precision} ({text.providers[0]}), image {image.tower.precision}; "
          f"{len(items)} products from {catalog}", file=out)

    t0 = time.perf_counter()
    titles = text.encode([it.title for it in items], kind="document")
    t1 = time.perf_counter()
    photos = image.encode([it.image_path.read_bytes() for it in items])
    t2 = time.perf_counter()
    print(f"encoded {len(items)} titles in {t1 - t0:.1f}s, {len(items)} photos in {t2 - t1:.1f}s\n", file=out)

    for q in DEMO_QUERIES:
        scores = titles @ text.encode(q, kind="query")
        print(f"text {q!r} -> nearest titles:", file=out)
        for i in np.argsort(-scores)[:k]:
            print(f"   {scores[i]:.3f}  {items[i].title}  [{items[i].attrs['articleType']}]", file=out)

    for article in PHOTO_QUERY_TYPES:
        qi = next((i for i, it in enumerate(items) if it.attrs["articleType"] == article), None)
        if qi is None:
            continue
        scores = photos @ photos[qi]
        scores[qi] = -np.inf  # not itself
        print(f"photo of {items[qi].title!r} [{article}] -> nearest photos:", file=out)
        for i in np.argsort(-scores)[:k]:
            print(f"   {scores[i]:.3f}  {items[i].title}  [{items[i].attrs['articleType']}]", file=out)
    return 0
