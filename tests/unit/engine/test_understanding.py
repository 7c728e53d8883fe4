"""Query understanding: the catalog's colours, genders, categories and price phrases, English and Chinese,
as soft boosts."""

from __future__ import annotations

import numpy as np

from kuamo.engine.types import Product
from kuamo.engine.understanding import QueryUnderstanding, boosts, category_from_candidates, facets_of, leaf

NAMES = ["Dresses", "Tshirts", "Sports Shoes", "Shoes", "Watches"]


def qu() -> QueryUnderstanding:
    u = QueryUnderstanding()
    u.set_categories(NAMES, np.eye(len(NAMES), dtype=np.float32))
    return u


def test_english() -> None:
    u = qu().parse("red dress for women under 500")
    assert (u.colour, u.gender, u.category, u.price_max) == ("Red", "Women", "Dresses", 500)
    assert qu().parse("men's navy blue t-shirt").colour == "Navy Blue"
    assert qu().parse("men's navy blue t-shirt").category == "Tshirts"
    assert qu().parse("black sports shoes").category == "Sports Shoes"  # the longer name wins
    assert qu().parse("cheap watches").cheap
    assert qu().parse("shoes over $1,200").price_min == 1200


def test_chinese() -> None:
    u = qu().parse("红色连衣裙 女士 500元以下", text_vec=np.eye(len(NAMES), dtype=np.float32)[0])
    assert (u.colour, u.gender, u.price_max) == ("Red", "Women", 500)
    assert (u.category, u.category_by) == ("Dresses", "tower")
    assert qu().parse("便宜的手表").cheap
    assert qu().parse("低于300的鞋").price_max == 300
    assert qu().parse("男童").gender == "Boys"  # the longer phrase, not 男


def test_nothing_recognised() -> None:
    u = qu().parse("zorblax", text_vec=np.ones(len(NAMES), dtype=np.float32))  # no clear category
    assert u.empty() and u.expansion() == ""


def test_boosts_are_soft_and_named() -> None:
    u = qu().parse("red dress for women under 500")
    products = {1: Product(id=1, title="a", category="Apparel/Dress/Dresses", price=400,
                           attributes={"baseColour": "Red", "gender": "Women"}),
                2: Product(id=2, title="b", category="Apparel/Topwear/Tshirts", price=900,
                           attributes={"baseColour": "Blue", "gender": "Men"})}
    b = boosts(u, {k: facets_of(p) for k, p in products.items()}, 0.05)
    assert b[1] == {"colour=Red": 0.05, "gender=Women": 0.05, "category=Dresses": 0.05, "price<=500": 0.05}
    assert 2 not in b  # nothing matched: no boost, and never removed
    assert boosts(u, {k: facets_of(p) for k, p in products.items()}, 0.0) == {}


def test_category_from_candidates_takes_a_clear_majority_only() -> None:
    def p(pid: int, name: str) -> str:
        return leaf(Product(id=pid, title="x", category=f"Accessories/{name}"))

    u = qu().parse("黑色腰带")  # the tower and the terms name nothing here
    assert u.category is None
    category_from_candidates(u, [p(1, "Belts"), p(2, "Belts"), None, p(3, "Wallets"), p(4, "Belts")], min_share=0.6)
    assert (u.category, u.category_by) == ("Belts", "candidates") and "Belts" in u.expansion()
    split = qu().parse("黑色")
    category_from_candidates(split, [p(1, "Belts"), p(2, "Wallets"), p(3, "Belts"), p(4, "Wallets")],
                             min_share=0.6)
    assert split.category is None  # no clear majority: no guess
    lone = qu().parse("黑色")
    category_from_candidates(lone, [p(1, "Belts")], min_share=0.6)
    assert lone.category is None  # one product is no majority
    named = qu().parse("red dress")
    category_from_candidates(named, [p(1, "Belts"), p(2, "Belts")], min_share=0.6)
    assert named.category == "Dresses"  # what the query's words name is never overridden
    never = qu().parse("黑色")
    category_from_candidates(never, [p(1, "Belts"), p(2, "Belts")], min_share=1.01)
    assert never.category is None


def test_catalog_colour_values_are_recognised() -> None:
    u = qu()
    u.set_colours(frozenset({"rose gold", "multicolor", "red", "xl", "42"}))
    assert u.parse("rose gold ring").colour == "Rose Gold"  # the catalog's own value
    assert u.parse("multicolor bag").colour == "Multicolor"  # the catalog's spelling over the lexicon's "Multi"
    assert u.parse("red dress").colour == "Red"  # the lexicon keeps its spelling where the catalog has it too
    assert u.parse("红色连衣裙").colour == "Red"
    assert u.parse("xl 42 shirt").colour is None  # too short or a number: not a colour word
    u.set_colours(frozenset())
    assert u.parse("rose gold ring").colour == "Gold"  # back to the lexicon alone: "gold"


def test_parses_before_the_catalog_has_categories() -> None:
    u = QueryUnderstanding().parse("red dress")  # a catalog without categories never calls set_categories
    assert u.colour == "Red" and u.category is None
