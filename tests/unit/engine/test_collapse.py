"""Query.collapse: one hit per value of an attribute (a GMC feed's item_group_id: a product's sizes and colours
are items of their own) or per brand (fake encoders, a real store and index)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from fake_encoders import FakeImageEncoder, FakeTextEncoder, png

from kuamo.engine.engine import Engine, EngineConfig
from kuamo.engine.errors import InvalidInput
from kuamo.engine.types import Modifiers, Product, Query


@pytest.fixture
def engine(tmp_path: Path):
    eng = Engine(EngineConfig(data_dir=tmp_path / "data"), text_encoder=FakeTextEncoder(),
                 image_encoder=FakeImageEncoder())
    products, images = [], []
    # a red shirt in five sizes (one item group), a red dress in two, then single red and blue products
    for size in ["XS", "S", "M", "L", "XL"]:
        products.append(Product(id=f"shirt-{size}", title=f"red shirt {size}", brand="acme",
                                attributes={"item_group_id": "shirt", "size": size}))
    for size in ("S", "M"):
        products.append(Product(id=f"dress-{size}", title=f"red dress {size}", brand="acme",
                                attributes={"item_group_id": "dress", "size": size}))
    products += [Product(id="scarf", title="red scarf", brand="zeta"), Product(id="cap", title="red cap", brand="yolo"),
                 Product(id="bag", title="blue bag", brand="zeta", attributes={"item_group_id": ""})]
    images = [png("red")] * 9 + [png("blue")]
    asyncio.run(eng.upsert(products, images))
    yield eng
    asyncio.run(eng.close(snapshot=False))


def ids(engine: Engine, **kw) -> list[str]:
    return [str(h.id) for h in asyncio.run(engine.search(Query(image=png("red"), **kw))).hits]


def test_variants_crowd_the_answer_without_collapse(engine) -> None:
    got = ids(engine, k=4)
    assert sum(i.startswith("shirt-") or i.startswith("dress-") for i in got) >= 3


def test_collapse_keeps_the_best_variant_per_group(engine) -> None:
    got = ids(engine, k=4, collapse="item_group_id")
    assert len(got) == 4
    groups = [i.split("-")[0] for i in got if "-" in i]
    assert sorted(groups) == ["dress", "shirt"]  # one hit per group
    assert {"scarf", "cap"} <= set(got)  # products without a group each stand alone
    everything = ids(engine, k=10, collapse="item_group_id")
    assert len(everything) == 5 and "bag" in everything  # an empty value is no group


def test_the_kept_variant_is_the_best_ranked_one(engine) -> None:
    plain = ids(engine, k=10)
    collapsed = ids(engine, k=10, collapse="item_group_id")
    first_shirt = next(i for i in plain if i.startswith("shirt-"))
    assert first_shirt in collapsed
    assert [i for i in plain if i in collapsed] == collapsed  # order kept


def test_collapse_by_brand_and_with_modifiers(engine) -> None:
    got = ids(engine, k=10, collapse="brand")
    assert len(got) == 3  # acme, zeta, yolo
    boosted = ids(engine, k=10, collapse="brand", modifiers=Modifiers(brand_boosts={"yolo": 5.0}))
    assert boosted[0] == "cap"


def test_a_result_cache_key_tells_collapsed_from_plain(tmp_path) -> None:
    eng = Engine(EngineConfig(data_dir=tmp_path / "d", result_cache_entries=16), text_encoder=FakeTextEncoder(),
                 image_encoder=FakeImageEncoder())
    asyncio.run(eng.upsert([Product(id=f"p{i}", title="red shirt", attributes={"g": "one"}) for i in range(3)]))
    plain = asyncio.run(eng.search(Query(text="red shirt", k=3)))
    collapsed = asyncio.run(eng.search(Query(text="red shirt", k=3, collapse="g")))
    assert (len(plain.hits), len(collapsed.hits)) == (3, 1)
    asyncio.run(eng.close(snapshot=False))


@pytest.mark.parametrize("name", ["", "has space", "x" * 65, "1starts-with-digit"])
def test_a_bad_collapse_name_is_refused(engine, name) -> None:
    with pytest.raises(InvalidInput) as exc:
        ids(engine, k=3, collapse=name)
    assert exc.value.field == "collapse"


def test_a_group_with_more_variants_than_candidates_still_gives_k_hits(tmp_path) -> None:
    # 40 sizes of one shirt outrank everything else and fill the k x 10 candidates a collapsed query reads
    # first: it is searched again with more, so the second hit is still found
    eng = Engine(EngineConfig(data_dir=tmp_path / "data"), text_encoder=FakeTextEncoder(),
                 image_encoder=FakeImageEncoder())
    shirts = [Product(id=f"shirt-{n}", title="red shirt", attributes={"item_group_id": "shirt", "size": str(n)})
              for n in range(40)]
    asyncio.run(eng.upsert([*shirts, Product(id="cap", title="red cap"), Product(id="mug", title="blue mug")],
                           [png("red")] * 41 + [png("blue")]))
    plain = [str(h.id) for h in asyncio.run(eng.search(Query(text="red shirt", k=20))).hits]
    assert all(i.startswith("shirt-") for i in plain)  # the variants crowd the first k x 10 candidates
    got = asyncio.run(eng.search(Query(text="red shirt", k=3, collapse="item_group_id"))).hits
    assert [str(h.id) for h in got][1:] == ["cap", "mug"] and str(got[0].id).startswith("shirt-")
    asyncio.run(eng.close(snapshot=False))
