"""The demo's first-run indexing (ensure_index) on a small real slice of the fashion catalog: it indexes
once, reports what it did, leaves an existing store alone on the next run, and re-embeds a store whose
vectors other models made (the server refuses to serve it)."""

from __future__ import annotations

import csv
import shutil
import sqlite3
from pathlib import Path

import pytest

from kuamo.engine.catalog_ready import ensure_index
from kuamo.server.app import engine_config
from kuamo.server.config import ServerConfig

pytestmark = pytest.mark.models


def _slice(fashion_dir: Path, dst: Path, n: int = 6) -> Path:
    (dst / "images").mkdir(parents=True)
    with open(fashion_dir / "products.csv", newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        rows = [r for r in reader if (fashion_dir / "images" / f"{r['id']}.jpg").exists()][:n]
        fields = reader.fieldnames
    with open(dst / "products.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        w.writerows(rows)
    for r in rows:
        shutil.copy(fashion_dir / "images" / f"{r['id']}.jpg", dst / "images")
    return dst


def _count(data: Path) -> int:
    with sqlite3.connect(data / "catalog.sqlite") as con:
        return con.execute("SELECT COUNT(*) FROM products").fetchone()[0]


def test_ensure_index_indexes_once(model_dir: Path, fashion_dir: Path, tmp_path: Path,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    catalog = _slice(fashion_dir, tmp_path / "catalog")
    cfg = ServerConfig(model_dir=model_dir, data_dir=tmp_path / "data")
    ensure_index(catalog, engine_config(cfg))
    assert _count(cfg.data_dir) == 6
    assert "indexed 6 products" in capsys.readouterr().err
    ensure_index(catalog, engine_config(cfg))  # a second run finds the store filled and does nothing
    assert "indexing" not in capsys.readouterr().err
    assert _count(cfg.data_dir) == 6


def test_ensure_index_re_embeds_after_the_models_changed(model_dir: Path, fashion_dir: Path, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    from kuamo.engine.vector_provenance import ENCODERS_META

    catalog = _slice(fashion_dir, tmp_path / "catalog")
    cfg = ServerConfig(model_dir=model_dir, data_dir=tmp_path / "data")
    ensure_index(catalog, engine_config(cfg))
    db = cfg.data_dir / "catalog.sqlite"
    with sqlite3.connect(db) as con:  # as if another export (other weights) had made these vectors
        con.execute("UPDATE meta SET value = ? WHERE key = ?", ('{"text": "old", "image": "old"}', ENCODERS_META))
    capsys.readouterr()
    ensure_index(catalog, engine_config(cfg))
    err = capsys.readouterr().err
    assert "the models changed" in err and "indexed 6 products" in err
    with sqlite3.connect(db) as con:
        assert con.execute("SELECT value FROM meta WHERE key = ?", (ENCODERS_META,)).fetchone()[0] != \
            '{"text": "old", "image": "old"}'
    ensure_index(catalog, engine_config(cfg))  # current again: nothing to do
    assert "indexing" not in capsys.readouterr().err


def test_kuamo_index_re_embeds_what_kuamo_serve_refuses(model_dir: Path, fashion_dir: Path, tmp_path: Path) -> None:
    import asyncio

    from kuamo.cli import main
    from kuamo.engine.artifacts import ArtifactError
    from kuamo.engine.engine import Engine
    from kuamo.engine.vector_provenance import ENCODERS_META


    catalog = _slice(fashion_dir, tmp_path / "catalog")
    cfg = ServerConfig(model_dir=model_dir, data_dir=tmp_path / "data")
    ensure_index(catalog, engine_config(cfg))
    with sqlite3.connect(cfg.data_dir / "catalog.sqlite") as con:
        con.execute("UPDATE meta SET value = ? WHERE key = ?", ('{"text": "old", "image": "old"}', ENCODERS_META))
    with pytest.raises(ArtifactError, match="kuamo index"):  # what the server does on start
        asyncio.run(Engine.open(engine_config(cfg)))
    assert main(["index", str(catalog / "products.csv"), "--models", str(model_dir), "--data", str(cfg.data_dir)]) == 0

    async def reopen() -> int:
        eng = await Engine.open(engine_config(cfg))
        try:
            return eng.store.count()
        finally:
            await eng.close(snapshot=False)

    assert asyncio.run(reopen()) == 6
