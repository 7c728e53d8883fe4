"""`kuamo index FEED --prune` (engine/prune.py): a full feed deletes the stored products it no longer lists, and
never more than it should (fake encoders, a real SQLite store)."""

from __future__ import annotations

import asyncio
import csv
from pathlib import Path

import pytest
from fake_encoders import FakeImageEncoder, FakeTextEncoder, png

from kuamo.engine.catalog_map import CatalogConfig
from kuamo.engine.engine import Engine, EngineConfig
from kuamo.engine.errors import InvalidInput, NotFound
from kuamo.engine.ingest import index_catalog
from kuamo.engine.types import Query


def feed(tmp_path: Path, rows: list[tuple[str, str, str]], name: str = "feed.csv") -> Path:
    path = tmp_path / "shop" / name
    path.parent.mkdir(exist_ok=True)
    for colour in ("red", "blue", "green"):
        (path.parent / f"{colour}.png").write_bytes(png(colour))
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["id", "title", "image"])
        w.writerows(rows)
    return path


FULL = [("a", "Red Pan", "red.png"), ("b", "Blue Mug", "blue.png"), ("c", "Green Cup", "green.png"),
        ("d", "Red Bowl", "red.png"), ("e", "Blue Jug", "blue.png")]


@pytest.fixture
def engine(tmp_path: Path):
    eng = Engine(EngineConfig(data_dir=tmp_path / "data"), text_encoder=FakeTextEncoder(),
                 image_encoder=FakeImageEncoder())
    assert index_catalog(feed(tmp_path, FULL, "v1.csv"), engine=eng, progress=False).accepted == 5
    yield eng
    asyncio.run(eng.close(snapshot=False))


def ids(eng: Engine) -> set[str]:
    return {str(h.id) for h in asyncio.run(eng.search(Query(text="red blue green", k=10))).hits}


def test_products_the_feed_no_longer_lists_are_deleted(engine, tmp_path) -> None:
    path = feed(tmp_path, FULL[:4])  # e sold out
    rep = index_catalog(path, engine=engine, progress=False, catalog=CatalogConfig(prune=True))
    assert rep.pruned == {"stored": 5, "unlisted": 1, "deleted": 1, "share": 0.2, "examples": ["e"]}
    with pytest.raises(NotFound):
        asyncio.run(engine.get("e"))
    assert ids(engine) == {"a", "b", "c", "d"}
    assert rep.unchanged == 4  # the rest was not touched


def test_without_prune_nothing_is_deleted(engine, tmp_path) -> None:
    rep = index_catalog(feed(tmp_path, FULL[:2]), engine=engine, progress=False)
    assert rep.pruned is None and ids(engine) == {"a", "b", "c", "d", "e"}


def test_a_truncated_feed_deletes_nothing(engine, tmp_path) -> None:
    path = feed(tmp_path, FULL[:2])  # 3 of 5 missing: 60% > the default 20%
    rep = index_catalog(path, engine=engine, progress=False, catalog=CatalogConfig(prune=True))
    assert rep.pruned["deleted"] == 0 and rep.pruned["unlisted"] == 3
    assert "3 of 5 stored products (60.0%) are not in feed.csv, above --max-prune-share 0.2" in rep.pruned["refused"]
    assert ids(engine) == {"a", "b", "c", "d", "e"}
    rep = index_catalog(path, engine=engine, progress=False, catalog=CatalogConfig(prune=True, max_prune_share=0.6))
    assert rep.pruned["deleted"] == 3 and ids(engine) == {"a", "b"}


def test_a_row_rejected_this_time_keeps_its_product(engine, tmp_path) -> None:
    rows = [*FULL[:4], ("e", "Blue Jug", "gone.png")]  # e's photo is missing this run
    rep = index_catalog(feed(tmp_path, rows), engine=engine, progress=False, catalog=CatalogConfig(prune=True))
    assert [(r.id, r.field) for r in rep.rejected] == [("e", "image")]
    assert rep.pruned["deleted"] == 0 and rep.pruned["unlisted"] == 0
    assert asyncio.run(engine.get("e")).title == "Blue Jug"


def test_a_failed_run_prunes_nothing(engine, tmp_path) -> None:
    rows = [(i, t, "gone.png") for i, t, _ in FULL[:4]]  # every row rejected: the run failed
    rep = index_catalog(feed(tmp_path, rows), engine=engine, progress=False,
                        catalog=CatalogConfig(prune=True, max_prune_share=1.0))
    assert rep.failed() and rep.pruned["deleted"] == 0 and "the run failed" in rep.pruned["refused"]
    assert len(ids(engine)) == 5


def test_prune_needs_the_whole_file(engine, tmp_path) -> None:
    with pytest.raises(InvalidInput, match="--prune needs the whole file"):
        index_catalog(feed(tmp_path, FULL), engine=engine, progress=False, limit=2,
                      catalog=CatalogConfig(prune=True))
    assert len(ids(engine)) == 5


@pytest.mark.parametrize("share", [-0.1, 1.5, True, "half"])
def test_a_bad_prune_share_is_refused(engine, tmp_path, share) -> None:
    with pytest.raises(InvalidInput, match=r"max_prune_share must be within 0\.\.1"):
        index_catalog(feed(tmp_path, FULL), engine=engine, progress=False,
                      catalog=CatalogConfig(prune=True, max_prune_share=share))
