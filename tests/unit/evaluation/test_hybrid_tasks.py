"""The hybrid evaluation's task builders (evaluation/hybrid.py): who is relevant to what."""

from __future__ import annotations

from pathlib import Path

from kuamo.evaluation.hybrid import MIN_RELEVANT, brand_of, build_composed, build_queries, score
from kuamo.export.samples import FashionItem


def _items() -> list[FashionItem]:
    out = []
    for i in range(MIN_RELEVANT):  # 10 red and 10 black Tshirts, 10 black Jeans, 1 white Tshirt
        out.append(FashionItem(i, f"Puma Men Red Tshirt {i}", Path(f"{i}.jpg"),
                               {"articleType": "Tshirts", "baseColour": "Red"}))
        out.append(FashionItem(100 + i, f"Nike Women Black Tshirt {i}", Path(f"{100 + i}.jpg"),
                               {"articleType": "Tshirts", "baseColour": "Black"}))
        out.append(FashionItem(200 + i, f"Jeans {i}", Path(f"{200 + i}.jpg"),
                               {"articleType": "Jeans", "baseColour": "Black"}))
    out.append(FashionItem(300, "Roadster Men White Tshirt", Path("300.jpg"),
                           {"articleType": "Tshirts", "baseColour": "White"}))
    return out


def test_composed_asks_for_a_colour_the_photo_is_not_with_enough_products() -> None:
    items = _items()
    qs = build_composed(items, limit=1000)
    by_photo = {q.image.name: q for q in qs if q.lang == "en"}
    red, black = frozenset(range(MIN_RELEVANT)), frozenset(range(100, 100 + MIN_RELEVANT))
    assert by_photo["0.jpg"].text == "like this but black" and by_photo["0.jpg"].relevant == black
    assert by_photo["100.jpg"].text == "like this but red" and by_photo["100.jpg"].relevant == red
    assert by_photo["300.jpg"].relevant in (red, black)  # white has too few products to be asked for
    assert not any(f"{200 + i}.jpg" in by_photo for i in range(MIN_RELEVANT))  # Jeans: no other colour has 10
    zh = [q for q in qs if q.lang == "zh"]
    assert len(zh) == len(by_photo) and all(q.text.startswith("同款 ") for q in zh)
    assert len(build_composed(items, limit=4)) == 8  # sampled evenly, both languages


def test_scores_count_type_and_colour_together() -> None:
    q = build_composed(_items(), limit=1)[0]  # the first photo: a red Tshirt asking for black
    m = score([q], [[100, 101, 0, 200, 102, 1, 2, 3, 4, 5]])  # 3 black Tshirts; black Jeans do not count
    assert m["composed_en"]["P@10"] == 30.0


def test_brand_and_colour_type_queries() -> None:
    assert brand_of("Puma Men Red Tshirt") == "Puma" and brand_of("Jeans 3") is None
    qs = build_queries(_items())
    texts = {(q.task, q.lang): q for q in qs if q.task == "colour_type"}
    assert texts[("colour_type", "en")].relevant  # a (colour, type) pair with 10 products exists
