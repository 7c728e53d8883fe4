"""CatalogStore on real SQLite files: transactions, change log, filters, dims."""

from __future__ import annotations

import sqlite3

import numpy as np
import pytest

from kuamo.engine.errors import ArtifactError, InvalidInput, NotFound
from kuamo.engine.store import CatalogStore, StoredRow
from kuamo.engine.types import Filters, Product

DIM = 8


def row(i: int, **kw) -> StoredRow:
    p = Product(id=i, title=f"item {i}", **kw)
    v = np.random.default_rng(i).standard_normal(DIM).astype(np.float32)
    return StoredRow(product=p, vector=v, content_hash=f"h{i}")


@pytest.fixture
def store(tmp_path):
    s = CatalogStore(tmp_path / "c.sqlite", dim=DIM)
    yield s
    s.close()


def test_upsert_get_roundtrip_and_wal(store, tmp_path) -> None:
    p = Product(id=7, title="红色连衣裙", description="d", category="Apparel/Dress", brand="B", price=299.0,
                rating=4.5, attributes={"colour": "Red", "year": 2012, "sale": True}, image_ref="7.jpg")
    seq = store.upsert([StoredRow(product=p, vector=np.ones(DIM, np.float32), content_hash="x")])
    assert seq == 1 and store.last_seq() == 1
    assert store.get(7) == p
    assert store.hashes([7, 8]) == {7: "x"}
    with sqlite3.connect(tmp_path / "c.sqlite") as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_get_missing_is_not_found(store) -> None:
    with pytest.raises(NotFound) as e:
        store.get(123)
    assert e.value.field == "id"


def test_vectors_in_requested_order_skip_missing(store) -> None:
    rows = [row(i) for i in range(5)]
    store.upsert(rows)
    ids, vecs = store.vectors([3, 99, 1])
    assert ids.tolist() == [3, 1]
    np.testing.assert_array_equal(vecs[0], rows[3].vector)
    np.testing.assert_array_equal(vecs[1], rows[1].vector)
    all_ids, all_vecs = store.all_vectors()
    assert all_ids.tolist() == [0, 1, 2, 3, 4] and all_vecs.shape == (5, DIM)


def test_change_log_net_effect(store) -> None:
    store.upsert([row(i) for i in range(4)])
    s1 = store.last_seq()
    store.upsert([row(1)])
    gone, s2 = store.delete([2, 42])
    assert gone == [2] and s2 == s1 + 2
    up, rm, last = store.changes_since(s1)
    assert sorted(up.tolist()) == [1] and rm.tolist() == [2] and last == s2
    up, rm, _ = store.changes_since(0)
    assert sorted(up.tolist()) == [0, 1, 3] and rm.tolist() == [2]


def test_prune_keeps_seq_monotonic_and_detects_gap(store) -> None:
    store.upsert([row(i) for i in range(3)])
    last = store.last_seq()
    store.prune_changes(last)
    store.upsert([row(9)])
    assert store.last_seq() == last + 1
    up, _, _ = store.changes_since(last)
    assert up.tolist() == [9]
    with pytest.raises(ArtifactError):
        store.changes_since(1)  # rows 2..last were pruned: a snapshot at seq 1 cannot be replayed


def test_failed_batch_commits_nothing(store) -> None:
    bad = StoredRow(product=Product(id=5, title="x"), vector=np.ones(DIM + 1, np.float32), content_hash="h")
    with pytest.raises(InvalidInput) as e:
        store.upsert([row(1), bad])
    assert e.value.field == "vector"
    assert store.count() == 0 and store.last_seq() == 0


@pytest.mark.parametrize(("field", "kw"), [("price", {"price": -1.0}), ("price", {"price": float("nan")}),
                                           ("rating", {"rating": 6.0}), ("id", {"id": -3})])
def test_bad_product_fields_named(store, field, kw) -> None:
    p = Product(**{"id": 1, "title": "t", **kw})
    with pytest.raises(InvalidInput) as e:
        store.upsert([StoredRow(product=p, vector=np.ones(DIM, np.float32), content_hash="h")])
    assert e.value.field == field


def test_dim_mismatch_on_reopen(tmp_path) -> None:
    CatalogStore(tmp_path / "c.sqlite", dim=DIM).close()
    with pytest.raises(ArtifactError):
        CatalogStore(tmp_path / "c.sqlite", dim=DIM * 2)


def test_filters_to_allowed_ids(store) -> None:
    store.upsert([
        row(1, category="Apparel/Topwear/Shirts", brand="A", price=100.0, rating=4.0, attributes={"colour": "Red"}),
        row(2, category="Apparel/Topwear", brand="B", price=300.0, rating=4.8, attributes={"colour": "Blue"}),
        row(3, category="Apparel/TopwearX", brand="A", price=50.0, attributes={"colour": "Red", "sale": True}),
        row(4, category="Footwear/Shoes", brand="C", price=None, rating=2.0),
    ])

    def ids(**kw) -> list[int]:
        got = store.allowed_ids(Filters(**kw))
        return sorted(got.tolist())

    assert store.allowed_ids(Filters()) is None
    assert ids(category_prefix="Apparel/Topwear") == [1, 2]  # segment prefix, not string prefix
    assert ids(category_prefix=" Apparel / ") == [1, 2, 3]
    assert ids(category_prefix="apparel") == []  # case-sensitive like the stored path
    assert ids(brands=("A", "C")) == [1, 3, 4]
    assert ids(price_min=60, price_max=300) == [1, 2]
    assert ids(price_max=1000) == [1, 2, 3]  # unknown price never passes a price filter
    assert ids(min_rating=4.0) == [1, 2]
    assert ids(attributes={"colour": "Red"}) == [1, 3]
    assert ids(attributes={"sale": True}) == [3]
    assert ids(attributes={"colour": "Red"}, brands=("A",), price_min=75) == [1]
    assert ids(ids=(2, 4, 77)) == [2, 4]


@pytest.mark.parametrize(("kw", "field"), [
    ({"price_min": 10, "price_max": 5}, "filters.price_min"),
    ({"min_rating": 7}, "filters.min_rating"),
    ({"price_max": float("inf")}, "filters.price_max"),
    ({"attributes": {"bad name'": 1}}, "filters.attributes"),
    ({"brands": ("",)}, "filters.brands"),
])
def test_bad_filters_named(store, kw, field) -> None:
    with pytest.raises(InvalidInput) as e:
        store.allowed_ids(Filters(**kw))
    assert e.value.field == field


def test_reopen_keeps_everything(tmp_path) -> None:
    s = CatalogStore(tmp_path / "c.sqlite", dim=DIM)
    s.upsert([row(i) for i in range(3)])
    s.delete([0])
    s.close()
    s2 = CatalogStore(tmp_path / "c.sqlite")
    assert s2.dim == DIM and s2.count() == 2 and s2.last_seq() == 4
    s2.close()
