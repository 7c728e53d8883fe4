"""Score modifiers and filter validation."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kuamo.engine.errors import InvalidInput
from kuamo.engine.rules import apply_modifiers, category_prefix_norm, validate_modifiers
from kuamo.engine.types import Modifiers, Product


def test_no_modifiers_no_change() -> None:
    p = Product(id=1, title="t", rating=5.0)
    assert apply_modifiers(0.7, p, Modifiers()) == (0.7, {})


def test_rating_factor_multiplies_and_is_reported() -> None:
    hi = Product(id=1, title="t", rating=5.0)
    lo = Product(id=2, title="t", rating=1.0)
    m = Modifiers(rating_factor=0.5)
    s_hi, a_hi = apply_modifiers(0.6, hi, m)
    s_lo, _ = apply_modifiers(0.6, lo, m)
    assert s_hi > s_lo > 0.6
    assert a_hi["rating_factor"] == pytest.approx(s_hi / 0.6)
    # an unrated product is left alone, and says so by listing nothing
    assert apply_modifiers(0.6, Product(id=3, title="t"), m) == (0.6, {})


def test_popularity_and_brand_are_additive() -> None:
    p = Product(id=1, title="t", brand="Nike", attributes={"popularity": 9})
    s, applied = apply_modifiers(0.5, p, Modifiers(popularity_weight=0.2, brand_boosts={"Nike": 0.1}))
    assert s == pytest.approx(0.5 + applied["popularity"] + applied["brand_boost"])
    assert applied["popularity"] == pytest.approx(0.2 * 9 / 10)


@given(st.floats(0, 5), st.floats(0, 5), st.floats(0, 10))
def test_rating_factor_is_monotone_in_rating(r1: float, r2: float, factor: float) -> None:
    m = Modifiers(rating_factor=factor)
    s1, _ = apply_modifiers(1.0, Product(id=1, title="t", rating=r1), m)
    s2, _ = apply_modifiers(1.0, Product(id=2, title="t", rating=r2), m)
    assert (s1 - s2) * (r1 - r2) >= -1e-12


@pytest.mark.parametrize(("m", "field"), [
    (Modifiers(rating_factor=float("nan")), "modifiers.rating_factor"),
    (Modifiers(popularity_weight=1e9), "modifiers.popularity_weight"),
    (Modifiers(popularity_field="x'y"), "modifiers.popularity_field"),
    (Modifiers(brand_boosts={"A": float("inf")}), "modifiers.brand_boosts"),
])
def test_bad_modifiers_named(m: Modifiers, field: str) -> None:
    with pytest.raises(InvalidInput) as e:
        validate_modifiers(m)
    assert e.value.field == field


def test_category_prefix_norm() -> None:
    assert category_prefix_norm(" A / B /") == "A/B"
