"""A daily full feed through the CLI with the real models: `kuamo index FEED --prune` deletes what the feed
dropped, and refuses (exit 2, nothing deleted) when the feed looks truncated."""

from __future__ import annotations

import asyncio
import csv
import json
import shutil
from pathlib import Path

import pytest

from kuamo.cli import main
from kuamo.engine.config import EncoderConfig
from kuamo.engine.engine import Engine, EngineConfig
from kuamo.engine.errors import NotFound

pytestmark = pytest.mark.models
N = 20


def write_feed(shop: Path, rows: list[dict]) -> Path:
    path = shop / "feed.csv"
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["id", "title", "image"])
        w.writerows([[f"SKU-{r['id']}", r["productDisplayName"], f"{r['id']}.jpg"] for r in rows])
    return path


def index(feed: Path, data: Path, model_dir: Path, capsys, *flags: str) -> tuple[int, dict, str]:
    rc = main(["index", str(feed), "--data", str(data), "--models", str(model_dir), *flags])
    out = capsys.readouterr()
    return rc, json.loads(out.out), out.err


def stored(model_dir: Path, data: Path) -> int:
    async def count() -> int:
        eng = await Engine.open(EngineConfig(model_dir=model_dir, data_dir=data,
                                             encoder=EncoderConfig(model_dir=model_dir)))
        try:
            return (await eng.stats()).products
        finally:
            await eng.close(snapshot=False)

    return asyncio.run(count())


def test_a_full_feed_prunes_what_it_dropped_and_refuses_a_truncated_one(model_dir, fashion_dir, tmp_path,
                                                                         capsys) -> None:
    with open(fashion_dir / "products.csv", newline="", encoding="utf-8") as f:
        rows = [r for r in csv.DictReader(f) if (fashion_dir / "images" / f"{r['id']}.jpg").is_file()][:N]
    shop, data = tmp_path / "shop", tmp_path / "data"
    shop.mkdir()
    for r in rows:
        shutil.copy(fashion_dir / "images" / f"{r['id']}.jpg", shop)
    rc, rep, _ = index(write_feed(shop, rows), data, model_dir, capsys)
    assert (rc, rep["accepted"], rep["pruned"]) == (0, N, None)
    # a truncated download: 5 of 20 rows. Refused, exit 2, nothing deleted
    rc, rep, err = index(write_feed(shop, rows[:5]), data, model_dir, capsys, "--prune")
    assert rc == 2 and rep["pruned"]["deleted"] == 0 and rep["pruned"]["unlisted"] == N - 5
    assert "above --max-prune-share 0.2" in rep["pruned"]["refused"]
    assert "kuamo index: --prune refused: 15 of 20 stored products" in err
    assert stored(model_dir, data) == N
    # tomorrow's feed: two products sold out
    rc, rep, err = index(write_feed(shop, rows[2:]), data, model_dir, capsys, "--prune")
    assert rc == 0 and rep["unchanged"] == N - 2
    assert rep["pruned"]["deleted"] == 2 and set(rep["pruned"]["examples"]) == {f"SKU-{r['id']}" for r in rows[:2]}
    assert "prune: deleted 2 of 20 stored products that feed.csv no longer lists" in err
    assert stored(model_dir, data) == N - 2

    async def gone() -> None:
        eng = await Engine.open(EngineConfig(model_dir=model_dir, data_dir=data,
                                             encoder=EncoderConfig(model_dir=model_dir)))
        try:
            with pytest.raises(NotFound):
                await eng.get(f"SKU-{rows[0]['id']}")
        finally:
            await eng.close(snapshot=False)

    asyncio.run(gone())
