"""The lexical (BM25) index beside the vectors: its terms, its place in the store's transactions, filters, and
the hybrid ranking with its explanation."""

from __future__ import annotations

import asyncio
import math
import sqlite3

import numpy as np
import pytest
from fake_encoders import FakeImageEncoder, FakeTextEncoder, fake_engine

from kuamo.engine.engine import Engine, EngineConfig
from kuamo.engine.errors import InvalidInput
from kuamo.engine.lexical import match_expression, query_terms, stem, terms
from kuamo.engine.store import CatalogStore, StoredRow
from kuamo.engine.types import Filters, Product, Query

DIM = 4


def row(pid: int, title: str, **kw) -> StoredRow:
    return StoredRow(Product(id=pid, title=title, **kw), np.ones(DIM, dtype=np.float32), f"h{pid}{title}")


def test_terms() -> None:
    assert terms("Women Red Dresses") == ["women", "red", "dress"]
    assert query_terms("the red, red dress!!") == ["red", "dress"]
    assert query_terms("红色连衣裙") == ["红色", "色连", "连衣", "衣裙"]
    assert query_terms("裙") == ["裙"]
    assert query_terms("Nike耐克") == ["nike", "耐克"]
    assert query_terms("红色T恤") == ["红色", "恤"]  # the T of T恤 is no term: it matched every "T-shirt"
    assert query_terms("men's t-shirt size 8") == ["men", "shirt", "size", "8"]  # no lone letters; digits stay
    assert query_terms("the of and ... !!!") == []  # only stop words and punctuation: no lexical part
    assert len(query_terms(" ".join(f"w{i}" for i in range(5000)))) == 32  # a huge query is bounded
    assert [stem(w) for w in ("watches", "glasses", "shoes", "jeans", "dress", "kurtas", "accessories")] == [
        "watch", "glass", "shoe", "jean", "dress", "kurta", "accessory"]


def test_match_expression_quotes_everything() -> None:
    assert match_expression(['a"b', "NEAR"]) == '"a""b" OR "NEAR"'


def test_store_keeps_lexical_in_step(tmp_path) -> None:
    s = CatalogStore(tmp_path / "c.sqlite", dim=DIM)
    s.upsert([row(1, "Puma Men Black Running Shoes", category="Footwear/Shoes/Sports Shoes",
                  attributes={"baseColour": "Black"}),
              row(2, "Nike Women Red Dress", category="Apparel/Dress/Dresses", brand="Nike"),
              row(3, "红色连衣裙 女款", category="Apparel/Dress/Dresses")])
    assert [k for k, _ in s.lexical(["puma"], 10)] == [1]
    assert [k for k, _ in s.lexical(["连衣"], 10)] == [3]
    assert {k for k, _ in s.lexical(["dress"], 10)} == {2, 3}  # title and category ("Dresses" stemmed)
    assert all(sc > 0 for _, sc in s.lexical(["dress"], 10))
    assert [k for k, _ in s.lexical(["dress"], 10, Filters(brands=("Nike",)))] == [2]  # filters in the same SQL
    s.upsert([row(2, "Nike Women Blue Skirt", brand="Nike")])  # a replaced product loses its old words
    assert [k for k, _ in s.lexical(["dress"], 10)] == [3]
    s.delete([3])
    assert s.lexical(["dress"], 10) == [] and s.lexical_count() == s.count() == 2
    s.close()


def test_failed_write_changes_neither(tmp_path) -> None:
    s = CatalogStore(tmp_path / "c.sqlite", dim=DIM)
    s.upsert([row(1, "alpha shirt")])
    bad = StoredRow(Product(id=2, title="beta shirt"), np.ones(DIM + 1, dtype=np.float32), "h")
    with pytest.raises(InvalidInput):
        s.upsert([row(3, "gamma shirt"), bad])
    assert s.count() == 1 and s.lexical_count() == 1 and s.lexical(["gamma"], 5) == []
    s.close()


def test_rebuilt_on_open_when_another_build_wrote(tmp_path) -> None:
    path = tmp_path / "c.sqlite"
    s = CatalogStore(path, dim=DIM)
    s.upsert([row(1, "alpha shirt")])
    s.close()
    # a build without the lexical index writes a product (and its change) but not the lexical row
    db = sqlite3.connect(path)
    db.execute("INSERT INTO products(id, title, content_hash) VALUES (2, 'beta shirt', 'h')")
    db.execute("INSERT INTO changes(id, op) VALUES (2, 'upsert')")
    db.commit()
    db.close()
    s = CatalogStore(path, dim=DIM)
    assert [k for k, _ in s.lexical(["beta"], 5)] == [2]
    s.close()


def _engine(tmp_path, **cfg) -> Engine:
    eng = Engine(EngineConfig(data_dir=tmp_path / "data", **cfg), text_encoder=FakeTextEncoder(),
                 image_encoder=FakeImageEncoder())
    products = [Product(id=i, title=f"{c} {k}", category=f"Apparel/{k.title()}", brand=b)
                for i, (c, k, b) in enumerate([("red", "shirt", "Acme"), ("blue", "shirt", "Zorblax"),
                                               ("green", "dress", "Acme"), ("red", "dress", "Zeta"),
                                               ("black", "watch", "Zorblax")])]
    asyncio.run(eng.upsert(products))
    return eng


def test_hybrid_explain_names_lexical_part_and_terms(tmp_path) -> None:
    eng = _engine(tmp_path)
    try:
        res = asyncio.run(eng.search(Query(text="zorblax watch", k=3, explain=True, weights={"lexical": 0.4})))
        top = res.hits[0]
        assert top.id == 4
        e = top.explanation
        assert e is not None and e.contributions["lexical"] > 0
        assert set(e.matched_terms) == {"zorblax", "watch"}
        assert math.isclose(sum(e.contributions.values()), e.base_score, rel_tol=1e-4, abs_tol=1e-5)
        # a brand the vectors never saw in the title: BM25 brings its products in
        res = asyncio.run(eng.search(Query(text="zorblax", k=2, explain=True,
                                           weights={"lexical": 1.0, "understanding": 0})))
        assert {h.id for h in res.hits} == {1, 4}
        off = asyncio.run(eng.search(Query(text="zorblax watch", k=3, explain=True, weights={"lexical": 0})))
        assert all("lexical" not in h.explanation.contributions for h in off.hits)
    finally:
        asyncio.run(eng.close(snapshot=False))


def test_hybrid_bad_and_odd_queries(tmp_path) -> None:
    eng = _engine(tmp_path)
    try:
        for w in (-0.1, 1.5, float("nan"), float("inf"), "x", True):
            with pytest.raises(InvalidInput) as exc:
                asyncio.run(eng.search(Query(text="red shirt", weights={"lexical": w})))
            assert exc.value.field == "weights.lexical"
        assert asyncio.run(eng.search(Query(text="the of and", k=3))).hits  # stop words only: vectors alone
        assert asyncio.run(eng.search(Query(text="red " + "x" * 10_000, k=3))).hits
        assert asyncio.run(eng.search(Query(text="red 红色 shirt", k=3))).hits  # mixed scripts
        # a filter binds the lexical candidates too
        res = asyncio.run(eng.search(Query(text="zorblax", k=5, filters=Filters(brands=("Acme",)))))
        assert all(h.product.brand == "Acme" for h in res.hits)
    finally:
        asyncio.run(eng.close(snapshot=False))


def test_understanding_takes_the_category_of_the_best_matches(tmp_path) -> None:
    """A query naming no category (as a Chinese query names none of an English catalog's) gets the category its
    best vector matches share: `explain` names the boost, and the category's other products come in through the
    lexical expansion though their titles share no word with the query."""
    eng = Engine(EngineConfig(data_dir=tmp_path / "data"), text_encoder=FakeTextEncoder(),
                 image_encoder=FakeImageEncoder())
    products = ([Product(id=i, title=f"quux strap {i}", category="Accessories/Belts") for i in range(3)]
                + [Product(id=3, title="plain leather", category="Accessories/Belts")]
                + [Product(id=10 + i, title=f"wallet {i}", category="Accessories/Wallets") for i in range(30)])
    try:
        asyncio.run(eng.upsert(products))
        q = Query(text="quux", k=4, explain=True, weights={"lexical": 0.4, "understanding": 0.05})
        res = asyncio.run(eng.search(q))
        assert {h.id for h in res.hits} == {0, 1, 2, 3}
        assert all(h.explanation.contributions.get("category=Belts") == 0.05 for h in res.hits)
        off = asyncio.run(eng.search(Query(text="quux", k=4, explain=True, weights={"lexical": 0.4})))
        assert 3 not in {h.id for h in off.hits}  # vectors and BM25 alone: "plain leather" shares no word
        assert not any(k.startswith("category=") for h in off.hits for k in h.explanation.contributions)
        # the facets the boosts read follow the catalog's writes
        asyncio.run(eng.upsert([Product(id=3, title="plain leather", category="Accessories/Wallets")]))
        moved = asyncio.run(eng.search(q))
        assert all("category=Belts" not in h.explanation.contributions for h in moved.hits if h.id == 3)
        asyncio.run(eng.delete([0]))
        assert 0 not in eng.backend.facets([0, 1]) and eng.backend.facets([3])[3].leaf == "Wallets"
    finally:
        asyncio.run(eng.close(snapshot=False))


def test_understanding_knows_the_catalogs_own_colours(tmp_path) -> None:
    with fake_engine(tmp_path / "data") as eng:
        asyncio.run(eng.upsert([Product(id=1, title="slim watch", attributes={"colour": "Rose Gold"}),
                                Product(id=2, title="slim watch", attributes={"colour": "Silver"})]))
        q = Query(text="rose gold watch", k=2, explain=True, weights={"understanding": 0.05})
        by_id = {h.id: h.explanation.contributions for h in asyncio.run(eng.search(q)).hits}
        assert by_id[1].get("colour=Rose Gold") == 0.05 and not any(k.startswith("colour=") for k in by_id[2])
        asyncio.run(eng.upsert([Product(id=3, title="slim watch", attributes={"colour": "Gunmetal"})]))
        q = Query(text="gunmetal watch", k=3, explain=True, weights={"understanding": 0.05})
        assert asyncio.run(eng.search(q)).hits[0].explanation.contributions.get("colour=Gunmetal") == 0.05
