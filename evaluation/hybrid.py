"""Shopper-grade retrieval tasks over an engine that indexed a pool of the fashion catalog (title, category,
attributes, photo, as `kuamo index` maps it), scored on the engine's answers (k = 10):

- colour+type: query = a colour and an articleType ("black tshirts"; Chinese "黑色T恤"), for every
  (baseColour, articleType) pair with at least 10 products in the pool and a Chinese name for both; relevant =
  products with BOTH that articleType and that baseColour; P@10;
- brand: the fashion catalog has no brand column, so a product's brand is its title's leading words before the
  gender word ("Puma Men Black Running Shoes" -> "Puma"; titles without a gender word, or with more than 3
  words before it, have none); query = a brand with at least 10 products in the pool (Chinese: "Puma旗舰店", the
  way Chinese shoppers name a brand's store); relevant = its products; P@10;
- known-item: query = a product's exact title, relevant = the products with that very title; R@1 and R@10
  (English only: the catalog has no Chinese titles);
- composed: query = a product's photo + "like this but <colour>" (Chinese "同款 <colour>") for a colour it is
  not, chosen among the colours its articleType has at least 10 products in (spread over the pool: every
  product with such a colour, in id order, sampled evenly); relevant = products with the photo's articleType
  AND the asked colour; P@10 (the share of the top 10 that is both).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kuamo.engine.understanding import COLOURS

GENDER_WORDS = ("Men", "Women", "Boys", "Girls", "Unisex", "Kids")
MIN_RELEVANT = 10  # P@10 can reach 100 only with >= 10 relevant products
# Chinese names of the catalog's common articleTypes (hand-checked)
ARTICLE_ZH: dict[str, str] = {
    "Tshirts": "T恤", "Shirts": "衬衫", "Casual Shoes": "休闲鞋", "Watches": "手表", "Sports Shoes": "运动鞋",
    "Handbags": "手提包", "Tops": "上衣", "Sunglasses": "太阳镜", "Heels": "高跟鞋", "Wallets": "钱包",
    "Flip Flops": "人字拖", "Belts": "腰带", "Sandals": "凉鞋", "Briefs": "三角内裤", "Trousers": "长裤",
    "Socks": "袜子", "Formal Shoes": "正装皮鞋", "Backpacks": "双肩包", "Jeans": "牛仔裤", "Shorts": "短裤",
    "Sweatshirts": "卫衣", "Sweaters": "毛衣", "Flats": "平底鞋", "Jackets": "夹克", "Track Pants": "运动裤",
    "Caps": "棒球帽", "Dresses": "连衣裙", "Clutches": "手拿包", "Scarves": "围巾", "Leggings": "打底裤",
    "Skirts": "半身裙", "Ties": "领带", "Bra": "文胸", "Kurtas": "库尔塔长衫", "Earrings": "耳环",
    "Perfume and Body Mist": "香水", "Deodorant": "止汗露", "Innerwear Vests": "背心", "Capris": "七分裤",
    "Laptop Bag": "电脑包", "Duffel Bag": "旅行包", "Trunk": "平角内裤", "Tunics": "束腰上衣",
}
# the catalog's colour value -> the first Chinese word the lexicon maps to it (engine/understanding.py)
COLOUR_ZH: dict[str, str] = {}
for _word, _value in COLOURS.items():
    if not _word.isascii() and len(_word) >= 2:
        COLOUR_ZH.setdefault(_value, _word)


def brand_of(title: str) -> str | None:
    words = title.split()
    for i, w in enumerate(words):
        if w in GENDER_WORDS:
            return " ".join(words[:i]) if 0 < i <= 3 else None
    return None


@dataclass(frozen=True)
class TaskQuery:
    task: str  # colour_type, brand, known_item, composed
    lang: str  # en, zh
    text: str
    relevant: frozenset[int]
    image: Path | None = None  # composed queries: the photo the text modifies


def build_queries(items: Sequence, *, known_item_limit: int | None = None) -> list[TaskQuery]:
    """The task queries for a pool of FashionItems (export/samples.py)."""
    out: list[TaskQuery] = []
    pairs = Counter((it.attrs["baseColour"], it.attrs["articleType"]) for it in items)
    for (colour, art), n in sorted(pairs.items()):
        if n < MIN_RELEVANT or colour not in COLOUR_ZH or art not in ARTICLE_ZH:
            continue
        rel = frozenset(it.id for it in items if it.attrs["baseColour"] == colour and it.attrs["articleType"] == art)
        out.append(TaskQuery("colour_type", "en", f"{colour.lower()} {art.lower()}", rel))
        out.append(TaskQuery("colour_type", "zh", f"{COLOUR_ZH[colour]}{ARTICLE_ZH[art]}", rel))
    brands = Counter(b for it in items if (b := brand_of(it.title)))
    for b, n in sorted(brands.items()):
        if n < MIN_RELEVANT:
            continue
        rel = frozenset(it.id for it in items if brand_of(it.title) == b)
        out.append(TaskQuery("brand", "en", b, rel))
        out.append(TaskQuery("brand", "zh", f"{b}旗舰店", rel))
    by_title: dict[str, set[int]] = {}
    for it in items:
        by_title.setdefault(it.title, set()).add(it.id)
    known = items if known_item_limit is None else [items[i] for i in
                                                    np.linspace(0, len(items) - 1, known_item_limit).astype(int)]
    out += [TaskQuery("known_item", "en", it.title, frozenset(by_title[it.title])) for it in known]
    return out


def build_composed(items: Sequence, limit: int = 100) -> list[TaskQuery]:
    """Photo + colour queries (module docstring), `limit` per language at most."""
    pairs = Counter((it.attrs["articleType"], it.attrs["baseColour"]) for it in items)
    candidates = []
    for it in sorted(items, key=lambda it: it.id):
        art, own = it.attrs["articleType"], it.attrs["baseColour"]
        colours = sorted(c for (a, c), n in pairs.items()
                         if a == art and c != own and n >= MIN_RELEVANT and c in COLOUR_ZH)
        if art in ARTICLE_ZH and colours:
            candidates.append((it, colours[it.id % len(colours)]))
    if len(candidates) > limit:
        candidates = [candidates[i] for i in np.linspace(0, len(candidates) - 1, limit).astype(int)]
    out = []
    for it, colour in candidates:
        art = it.attrs["articleType"]
        rel = frozenset(o.id for o in items if o.attrs["articleType"] == art and o.attrs["baseColour"] == colour)
        out.append(TaskQuery("composed", "en", f"like this but {colour.lower()}", rel, it.image_path))
        out.append(TaskQuery("composed", "zh", f"同款 {COLOUR_ZH[colour]}", rel, it.image_path))
    return out


def score(queries: Sequence[TaskQuery], answers: Sequence[Sequence[int]]) -> dict[str, dict[str, float]]:
    """Per task and language: P@10 (colour_type, brand) or R@1/R@10 (known_item), in percent, and the count."""
    groups: dict[str, list[tuple[TaskQuery, Sequence[int]]]] = {}
    for q, a in zip(queries, answers, strict=True):
        groups.setdefault(f"{q.task}_{q.lang}", []).append((q, a))
    out: dict[str, dict[str, float]] = {}
    for name, rows in groups.items():
        m: dict[str, float] = {"queries": len(rows)}
        m["P@10"] = 100 * float(np.mean([sum(i in q.relevant for i in a[:10]) / 10 for q, a in rows]))
        for k in (1, 10):
            m[f"R@{k}"] = 100 * float(np.mean([any(i in q.relevant for i in a[:k]) for q, a in rows]))
        out[name] = m
    return out
