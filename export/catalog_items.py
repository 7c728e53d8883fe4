"""The products `kuamo align --catalog` adapts to, read from any catalog `kuamo index` accepts.

The rows go through the indexer's own reader and column mapping (engine/feed_files.py and catalog_io.py:
CSV/TSV/JSONL/XML/Parquet, --map, --category-path, --category-depth, the [catalog] TOML section), so a feed
that indexes also adapts, and a second reader cannot drift from the first. A product is usable for adapting
when it has a photo and some text to align it with (a title, else its category path). Photos a feed names by
URL are read from the copies `kuamo index --fetch-photos` stored beside it.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kuamo.engine.catalog_io import RowError, mapping_for, product_rows, to_product
from kuamo.engine.catalog_map import CatalogConfig, check_config
from kuamo.engine.errors import InvalidInput
from kuamo.engine.feed_files import header_of, read_rows
from kuamo.engine.ids import ProductId
from kuamo.engine.photo_fetch import FETCHED_DIR
from kuamo.engine.rows import document_text
from kuamo.engine.types import CATEGORY_SEP

CATALOG_SUFFIXES = (".csv", ".tsv", ".jsonl", ".ndjson", ".parquet")
FASHION_LEVELS = ("masterCategory", "subCategory", "articleType")


@dataclass(frozen=True)
class CatalogItem:
    id: ProductId
    title: str  # "" for a photo-only product (its category path is its text then)
    image_path: Path
    category: str  # levels joined by CATEGORY_SEP, "" when the feed has none
    attrs: dict[str, Any] = field(default_factory=dict)
    document: str = ""  # what the engine's text block embeds for it (engine/rows.py document_text)

    @property
    def leaf(self) -> str:
        return self.category.rsplit(CATEGORY_SEP, 1)[-1] if self.category else ""

    @property
    def text(self) -> str:
        """What the photo is aligned with: the title, else the category path as words."""
        return self.title or self.category.replace(CATEGORY_SEP, " ").strip()


@dataclass(frozen=True)
class LoadedCatalog:
    file: Path
    mapping: str  # the column mapping used ("fashion", "generic", "generic+map", ...)
    items: list[CatalogItem]
    rows: int
    skipped: dict[str, int]  # why rows were left out -> how many

    @property
    def fashion(self) -> bool:
        """The fashion layout: its attribute-based tasks (evaluation/tasks.py) can be scored too."""
        return self.mapping.startswith("fashion")


def catalog_file(path: Path | str) -> Path:
    """A catalog file, or a directory holding products.csv or exactly one catalog file (the fashion layout)."""
    path = Path(path)
    if path.is_file():
        return path
    if not path.is_dir():
        raise InvalidInput(f"catalog {path} does not exist", field="catalog")
    if (path / "products.csv").is_file():
        return path / "products.csv"
    found = sorted(p for p in path.iterdir() if p.suffix.lower() in CATALOG_SUFFIXES and p.is_file())
    if len(found) != 1:
        raise InvalidInput(f"catalog directory {path} holds {len(found)} catalog files "
                           f"({', '.join(p.name for p in found) or 'none'}); name the file", field="catalog")
    return found[0]


def load_catalog(path: Path | str, cfg: CatalogConfig | None = None, limit: int | None = None) -> LoadedCatalog:
    """The usable products of a catalog in file order (the first `limit` of them), as `kuamo index` reads it."""
    file = catalog_file(path)
    cfg = check_config(cfg or CatalogConfig())
    mapping = mapping_for(cfg, header_of(file))
    if (file.parent / FETCHED_DIR).is_dir():  # photos named by URL, as `kuamo index --fetch-photos` stored them
        mapping = dataclasses.replace(mapping, fetched_photos=FETCHED_DIR)
    items: list[CatalogItem] = []
    skipped: Counter[str] = Counter()
    rows = 0
    for _, row in product_rows(read_rows(file), mapping):
        if limit is not None and len(items) >= limit:
            break
        rows += 1
        try:
            product, image = to_product(row, mapping, file.parent)
        except RowError as exc:
            skipped[f"rejected ({exc.field})"] += 1
            continue
        if image is None:
            skipped["no photo"] += 1
            continue
        if not (product.title or product.category):
            skipped["no title and no category"] += 1
            continue
        attrs: dict[str, Any] = dict(product.attributes)
        if mapping.category_levels == FASHION_LEVELS:  # the fashion tasks read these by name
            attrs.update({c: str(row.get(c) or "").strip() for c in FASHION_LEVELS})
        items.append(CatalogItem(product.id, product.title, image, product.category, attrs,
                                 document_text(product)))
    return LoadedCatalog(file=file, mapping=mapping.name, items=items, rows=rows, skipped=dict(skipped))
