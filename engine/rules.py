"""Filters and score modifiers: validation, the SQL that turns filters into allowed ids, and the re-rank
arithmetic that turns a base similarity into a final score with an explanation."""

from __future__ import annotations

import math
import re
from typing import Any

from kuamo.engine.errors import InvalidInput, shown
from kuamo.engine.ids import canonical_id, key_of
from kuamo.engine.photo_colour import PHOTO_COLOUR_FILTER, canonical_colour
from kuamo.engine.types import CATEGORY_SEP, Filters, Modifiers, Product

# Attribute names end up inside a JSON path; keep them to a safe alphabet rather than escape them.
ATTR_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-]{0,63}$")
MAX_FILTER_IDS = 100_000
MAX_BOOST = 1_000.0


def _finite(value: Any, field: str, *, lo: float | None = None, hi: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidInput(f"must be a number, got {type(value).__name__}", field=field)
    v = float(value)
    if not math.isfinite(v):
        raise InvalidInput(f"must be a finite number, got {shown(v)}", field=field)
    if lo is not None and v < lo:
        raise InvalidInput(f"must be >= {lo}, got {v}", field=field)
    if hi is not None and v > hi:
        raise InvalidInput(f"must be <= {hi}, got {v}", field=field)
    return v


def check_attr_name(name: Any, field: str) -> str:
    if not isinstance(name, str) or not ATTR_NAME.match(name):
        raise InvalidInput(f"attribute name {name!r} must match {ATTR_NAME.pattern}", field=field)
    return name


def validate_filters(f: Filters) -> None:
    """Raise InvalidInput naming the filter field at fault."""
    if f.category_prefix is not None and not isinstance(f.category_prefix, str):
        raise InvalidInput("must be a string like 'Apparel/Topwear'", field="filters.category_prefix")
    for b in f.brands:
        if not isinstance(b, str) or not b:
            raise InvalidInput(f"brand {b!r} must be a non-empty string", field="filters.brands")
    lo = None if f.price_min is None else _finite(f.price_min, "filters.price_min", lo=0)
    hi = None if f.price_max is None else _finite(f.price_max, "filters.price_max", lo=0)
    if lo is not None and hi is not None and lo > hi:
        raise InvalidInput(f"price_min {lo} is above price_max {hi}", field="filters.price_min")
    if f.min_rating is not None:
        _finite(f.min_rating, "filters.min_rating", lo=0, hi=5)
    for name, value in f.attributes.items():
        check_attr_name(name, "filters.attributes")
        if name == PHOTO_COLOUR_FILTER:
            canonical_colour(value)
        if not isinstance(value, str | int | float | bool) or (isinstance(value, float) and not math.isfinite(value)):
            raise InvalidInput(f"value of {name!r} must be a string, number or bool", field="filters.attributes")
    if len(f.ids) > MAX_FILTER_IDS:
        raise InvalidInput(f"at most {MAX_FILTER_IDS} ids, got {len(f.ids)}", field="filters.ids")
    for i in f.ids:
        canonical_id(i, "filters.ids")


def validate_modifiers(m: Modifiers) -> None:
    _finite(m.rating_factor, "modifiers.rating_factor", lo=-1, hi=MAX_BOOST)
    _finite(m.popularity_weight, "modifiers.popularity_weight", lo=-MAX_BOOST, hi=MAX_BOOST)
    check_attr_name(m.popularity_field, "modifiers.popularity_field")
    for brand, boost in m.brand_boosts.items():
        if not isinstance(brand, str):
            raise InvalidInput("brand names must be strings", field="modifiers.brand_boosts")
        _finite(boost, "modifiers.brand_boosts", lo=-MAX_BOOST, hi=MAX_BOOST)


def category_prefix_norm(prefix: str) -> str:
    """'Apparel / Topwear/' -> 'Apparel/Topwear' (the stored form)."""
    return CATEGORY_SEP.join(p.strip() for p in prefix.split(CATEGORY_SEP) if p.strip())


def _sql_value(v: Any) -> Any:
    # json_extract returns JSON true/false as 1/0.
    return int(v) if isinstance(v, bool) else v


def filter_sql(f: Filters) -> tuple[str, list[Any]]:
    """A WHERE clause (without the keyword) over the products table, and its parameters. Call
    validate_filters first. Segment-prefix category match is case-sensitive, like the stored path."""
    where: list[str] = []
    params: list[Any] = []
    if f.category_prefix:
        p = category_prefix_norm(f.category_prefix)
        if p:
            # substr instead of LIKE: LIKE is case-insensitive and treats % and _ in the prefix as wildcards.
            where.append("(category = ? OR substr(category, 1, ?) = ?)")
            params += [p, len(p) + 1, p + CATEGORY_SEP]
    if f.brands:
        where.append(f"brand IN ({','.join('?' * len(f.brands))})")
        params += list(f.brands)
    if f.price_min is not None:
        where.append("price >= ?")
        params.append(float(f.price_min))
    if f.price_max is not None:
        where.append("price <= ?")
        params.append(float(f.price_max))
    if f.min_rating is not None:
        where.append("rating >= ?")
        params.append(float(f.min_rating))
    for name, value in f.attributes.items():
        if name == PHOTO_COLOUR_FILTER:  # read off the photo at ingest, kept beside the product
            where.append("id IN (SELECT id FROM photo_colours WHERE instr(',' || colours || ',', ?) > 0)")
            params.append(f",{canonical_colour(value)},")
            continue
        where.append("json_extract(attributes, ?) = ?")
        params += [f'$."{name}"', _sql_value(value)]
    if f.ids:
        # Caller-supplied ids go through a temp table in the store when large; inline here when small.
        where.append(f"id IN ({','.join('?' * len(f.ids))})")
        params += [key_of(i, "filters.ids") for i in f.ids]
    return " AND ".join(where) or "1", params


def popularity_of(p: Product, field: str) -> float | None:
    v = p.attributes.get(field)
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(float(v)):
        return None
    return max(0.0, float(v))


def apply_modifiers(base: float, product: Product | None, m: Modifiers) -> tuple[float, dict[str, float]]:
    """Final score and the modifiers that changed it (name -> multiplier for rating_factor, additive
    term for the others). See Modifiers for the formula."""
    if product is None or m.is_empty():
        return base, {}
    score = base
    applied: dict[str, float] = {}
    if m.rating_factor and product.rating is not None:
        mult = 1.0 + m.rating_factor * min(max(product.rating, 0.0), 5.0) / 5.0
        score *= mult
        applied["rating_factor"] = mult
    if m.popularity_weight:
        pop = popularity_of(product, m.popularity_field)
        if pop is not None:
            term = m.popularity_weight * pop / (1.0 + pop)
            score += term
            applied["popularity"] = term
    if m.brand_boosts and product.brand in m.brand_boosts:
        term = float(m.brand_boosts[product.brand])
        score += term
        applied["brand_boost"] = term
    return score, applied
