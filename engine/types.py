"""Plain data types the engine, the server and the CLI exchange. No behaviour beyond cheap checks.

Conventions:
- product ids are the catalog's own ids, never re-assigned: an int (a non-negative int64) or a string
  (hex ids, SKUs); engine/ids.py maps each to the int64 row key the store and the index use;
- a category path is ONE string of segments joined by "/" ("Apparel/Topwear/Shirts"); a category
  filter is a segment prefix ("Apparel/Topwear" matches ".../Shirts" but not "Apparel/TopwearX");
- price is in the catalog's currency, rating on 0..5; None means unknown (not zero);
- attributes are flat: str, int, float or bool values only (they are stored as JSON and filtered on).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

AttrValue = str | int | float | bool
ProductId = int | str  # canonical form: engine/ids.py canonical_id

CATEGORY_SEP = "/"
MAX_ID = (1 << 63) - 1


def category_leaf(path: str) -> str:
    """The last level of a category path, as Product.category_parts splits it ("" when it has none)."""
    parts = [p for p in path.split(CATEGORY_SEP) if p]
    return parts[-1] if parts else ""


@dataclass(frozen=True, kw_only=True)
class Product:
    id: ProductId
    title: str
    description: str = ""
    category: str = ""  # "A/B/C", see module docstring
    brand: str | None = None
    price: float | None = None
    rating: float | None = None
    attributes: dict[str, AttrValue] = field(default_factory=dict)
    image_ref: str | None = None  # a path or URL as the catalog gave it; the bytes are not stored

    @property
    def category_parts(self) -> list[str]:
        return [p for p in self.category.split(CATEGORY_SEP) if p]

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "title": self.title, "description": self.description, "category": self.category,
                "brand": self.brand, "price": self.price, "rating": self.rating,
                "attributes": dict(self.attributes), "image_ref": self.image_ref}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Product:
        from kuamo.engine.ids import canonical_id

        return cls(id=canonical_id(d["id"]), title=d.get("title") or "", description=d.get("description") or "",
                   category=d.get("category") or "", brand=d.get("brand"), price=d.get("price"),
                   rating=d.get("rating"), attributes=dict(d.get("attributes") or {}),
                   image_ref=d.get("image_ref"))


@dataclass(frozen=True, kw_only=True)
class Filters:
    """Hard constraints, applied inside the index search. Empty = no constraint."""

    category_prefix: str | None = None
    brands: tuple[str, ...] = ()  # any of these (exact match)
    price_min: float | None = None  # inclusive
    price_max: float | None = None  # inclusive
    min_rating: float | None = None  # inclusive
    attributes: dict[str, AttrValue] = field(default_factory=dict)  # equality on each, all must hold
    ids: tuple[ProductId, ...] = ()  # restrict to these product ids (e.g. "more like this among my cart")

    def is_empty(self) -> bool:
        return (not self.category_prefix and not self.brands and self.price_min is None
                and self.price_max is None and self.min_rating is None and not self.attributes and not self.ids)


@dataclass(frozen=True, kw_only=True)
class Modifiers:
    """Soft score changes applied in the exact re-rank of the top k x factor candidates.

    final = base * (1 + rating_factor * rating / 5) + popularity_weight * p / (1 + p)
            + brand_boosts.get(brand, 0)
    where p = max(0, attributes[popularity_field]); products without a rating or popularity get no change.
    """

    rating_factor: float = 0.0
    popularity_weight: float = 0.0
    popularity_field: str = "popularity"
    brand_boosts: dict[str, float] = field(default_factory=dict)

    def is_empty(self) -> bool:
        return self.rating_factor == 0 and self.popularity_weight == 0 and not self.brand_boosts


@dataclass(frozen=True, kw_only=True)
class Query:
    """Whatever the caller has: text, a photo, rating/price targets, numeric attribute targets.

    `weights` maps block names ("text", "image", "rating", "price", declared numeric attributes) to
    non-negative weights; omitted = the engine's defaults for the parts present. nprobe/rerank_factor
    None = index defaults (bounded by the index limits).
    """

    text: str | None = None
    image: bytes | None = None
    rating: float | None = None  # "rated about 4.5"
    price: float | None = None  # "around 300"
    targets: dict[str, float] = field(default_factory=dict)  # declared numeric attributes, e.g. {"year": 2012}
    weights: dict[str, float] = field(default_factory=dict)
    filters: Filters = field(default_factory=Filters)
    modifiers: Modifiers = field(default_factory=Modifiers)
    k: int = 10
    nprobe: int | None = None
    rerank_factor: int | None = None
    explain: bool = False
    include_products: bool = True
    user_id: str | None = None  # blends the shopper's taste profile into the query
    user_weight: float | None = None  # 0..1 share of the profile (None = the engine default, 0 = off)
    # keep only the best hit per value of this attribute ("item_group_id": one hit per product, not one per
    # size or colour) or of "brand"; products without the attribute each stand alone
    collapse: str | None = None


@dataclass(frozen=True, kw_only=True)
class RecommendQuery:
    """Products for a shopper and/or "more like these": the profile plus weighted positive examples
    minus weighted negative ones. Already-bought products and the examples themselves are excluded.
    With neither a profile nor examples (cold start) the answer is popularity within the filters."""

    user_id: str | None = None
    positives: dict[ProductId, float] = field(default_factory=dict)  # product id -> weight (> 0)
    negatives: dict[ProductId, float] = field(default_factory=dict)
    filters: Filters = field(default_factory=Filters)
    modifiers: Modifiers = field(default_factory=Modifiers)
    k: int = 10
    explain: bool = False
    include_products: bool = True
    include_purchased: bool = False


@dataclass(frozen=True, kw_only=True)
class Explanation:
    contributions: dict[str, float]  # block name -> weighted similarity; they sum to base_score
    base_score: float
    modifiers: dict[str, float] = field(default_factory=dict)  # "rating_factor" -> multiplier, others additive
    # the query's lexical terms the product's indexed text holds (contributions["lexical"] is their BM25 part)
    matched_terms: tuple[str, ...] = ()


@dataclass(frozen=True, kw_only=True)
class Hit:
    id: ProductId
    score: float
    product: Product | None = None
    explanation: Explanation | None = None


@dataclass(frozen=True, kw_only=True)
class Timings:
    queue_ms: float = 0.0  # waiting in the encoder batcher
    encode_ms: float = 0.0
    filter_ms: float = 0.0
    search_ms: float = 0.0
    rerank_ms: float = 0.0
    total_ms: float = 0.0


@dataclass(frozen=True, kw_only=True)
class SearchResult:
    hits: list[Hit]
    timings: Timings = field(default_factory=Timings)
    allowed: int | None = None  # how many products passed the filters (None = no filter)


@dataclass(frozen=True, kw_only=True)
class Rejection:
    row: int  # position in the request (or line/row number of the catalog file, 1-based for files)
    id: ProductId | None
    field: str  # the field at fault: "image", "price", "id", ...
    reason: str


@dataclass(frozen=True, kw_only=True)
class UpsertResult:
    accepted: list[ProductId]
    rejected: list[Rejection] = field(default_factory=list)
    unchanged: list[ProductId] = field(default_factory=list)  # content hash matched: nothing re-encoded


@dataclass(frozen=True, kw_only=True)
class EngineStats:
    products: int
    indexed: int
    store_seq: int  # last committed change
    index_seq: int  # last change the index has applied
    layout: dict[str, Any]
    index: dict[str, Any]
    batchers: dict[str, Any] = field(default_factory=dict)
    data_dir: str = ""
    query_cache: dict[str, int] = field(default_factory=dict)  # hits, misses, entries, bytes (query_cache.py)
    result_cache: dict[str, int] = field(default_factory=dict)  # hits, misses, entries (result_cache.py)


@dataclass(frozen=True, kw_only=True)
class Health:
    ready: bool
    reason: str = ""
