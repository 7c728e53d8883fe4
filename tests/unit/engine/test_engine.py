"""Engine facade with fake encoders over a real SQLite store and a real FAISS index."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

import numpy as np
import pytest
from fake_encoders import DIM, FakeImageEncoder, FakeTextEncoder, png

from kuamo.engine.engine import Engine, EngineConfig
from kuamo.engine.errors import InvalidInput, NotFound
from kuamo.engine.index import IndexConfig
from kuamo.engine.protocol import EngineProtocol
from kuamo.engine.types import Filters, Modifiers, Product, Query

COLOURS = ["red", "green", "blue", "black", "white"]
KINDS = ["shirt", "dress", "shoes", "watch", "bag"]


def run(coro):
    return asyncio.run(coro)


def make_engine(tmp_path: Path, **cfg) -> Engine:
    config = EngineConfig(data_dir=tmp_path / "data", numeric_attributes=("year:1990:2030",), **cfg)
    return Engine(config, text_encoder=FakeTextEncoder(), image_encoder=FakeImageEncoder())


def catalog(n: int = 50) -> tuple[list[Product], list[bytes]]:
    products, images = [], []
    for i in range(n):
        colour, kind = COLOURS[i % 5], KINDS[(i // 5) % 5]
        products.append(Product(id=1000 + i, title=f"{colour} {kind}", category=f"Apparel/{kind.title()}",
                                brand="Acme" if i % 2 else "Zeta", price=float(10 + 10 * i),
                                rating=round(1 + 4 * (i % 9) / 8, 2),
                                attributes={"colour": colour, "year": 2000 + i % 20, "popularity": i}))
        images.append(png(colour))
    return products, images


@pytest.fixture
def engine(tmp_path):
    eng = make_engine(tmp_path)
    products, images = catalog()
    res = run(eng.upsert(products, images))
    assert len(res.accepted) == len(products) and not res.rejected
    yield eng
    run(eng.close(snapshot=False))


def test_engine_satisfies_protocol(engine) -> None:
    assert isinstance(engine, EngineProtocol)


def test_text_search_finds_matching_title(engine) -> None:
    res = run(engine.search(Query(text="blue watch", k=3)))
    assert res.hits[0].product is not None and res.hits[0].product.title == "blue watch"
    scores = [h.score for h in res.hits]
    assert scores == sorted(scores, reverse=True)


def test_image_query_and_photo_plus_text(engine) -> None:
    res = run(engine.search(Query(image=png("green"), k=5)))
    assert all(h.product.attributes["colour"] == "green" for h in res.hits)
    # "like this photo but a dress": image fills the image block, text the text block
    res = run(engine.search(Query(image=png("green"), text="dress", weights={"image": 0.5, "text": 0.5}, k=1)))
    assert res.hits[0].product.title == "green dress"


def test_get_and_delete(engine) -> None:
    assert run(engine.get(1003)).title == "black shirt"
    assert run(engine.delete([1003, 999_999])) == 1
    with pytest.raises(NotFound) as e:
        run(engine.get(1003))
    assert e.value.field == "id"
    res = run(engine.search(Query(text="black shirt", k=50)))
    assert 1003 not in [h.id for h in res.hits]


def test_reupsert_unchanged_is_skipped_and_changed_is_reencoded(engine) -> None:
    products, images = catalog()
    calls = engine.text_encoder.calls
    res = run(engine.upsert(products, images))
    assert res.accepted == [] and len(res.unchanged) == len(products)
    assert engine.text_encoder.calls == calls  # nothing re-encoded
    changed = dataclasses.replace(products[0], title="red velvet shirt")
    res = run(engine.upsert([changed], [images[0]]))
    assert res.accepted == [changed.id]
    assert run(engine.get(changed.id)).title == "red velvet shirt"


def test_bad_rows_rejected_with_field_others_committed(engine) -> None:
    good = Product(id=1, title="purple hat")
    bad_img = Product(id=2, title="teal hat")
    dup = Product(id=1, title="again")
    res = run(engine.upsert([good, bad_img, dup], [None, b"not an image", None]))
    assert res.accepted == [1]
    fields = {(r.row, r.field) for r in res.rejected}
    assert fields == {(1, "image"), (2, "id")}
    with pytest.raises(InvalidInput) as e:
        run(engine.upsert([good], [None, None]))
    assert e.value.field == "images"


def test_filters_applied_inside_search(engine) -> None:
    f = Filters(category_prefix="Apparel/Shoes", brands=("Acme",))
    res = run(engine.search(Query(text="red shirt", k=10, filters=f)))
    assert res.allowed == len(res.hits) > 0
    assert all(h.product.category == "Apparel/Shoes" and h.product.brand == "Acme" for h in res.hits)
    res = run(engine.search(Query(text="red shirt", filters=Filters(price_min=1e9))))
    assert res.hits == [] and res.allowed == 0


@pytest.mark.parametrize("index_cfg", [IndexConfig(), IndexConfig(flat_threshold=500, exact_filter_below=0, nprobe=1)],
                         ids=["flat", "ivfpq-selector"])
def test_selective_filter_still_returns_k(tmp_path, index_cfg) -> None:
    eng = make_engine(tmp_path, index=index_cfg)
    products, _ = catalog(1000)
    rare = [dataclasses.replace(p, brand="Rare") for p in products[::100]]  # 1% of the catalog
    run(eng.upsert(products, None))
    run(eng.upsert(rare, None))
    res = run(eng.search(Query(text="white bag", k=10, filters=Filters(brands=("Rare",)))))
    assert sorted(h.id for h in res.hits) == sorted(p.id for p in rare)
    assert eng.index.kind == ("flat" if index_cfg.flat_threshold > 1000 else "ivfpq")
    run(eng.close(snapshot=False))


def test_explanations_sum_to_base_and_list_modifiers(engine) -> None:
    q = Query(text="red dress", rating=4.5, k=5, explain=True, modifiers=Modifiers(rating_factor=0.2))
    res = run(engine.search(q))
    for h in res.hits:
        ex = h.explanation
        assert set(ex.contributions) >= {"text", "image", "rating"}
        assert sum(ex.contributions.values()) == pytest.approx(ex.base_score, abs=1e-4)
        assert h.score == pytest.approx(ex.base_score * ex.modifiers["rating_factor"], rel=1e-5)


def test_rating_factor_reorders(engine) -> None:
    plain = run(engine.search(Query(text="shirt", k=10)))
    boosted = run(engine.search(Query(text="shirt", k=10, modifiers=Modifiers(rating_factor=10.0))))
    mean_rating = lambda r: np.mean([h.product.rating for h in r.hits[:3]])  # noqa: E731
    assert mean_rating(boosted) >= mean_rating(plain)


def test_rating_search_is_nearest_neighbour(engine) -> None:
    res = run(engine.search(Query(rating=4.5, k=5)))
    ratings = [h.product.rating for h in res.hits]
    all_ratings = sorted({p.rating for p in catalog()[0]}, key=lambda r: abs(r - 4.5))
    assert abs(ratings[0] - 4.5) == pytest.approx(abs(all_ratings[0] - 4.5))


def test_attribute_target_must_be_declared(engine) -> None:
    res = run(engine.search(Query(targets={"year": 2003}, k=3)))
    assert res.hits[0].product.attributes["year"] == 2003
    with pytest.raises(InvalidInput) as e:
        run(engine.search(Query(targets={"weight": 3.0})))
    assert e.value.field == "targets"


@pytest.mark.parametrize(("q", "field"), [
    (Query(text="x", k=0), "k"),
    (Query(text="x", k=10_000), "k"),
    (Query(), "query"),
    (Query(text="   "), "text"),
    (Query(text="x", weights={"text": -1.0}), "weights"),
    (Query(text="x", weights={"text": 0.0, "image": 0.0}), "weights"),
    (Query(text="x", weights={"text": float("nan")}), "weights"),
    (Query(text="x", filters=Filters(min_rating=9)), "filters.min_rating"),
    (Query(image=b"\x89PNG broken"), "image"),
    (Query(text="x", rating=7.0), "rating"),
])
def test_bad_queries_named(engine, q, field) -> None:
    with pytest.raises(InvalidInput) as e:
        run(engine.search(q))
    assert e.value.field == field


def test_search_many_keeps_order(engine) -> None:
    qs = [Query(text=f"{c} shoes", k=1) for c in COLOURS]
    res = run(engine.search_many(qs))
    assert [r.hits[0].product.title for r in res] == [f"{c} shoes" for c in COLOURS]


def test_embed_text_and_image(engine) -> None:
    v = run(engine.embed_text(["red", "blue"]))
    assert v.shape == (2, DIM)
    assert run(engine.embed_image([png("red")])).shape == (1, DIM)
    with pytest.raises(InvalidInput) as e:
        run(engine.embed_text(["ok", ""]))
    assert e.value.field == "texts[1]"


def test_stats_and_health(engine) -> None:
    st = run(engine.stats())
    assert st.products == st.indexed == 50 and st.store_seq == st.index_seq
    h = run(engine.health())
    assert h.ready


def test_reopen_uses_snapshot_and_replays(tmp_path) -> None:
    eng = make_engine(tmp_path)
    products, images = catalog()
    run(eng.upsert(products[:30], images[:30]))
    run(eng.snapshot())
    run(eng.upsert(products[30:], images[30:]))
    run(eng.delete([1000, 1031]))
    before = run(eng.search(Query(text="green bag", k=5)))
    eng.store.close()  # "crash": no final snapshot

    eng2 = make_engine(tmp_path)
    assert eng2.recovery["mode"].startswith("snapshot@")
    st = run(eng2.stats())
    assert st.indexed == st.products == 48
    after = run(eng2.search(Query(text="green bag", k=5)))
    assert [h.id for h in after.hits] == [h.id for h in before.hits]
    run(eng2.close())


def test_reopen_applies_the_configured_index_settings_not_the_snapshots(tmp_path) -> None:
    eng = make_engine(tmp_path, index=IndexConfig(nprobe=7, rerank_factor=3))
    products, images = catalog()
    run(eng.upsert(products, images))
    run(eng.close())
    eng2 = make_engine(tmp_path, index=IndexConfig(nprobe=9, rerank_factor=5))
    assert eng2.recovery["mode"].startswith("snapshot@")
    assert (eng2.index.cfg.nprobe, eng2.index.cfg.rerank_factor) == (9, 5)
    run(eng2.close(snapshot=False))


def test_corrupt_snapshot_triggers_rebuild(tmp_path) -> None:
    eng = make_engine(tmp_path)
    products, images = catalog()
    run(eng.upsert(products, images))
    run(eng.close())
    for f in (tmp_path / "data" / "index").iterdir():
        if f.is_file():
            f.write_bytes(b"garbage")
    eng2 = make_engine(tmp_path)
    assert eng2.recovery["mode"].startswith("rebuild")
    assert len(eng2.index) == 50
    run(eng2.close(snapshot=False))


def test_layout_change_refused(tmp_path) -> None:
    make_engine(tmp_path).store.close()
    with pytest.raises(Exception) as e:
        Engine(EngineConfig(data_dir=tmp_path / "data"), text_encoder=FakeTextEncoder(),
               image_encoder=FakeImageEncoder())
    assert "layout" in str(e.value) or "d vectors" in str(e.value)


def test_search_runs_while_a_long_upsert_is_midway(tmp_path) -> None:
    """Chunked writes: a search issued while chunk 2 of an upsert is encoding is answered at once and
    sees chunk 1 (committed) but not chunk 3."""
    import threading

    class GatedText(FakeTextEncoder):
        def __init__(self) -> None:
            super().__init__()
            self.docs = 0
            self.reached, self.release = threading.Event(), threading.Event()

        def encode(self, texts, kind="query"):
            if kind == "document":
                self.docs += 1
                if self.docs == 2:
                    self.reached.set()
                    assert self.release.wait(20)
            return super().encode(texts, kind)

    enc = GatedText()
    eng = Engine(EngineConfig(data_dir=tmp_path / "d", upsert_chunk=10), text_encoder=enc)
    products = [Product(id=i, title=f"item{i} red shirt") for i in range(30)]

    async def main() -> None:
        writer = asyncio.create_task(eng.upsert(products))
        while not enc.reached.is_set():
            await asyncio.sleep(0.005)
        res = await eng.search(Query(text="red shirt", k=30))
        assert not writer.done()
        assert sorted(h.id for h in res.hits) == list(range(10))
        enc.release.set()
        assert len((await writer).accepted) == 30

    run(main())
    run(eng.close(snapshot=False))


def test_engine_caps_blas_threads_while_open(tmp_path, monkeypatch) -> None:
    from threadpoolctl import threadpool_info, threadpool_limits

    from kuamo.engine import blas_threads

    monkeypatch.setattr(blas_threads, "_users", 0)  # engines other tests left open do not count here
    monkeypatch.setattr(blas_threads, "_limiter", None)

    def blas() -> list[int]:
        return [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"]

    with threadpool_limits(limits=2, user_api="blas"):  # as a fresh process on 2 cores starts
        a = make_engine(tmp_path / "a")  # EngineConfig.blas_threads defaults to 1
        b = make_engine(tmp_path / "b")
        assert blas() and set(blas()) == {1}
        run(a.close(snapshot=False))
        assert set(blas()) == {1}  # b is still open
        run(b.close(snapshot=False))
        assert set(blas()) == {2}  # lifted with the last engine


def test_bad_blas_threads_named(tmp_path) -> None:
    with pytest.raises(ValueError, match="blas_threads"):
        make_engine(tmp_path, blas_threads=0)
