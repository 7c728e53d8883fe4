"""The catalog a benchmark serves: the whole fashion catalog indexed in data/kuamo, or for a quick (CI smoke)
run its first QUICK_PRODUCTS products indexed in data/kuamo-sample-N; each is built once, reused, and
re-embedded when the models change. Indexing all 20,873 products took 20 min on a busy 2-core AVX2 box, more
than the rest of `make test`; the smoke run measures the same code paths on the sample."""

from __future__ import annotations

import csv
import os
import shutil
from pathlib import Path

QUICK_PRODUCTS = 1_000
FULL_DATA_DIR = Path("data/kuamo")
SAMPLE_ROOT = Path(".cache")


def sample_catalog(source: Path, n: int, root: Path = SAMPLE_ROOT) -> Path:
    """A catalog directory with the first `n` rows of source/products.csv that have a photo; the photos are
    hard links (a copy across file systems), since the indexer refuses image paths that leave the catalog."""
    dst = root / f"{source.name}-sample-{n}"
    done = dst / "products.csv"
    if done.is_file():
        return dst
    images = dst / "images"
    images.mkdir(parents=True, exist_ok=True)
    with open(source / "products.csv", newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        fields = list(reader.fieldnames or [])
        rows = []
        for row in reader:
            photo = source / "images" / f"{row['id']}.jpg"
            if photo.is_file():
                rows.append(row)
                _link_or_copy(photo, images / photo.name)
                if len(rows) == n:
                    break
    tmp = dst / "products.csv.tmp"
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, done)  # written last: a half-made sample is rebuilt, never used
    return dst


def _link_or_copy(src: Path, dst: Path) -> None:
    if dst.exists():
        return
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def bench_catalog(quick: bool, models: Path, catalog: Path | None = None,
                  data: Path | None = None) -> tuple[Path, Path]:
    """(catalog directory, data directory) indexed with `models`: the whole catalog, or its quick sample."""
    from kuamo.engine.catalog_ready import ensure_index
    from kuamo.export.samples import DEFAULT_FASHION_DIR
    from kuamo.server.app import engine_config
    from kuamo.server.config import ServerConfig

    catalog = catalog or DEFAULT_FASHION_DIR
    if quick:
        catalog = sample_catalog(catalog, QUICK_PRODUCTS)
        data = data or FULL_DATA_DIR.with_name(f"kuamo-sample-{QUICK_PRODUCTS}")
    data = data or FULL_DATA_DIR
    ensure_index(catalog, engine_config(ServerConfig(model_dir=models, data_dir=data)))
    return catalog, data
