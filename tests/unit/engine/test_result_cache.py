"""The result cache: a repeated text query is answered whole, until the catalog or the models change."""

from __future__ import annotations

import asyncio

from fake_encoders import fake_engine, png

from kuamo.engine.result_cache import ResultCache, result_key
from kuamo.engine.types import Filters, Product, Query, SearchResult


def test_keys_and_bounds() -> None:
    assert result_key(Query(text="red  shirt ")) == result_key(Query(text="red shirt"))  # normalised text
    assert result_key(Query(text="red shirt", k=5)) != result_key(Query(text="red shirt"))
    assert result_key(Query(text="red shirt", filters=Filters(brands=("Acme",)))) != result_key(Query(text="red shirt"))
    assert result_key(Query(text="red shirt", user_id="u1")) is None  # a shopper's taste is not in the key
    assert result_key(Query(text="red", image=png("red"))) is None and result_key(Query(image=png("red"))) is None
    c = ResultCache(2)
    for i in range(3):
        c.put(f"q{i}", 0, SearchResult(hits=[]))
    assert c.get("q0", 0) is None and c.get("q2", 0) is not None and c.stats()["evictions"] == 1
    assert c.get("q2", 1) is None  # another generation is never served
    off = ResultCache(0)
    off.put("q", 0, SearchResult(hits=[]))
    assert not off.enabled and off.get("q", 0) is None


def test_repeat_is_answered_whole_until_a_write(tmp_path) -> None:
    with fake_engine(tmp_path / "data", result_cache_entries=16) as eng:
        asyncio.run(eng.upsert([Product(id=i, title=f"{c} shirt") for i, c in enumerate(("red", "blue", "green"))],
                               [png("red"), png("blue"), png("green")]))
        q = Query(text="red shirt", k=3)
        first = asyncio.run(eng.search(q))
        calls = eng.encoder.text_encoder.calls
        again = asyncio.run(eng.search(q))
        assert [h.id for h in again.hits] == [h.id for h in first.hits]
        assert eng.encoder.text_encoder.calls == calls and eng.result_cache.hits == 1
        assert again.timings.encode_ms == 0 and again.timings.search_ms == 0
        # a write is visible to the next query: the new product is found, the deleted one is gone
        asyncio.run(eng.upsert([Product(id=9, title="red shirt")], [png("red")]))
        assert 9 in {h.id for h in asyncio.run(eng.search(q)).hits}
        asyncio.run(eng.delete([9]))
        assert 9 not in {h.id for h in asyncio.run(eng.search(q)).hits}
        # a shopper's query is never cached
        hits = eng.result_cache.hits
        for _ in range(2):
            asyncio.run(eng.search(Query(text="red shirt", k=3, user_id="shopper-1")))
        assert eng.result_cache.hits == hits


def test_answer_computed_across_a_write_is_not_served(tmp_path) -> None:
    with fake_engine(tmp_path / "data", result_cache_entries=16) as eng:
        asyncio.run(eng.upsert([Product(id=1, title="red shirt")], [png("red")]))
        q = Query(text="red shirt", k=3)
        stale = asyncio.run(eng.search(q))
        key = result_key(q)
        assert key is not None
        eng.result_cache.put(key, eng._generation, stale)
        asyncio.run(eng.upsert([Product(id=2, title="red shirt two")], [png("red")]))
        # the entry of the generation before the write (put by a search that started before it) is dead
        assert eng.result_cache.get(key, eng._generation) is None
        assert {1, 2} <= {h.id for h in asyncio.run(eng.search(q)).hits}


def test_off_by_default_in_the_engine(tmp_path) -> None:
    with fake_engine(tmp_path / "data") as eng:
        assert not eng.result_cache.enabled
