"""The in-memory BM25 (engine/bm25.py) gives FTS5's bm25() scores and order, through upserts, replacements and
deletes, with filters, and with the FTS5 table as its only source."""

from __future__ import annotations

import random

import numpy as np
import pytest

from kuamo.engine.bm25 import Bm25Index
from kuamo.engine.lexical import COLUMN_WEIGHTS, query_terms
from kuamo.engine.store import CatalogStore, StoredRow
from kuamo.engine.types import Filters, Product

DIM = 4
WORDS = ("red blue black navy white green men women kid shirt dress shoe running casual formal cotton silk nike "
         "puma adidas watch bag 红色 连衣裙 女款 男款 运动鞋 skirt jean kurta top").split()
BRANDS = ("Nike", "Puma", "Adidas", "", "Roadster")


def _product(rng: random.Random, pid: int) -> Product:
    return Product(id=pid, title=" ".join(rng.choices(WORDS, k=rng.randint(2, 9))),
                   description=" ".join(rng.choices(WORDS, k=rng.randint(0, 12))),
                   brand=rng.choice(BRANDS) or None,
                   category=rng.choice(("Apparel/Topwear/Shirts", "Apparel/Dress/Dresses", "Footwear/Shoes/Casual")),
                   attributes={"baseColour": rng.choice(("Red", "Navy Blue", "Black"))})


def _rows(products: list[Product]) -> list[StoredRow]:
    return [StoredRow(p, np.ones(DIM, dtype=np.float32), f"h{p.id}{p.title}") for p in products]


def _index_of(store: CatalogStore) -> Bm25Index:
    idx = Bm25Index(COLUMN_WEIGHTS)
    idx.upsert(store.lexical_rows())
    return idx


def _same(found: tuple[np.ndarray, np.ndarray], want: list[tuple[int, float]]) -> None:
    """Same scores in the same order; the same keys, except that FTS5 breaks a tie at the cut its own way."""
    got = list(zip(found[0].tolist(), found[1].tolist(), strict=True))
    assert len(got) == len(want)
    np.testing.assert_allclose([s for _, s in got], [s for _, s in want], rtol=1e-5)
    g, w = dict(got), dict(want)
    for k in g.keys() & w.keys():
        assert g[k] == pytest.approx(w[k], rel=1e-5)
    for k in g.keys() ^ w.keys():
        assert g.get(k, w.get(k)) == pytest.approx(want[-1][1], rel=1e-5)


@pytest.fixture()
def store(tmp_path):
    s = CatalogStore(tmp_path / "c.sqlite", dim=DIM)
    rng = random.Random(7)
    s.upsert(_rows([_product(rng, i) for i in range(1, 401)]))
    yield s
    s.close()


QUERIES = ("red dress", "nike running shoe", "红色连衣裙", "navy blue cotton shirt women", "kurta", "zzz unknown",
           "men men casual", "puma 运动鞋 black")


@pytest.mark.parametrize("text", QUERIES)
def test_scores_equal_fts5(store: CatalogStore, text: str) -> None:
    idx = _index_of(store)
    q = query_terms(text)
    _same(idx.search(q, 50), store.lexical(q, 50))


def test_in_step_through_replacements_and_deletes(store: CatalogStore) -> None:
    idx = _index_of(store)
    rng = random.Random(11)
    for _ in range(6):  # replace, add and delete through both, then compare every query again
        changed = _rows([_product(rng, rng.randint(1, 500)) for _ in range(60)])
        changed = list({r.product.id: r for r in changed}.values())
        store.upsert(changed)
        idx.upsert(store.lexical_rows([r.product.id for r in changed]))
        gone = rng.sample(range(1, 500), 40)
        store.delete(gone)
        idx.remove(gone)
    assert len(idx) == store.count() == store.lexical_count()
    for text in QUERIES:
        q = query_terms(text)
        _same(idx.search(q, 30), store.lexical(q, 30))


def test_compaction_keeps_scores(store: CatalogStore) -> None:
    idx = _index_of(store)
    rows = store.lexical_rows()
    for _ in range(40):  # rewrite every row many times: dead postings pile up and get compacted away
        idx.upsert(rows)
    assert idx._dead_postings <= max(10_000, idx._live_postings)
    q = query_terms("red dress nike")
    _same(idx.search(q, 40), store.lexical(q, 40))


def test_filters_limit_the_rows(store: CatalogStore) -> None:
    idx = _index_of(store)
    f = Filters(brands=("Nike",))
    q = query_terms("red shirt")
    _same(idx.search(q, 20, store.allowed_ids(f)), store.lexical(q, 20, f))
    assert len(idx.search(q, 20, np.zeros(0, dtype=np.int64))[0]) == 0


def test_nothing_to_match() -> None:
    idx = Bm25Index(COLUMN_WEIGHTS)
    assert len(idx.search(["red"], 10)[0]) == 0
    idx.upsert([(5, ("red", "", "", ""))])
    assert len(idx.search([], 10)[0]) == 0 and len(idx.search(["red"], 0)[0]) == 0
    assert idx.search(["red"], 10)[0].tolist() == [5]
    with pytest.raises(ValueError, match="columns"):
        idx.upsert([(6, ("red",))])


def test_backend_reads_its_own_writes_and_survives_a_pruned_log(tmp_path) -> None:
    """EmbeddedBackend.lexical: a write is found by the next query, a delete is gone from it, and a change log
    pruned past the in-memory index's seq (after a snapshot) rebuilds it from the FTS5 table, equal to FTS5."""
    from kuamo.engine.embedded_backend import EmbeddedBackend

    b = EmbeddedBackend(tmp_path, dim=DIM)
    b.recover()
    rng = random.Random(3)
    b.write(_rows([_product(rng, i) for i in range(1, 201)]))

    def keys(text: str, f: Filters | None = None) -> list[int]:
        return b.lexical(text, 300, filters=f or Filters()).keys[0].tolist()

    assert 7001 not in keys("quokka")
    b.write(_rows([Product(id=7001, title="quokka plush toy")]))
    assert keys("quokka") == [7001]  # read-your-writes: the index follows the store's change log
    b.delete([7001])
    assert keys("quokka") == []
    before = b._bm25
    b.write(_rows([Product(id=7002, title="wombat slippers", brand="Nike"), Product(id=7003, title="emu hat")]))
    b.store.prune_changes(b.store.last_seq())  # the log no longer reaches back to the index's seq
    assert keys("wombat") == [7002] and keys("wombat", Filters(brands=("Puma",))) == []
    assert b._bm25 is not before  # rebuilt from the FTS5 table, not replayed
    for text in QUERIES:
        got = b.lexical(text, 300, filters=Filters())
        _same((got.keys[0], got.scores[0]), b.store.lexical(query_terms(text), 300))
    b.close()
