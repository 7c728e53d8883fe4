"""Command-line filter expressions -> Filters, and the errors for bad ones."""

from __future__ import annotations

import math

import pytest

from kuamo.engine.errors import InvalidInput
from kuamo.server.filter_expr import parse_filters


def test_expressions_map_to_filters() -> None:
    f = parse_filters(["price<2000", "price>=100", "rating>=4", "category=Apparel/Topwear", "brand=Nike, Puma",
                       "gender=Women", "year=2012", "new=true"])
    assert f.price_min == 100 and f.price_max == math.nextafter(2000, -math.inf)
    assert f.min_rating == 4 and f.category_prefix == "Apparel/Topwear" and f.brands == ("Nike", "Puma")
    assert f.attributes == {"gender": "Women", "year": 2012, "new": True}
    assert parse_filters(["price=300"]).price_min == parse_filters(["price=300"]).price_max == 300


@pytest.mark.parametrize("expr", ["price<abc", "price<inf", "rating<3", "gender>Women", "no operator", "=x"])
def test_bad_expressions_say_what_is_wrong(expr: str) -> None:
    with pytest.raises(InvalidInput) as e:
        parse_filters([expr])
    assert e.value.field == "filter" and expr in str(e.value)
