"""MilvusBackend on Milvus Lite: a `.db` path (pymilvus runs Lite in this process) and a `milvus-lite server`
subprocess on loopback. Same rows into a real CatalogStore (SQLite) and the backend: reads, filters and
searches must agree."""

from __future__ import annotations

import re
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pymilvus")
pytest.importorskip("milvus_lite")

from milvus_fixtures import milvus_lite_server, token_milvus  # noqa: F401  (fixtures: a conftest.py here would shadow the server tests' conftest module)

from kuamo.benchmarks.milvus_lite import free_port, start_milvus_lite_server, stop_milvus_lite_server
from kuamo.engine import milvus_backend
from kuamo.engine.catalog_backend import CatalogBackend
from kuamo.engine.errors import ArtifactError, BackendUnavailable, InvalidInput, NotFound
from kuamo.engine.ids import row_key
from kuamo.engine.milvus_backend import MilvusBackend
from kuamo.engine.store import CatalogStore, StoredRow
from kuamo.engine.types import Filters, Product

DIM = 8
CATEGORIES = ["A", "A/B", "A/B/C", "A/BC", "A/B%", "A/B_", "A/B%/x", "a/b", "Apparel/Topwear/Shirts",
              "Apparel/Topwear", "Apparel/TopwearX", "Home/Décor", "家居/灯具", ""]
BRANDS = [None, "acme", "zeta", 'say "hi"', "back\\slash", '" or 1==1 or "', "Ünïcode", "new\nline"]
ATTR_VALUES = [True, False, 1, 0, 1.0, 0.0, 2, 2.5, -3, "1", "0", "true", "red", 'q"uote']


def random_products(n: int, seed: int = 0) -> list[StoredRow]:
    """Products with int and string ids and every kind of value the filters look at, NULLs included."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        pid: int | str = 100 + i if i % 3 else f"SKU-{i:04d}"
        attrs = {name: ATTR_VALUES[int(rng.integers(len(ATTR_VALUES)))]
                 for name in ("flag", "size", "colour", "a.b") if rng.random() < 0.7}
        p = Product(id=pid, title=f"product {i}", description=f"d{i}",
                    category=CATEGORIES[int(rng.integers(len(CATEGORIES)))],
                    brand=BRANDS[int(rng.integers(len(BRANDS)))],
                    price=None if rng.random() < 0.2 else float(round(rng.uniform(0, 100), 2)),
                    rating=None if rng.random() < 0.2 else float(round(rng.uniform(0, 5), 1)),
                    attributes=attrs, image_ref=None if i % 4 else f"img/{i}.jpg")
        vec = rng.standard_normal(DIM).astype(np.float32)
        rows.append(StoredRow(product=p, vector=vec / np.linalg.norm(vec), content_hash=f"h{i}"))
    return rows


@pytest.fixture
def backend(tmp_path: Path):
    b = MilvusBackend(str(tmp_path / "catalog.db"), dim=DIM, timeout_s=5)
    yield b
    b.close()


@pytest.fixture
def store(tmp_path: Path):
    s = CatalogStore(tmp_path / "catalog.sqlite", dim=DIM)
    yield s
    s.close()


def test_round_trip_with_int_and_string_ids_matches_the_sqlite_store(tmp_path: Path, backend, store) -> None:
    assert isinstance(backend, CatalogBackend) and backend.kind == "milvus" and backend.dim == DIM
    rows = random_products(40)
    assert backend.has_string_ids  # always: another replica may write the first string id at any time
    backend.write(rows)
    store.upsert(rows)
    keys = [row_key(r.product.id) for r in rows]
    absent = [1, 2, row_key("nope")]

    assert backend.count() == store.count() == 40
    assert sorted(backend.keys().tolist()) == sorted(store.ids().tolist())
    assert backend.has_string_ids and store.has_string_ids
    assert backend.get_many(keys + absent) == store.get_many(keys + absent)
    owners = backend.owners(keys + absent)
    assert owners == store.owners(keys + absent)
    assert {type(v) for v in owners.values()} == {int, str}  # an int id comes back as an int
    assert backend.hashes(keys + absent) == store.hashes(keys + absent)
    ask = [keys[3], absent[0], keys[0], keys[3]]
    got_k, got_v = backend.vectors(ask)
    want_k, want_v = store.vectors(ask)
    assert got_k.dtype == np.int64 and got_k.tolist() == want_k.tolist()
    np.testing.assert_array_equal(got_v, want_v)
    assert sorted(backend.categories()) == sorted(store.categories())
    assert backend.attribute_names() == store.attribute_names() == {"flag", "size", "colour", "a.b"}
    assert backend.get(keys[0]) == store.get(keys[0])
    with pytest.raises(NotFound, match="'SKU-9'"):
        backend.get(row_key("SKU-9"), shown="SKU-9")

    # replace one product, delete others (one twice, one absent): the count says how many existed
    changed = StoredRow(product=Product(id=rows[1].product.id, title="renamed", price=None),
                        vector=np.ones(DIM, np.float32), content_hash="new")
    backend.write([changed])
    assert backend.get(keys[1]).title == "renamed" and backend.hashes([keys[1]]) == {keys[1]: "new"}
    assert backend.delete([keys[0], keys[2], keys[2], absent[0]]) == 2
    assert backend.count() == 38 and backend.get_many([keys[0], keys[2]]) == {}

    assert backend.get_meta("layout") is None
    backend.set_meta("layout", '{"dim": 8, "blocks": ["text"]}\n"quoted"')
    backend.set_meta("layout", "v2 ü")
    backend.check()
    assert backend.stats()["products"] == 38 and backend.stats()["index"]["index_type"] == "FLAT"
    backend.snapshot()
    backend.close()
    with pytest.raises(BackendUnavailable, match="closed"):
        backend.count()
    again = MilvusBackend(str(tmp_path / "catalog.db"), dim=DIM, timeout_s=5)  # durable: a new client sees it
    try:
        assert again.count() == 38 and again.get_meta("layout") == "v2 ü" and again.has_string_ids
        assert again.get(keys[1]).title == "renamed"
    finally:
        again.close()


def test_write_validates_every_row_first_and_refuses_a_taken_key(backend) -> None:
    good = random_products(3)
    bad_shape = StoredRow(product=Product(id=9, title="x"), vector=np.ones(DIM + 1, np.float32), content_hash="h")
    nan = StoredRow(product=Product(id=9, title="x"), vector=np.full(DIM, np.nan, np.float32), content_hash="h")
    too_long = StoredRow(product=Product(id=9, title="é" * 40_000), vector=np.ones(DIM, np.float32),
                         content_hash="h")
    negative = StoredRow(product=Product(id=9, title="x", price=-1.0), vector=np.ones(DIM, np.float32),
                         content_hash="h")
    for bad, field in ((bad_shape, "vector"), (nan, "vector"), (too_long, "title"), (negative, "price")):
        with pytest.raises(InvalidInput) as e:
            backend.write([*good, bad])
        assert e.value.field == field
    assert backend.count() == 0  # all or none: the good rows of a refused write are not there

    backend.write([StoredRow(product=Product(id="abc", title="x"), vector=np.ones(DIM, np.float32),
                             content_hash="h")])
    # the integer id equal to the string's row key would overwrite it: refused, as the SQLite store does
    clash = StoredRow(product=Product(id=row_key("abc"), title="y"), vector=np.ones(DIM, np.float32),
                      content_hash="h")
    with pytest.raises(InvalidInput, match="same row key"):
        backend.write([clash])
    assert backend.owners([row_key("abc")]) == {row_key("abc"): "abc"}


def test_large_writes_are_chunked_and_scans_paginate(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(milvus_backend, "ITER_BATCH", 7)  # keys()/categories() need many pages
    monkeypatch.setattr(milvus_backend, "ID_CHUNK", 9)  # get/delete need many requests
    b = MilvusBackend(str(tmp_path / "c.db"), dim=DIM, max_request_bytes=2_000)  # a few rows per upsert
    try:
        rows = random_products(60, seed=3)
        b.write(rows)
        keys = sorted(row_key(r.product.id) for r in rows)
        assert sorted(b.keys().tolist()) == keys and b.count() == 60
        assert set(b.categories()) == {r.product.category for r in rows}
        assert len(b.get_many(keys)) == 60 and b.delete(keys[:25]) == 25 and b.count() == 35
    finally:
        b.close()


@pytest.mark.parametrize("index_type,build,nprobe", [("FLAT", None, None), ("IVF_FLAT", {"nlist": 8}, 8),
                                                     ("HNSW", {"M": 16, "efConstruction": 200}, None)])
def test_search_returns_the_exact_top_n(tmp_path: Path, monkeypatch, index_type: str, build, nprobe) -> None:
    monkeypatch.setattr(milvus_backend, "MAX_REPLY_BYTES", 2_000)  # a few queries per search request
    rng = np.random.default_rng(7)
    b = MilvusBackend(str(tmp_path / "s.db"), dim=DIM, index_type=index_type, index_params=build)
    try:
        rows = random_products(300, seed=11)
        b.write(rows)
        keys = np.asarray([row_key(r.product.id) for r in rows])
        vecs = np.stack([r.vector for r in rows])
        q = rng.standard_normal((5, DIM)).astype(np.float32)
        scores, got, allowed = b.search(q, 10, filters=Filters(), nprobe=nprobe, rerank_factor=30)[:3]
        assert scores.shape == got.shape == (5, 10) and scores.dtype == np.float32 and got.dtype == np.int64
        assert allowed is None
        exact = q @ vecs.T
        want = np.argsort(-exact, axis=1)[:, :10]
        np.testing.assert_array_equal(got, keys[want])
        np.testing.assert_allclose(scores, np.take_along_axis(exact, want, 1), rtol=1e-5, atol=1e-6)

        # fewer allowed than n: padded with -1 / -inf, and `allowed` counts them
        f = Filters(category_prefix="A/B")
        scores, got, allowed = b.search(q[:1], 50, filters=f)[:3]
        inside = [i for i, r in enumerate(rows) if r.product.category in ("A/B", "A/B/C")]
        assert allowed == len(inside) < 50
        order = np.argsort(-exact[0, inside])
        assert got[0, : len(inside)].tolist() == keys[inside][order].tolist()
        assert (got[0, len(inside):] == -1).all() and np.isneginf(scores[0, len(inside):]).all()
        _, got, allowed = b.search(q[:1], 5, filters=Filters(brands=("nobody",)))[:3]
        assert allowed == 0 and (got == -1).all()
        with pytest.raises(InvalidInput) as e:
            b.search(q, 0, filters=Filters())
        assert e.value.field == "k"
        with pytest.raises(InvalidInput):
            b.search(q[:, :3], 5, filters=Filters())
    finally:
        b.close()


FILTERS = [
    Filters(category_prefix="A"), Filters(category_prefix="A/B"), Filters(category_prefix=" A / B /"),
    Filters(category_prefix="A/B%"), Filters(category_prefix="A/B_"), Filters(category_prefix="a"),
    Filters(category_prefix="Apparel/Topwear"), Filters(category_prefix="家居"), Filters(category_prefix="/"),
    Filters(category_prefix="Home/Décor"), Filters(category_prefix="A/B/C/D"),
    Filters(brands=("acme",)), Filters(brands=('say "hi"', "back\\slash")), Filters(brands=('" or 1==1 or "',)),
    Filters(brands=("new\nline", "Ünïcode", "missing")),
    Filters(price_min=10), Filters(price_max=50.5), Filters(price_min=20, price_max=30), Filters(price_min=0),
    Filters(min_rating=4), Filters(min_rating=0), Filters(min_rating=5),
    *[Filters(attributes={name: v}) for name in ("flag", "a.b") for v in ATTR_VALUES],
    Filters(attributes={"flag": True, "size": 0}), Filters(attributes={"nobody": 1}),
    Filters(ids=(101, "SKU-0003", "SKU-9999", 5)),
    Filters(category_prefix="A/B", brands=("acme", "zeta"), price_min=5, min_rating=1,
            attributes={"colour": "red"}),
]


def random_filters(rows: list[StoredRow], n: int, seed: int) -> list[Filters]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        kw: dict = {}
        if rng.random() < 0.5:
            kw["category_prefix"] = CATEGORIES[int(rng.integers(len(CATEGORIES)))]
        if rng.random() < 0.4:
            kw["brands"] = tuple(b for b in BRANDS[1:] if rng.random() < 0.4)
        if rng.random() < 0.4:
            lo = float(rng.uniform(0, 60))
            kw["price_min"], kw["price_max"] = lo, lo + float(rng.uniform(0, 60))
        if rng.random() < 0.3:
            kw["min_rating"] = float(round(rng.uniform(0, 5), 1))
        if rng.random() < 0.4:
            kw["attributes"] = {"size": ATTR_VALUES[int(rng.integers(len(ATTR_VALUES)))]}
        if rng.random() < 0.2:
            kw["ids"] = tuple(rows[int(i)].product.id for i in rng.integers(0, len(rows), 20))
        out.append(Filters(**kw))
    return out


def test_every_filter_kind_selects_what_filter_sql_selects(backend, store) -> None:
    rows = random_products(150, seed=5)
    backend.write(rows)
    store.upsert(rows)
    q = np.ones((1, DIM), np.float32)
    for f in FILTERS + random_filters(rows, 60, seed=9):
        want = store.allowed_ids(f)
        _, got, allowed = backend.search(q, 1000, filters=f)[:3]
        if want is None:
            assert allowed is None and set(got[0][got[0] >= 0].tolist()) == set(store.ids().tolist()), f
            continue
        assert set(got[0][got[0] >= 0].tolist()) == set(want.tolist()), f
        assert allowed == len(want), f


def test_dim_mismatch_and_foreign_collection_are_artifact_errors(tmp_path: Path, backend) -> None:
    uri = str(tmp_path / "catalog.db")
    with pytest.raises(ArtifactError, match="holds 8-d vectors but the layout is 16-d"):
        MilvusBackend(uri, dim=16)
    from pymilvus import MilvusClient

    client = MilvusClient(uri=uri)
    client.create_collection("other", dimension=DIM)  # someone else's collection, not kuamo's schema
    with pytest.raises(ArtifactError, match="not a kuamo catalog"):
        MilvusBackend(uri, dim=DIM, collection="other")
    client.close()


def test_server_subprocess_two_replicas_and_a_dead_server(tmp_path: Path, milvus_lite_server) -> None:  # noqa: F811
    proc, uri = milvus_lite_server
    assert uri.startswith("http://127.0.0.1:")
    writer = MilvusBackend(uri, dim=DIM, timeout_s=3)
    reader = MilvusBackend(uri, dim=DIM, timeout_s=3)  # another replica: its own connection
    try:
        rows = random_products(20, seed=2)
        writer.write(rows)
        writer.set_meta("fingerprint", "abc")
        assert reader.count() == 20 and reader.get_meta("fingerprint") == "abc"  # Strong: visible at once
        q = np.stack([rows[4].vector])
        _, got, _ = reader.search(q, 1, filters=Filters())[:3]
        assert got[0, 0] == row_key(rows[4].product.id)
        reader.check()

        stop_milvus_lite_server(proc)
        for call in (reader.check, reader.count, lambda: reader.search(q, 3, filters=Filters()),
                     lambda: writer.write(rows[:1])):
            t0 = time.monotonic()
            with pytest.raises(BackendUnavailable, match=re.escape(f"milvus at {uri}: unreachable")):
                call()
            assert time.monotonic() - t0 < 2 * 3 + 1

        # the server comes back on the same data: the backends reconnect (after gRPC's reconnect backoff, about
        # a second) and load the collection again (a restarted Lite server loads nothing by itself)
        proc2, uri2 = start_milvus_lite_server(tmp_path / "milvus-data", int(uri.rsplit(":", 1)[1]))
        try:
            assert uri2 == uri
            deadline = time.monotonic() + 10
            while True:
                try:
                    assert reader.count() == 20
                    break
                except BackendUnavailable:
                    assert time.monotonic() < deadline
                    time.sleep(0.3)
            _, got, _ = reader.search(q, 1, filters=Filters())[:3]
            assert got[0, 0] == row_key(rows[4].product.id) and reader.get_meta("fingerprint") == "abc"
        finally:
            stop_milvus_lite_server(proc2)
    finally:
        writer.close()
        reader.close()


def test_unreachable_uri_fails_quickly_naming_it() -> None:
    uri = f"http://127.0.0.1:{free_port()}"
    t0 = time.monotonic()
    with pytest.raises(BackendUnavailable, match=re.escape(f"milvus at {uri}: unreachable")):
        MilvusBackend(uri, dim=DIM, timeout_s=2)
    assert time.monotonic() - t0 < 2 * 2 + 1


def test_credentials_in_the_uri_are_not_repeated() -> None:
    port = free_port()
    with pytest.raises(BackendUnavailable) as e:
        MilvusBackend(f"http://root:secret@127.0.0.1:{port}", dim=DIM, timeout_s=2)
    assert "secret" not in str(e.value) and f"127.0.0.1:{port}" in str(e.value)


def test_wrong_token_is_refused_clearly(token_milvus) -> None:  # noqa: F811
    uri, token = token_milvus
    for wrong in ("", "root:wrong"):
        t0 = time.monotonic()
        with pytest.raises(BackendUnavailable, match=re.escape(f"milvus at {uri}: the token was refused")) as e:
            MilvusBackend(uri, token=wrong, dim=DIM, timeout_s=3)
        assert time.monotonic() - t0 < 3 * 2 + 1
        assert token not in str(e.value)
    ok = MilvusBackend(uri, token=token, dim=DIM, timeout_s=3)  # the right one works through the same server
    try:
        ok.write(random_products(2))
        assert ok.count() == 2
    finally:
        ok.close()
