"""Feed files as merchants export them: a Google Merchant Center TSV ("15.00 USD" prices, product_type paths,
image_link), semicolon-separated CSV, decimal commas, non-UTF-8 files, photos named by URL or in a JSON list
(fake encoders; engine/feed_values.py, engine/catalog_io.py)."""

from __future__ import annotations

import asyncio
import csv
from pathlib import Path

import pytest
from fake_encoders import FakeImageEncoder, FakeTextEncoder, png

from kuamo.cli import main
from kuamo.engine.catalog_io import GENERIC, RowError, csv_delimiter, header_of, to_product
from kuamo.engine.engine import Engine, EngineConfig
from kuamo.engine.errors import InvalidInput, NotFound
from kuamo.engine.feed_values import amount_text, first_image_ref
from kuamo.engine.ingest import index_catalog
from kuamo.engine.types import Query

GMC_HEADER = ["id", "title", "description", "link", "image_link", "price", "brand", "google_product_category",
              "product_type", "availability", "condition"]


def write(path: Path, header: list[str], rows: list[list[str]], *, delimiter: str = ",",
          encoding: str = "utf-8") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    (path.parent / "red.png").write_bytes(png("red"))
    (path.parent / "blue.png").write_bytes(png("blue"))
    with open(path, "w", newline="", encoding=encoding) as f:
        w = csv.writer(f, delimiter=delimiter)
        w.writerow(header)
        w.writerows(rows)
    return path


def make_engine(tmp_path: Path) -> Engine:
    return Engine(EngineConfig(data_dir=tmp_path / "data"), text_encoder=FakeTextEncoder(),
                  image_encoder=FakeImageEncoder())


@pytest.mark.parametrize(("text", "value"), [
    ("81.70 USD", 81.70), ("USD 81.70", 81.70), ("$1,299.00", 1299.0), ("€ 1.299,00", 1299.0),
    ("12,50", 12.5), ("12,50 EUR", 12.5), ("1,299", 1299.0), ("1 299,00 zł", 1299.0), ("1\u00a0299,00 €", 1299.0),
    ("1.234.567", 1234567.0), ("19.99", 19.99), ("R$ 5,00", 5.0), ("CHF 1'299.50", 1299.5), ("¥3999", 3999.0),
    ("4,5", 4.5), ("7", 7.0),
])
def test_amounts_as_feeds_write_them(text, value) -> None:
    assert float(amount_text(text)) == pytest.approx(value)


@pytest.mark.parametrize("text", ["cheap", "10-20", "nan", "", "USD"])
def test_text_that_is_no_amount_stays_unreadable(text) -> None:
    with pytest.raises(ValueError):
        float(amount_text(text))


def test_a_decimal_comma_is_not_read_as_thousands() -> None:
    """"12,50" was read as 1250 before: a European feed's prices came out 100x too high, silently."""
    row = {"id": "a", "title": "Pan", "price": "12,50 €", "rating": "4,5"}
    product, _ = to_product(row, GENERIC, Path("."))
    assert (product.price, product.rating) == (12.5, 4.5)
    with pytest.raises(RowError, match=r"bad price in column price: 'twelve' is not a number"):
        to_product({**row, "price": "twelve"}, GENERIC, Path("."))


def test_a_google_merchant_center_feed_indexes_without_a_map(tmp_path) -> None:
    path = write(tmp_path / "feed" / "products.tsv", GMC_HEADER, [
        ["SKU-00a1", "Red Enamel Pan", "", "https://shop.example/p/1", "red.png", "15.00 USD", "Acme",
         "Home & Garden > Kitchen & Dining", "Home > Kitchen > Pans", "in stock", "new"],
        ["SKU-00b2", "Blue Mug", "", "https://shop.example/p/2", "blue.png", "4.50 USD", "Acme",
         "Home & Garden > Kitchen & Dining", "Home > Kitchen > Mugs", "in stock", "new"],
    ], delimiter="\t")
    eng = make_engine(tmp_path)
    rep = index_catalog(path, engine=eng, progress=False)
    assert (rep.accepted, rep.rejected) == (2, [])
    pan = asyncio.run(eng.get("SKU-00a1"))
    assert (pan.price, pan.category, pan.image_ref) == (15.0, "Home/Kitchen/Pans", "red.png")
    assert pan.attributes["availability"] == "in stock"  # unmapped columns stay attributes
    assert asyncio.run(eng.search(Query(image=png("blue"), k=1))).hits[0].id == "SKU-00b2"
    asyncio.run(eng.close(snapshot=False))


@pytest.mark.parametrize("delimiter", [";", "\t", "|", ","])
def test_a_csv_export_is_read_with_its_own_separator(tmp_path, delimiter) -> None:
    path = write(tmp_path / "feed" / "products.csv", ["id", "title", "price", "image"],
                 [["a1", "Red Pan, large", "12,50", "red.png"], ["b2", "Blue Mug", "4,00", "blue.png"]],
                 delimiter=delimiter)
    assert csv_delimiter(path) == delimiter
    assert header_of(path) == ["id", "title", "price", "image"]
    eng = make_engine(tmp_path)
    rep = index_catalog(path, engine=eng, progress=False)
    assert (rep.accepted, rep.rejected) == (2, [])
    pan = asyncio.run(eng.get("a1"))
    assert (pan.title, pan.price) == ("Red Pan, large", 12.5)  # the quoted comma stays in the title
    asyncio.run(eng.close(snapshot=False))


@pytest.mark.parametrize("encoding, line", [("cp1252", 3), ("gbk", 3)])
def test_a_file_that_is_not_utf8_is_refused_before_anything_is_stored(tmp_path, capsys, encoding, line) -> None:
    path = write(tmp_path / "feed" / "products.csv", ["id", "title", "image"],
                 [["a1", "Plain Pan", "red.png"], ["b2", "Café Mug – blue" if encoding == "cp1252" else "蓝色马克杯",
                                                   "blue.png"]], encoding=encoding)
    with pytest.raises(InvalidInput, match=rf"products.csv is not UTF-8 text: byte 0x[0-9a-f]{{2}} on line {line}"):
        header_of(path)
    eng = make_engine(tmp_path)
    with pytest.raises(InvalidInput, match="save the file as UTF-8"):
        index_catalog(path, engine=eng, progress=False)
    with pytest.raises(NotFound):
        asyncio.run(eng.get("a1"))  # the good first row was not stored either
    asyncio.run(eng.close(snapshot=False))
    code = main(["index", str(path), "--data", str(tmp_path / "d"), "--models", str(tmp_path / "no-models")])
    err = capsys.readouterr().err
    assert code == 2 and "is not UTF-8 text" in err and "Traceback" not in err


def test_a_utf8_file_with_a_byte_order_mark_is_read(tmp_path) -> None:
    path = write(tmp_path / "feed" / "products.csv", ["id", "title"], [["a1", "红色连衣裙"]], encoding="utf-8-sig")
    assert header_of(path) == ["id", "title"]


def test_a_photo_named_by_url_is_refused_with_what_to_do(tmp_path) -> None:
    row = {"id": "a1", "title": "Pan", "image_link": "https://cdn.example/pan.jpg"}
    with pytest.raises(RowError) as exc:
        to_product(row, GENERIC, tmp_path)
    assert exc.value.field == "image" and exc.value.id == "a1"
    assert "column image_link is a URL (https://cdn.example/pan.jpg)" in exc.value.reason
    assert "does not download" in exc.value.reason and "--map image=COLUMN" in exc.value.reason


def test_the_first_photo_of_a_json_list_is_the_products(tmp_path) -> None:
    (tmp_path / "red.png").write_bytes(png("red"))
    product, image = to_product({"id": "a1", "title": "Pan", "image": '["red.png", "blue.png"]'}, GENERIC, tmp_path)
    assert image == tmp_path / "red.png" and product.image_ref == "red.png"
    assert first_image_ref(["x.jpg", "y.jpg"]) == "x.jpg" and first_image_ref("[]") is None
    assert first_image_ref("[not json") == "[not json"
