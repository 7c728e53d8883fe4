"""Catalog ingestion: formats, mappings, rejected rows with reasons, idempotent re-runs."""

from __future__ import annotations

import asyncio
import csv
import importlib.util
import json
from pathlib import Path

import pytest
from fake_encoders import FakeImageEncoder, FakeTextEncoder, png

from kuamo.engine.catalog_io import FASHION, GENERIC, pick_mapping
from kuamo.engine.engine import Engine, EngineConfig
from kuamo.engine.errors import InvalidInput
from kuamo.engine.ingest import aindex_catalog, index_catalog
from kuamo.engine.types import Filters, Query


def make_engine(tmp_path: Path) -> Engine:
    return Engine(EngineConfig(data_dir=tmp_path / "data"), text_encoder=FakeTextEncoder(),
                  image_encoder=FakeImageEncoder())


def write_generic_csv(root: Path) -> Path:
    (root / "img").mkdir(parents=True)
    (root / "img" / "1.png").write_bytes(png("red"))
    (root / "img" / "2.png").write_bytes(png("blue"))
    (root / "img" / "bad.png").write_bytes(b"this is not a png")
    rows = [
        {"id": "1", "title": "red shirt", "category": "Apparel > Topwear", "brand": "Acme", "price": "¥299",
         "rating": "4.5", "image": "img/1.png", "colour": "Red"},
        {"id": "2", "title": "blue jeans", "category": "Apparel > Bottomwear", "brand": "Zeta", "price": "120.5",
         "rating": "", "image": "img/2.png", "colour": "Blue"},
        {"id": "3", "title": "ghost", "category": "", "brand": "", "price": "12", "rating": "",
         "image": "img/missing.png", "colour": ""},
        {"id": "4", "title": "broken", "category": "", "brand": "", "price": "12", "rating": "",
         "image": "img/bad.png", "colour": ""},
        {"id": "5", "title": "odd price", "category": "", "brand": "", "price": "cheap", "rating": "",
         "image": "", "colour": ""},
        {"id": "", "title": "no id", "category": "", "brand": "", "price": "", "rating": "", "image": "",
         "colour": ""},
        {"id": "7", "title": "text only", "category": "Home", "brand": "", "price": "", "rating": "", "image": "",
         "colour": "Green"},
    ]
    path = root / "catalog.csv"
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return path


def test_generic_csv_rejections_and_idempotent_rerun(tmp_path) -> None:
    path = write_generic_csv(tmp_path / "cat")
    eng = make_engine(tmp_path)
    rep = index_catalog(path, engine=eng, progress=False, batch_size=2)
    assert rep.mapping == "generic" and rep.rows_read == 7 and rep.accepted == 3
    by_row = {r.row: (r.id, r.field, r.reason) for r in rep.rejected}
    assert by_row[3][:2] == (3, "image") and "missing image" in by_row[3][2]
    assert by_row[4][:2] == (4, "image")  # undecodable, found by the encoder
    assert by_row[5][:2] == (5, "price") and "bad price" in by_row[5][2]
    assert by_row[6][1] == "id" and "tried columns id, product_id, sku_id, item_id" in by_row[6][2]
    p1 = asyncio.run(eng.get(1))
    assert p1.price == 299.0 and p1.rating == 4.5 and p1.category == "Apparel/Topwear"
    assert p1.attributes == {"colour": "Red"} and p1.image_ref == "img/1.png"

    rep2 = index_catalog(path, engine=eng, progress=False)
    assert rep2.accepted == 0 and rep2.unchanged == 3 and len(rep2.rejected) == 4
    asyncio.run(eng.close())


def test_jsonl_with_bad_lines(tmp_path) -> None:
    path = tmp_path / "c.jsonl"
    path.write_text("\n".join([
        json.dumps({"product_id": 10, "name": "green bag", "categories": ["Bags", "Tote"], "price": 30}),
        "{not json",
        json.dumps([1, 2]),
        json.dumps({"product_id": 11, "name": "black watch", "rating": 9}),
    ]) + "\n", encoding="utf-8")
    eng = make_engine(tmp_path)
    rep = index_catalog(path, engine=eng, progress=False)
    assert rep.accepted == 1
    assert {(r.row, r.field) for r in rep.rejected} == {(2, "row"), (3, "row"), (4, "rating")}
    assert asyncio.run(eng.get(10)).category == "Bags/Tote"
    asyncio.run(eng.close(snapshot=False))


def test_parquet_without_pyarrow_is_clear(tmp_path) -> None:
    if importlib.util.find_spec("pyarrow") is not None:
        pytest.skip("pyarrow is installed")
    path = tmp_path / "c.parquet"
    path.write_bytes(b"PAR1")
    eng = make_engine(tmp_path)
    with pytest.raises(InvalidInput) as e:
        index_catalog(path, engine=eng, progress=False)
    assert e.value.field == "path" and "pyarrow" in e.value.message
    asyncio.run(eng.close(snapshot=False))


def test_bad_arguments_named(tmp_path) -> None:
    eng = make_engine(tmp_path)
    with pytest.raises(InvalidInput) as e:
        index_catalog(tmp_path / "nope.csv", engine=eng)
    assert e.value.field == "path"
    with pytest.raises(InvalidInput) as e:
        pick_mapping("amazon", [])
    assert e.value.field == "mapping"
    with pytest.raises(InvalidInput) as e:
        index_catalog(tmp_path / "x.csv")
    assert e.value.field == "engine"
    asyncio.run(eng.close(snapshot=False))


def test_mapping_auto_detects_fashion() -> None:
    assert pick_mapping("auto", ["id", "productDisplayName", "masterCategory"]) is FASHION
    assert pick_mapping("auto", ["id", "title"]) is GENERIC


def test_fashion_slice(tmp_path, fashion_dir) -> None:
    eng = make_engine(tmp_path)
    rep = asyncio.run(aindex_catalog(fashion_dir / "products.csv", eng, limit=40, progress=False, batch_size=16))
    assert rep.mapping == "fashion" and rep.rows_read == 40
    assert rep.accepted + len(rep.rejected) == 40 and rep.accepted > 30
    assert all(r.field in {"image", "title", "id"} for r in rep.rejected)
    st = asyncio.run(eng.stats())
    assert st.products == st.indexed == rep.accepted
    some = asyncio.run(eng.search(Query(text="shirt", k=1))).hits[0].product
    assert some.category.count("/") == 2 and "baseColour" in some.attributes and some.price is None
    assert isinstance(some.attributes.get("year"), int)
    top = some.category.split("/")[0]
    res = asyncio.run(eng.search(Query(text="shirt", k=5, filters=Filters(category_prefix=top))))
    assert all(h.product.category.startswith(top + "/") for h in res.hits)
    asyncio.run(eng.close(snapshot=False))
