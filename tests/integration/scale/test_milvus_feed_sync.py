"""The feed features over the Milvus backend (a `milvus-lite server` on loopback, fake encoders): --prune
deletes what a full feed dropped and Query.collapse keeps one hit per item group, as on the embedded store."""

from __future__ import annotations

import asyncio
import csv
from pathlib import Path

import pytest

pytest.importorskip("pymilvus")
pytest.importorskip("milvus_lite")

from fake_encoders import FakeImageEncoder, FakeTextEncoder, png
from milvus_fixtures import milvus_lite_server  # noqa: F401

from kuamo.engine.backends import MilvusSettings
from kuamo.engine.catalog_map import CatalogConfig
from kuamo.engine.engine import Engine, EngineConfig
from kuamo.engine.errors import NotFound
from kuamo.engine.ingest import aindex_catalog
from kuamo.engine.types import Query


def write_feed(path: Path, rows: list[list[str]]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["id", "title", "image", "item_group_id"])
        w.writerows(rows)
    return path


def test_prune_and_collapse_on_milvus(tmp_path: Path, milvus_lite_server) -> None:  # noqa: F811
    _, uri = milvus_lite_server
    shop = tmp_path / "shop"
    shop.mkdir()
    (shop / "red.png").write_bytes(png("red"))
    (shop / "blue.png").write_bytes(png("blue"))
    rows = [[f"tee-{s}", f"red tee {s}", "red.png", "tee"] for s in ("S", "M", "L")] + \
        [["cap", "red cap", "red.png", ""], ["bag", "blue bag", "blue.png", "bag"]]

    async def run() -> None:
        cfg = EngineConfig(data_dir=tmp_path / "data", backend="milvus",
                           milvus=MilvusSettings(uri=uri, collection="feed_sync", timeout_s=5.0))
        eng = await asyncio.to_thread(Engine, cfg, text_encoder=FakeTextEncoder(), image_encoder=FakeImageEncoder())
        try:
            rep = await aindex_catalog(write_feed(shop / "v1.csv", rows), eng, progress=False)
            assert rep.accepted == 5
            hits = (await eng.search(Query(image=png("red"), k=5, collapse="item_group_id"))).hits
            assert len(hits) == 3 and sum(str(h.id).startswith("tee-") for h in hits) == 1  # 3 tees -> 1
            rep = await aindex_catalog(write_feed(shop / "v2.csv", rows[1:]), eng, progress=False,
                                       catalog=CatalogConfig(prune=True))
            assert rep.pruned["deleted"] == 1 and rep.pruned["examples"] == ["tee-S"]
            with pytest.raises(NotFound):
                await eng.get("tee-S")
            assert (await eng.stats()).products == 4
        finally:
            await eng.close(snapshot=False)

    asyncio.run(run())
