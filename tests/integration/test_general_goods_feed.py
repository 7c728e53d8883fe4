"""`kuamo index` on a small general-goods feed shaped like the marketplace feed of issue 16 (hex ids,
"A >> B >> ... >> <name>" category paths in a JSON-list string, file-name images), with real models:
a title-less row with a photo, a 94-megapixel photo, a photo-less row, rows it must reject. stdout is the
JSON report and nothing else; the exit code follows the rejected share."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from kuamo.engine.types import Query

pytestmark = pytest.mark.models

FEED_MAP = ("id=uniq_id,title=product_name,category=product_category_tree,price=retail_price,image=image,"
            "description=description,brand=brand")
HEADER = ["uniq_id", "product_name", "product_category_tree", "retail_price", "image", "description", "brand"]
SHIRT, WATCH, BAG, PAN, LADLE, BIG, NONE = (
    "c2d766ca982eca8304150849735ffef9", "7f7036a6d550aaa89d34c77bd39a5e48", "f449ec65dcbc041b6ae5e6a32717d01b",
    "0973b37acd0c664e3de26e97e5571454", "bc940ea42ee6bef5ac7cea3fb5cfbee7", "ce5a6818f7707e2cb61fdcdbba61f5ad",
    "8542703ca9e6ebdf6d742d8e4d5a4ba6")


def _row(uid: str, name: str, path: list[str], image: str = "", price: str = "499") -> dict[str, str]:
    tree = json.dumps([" >> ".join([*path, name])]) if path else ""
    return {"uniq_id": uid, "product_name": name, "product_category_tree": tree, "retail_price": price,
            "image": image, "description": "", "brand": "Acme"}


def _feed(fashion_dir: Path, root: Path, rows: list[dict[str, str]]) -> Path:
    (root / "img").mkdir(parents=True, exist_ok=True)
    for fid, name in ((15970, "shirt.jpg"), (30039, "watch.jpg"), (21977, "bag.jpg")):
        shutil.copy(fashion_dir / "images" / f"{fid}.jpg", root / "img" / name)
    buf = io.BytesIO()  # 11880 x 7920 = 94.1 megapixels of one colour: about 1 MB as a JPEG
    Image.new("L", (11_880, 7_920), 200).save(buf, format="JPEG", quality=80)
    (root / "img" / "big.jpg").write_bytes(buf.getvalue())
    path = root / "feed.csv"
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=HEADER)
        w.writeheader()
        w.writerows(rows)
    return path


def _index(path: Path, data: Path, model_dir: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kuamo", "index", str(path), "--models", str(model_dir),
                           "--data", str(data), "--map", FEED_MAP, "--category-path", ">>",
                           "--category-depth", "3", *extra], capture_output=True, text=True, timeout=600)


def test_general_goods_feed(model_dir: Path, fashion_dir: Path, tmp_path: Path) -> None:
    rows = [
        _row(SHIRT, "Turtle Check Men Navy Blue Shirt", ["Clothing", "Men's Clothing", "Shirts", "Casual Shirts"],
             "img/shirt.jpg"),
        _row(WATCH, "", ["Watches", "Wrist Watches", "Men's Watches"], "img/watch.jpg"),  # photo, no title
        _row(BAG, "Murcia Women Casual Brown Handbag", ["Bags", "Handbags"], "img/bag.jpg"),  # 2 levels + name
        _row(PAN, "Prestige Omega Deluxe Frying Pan", ["Home", "Kitchen", "Cookware", "Pans"]),  # no photo
        _row(BIG, "Wall Poster Print", ["Home", "Decor", "Posters"], "img/big.jpg"),  # 94.1 megapixels
        _row(NONE, "", ["Home", "Decor"]),  # neither title nor photo
        _row("", "Steel Ladle", ["Home", "Kitchen", "Tools"]),  # no id
    ]
    feed = _feed(fashion_dir, tmp_path / "feed", rows)
    data = tmp_path / "data"
    run = _index(feed, data, model_dir, "--max-image-pixels", "100000000")
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout)  # stdout is the JSON report and nothing else
    assert "image blend" in run.stderr  # the human lines went to stderr
    assert (report["rows_read"], report["accepted"], report["rejected"]) == (7, 5, 2)
    why = {r["row"]: (r["id"], r["field"], r["reason"]) for r in report["rejections"]}
    assert why[6][:2] == (NONE, "title") and "no title and no photo" in why[6][2]
    assert why[7][:2] == (None, "id") and "tried columns uniq_id" in why[7][2]

    async def check() -> None:
        from kuamo.engine.engine import Engine
        from kuamo.server.app import engine_config
        from kuamo.server.config import ServerConfig

        eng = await Engine.open(engine_config(ServerConfig(model_dir=model_dir, data_dir=data)))
        try:
            shirt, watch, bag = await eng.get(SHIRT), await eng.get(WATCH), await eng.get(BAG)
            assert shirt.category == "Clothing/Men's Clothing/Shirts"
            assert watch.title == "" and watch.category == "Watches/Wrist Watches/Men's Watches"
            assert bag.category == "Bags/Handbags"  # the product name is never a category level
            assert (await eng.get(PAN)).category == "Home/Kitchen/Cookware"
            assert (await eng.get(BIG)).title == "Wall Poster Print"
            # text block only: a photo-less product has no image block for the text query to meet
            hits = (await eng.search(Query(text="frying pan", k=3, weights={"text": 1.0}))).hits
            assert hits[0].id == PAN and hits[0].product is not None and hits[0].product.id == PAN
            photo = (fashion_dir / "images" / "30039.jpg").read_bytes()
            assert (await eng.search(Query(image=photo, k=1))).hits[0].id == WATCH  # the title-less product
        finally:
            await eng.close(snapshot=False)

    asyncio.run(check())

    # the same 94-megapixel photo under the default limit, in a feed where nothing else is indexable
    feed2 = _feed(fashion_dir, tmp_path / "feed2", [rows[4], rows[5]])
    run = _index(feed2, tmp_path / "data2", model_dir)
    assert run.returncode == 2
    report = json.loads(run.stdout)
    assert (report["accepted"], report["rejected"]) == (0, 2)
    big = next(r for r in report["rejections"] if r["id"] == BIG)
    assert big["field"] == "image" and "photo has 94.1 megapixels, above the limit of 40000000" in big["reason"]
    assert "--max-image-pixels" in big["reason"] and "decompression" not in big["reason"].lower()
    assert "rows rejected" in run.stderr
