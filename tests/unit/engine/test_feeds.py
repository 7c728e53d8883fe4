"""Feeds as merchants have them: column maps, category paths, photo-only rows, hex ids, the rejected-rows
budget and the exit code of `kuamo index` (fake encoders; the real-model run is tests/integration)."""

from __future__ import annotations

import asyncio
import csv
import json
from pathlib import Path

import pytest
from fake_encoders import FakeImageEncoder, FakeTextEncoder, png

from kuamo.cli import main
from kuamo.engine.catalog_io import GENERIC, RowError, mapping_for, to_product
from kuamo.engine.catalog_map import CatalogConfig, category_of, check_config, parse_map
from kuamo.engine.engine import Engine, EngineConfig
from kuamo.engine.errors import InvalidInput
from kuamo.engine.ids import row_key
from kuamo.engine.ingest import IngestReport, index_catalog
from kuamo.engine.types import Filters, Product, Query, Rejection
from kuamo.server.config import load_catalog_config, load_config

FEED_MAP = "id=uniq_id,title=product_name,category=product_category_tree,price=retail_price"
HEADER = ["uniq_id", "product_name", "product_category_tree", "retail_price", "image", "description", "brand"]


def make_engine(tmp_path: Path) -> Engine:
    return Engine(EngineConfig(data_dir=tmp_path / "data"), text_encoder=FakeTextEncoder(),
                  image_encoder=FakeImageEncoder())


def write_feed(root: Path, rows: list[dict[str, str]]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "red.png").write_bytes(png("red"))
    (root / "blue.png").write_bytes(png("blue"))
    path = root / "feed.csv"
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=HEADER)
        w.writeheader()
        w.writerows([{k: r.get(k, "") for k in HEADER} for r in rows])
    return path


def feed_row(uid: str, name: str, path: str, image: str = "", price: str = "10") -> dict[str, str]:
    return {"uniq_id": uid, "product_name": name, "product_category_tree": path, "retail_price": price,
            "image": image, "description": "", "brand": "Acme"}


PAN = feed_row("c2d766ca982eca8304150849735ffef9", "Prestige Omega Deluxe Pan",
               '["Home >> Kitchen >> Cookware >> Pans >> Prestige Omega Deluxe Pan"]', "red.png")
MUG = feed_row("7f7036a6d550aaa89d34c77bd39a5e48", "Blue Ceramic Mug",
               '["Home >> Kitchen >> Dining >> Blue Ceramic Mug"]')


# -- column map -------------------------------------------------------------------------------------
def test_parse_map_reads_pairs_and_names_bad_parts() -> None:
    assert parse_map(FEED_MAP) == {"id": "uniq_id", "title": "product_name",
                                   "category": "product_category_tree", "price": "retail_price"}
    with pytest.raises(InvalidInput, match=r"unknown field 'sku'.*id, title"):
        parse_map("sku=uniq_id")
    with pytest.raises(InvalidInput, match="no column for 'title'"):
        parse_map("title=")
    with pytest.raises(InvalidInput, match="names 'id' twice"):
        parse_map("id=a,id=b")


def test_mapping_naming_a_missing_column_is_an_error_naming_it() -> None:
    with pytest.raises(InvalidInput) as exc:
        mapping_for(check_config(CatalogConfig(map={"title": "productTitle"})), HEADER)
    assert "title=productTitle" in exc.value.message and "uniq_id" in exc.value.message
    assert exc.value.field == "map"


def test_no_id_names_the_columns_tried() -> None:
    with pytest.raises(RowError) as exc:
        to_product({"uniq_id": "abc", "product_name": "x"}, GENERIC, Path("."))
    assert exc.value.field == "id"
    assert exc.value.reason == ("no id: tried columns id, product_id, sku_id, item_id "
                                "(map one with --map id=COLUMN)")


def test_mapped_feed_gives_string_ids_and_the_category_path(tmp_path) -> None:
    path = write_feed(tmp_path / "feed", [PAN])
    m = mapping_for(check_config(CatalogConfig(map=parse_map(FEED_MAP), category_path=">>", category_depth=3)),
                    HEADER)
    product, image = to_product(next(iter(_rows(path))), m, path.parent)
    assert product.id == "c2d766ca982eca8304150849735ffef9"
    assert product.title == "Prestige Omega Deluxe Pan" and product.price == 10.0
    assert product.category == "Home/Kitchen/Cookware" and product.category_parts[-1] == "Cookware"
    assert image == path.parent / "red.png"
    assert product.attributes == {}  # every column of this feed is mapped onto a field


def _rows(path: Path):
    with open(path, newline="", encoding="utf-8") as f:
        yield from csv.DictReader(f)


# -- category paths ---------------------------------------------------------------------------------
@pytest.mark.parametrize(("raw", "sep", "depth", "title", "want"), [
    ('["Home >> Kitchen >> Cookware >> Pans >> Omega Pan"]', ">>", 3, "Omega Pan", "Home/Kitchen/Cookware"),
    ('["Home >> Kitchen >> Omega Pan"]', ">>", 3, "Omega Pan", "Home/Kitchen"),  # the leaf is the name: dropped
    ('["Home >> Kitchen >> Omega Pan"]', None, None, "Omega Pan", "Home/Kitchen"),  # guessed separator
    ("Clothing >> Shorts >> Alisha Solid Women's Cyc...", ">>", None, "Alisha Solid Women's Cycling Shorts",
     "Clothing/Shorts"),  # a leaf that is the name cut short
    ("Apparel > Topwear > Shirts", None, None, "Shirts for men", "Apparel/Topwear/Shirts"),  # not the name
    (["Home", "Garden"], None, None, "rake", "Home/Garden"),
    ("A/B >> C", ">>", None, "x", "A-B/C"),
    ("", ">>", 3, "x", ""),
])
def test_category_of(raw, sep, depth, title, want) -> None:
    assert category_of(raw, sep=sep, depth=depth, title=title) == want


# -- photo-only and text-only rows --------------------------------------------------------------------
def test_photo_only_text_only_and_neither(tmp_path) -> None:
    rows = [feed_row("p1", "", "Home >> Decor", "blue.png"),  # photo, no title: accepted
            feed_row("t1", "Steel Ladle", "Home >> Kitchen"),  # title, no photo: accepted
            feed_row("n1", "", "Home >> Decor")]  # neither: rejected with the columns tried
    path = write_feed(tmp_path / "feed", rows)
    eng = make_engine(tmp_path)
    cfg = CatalogConfig(map=parse_map(FEED_MAP))
    rep = index_catalog(path, engine=eng, progress=False, catalog=cfg)
    assert rep.accepted == 2 and len(rep.rejected) == 1
    bad = rep.rejected[0]
    assert (bad.row, bad.id, bad.field) == (3, "n1", "title")
    assert "no title and no photo" in bad.reason and "product_name" in bad.reason and "image" in bad.reason
    photo = asyncio.run(eng.get("p1"))
    assert photo.title == "" and photo.category == "Home/Decor"  # nothing placeholder as its title
    hits = asyncio.run(eng.search(Query(image=png("blue"), k=1))).hits
    assert hits[0].id == "p1"
    assert asyncio.run(eng.get("t1")).title == "Steel Ladle"
    asyncio.run(eng.close(snapshot=False))


def test_photo_only_product_has_an_empty_text_block(tmp_path) -> None:
    eng = make_engine(tmp_path)
    res = asyncio.run(eng.upsert([Product(id="p", title=""), Product(id="q", title="", category="Home")],
                                 [png("red"), None]))
    assert res.accepted == ["p", "q"]  # "q" has its category as text
    res = asyncio.run(eng.upsert([Product(id="z", title="")], [None]))
    assert not res.accepted and res.rejected[0].field == "title"
    vec = eng.store.vectors([row_key("p")])[1][0]
    text = vec[eng.layout.slices()["text"]]
    assert float(abs(text).sum()) == 0.0  # no placeholder text (such as the id) was encoded
    asyncio.run(eng.close(snapshot=False))


# -- rejected-rows budget and exit code ----------------------------------------------------------------
def test_failed_follows_the_rejected_share() -> None:
    rep = IngestReport(path="x", mapping="generic", rows_read=4,
                       rejected=[Rejection(row=1, id=None, field="id", reason="r")])
    assert not rep.failed() and not rep.failed(0.25) and rep.failed(0.2)
    assert IngestReport(path="x", mapping="generic").failed()  # nothing read: nothing indexed
    rep.rejected *= 4
    assert rep.failed()  # all rejected at the default 1.0
    assert json.loads(json.dumps(rep.to_dict()))["rejected_share"] == 1.0


def test_kuamo_index_bad_map_exits_2_without_a_traceback(tmp_path, capsys) -> None:
    path = write_feed(tmp_path / "feed", [PAN])
    code = main(["index", str(path), "--map", "title=productTitle", "--data", str(tmp_path / "d"),
                 "--models", str(tmp_path / "no-models")])
    err = capsys.readouterr().err
    assert code == 2 and "title=productTitle" in err and "Traceback" not in err
    code = main(["index", str(path), "--map", "colour=brand", "--data", str(tmp_path / "d")])
    assert code == 2 and "unknown field 'colour'" in capsys.readouterr().err


# -- [catalog] in the TOML file ----------------------------------------------------------------------
def test_catalog_section_of_the_toml_file(tmp_path) -> None:
    toml = tmp_path / "kuamo.toml"
    toml.write_text('[server]\nport = 50099\n\n[catalog]\ncategory_path = ">>"\ncategory_depth = 3\n'
                    'max_rejected_share = 0.1\nmap = { id = "uniq_id", title = "product_name" }\n')
    cfg = load_catalog_config(toml, environ={})
    assert cfg.map == {"id": "uniq_id", "title": "product_name"} and cfg.category_path == ">>"
    assert cfg.category_depth == 3 and cfg.max_rejected_share == 0.1
    assert load_config(toml, environ={}).port == 50099  # the server reads its own section beside it
    env = {"KUAMO_CATALOG_CATEGORY_DEPTH": "2", "KUAMO_CATALOG_MAP": "id=sku"}
    cfg = load_catalog_config(toml, environ=env, overrides={"max_rejected_share": 0.5})
    assert cfg.category_depth == 2 and cfg.map == {"id": "sku"} and cfg.max_rejected_share == 0.5
    toml.write_text("[catalog]\ncategory_depht = 3\n")
    with pytest.raises(InvalidInput, match="category_depht"):
        load_catalog_config(toml, environ={})
    with pytest.raises(InvalidInput, match="max_rejected_share"):
        load_catalog_config(None, environ={}, overrides={"max_rejected_share": 1.5})


# -- string ids through the engine ----------------------------------------------------------------------
def test_hex_ids_searchable_gettable_filterable_deletable(tmp_path) -> None:
    path = write_feed(tmp_path / "feed", [PAN, MUG, feed_row("42", "Red Kettle", "Home >> Kitchen", "red.png")])
    eng = make_engine(tmp_path)
    rep = index_catalog(path, engine=eng, progress=False,
                        catalog=CatalogConfig(map=parse_map(FEED_MAP), category_path=">>", category_depth=3))
    assert rep.accepted == 3 and not rep.rejected
    hits = asyncio.run(eng.search(Query(text="blue ceramic mug", k=3))).hits
    assert hits[0].id == MUG["uniq_id"] and hits[0].product.id == MUG["uniq_id"]
    assert {h.id for h in hits} == {PAN["uniq_id"], MUG["uniq_id"], 42}  # "42" is the integer id 42
    only = asyncio.run(eng.search(Query(text="mug", k=3, filters=Filters(ids=(PAN["uniq_id"],))))).hits
    assert [h.id for h in only] == [PAN["uniq_id"]]
    assert asyncio.run(eng.get(PAN["uniq_id"])).category == "Home/Kitchen/Cookware"
    assert asyncio.run(eng.get(42)).title == asyncio.run(eng.get("42")).title == "Red Kettle"
    assert asyncio.run(eng.delete([MUG["uniq_id"]])) == 1
    assert MUG["uniq_id"] not in {h.id for h in asyncio.run(eng.search(Query(text="mug", k=3))).hits}
    asyncio.run(eng.close(snapshot=False))


def test_bad_values_name_their_column() -> None:
    m = mapping_for(check_config(CatalogConfig(map=parse_map(FEED_MAP))), HEADER)
    with pytest.raises(RowError) as exc:
        to_product({"uniq_id": "x" * 300, "product_name": "t"}, m, Path("."))
    assert exc.value.field == "id" and exc.value.reason == (
        "bad id in column uniq_id has 300 characters, above the limit of 256")
    with pytest.raises(RowError) as exc:
        to_product({"uniq_id": "a1", "product_name": "t", "retail_price": "cheap"}, m, Path("."))
    assert (exc.value.field, exc.value.id) == ("price", "a1")
    assert exc.value.reason == "bad price in column retail_price: 'cheap' is not a number"
