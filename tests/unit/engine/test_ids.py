"""String and integer product ids: canonical form, the stable row key, collisions, the version-1 store
migration, events and recommendations by string id, and the gRPC conversion both ways."""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys

import numpy as np
import pytest
from fake_encoders import FakeImageEncoder, FakeTextEncoder, png

from kuamo.engine.engine import Engine, EngineConfig
from kuamo.engine.errors import InvalidInput, NotFound
from kuamo.engine.ids import canonical_id, row_key
from kuamo.engine.personal import Event
from kuamo.engine.store import CatalogStore, StoredRow
from kuamo.engine.types import Hit, Product, Query, RecommendQuery, Rejection, SearchResult, UpsertResult
from kuamo.proto.kuamo.v1 import kuamo_pb2 as pb
from kuamo.server import convert

HEX = "c2d766ca982eca8304150849735ffef9"


@pytest.mark.parametrize(("raw", "want"), [
    (7, 7), ("7", 7), ("0", 0), (np.int64(5), 5), (2**63 - 1, 2**63 - 1),
    ("007", "007"), ("-5", "-5"), (str(2**63), str(2**63)), (HEX, HEX), ("SKU 7", "SKU 7"), ("红色", "红色"),
])
def test_canonical_id(raw, want) -> None:
    got = canonical_id(raw)
    assert got == want and type(got) is type(want)


@pytest.mark.parametrize(("raw", "needle"), [
    ("", "empty string"), ("k" * 257, "257 characters"), ("a\nb", "control characters"), (" a", "spaces"),
    (-1, "outside"), (2**63, "outside"), (True, "integer or a string"), (1.5, "integer or a string"),
    (None, "integer or a string"),
])
def test_bad_ids_are_invalid_input_naming_the_field(raw, needle) -> None:
    with pytest.raises(InvalidInput) as exc:
        canonical_id(raw, "ids")
    assert needle in exc.value.message and exc.value.field == "ids"


def test_row_key_is_the_integer_or_a_stable_63_bit_hash() -> None:
    assert row_key(123) == 123
    assert row_key(HEX) == 1203116560543755946  # pinned: stores written anywhere must agree
    out = subprocess.run([sys.executable, "-c", f"from kuamo.engine.ids import row_key; print(row_key({HEX!r}))"],
                         capture_output=True, text=True, env={"PYTHONHASHSEED": "123"}, check=True)
    assert int(out.stdout) == row_key(HEX)  # another process, another str hash seed: the same key
    assert all(0 <= row_key(f"sku-{i}") < 2**63 for i in range(200))


def make_engine(tmp_path) -> Engine:
    return Engine(EngineConfig(data_dir=tmp_path / "data"), text_encoder=FakeTextEncoder(),
                  image_encoder=FakeImageEncoder())


def test_a_hash_collision_is_refused_never_overwritten(tmp_path) -> None:
    eng = make_engine(tmp_path)
    key = row_key("abc")
    assert asyncio.run(eng.upsert([Product(id=key, title="integer product")])).accepted == [key]
    res = asyncio.run(eng.upsert([Product(id="abc", title="string product")]))
    assert not res.accepted and res.rejected[0].field == "id" and "same row key" in res.rejected[0].reason
    assert asyncio.run(eng.get(key)).title == "integer product"
    with pytest.raises(InvalidInput, match="same row key"):  # the store refuses it too, whoever writes
        eng.store.upsert([StoredRow(product=Product(id="abc", title="x"), content_hash="h",
                                    vector=np.zeros(eng.layout.dim, np.float32))])
    asyncio.run(eng.close(snapshot=False))


def test_integer_catalog_of_schema_1_opens_and_takes_string_ids(tmp_path) -> None:
    path = tmp_path / "c.sqlite"
    with sqlite3.connect(path) as db:  # what a version-1 build wrote
        db.executescript("""
            CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
            CREATE TABLE products (id INTEGER PRIMARY KEY, title TEXT NOT NULL, description TEXT NOT NULL DEFAULT '',
                category TEXT NOT NULL DEFAULT '', brand TEXT, price REAL, rating REAL,
                attributes TEXT NOT NULL DEFAULT '{}', image_ref TEXT, content_hash TEXT NOT NULL);
            INSERT INTO meta VALUES ('schema_version', '1');
            INSERT INTO products(id, title, content_hash) VALUES (5, 'old shirt', 'h5');
        """)
    store = CatalogStore(path, dim=4)
    assert store.get_meta("schema_version") == "2" and store.get(5) == Product(id=5, title="old shirt")
    assert not store.has_string_ids
    store.upsert([StoredRow(product=Product(id=HEX, title="pan"), vector=np.ones(4, np.float32), content_hash="h")])
    assert store.has_string_ids and store.get(row_key(HEX)).id == HEX
    assert store.owners([5, row_key(HEX), 6]) == {5: 5, row_key(HEX): HEX}
    with pytest.raises(NotFound, match="'nope'"):
        store.get(row_key("nope"), "nope")
    store.close()


def test_events_and_recommendations_by_string_id(tmp_path) -> None:
    eng = make_engine(tmp_path)
    products = [Product(id=f"sku-{c}", title=f"{c} shirt") for c in ("red", "blue", "green")]
    asyncio.run(eng.upsert(products, [png(c) for c in ("red", "blue", "green")]))
    asyncio.run(eng.start())
    n, rejected = asyncio.run(eng.record_events([
        Event(user_id="u1", product_id="sku-red", kind="purchase"),
        Event(user_id="u1", product_id="", kind="view"),
        Event(user_id="u1", product_id="sku-missing", kind="view")]))
    assert n == 1
    assert [(r.row, r.id, r.field) for r in rejected] == [(1, None, "product_id"), (2, "sku-missing", "product_id")]
    assert "empty string" in rejected[0].reason and "'sku-missing'" in rejected[1].reason
    res = asyncio.run(eng.recommend(RecommendQuery(positives={"sku-blue": 1.0}, k=2, include_purchased=True)))
    assert res.hits and all(isinstance(h.id, str) and h.id != "sku-blue" for h in res.hits)
    with pytest.raises(NotFound, match="'sku-nope'"):
        asyncio.run(eng.recommend(RecommendQuery(positives={"sku-nope": 1.0})))
    asyncio.run(eng.close(snapshot=False))


def test_bad_string_ids_in_upsert_get_and_delete(tmp_path) -> None:
    eng = make_engine(tmp_path)
    res = asyncio.run(eng.upsert([Product(id="", title="a"), Product(id="x" * 300, title="b"),
                                  Product(id="ok", title="c")]))
    assert res.accepted == ["ok"] and [(r.row, r.field) for r in res.rejected] == [(0, "id"), (1, "id")]
    for call in (eng.get(""), eng.delete(["ok", "y" * 257])):
        with pytest.raises(InvalidInput):
            asyncio.run(call)
    assert asyncio.run(eng.get("ok")).id == "ok"  # the bad delete deleted nothing
    asyncio.run(eng.close(snapshot=False))


def test_grpc_conversion_keeps_int_fields_and_adds_keys() -> None:
    m = convert.product_to_pb(Product(id=HEX, title="pan"))
    assert (m.id, m.key) == (row_key(HEX), HEX)
    assert convert.product_from_pb(m).id == HEX
    assert convert.product_from_pb(pb.Product(id=9, title="old client")).id == 9  # int64 only: still works
    assert convert.product_from_pb(pb.Product(id=1, key="9", title="t")).id == 9  # key wins, canonical
    with pytest.raises(InvalidInput) as exc:
        convert.product_from_pb(pb.Product(key="k" * 257, title="t"))
    assert exc.value.field == "product.key"
    hit = convert.hit_to_pb(Hit(id=HEX, score=0.5))
    assert (hit.id, hit.key) == (row_key(HEX), HEX)
    back = convert.result_from_pb(convert.result_to_pb(SearchResult(hits=[Hit(id=HEX, score=1.0),
                                                                          Hit(id=3, score=0.5)])))
    assert [h.id for h in back.hits] == [HEX, 3]
    up = UpsertResult(accepted=[HEX, 4], unchanged=[7],
                      rejected=[Rejection(row=1, id="x", field="price", reason="r"),
                                Rejection(row=2, id=None, field="id", reason="r")])
    wire = convert.upsert_result_to_pb(up)
    assert list(wire.accepted) == [row_key(HEX), 4] and list(wire.accepted_keys) == [HEX, "4"]
    assert [(r.id, r.key) for r in wire.rejected] == [(row_key("x"), "x"), (-1, "")]
    assert convert.upsert_result_from_pb(wire) == up
    f = convert.filters_from_pb(pb.Filters(ids=[1], keys=[HEX, "2"]))
    assert f.ids == (1, HEX, 2)
    assert convert.filters_from_pb(convert.filters_to_pb(f)).ids == (1, 2, HEX)
    ev = convert.event_from_pb(convert.event_to_pb(Event(user_id="u", product_id=HEX, kind="view")))
    assert ev.product_id == HEX
    rq = convert.recommend_from_pb(convert.recommend_to_pb(RecommendQuery(positives={HEX: 2.0, 5: 1.0})))
    assert rq.positives == {HEX: 2.0, 5: 1.0}


def test_search_table_shows_string_ids_whole() -> None:
    from kuamo.server.table import format_result

    text = format_result(SearchResult(hits=[Hit(id=HEX, score=0.9, product=Product(id=HEX, title="pan"))]))
    assert HEX in text and "pan" in text


def test_query_filter_by_bad_string_id_is_named(tmp_path) -> None:
    from kuamo.engine.types import Filters

    eng = make_engine(tmp_path)
    asyncio.run(eng.upsert([Product(id="ok", title="red shirt")]))
    asyncio.run(eng.start())
    with pytest.raises(InvalidInput) as exc:
        asyncio.run(eng.search(Query(text="red", filters=Filters(ids=("",)))))
    assert exc.value.field == "filters.ids"
    asyncio.run(eng.close(snapshot=False))
