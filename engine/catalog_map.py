"""How a merchant's feed maps onto kuamo's fields: the `[catalog]` settings (--map, category paths, the
rejected-rows budget) and the category-path reader ("Home >> Kitchen >> Pans >> <product name>")."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

from kuamo.engine.errors import InvalidInput
from kuamo.engine.types import CATEGORY_SEP
from kuamo.engine.zero_shot_blend import parse_image_blend

# kuamo fields a feed column can be mapped onto (--map FIELD=COLUMN)
TARGETS = ("id", "title", "description", "category", "brand", "price", "rating", "image")
# separators tried, in this order, inside a category column when none is configured
AUTO_SEPS = (" >> ", ">>", " > ", ">", "|")


MAX_FETCH_WORKERS = 256  # more parallel downloads than this is a denial of service on the merchant's CDN


@dataclass(frozen=True, kw_only=True)
class CatalogConfig:
    """`kuamo index` settings: defaults < TOML [catalog] < KUAMO_CATALOG_* < flags (server/config.py)."""

    mapping: str = "auto"
    map: dict[str, str] = field(default_factory=dict)  # kuamo field -> feed column (--map id=uniq_id,...)
    category_path: str | None = None  # separator of the levels inside one category column (">>")
    category_depth: int | None = None  # keep the first N levels (None = all but a trailing product name)
    max_rejected_share: float = 1.0  # exit 2 above this share of rejected rows (1.0: only when all are)
    max_image_pixels: int = 40_000_000  # photos above it are refused; below it big ones are scaled down
    fetch_photos: bool = False  # download photos named by URL into the catalog directory (engine/photo_fetch.py)
    fetch_workers: int = 16  # downloads at a time
    refetch_photos: bool = False  # with fetch_photos: ask again for stored photos (conditional GET), keep changes
    prune: bool = False  # delete the stored products the file no longer lists (engine/prune.py)
    max_prune_share: float = 0.2  # refuse to prune more than this share of the stored products in one run
    # the image blend (zero_shot_blend): None = chosen when due, "auto" = chosen again now, or a beta in 0..1
    image_blend: float | str | None = None


def parse_map(text: str | dict[str, str]) -> dict[str, str]:
    """"id=uniq_id,title=product_name" (or a TOML table) -> {"id": "uniq_id", ...}, or InvalidInput naming
    the bad part."""
    items = list(text.items()) if isinstance(text, dict) else [
        tuple(part.split("=", 1)) if "=" in part else (part, "") for part in text.split(",") if part.strip()]
    out: dict[str, str] = {}
    for target, column in items:
        target, column = str(target).strip(), str(column).strip()
        if target not in TARGETS:
            raise InvalidInput(f"unknown field {target!r} in the column map; map one of {', '.join(TARGETS)} "
                               "(e.g. --map id=uniq_id,title=product_name)", field="map")
        if not column:
            raise InvalidInput(f"the column map names no column for {target!r}: write {target}=COLUMN", field="map")
        if target in out:
            raise InvalidInput(f"the column map names {target!r} twice", field="map")
        out[target] = column
    return out


def check_config(cfg: CatalogConfig) -> CatalogConfig:
    """Validate and normalise (the map may arrive as text from a flag or the environment)."""
    depth = cfg.category_depth
    if isinstance(depth, str):  # from the environment
        depth = int(depth) if depth.strip().isdigit() else depth
    cfg = dataclasses.replace(cfg, map=parse_map(cfg.map), category_depth=depth,
                              image_blend=parse_image_blend(cfg.image_blend))
    if cfg.category_path is not None and not cfg.category_path.strip():
        raise InvalidInput("category_path must be a non-empty separator such as '>>'", field="category_path")
    if depth is not None and (isinstance(depth, bool) or not isinstance(depth, int) or depth < 1):
        raise InvalidInput(f"category_depth must be an integer >= 1, got {depth!r}", field="category_depth")
    for name in ("max_rejected_share", "max_prune_share"):
        share = getattr(cfg, name)
        if isinstance(share, bool) or not isinstance(share, int | float) or not 0 <= share <= 1:
            raise InvalidInput(f"{name} must be within 0..1, got {share!r}", field=name)
    px = cfg.max_image_pixels
    if isinstance(px, bool) or not isinstance(px, int) or px < 1:
        raise InvalidInput(f"max_image_pixels must be an integer >= 1, got {px!r}", field="max_image_pixels")
    workers = cfg.fetch_workers
    if isinstance(workers, bool) or not isinstance(workers, int) or not 1 <= workers <= MAX_FETCH_WORKERS:
        raise InvalidInput(f"fetch_workers must be an integer within 1..{MAX_FETCH_WORKERS}, got {workers!r}",
                           field="fetch_workers")
    for name in ("fetch_photos", "refetch_photos", "prune"):
        if not isinstance(getattr(cfg, name), bool):
            raise InvalidInput(f"{name} must be true or false, got {getattr(cfg, name)!r}", field=name)
    if cfg.refetch_photos and not cfg.fetch_photos:
        cfg = dataclasses.replace(cfg, fetch_photos=True)  # revalidating is fetching
    return cfg


def check_columns(columns: dict[str, str], header: list[str]) -> None:
    """Every mapped column must exist in the feed."""
    missing = [f"{t}={c}" for t, c in columns.items() if c not in header]
    if missing:
        raise InvalidInput(f"the column map names columns the catalog does not have: {', '.join(missing)}; "
                           f"its columns are: {', '.join(header) or '(none)'}", field="map")


def _levels(raw: Any, sep: str | None) -> list[str]:
    if isinstance(raw, list):
        raw = raw[0] if len(raw) == 1 else CATEGORY_SEP.join(str(x) for x in raw)
    text = str(raw or "").strip()
    if text.startswith("["):  # a JSON list wrapped in a string: '["Home >> Kitchen >> ..."]'
        try:
            inner = json.loads(text)
        except json.JSONDecodeError:
            inner = None
        if isinstance(inner, list) and inner:
            return _levels(inner, sep)
    if sep is None:
        sep = next((s for s in AUTO_SEPS if s in text), CATEGORY_SEP)
    return [p.strip() for p in text.split(sep) if p.strip()]


def _is_name(level: str, title: str) -> bool:
    """The level is the title, or the title cut short with an ellipsis ("Alisha Solid Women's Cyc...")."""
    a, b = level.casefold(), title.strip().casefold()
    cut = a.rstrip(".… ")
    return bool(a and b) and (a == b or (cut != a and len(cut) >= 8 and b.startswith(cut)))


def category_of(raw: Any, *, sep: str | None, depth: int | None, title: str) -> str:
    """The category path kuamo keeps: the first `depth` levels, joined by CATEGORY_SEP; a last level that
    is the product's own name (feeds put it there) is never part of it."""
    levels = _levels(raw, sep)
    if levels and _is_name(levels[-1], title):
        levels = levels[:-1]
    if depth is not None:
        levels = levels[:depth]
    return CATEGORY_SEP.join(p.replace(CATEGORY_SEP, "-") for p in levels)
