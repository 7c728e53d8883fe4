"""The query cache: bounded by entries and bytes (LRU), emptied when the models change, counted, and a cached
vector is the vector the tower would give."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from fake_encoders import FakeImageEncoder, FakeTextEncoder

from kuamo.engine.engine import Engine, EngineConfig
from kuamo.engine.query_cache import ENTRY_OVERHEAD, QueryCache, normalise_query
from kuamo.engine.types import Product, Query


def vec(x: float, dim: int = 4) -> np.ndarray:
    return np.full(dim, x, dtype=np.float32)


def test_lru_bounded_by_entries() -> None:
    c = QueryCache(max_entries=2, max_bytes=1 << 20)
    c.put("a", "fp", vec(1))
    c.put("b", "fp", vec(2))
    assert c.get("a", "fp") is not None  # a is now the most recent
    c.put("c", "fp", vec(3))
    assert len(c) == 2 and c.get("b", "fp") is None and c.get("a", "fp") is not None
    assert c.stats().evictions == 1


def test_bounded_by_bytes() -> None:
    one = 16 + 1 + ENTRY_OVERHEAD  # 4 float32 + a one-byte key
    c = QueryCache(max_entries=100, max_bytes=3 * one)
    for k in "abcde":
        c.put(k, "fp", vec(1))
    s = c.stats()
    assert s.entries == 3 and s.bytes <= 3 * one and s.evictions == 2
    c.put("x" * 10_000, "fp", vec(1))  # larger than the whole bound: not kept, nothing evicted for it
    assert c.stats().entries == 3


def test_fingerprint_change_empties_it() -> None:
    c = QueryCache(max_entries=10, max_bytes=1 << 20)
    c.put("a", "fp1", vec(1))
    assert c.get("a", "fp2") is None  # other models: never the old vector
    assert c.stats().invalidations == 1 and len(c) == 0
    c.put("a", "fp1", vec(1))  # a late put from the replaced models is dropped
    assert len(c) == 0


def test_counters_and_off() -> None:
    c = QueryCache(max_entries=10, max_bytes=1 << 20)
    assert c.get("a", "fp") is None
    c.put("a", "fp", vec(1))
    assert c.get("a", "fp") is not None
    s = c.stats()
    assert (s.hits, s.misses) == (1, 1)
    off = QueryCache(max_entries=0)
    off.put("a", "fp", vec(1))
    assert not off.enabled and len(off) == 0


def test_cached_vectors_are_read_only() -> None:
    c = QueryCache()
    c.put("a", "fp", vec(1))
    got = c.get("a", "fp")
    assert got is not None
    with pytest.raises(ValueError):
        got[0] = 5


def test_normalise_query() -> None:
    assert normalise_query("  red \t dress\n") == "red dress"
    assert normalise_query("ｒｅｄ dress") == "red dress"  # NFKC, as the tokenizer does
    assert normalise_query("Red Dress") == "Red Dress"  # the tower is cased


def _engine(tmp_path, entries: int) -> tuple[Engine, FakeTextEncoder]:
    text = FakeTextEncoder()
    eng = Engine(EngineConfig(data_dir=tmp_path / f"d{entries}", query_cache_entries=entries),
                 text_encoder=text, image_encoder=FakeImageEncoder())
    asyncio.run(eng.upsert([Product(id=i, title=f"{c} shirt") for i, c in enumerate(("red", "blue", "green"))]))
    return eng, text


def test_engine_same_results_cache_on_and_off(tmp_path) -> None:
    on, text_on = _engine(tmp_path, 100)
    off, _ = _engine(tmp_path, 0)
    try:
        for q in ("blue shirt", " blue   shirt ", "blue shirt"):
            a = asyncio.run(on.search(Query(text=q, k=3)))
            b = asyncio.run(off.search(Query(text=q, k=3)))
            assert [h.id for h in a.hits] == [h.id for h in b.hits]
            assert np.allclose([h.score for h in a.hits], [h.score for h in b.hits])
        calls = text_on.calls
        asyncio.run(on.search(Query(text="blue shirt", k=3)))
        assert text_on.calls == calls  # answered from the cache
        s = asyncio.run(on.stats()).query_cache
        assert s["hits"] == 3 and s["misses"] == 1 and s["entries"] == 1
        assert asyncio.run(off.stats()).query_cache["entries"] == 0
    finally:
        asyncio.run(on.close(snapshot=False))
        asyncio.run(off.close(snapshot=False))


def test_engine_cache_follows_the_fingerprint(tmp_path) -> None:
    eng, text = _engine(tmp_path, 100)
    try:
        asyncio.run(eng.search(Query(text="red shirt")))
        eng.encoder.fingerprint = eng.encoder.fingerprint + "-new-models"
        calls = text.calls
        asyncio.run(eng.search(Query(text="red shirt")))
        assert text.calls == calls + 1  # encoded again, not served from the old models' entry
        assert eng.query_cache.stats().invalidations == 1
    finally:
        asyncio.run(eng.close(snapshot=False))
