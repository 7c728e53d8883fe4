"""Feed files as merchants export them: a Google Merchant Center TSV ("15.00 USD" prices, product_type paths,
image_link), semicolon-separated CSV, decimal commas, non-UTF-8 files, photos named by URL or in a JSON list
an RSS/Atom XML feed, gzip-compressed files (fake encoders; engine/feed_files.py, feed_values.py, catalog_io.py)."""

from __future__ import annotations

import asyncio
import csv
import gzip
import json
from pathlib import Path

import pytest
from fake_encoders import FakeImageEncoder, FakeTextEncoder, png

from kuamo.cli import main
from kuamo.engine.catalog_io import GENERIC, RowError, mapping_for, to_product
from kuamo.engine.catalog_map import CatalogConfig, check_config
from kuamo.engine.engine import Engine, EngineConfig
from kuamo.engine.errors import InvalidInput, NotFound
from kuamo.engine.feed_files import csv_delimiter, header_of
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
    ("4,5", 4.5), ("7", 7.0), ("Rs. 1,299", 1299.0), ("₹ 1,299.50", 1299.5), (".99", 0.99), ("$.99", 0.99),
    ("руб. 1 299", 1299.0), ("\u22125", -5.0), ("-3.5", -3.5),
])
def test_amounts_as_feeds_write_them(text, value) -> None:
    assert float(amount_text(text)) == pytest.approx(value)


@pytest.mark.parametrize("text", ["cheap", "10-20", "", "USD", "cheap 5", "5 dollars", "4.5 stars"])
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
    for bad in ("nan", "-1 USD", "inf"):
        with pytest.raises(RowError, match=r"bad price in column price"):
            to_product({**row, "price": bad}, GENERIC, Path("."))


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
    assert "kuamo index --fetch-photos" in exc.value.reason and "--map image=COLUMN" in exc.value.reason


def test_the_first_photo_of_a_json_list_is_the_products(tmp_path) -> None:
    (tmp_path / "red.png").write_bytes(png("red"))
    product, image = to_product({"id": "a1", "title": "Pan", "image": '["red.png", "blue.png"]'}, GENERIC, tmp_path)
    assert image == tmp_path / "red.png" and product.image_ref == "red.png"
    assert first_image_ref(["x.jpg", "y.jpg"]) == "x.jpg" and first_image_ref("[]") is None
    assert first_image_ref("[not json") == "[not json"


GMC_XML = """<?xml version="1.0" encoding="{enc}"?>
<rss version="2.0" xmlns:g="http://base.google.com/ns/1.0">
<channel><title>Shop</title><link>https://shop.example</link>
<item>
  <g:id>SKU-00a1</g:id><title>Red Enamel Pan</title><link>https://shop.example/p/1</link>
  <g:price>15.00 USD</g:price><g:image_link>red.png</g:image_link>
  <g:additional_image_link>blue.png</g:additional_image_link>
  <g:product_type>Home &gt; Kitchen &gt; Pans</g:product_type><g:product_type>Sale</g:product_type>
  <g:shipping><g:country>US</g:country><g:price>4.95 USD</g:price></g:shipping>
  <g:brand>Acme</g:brand>
</item>
<item>
  <g:id>SKU-00b2</g:id><title>{mug}</title><g:price>4,50 EUR</g:price><g:image_link>blue.png</g:image_link>
  <g:product_type>Home &gt; Kitchen &gt; Mugs</g:product_type>
</item>
</channel></rss>
"""


@pytest.mark.parametrize("compressed", [False, True])
@pytest.mark.parametrize("encoding", ["utf-8", "iso-8859-1"])
def test_a_merchant_center_xml_feed_indexes_without_a_map(tmp_path, compressed, encoding) -> None:
    """An RSS 2.0 feed with the g: namespace: one product per <item>, its declared encoding honoured; a
    repeated element keeps the first value, a nested one (shipping) is left out; also gzip-compressed."""
    root = tmp_path / "feed"
    root.mkdir()
    (root / "red.png").write_bytes(png("red"))
    (root / "blue.png").write_bytes(png("blue"))
    body = GMC_XML.format(enc=encoding, mug="Tasse bleue à café").encode(encoding)
    path = root / ("feed.xml.gz" if compressed else "feed.xml")
    path.write_bytes(gzip.compress(body) if compressed else body)
    assert {"id", "title", "price", "image_link", "product_type", "brand"} <= set(header_of(path))
    assert "shipping" not in header_of(path)
    eng = make_engine(tmp_path)
    rep = index_catalog(path, engine=eng, progress=False)
    assert (rep.accepted, rep.rejected) == (2, [])
    pan, mug = asyncio.run(eng.get("SKU-00a1")), asyncio.run(eng.get("SKU-00b2"))
    assert (pan.price, pan.category, pan.image_ref, pan.brand) == (15.0, "Home/Kitchen/Pans", "red.png", "Acme")
    assert (mug.title, mug.price, mug.category) == ("Tasse bleue à café", 4.5, "Home/Kitchen/Mugs")
    asyncio.run(eng.close(snapshot=False))


def test_a_broken_xml_feed_keeps_the_items_before_and_reports_the_rest(tmp_path) -> None:
    path = tmp_path / "feed.xml"
    path.write_text(GMC_XML.format(enc="utf-8", mug="Mug").split("<item>\n  <g:id>SKU-00b2")[0] + "<item><g:id>x<")
    (tmp_path / "red.png").write_bytes(png("red"))
    (tmp_path / "blue.png").write_bytes(png("blue"))
    eng = make_engine(tmp_path)
    rep = index_catalog(path, engine=eng, progress=False)
    assert rep.accepted == 1 and len(rep.rejected) == 1
    assert rep.rejected[0].row == 2 and "the XML stops parsing after 1 items" in rep.rejected[0].reason
    asyncio.run(eng.close(snapshot=False))


def test_a_gzipped_csv_is_read_and_checked_like_a_plain_one(tmp_path) -> None:
    plain = write(tmp_path / "feed" / "products.csv", ["id", "title", "price", "image"],
                  [["a1", "Red Pan", "12,50", "red.png"]], delimiter=";")
    packed = plain.with_name("products.csv.gz")
    packed.write_bytes(gzip.compress(plain.read_bytes()))
    assert csv_delimiter(packed) == ";" and header_of(packed) == ["id", "title", "price", "image"]
    eng = make_engine(tmp_path)
    assert index_catalog(packed, engine=eng, progress=False).accepted == 1
    assert asyncio.run(eng.get("a1")).price == 12.5
    asyncio.run(eng.close(snapshot=False))
    bad = plain.with_name("bad.csv.gz")
    bad.write_bytes(gzip.compress("id,title\na1,Café\n".encode("cp1252")))
    with pytest.raises(InvalidInput, match=r"bad\.csv\.gz is not UTF-8 text: byte 0xe9 on line 2"):
        header_of(bad)
    truncated = plain.with_name("cut.csv.gz")
    truncated.write_bytes(gzip.compress(plain.read_bytes())[:-12])
    with pytest.raises(InvalidInput, match=r"cut\.csv\.gz cannot be read"):
        header_of(truncated)


@pytest.mark.parametrize("name", ["feed.xlsx", "feed.parquet.gz", "feed", "feed.gz"])
def test_an_unknown_format_names_the_ones_read(tmp_path, name) -> None:
    path = tmp_path / name
    path.write_bytes(b"x")
    with pytest.raises(InvalidInput, match=r"unknown catalog format .*\.csv, \.tsv, \.jsonl, \.xml"):
        header_of(path)


def test_column_names_match_whatever_their_case(tmp_path) -> None:
    """A spreadsheet export's "ID", " Title ", "Price", "Image_Link" are the generic id, title, price and photo;
    a --map names its column exactly."""
    path = write(tmp_path / "feed" / "products.csv", ["ID", " Title ", "Price", "Image_Link", "Colour"],
                 [["a1", "Red Pan", "12.50", "red.png", "red"]])
    eng = make_engine(tmp_path)
    rep = index_catalog(path, engine=eng, progress=False)
    assert (rep.accepted, rep.rejected) == (1, [])
    pan = asyncio.run(eng.get("a1"))
    assert (pan.title, pan.price, pan.image_ref, pan.attributes) == ("Red Pan", 12.5, "red.png", {"Colour": "red"})
    asyncio.run(eng.close(snapshot=False))
    with pytest.raises(InvalidInput, match="the column map names columns the catalog does not have: title=title"):
        mapping_for(check_config(CatalogConfig(map={"title": "title"})), header_of(path))


@pytest.mark.parametrize("batch_size", [1, 256])
def test_the_first_row_with_an_id_is_indexed_wherever_the_repeat_falls(tmp_path, batch_size) -> None:
    """A repeated id is rejected naming the row that had it, whether the repeat lands in the same upsert batch
    or a later one (before: "appears twice in one upsert" in one batch, a silent overwrite across batches);
    "7" and 7 are one id. A Ray run does the same (engine/ray_ingest.py read_blocks)."""
    path = write(tmp_path / "feed" / "products.csv", ["id", "title", "image"],
                 [["a1", "Red Pan", "red.png"], ["b2", "Blue Mug", "blue.png"], ["a1", "Red Pan v2", "blue.png"],
                  ["7", "Kettle", ""], ["7", "Kettle again", ""]])
    eng = make_engine(tmp_path)
    rep = index_catalog(path, engine=eng, progress=False, batch_size=batch_size)
    assert rep.accepted == 3
    assert [(r.row, r.id, r.field) for r in rep.rejected] == [(3, "a1", "id"), (5, 7, "id")]
    assert rep.rejected[0].reason == "id 'a1' appears again: row 1 has it already (the first row with an id is indexed)"
    assert asyncio.run(eng.get("a1")).title == "Red Pan"
    asyncio.run(eng.close(snapshot=False))


@pytest.mark.parametrize("fmt", ["jsonl", "xml"])
def test_a_column_only_later_rows_carry_can_be_mapped(tmp_path, fmt) -> None:
    """JSONL lines and XML items may each carry other keys: the first row without a brand must not make
    --map brand=maker a column the catalog "does not have"."""
    rows = [{"id": "a1", "title": "Red Pan"}, {"id": "b2", "title": "Blue Mug", "maker": "Acme"}]
    path = tmp_path / f"feed.{fmt}"
    if fmt == "jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    else:
        items = "".join("<item>" + "".join(f"<g:{k}>{v}</g:{k}>" for k, v in r.items()) + "</item>" for r in rows)
        path.write_text(f'<rss xmlns:g="http://base.google.com/ns/1.0"><channel>{items}</channel></rss>')
    assert header_of(path) == ["id", "title", "maker"]
    eng = make_engine(tmp_path)
    rep = index_catalog(path, engine=eng, progress=False, catalog=CatalogConfig(map={"brand": "maker"}))
    assert rep.accepted == 2 and asyncio.run(eng.get("b2")).brand == "Acme"
    asyncio.run(eng.close(snapshot=False))


SHOPIFY_HEADER = ["Handle", "Title", "Body (HTML)", "Vendor", "Product Category", "Type", "Tags", "Published",
                  "Option1 Name", "Option1 Value", "Variant SKU", "Variant Grams", "Variant Inventory Qty",
                  "Variant Price", "Variant Compare At Price", "Image Src", "Image Position", "Image Alt Text",
                  "Gift Card", "SEO Title", "Variant Image", "Status"]


def shopify_row(**cells: str) -> list[str]:
    return [cells.get(c.replace(" ", "_").replace("(", "").replace(")", "").lower(), "") for c in SHOPIFY_HEADER]


def shopify_export(tmp_path: Path) -> Path:
    """Shopify's product CSV as the admin exports it: the product on its first row, one more row per variant
    (Title empty) and per extra photo (only Handle, Image Src, Image Position)."""
    return write(tmp_path / "shop" / "products_export_1.csv", SHOPIFY_HEADER, [
        shopify_row(handle="red-tee", title="Red Tee", body_html="<p>Soft cotton <strong>tee</strong> &amp; more</p>",
                    vendor="Acme", product_category="Apparel & Accessories > Clothing > Shirts & Tops", type="T-Shirt",
                    tags="cotton, summer", published="TRUE", option1_name="Size", option1_value="S",
                    variant_price="19.99", image_src="red.png", image_position="1", status="active",
                    variant_sku="TEE-S"),
        shopify_row(handle="red-tee", option1_value="M", variant_price="21.99", variant_sku="TEE-M"),
        shopify_row(handle="red-tee", option1_value="L", variant_price="21.99", variant_image="blue.png",
                    variant_sku="TEE-L"),
        shopify_row(handle="red-tee", image_src="blue.png", image_position="2"),
        shopify_row(handle="blue-mug", title="Blue Mug", vendor="Acme", type="Mug", variant_price="4.50",
                    image_src="blue.png", image_position="1", status="active", option1_name="Title",
                    option1_value="Default Title"),
        shopify_row(handle="red-tee", title="Red Tee (again)", variant_price="9.00", image_src="red.png"),
    ])


def test_a_shopify_export_indexes_one_product_per_handle(tmp_path) -> None:
    path = shopify_export(tmp_path)
    eng = make_engine(tmp_path)
    rep = index_catalog(path, engine=eng, progress=False)
    assert (rep.mapping, rep.rows_read, rep.accepted, rep.continuation_rows) == ("shopify", 6, 2, 3)
    # a later row with the handle and a title of its own is another product under a taken id, not a variant
    assert [(r.row, r.id, r.field) for r in rep.rejected] == [(6, "red-tee", "id")]
    tee = asyncio.run(eng.get("red-tee"))
    assert (tee.title, tee.brand, tee.price, tee.image_ref) == ("Red Tee", "Acme", 19.99, "red.png")
    assert tee.description == "Soft cotton tee & more"  # Body (HTML) as text
    assert tee.category == "Apparel & Accessories/Clothing/Shirts & Tops"
    assert tee.attributes["Tags"] == "cotton, summer" and "Variant Grams" not in tee.attributes
    # the variant rows' sizes and SKUs are the product's (and its lexical text: a shopper's "tee L" or a SKU)
    assert (tee.attributes["Size"], tee.attributes["SKU"]) == ("S, M, L", "TEE-S TEE-M TEE-L")
    hits = asyncio.run(eng.search(Query(text="TEE-M", k=1, weights={"lexical": 1.0}, explain=True))).hits
    assert hits[0].id == "red-tee" and hits[0].explanation.contributions["lexical"] > 0
    mug = asyncio.run(eng.get("blue-mug"))
    assert (mug.category, mug.price) == ("Mug", 4.5)  # no Product Category: the Type
    assert "Title" not in mug.attributes and "SKU" not in mug.attributes  # Shopify's "no options" variant
    assert rep.to_dict()["continuation_rows"] == 3
    asyncio.run(eng.close(snapshot=False))


def test_drafts_and_unpublished_products_are_left_out_and_deleted_when_they_become_so(tmp_path) -> None:
    rows = [shopify_row(handle="red-tee", title="Red Tee", variant_price="19.99", image_src="red.png",
                        published="TRUE", status="active"),
            shopify_row(handle="blue-mug", title="Blue Mug", variant_price="4.50", image_src="blue.png",
                        published="TRUE", status="active")]
    path = write(tmp_path / "shop" / "products_export.csv", SHOPIFY_HEADER, [
        *rows,
        shopify_row(handle="old-cap", title="Old Cap", variant_price="5", image_src="red.png", status="archived"),
        shopify_row(handle="old-cap", option1_value="L", variant_price="5"),  # its variant: still a continuation
        shopify_row(handle="new-pan", title="New Pan", variant_price="30", image_src="blue.png", status="Draft"),
        shopify_row(handle="hid-jar", title="Hidden Jar", variant_price="3", published="FALSE", status="active")])
    eng = make_engine(tmp_path)
    rep = index_catalog(path, engine=eng, progress=False)
    assert (rep.accepted, rep.continuation_rows, rep.rejected) == (2, 1, [])
    assert rep.to_dict()["unlisted"] == {"rows": 3, "deleted": 0}
    assert stored(eng) == {"red-tee", "blue-mug"}
    # the next export has the mug as a draft: its row deletes the stored mug, no --prune needed
    rows[1][SHOPIFY_HEADER.index("Status")] = "draft"
    write(path, SHOPIFY_HEADER, rows)
    again = index_catalog(path, engine=eng, progress=False)
    assert (again.unchanged, again.unlisted) == (1, {"rows": 1, "deleted": 1})
    assert stored(eng) == {"red-tee"}
    asyncio.run(eng.close(snapshot=False))


def test_an_unlisted_row_deletes_nothing_after_a_failed_run(tmp_path) -> None:
    path = write(tmp_path / "shop" / "products_export.csv", SHOPIFY_HEADER, [
        shopify_row(handle="red-tee", title="Red Tee", variant_price="19.99", image_src="red.png")])
    eng = make_engine(tmp_path)
    assert index_catalog(path, engine=eng, progress=False).accepted == 1
    write(path, SHOPIFY_HEADER, [
        shopify_row(handle="red-tee", title="Red Tee", variant_price="19.99", image_src="red.png", status="draft"),
        shopify_row(handle="bad", title="Bad", variant_price="lots", image_src="red.png"),
        shopify_row(handle="worse", title="Worse", variant_price="many", image_src="red.png")])
    rep = index_catalog(path, engine=eng, progress=False, catalog=CatalogConfig(max_rejected_share=0.5))
    assert rep.failed(0.5) and rep.unlisted["deleted"] == 0 and "nothing deleted" in rep.unlisted["refused"]
    assert stored(eng) == {"red-tee"}
    asyncio.run(eng.close(snapshot=False))


def stored(eng: Engine) -> set:
    return set(eng.backend.owners(list(eng.backend.keys())).values())


WOO_HEADER = ["ID", "Type", "SKU", "Name", "Published", "Is featured?", "Visibility in catalog", "Short description",
              "Description", "In stock?", "Sale price", "Regular price", "Categories", "Tags", "Images", "Parent",
              "Attribute 1 name", "Attribute 1 value(s)", "Attribute 1 visible", "Attribute 2 name",
              "Attribute 2 value(s)"]


def woo_row(**cells: str) -> list[str]:
    return [cells.get(c.replace(" ", "_").replace("?", "").replace("(s)", "s").lower(), "") for c in WOO_HEADER]


def woocommerce_export(tmp_path: Path) -> Path:
    """WooCommerce's product CSV export (in ID order): a simple product, a variable one on its row (its options
    listed there, no price) and its variations on rows of their own naming it by its SKU in Parent (one of them
    made later, below other products), a draft, a private product, one hidden from the catalog, and a variable
    product without a SKU, which its variations name "id:<ID>"."""
    return write(tmp_path / "woo" / "wc-product-export-6-12-2026.csv", WOO_HEADER, [
        woo_row(id="11", type="simple", sku="MUG-1", name="Blue Mug", published="1", visibility_in_catalog="visible",
                description="<p>Stoneware &amp; glaze</p>", in_stock="1", regular_price="4.50",
                categories="Kitchen > Mugs\\, Cups, Sale", images="blue.png, red.png"),
        woo_row(id="12", type="variable", sku="TEE", name="Red Tee", published="1", visibility_in_catalog="visible",
                short_description="Soft cotton", categories="Clothing > Tshirts", images="red.png",
                attribute_1_name="Size", attribute_1_values="S, M, L", attribute_1_visible="1",
                attribute_2_name="Color", attribute_2_values="Red"),
        woo_row(id="13", type="variation", sku="TEE-S", name="Red Tee - S", published="1", regular_price="19.99",
                parent="TEE", attribute_1_name="Size", attribute_1_values="S"),
        woo_row(id="14", type="variation", sku="TEE-M", name="Red Tee - M", published="1", regular_price="21.99",
                parent="TEE", attribute_1_name="Size", attribute_1_values="M"),
        woo_row(id="15", type="simple", name="Next Season Pan", published="-1", regular_price="30", images="red.png"),
        woo_row(id="16", type="simple", name="Staff Jar", published="0", regular_price="3", images="blue.png"),
        woo_row(id="17", type="simple", name="Hidden Lid", published="1", visibility_in_catalog="hidden",
                regular_price="2", images="blue.png"),
        woo_row(id="18", type="simple, virtual", sku="GIFT", name="Gift Card", published="1", sale_price="20",
                regular_price="25"),
        woo_row(id="19", type="variable", name="Plain Hoodie", published="1", images="blue.png",
                attribute_1_name="Size", attribute_1_values="M, L"),
        woo_row(id="20", type="variation", sku="HOOD-M", name="Plain Hoodie - M", published="1", sale_price="30",
                regular_price="35", parent="id:19"),
        woo_row(id="21", type="variation", name="Plain Hoodie - L", published="1", regular_price="33",
                parent="id:19"),
        woo_row(id="22", type="variation", sku="TEE-L", name="Red Tee - L", published="1", regular_price="17.50",
                parent="TEE", attribute_1_name="Size", attribute_1_values="L"),
    ])


def test_a_woocommerce_export_indexes_products_not_variations_or_drafts(tmp_path) -> None:
    path = woocommerce_export(tmp_path)
    eng = make_engine(tmp_path)
    rep = index_catalog(path, engine=eng, progress=False)
    assert (rep.mapping, rep.rows_read, rep.accepted, rep.continuation_rows, rep.rejected) == (
        "woocommerce", 12, 4, 5, [])
    assert rep.unlisted == {"rows": 3, "deleted": 0}  # the draft, the private product and the hidden one
    assert stored(eng) == {11, 12, 18, 19}  # WooCommerce's ids are numbers
    mug = asyncio.run(eng.get(11))
    # the first category and the first photo of the lists; a category named with a comma (escaped) stays whole
    assert (mug.category, mug.image_ref, mug.price) == ("Kitchen/Mugs, Cups", "blue.png", 4.5)
    assert mug.description == "Stoneware & glaze" and mug.attributes["SKU"] == "MUG-1"
    tee = asyncio.run(eng.get(12))
    assert (tee.attributes["Size"], tee.attributes["Color"], tee.description) == ("S, M, L", "Red", "Soft cotton")
    # a variable product's price is its variations' lowest (the one made later too), its SKUs theirs with its own
    assert (tee.price, tee.attributes["SKU"]) == (17.5, "TEE TEE-S TEE-M TEE-L")
    hoodie = asyncio.run(eng.get(19))
    assert (hoodie.price, hoodie.attributes["SKU"]) == (30.0, "HOOD-M")  # named "id:19"; a sale price counts
    card = asyncio.run(eng.get(18))
    assert (card.price, card.image_ref, card.title) == (20.0, None, "Gift Card")  # on sale; no photo: text only
    assert main_mapping_choices_match()
    asyncio.run(eng.close(snapshot=False))


def test_woocommerce_rows_that_are_garbage_are_rejected_naming_the_column(tmp_path) -> None:
    path = write(tmp_path / "woo" / "wc-product-export.csv", WOO_HEADER, [
        woo_row(type="simple", name="No Id", published="1", regular_price="4"),
        woo_row(id="21", type="simple", name="Bad Price", published="1", regular_price="a lot"),
        woo_row(id="22", type="simple", published="1", regular_price="4"),  # no name and no photo
        woo_row(id="23", type="simple", name="Photo Outside", published="1", images="../../etc/passwd"),
        woo_row(id="24", type="variation, downloadable", name="A Variation", published="1")])
    eng = make_engine(tmp_path)
    rep = index_catalog(path, engine=eng, progress=False)
    got = {(r.id, r.field): r.reason for r in rep.rejected}
    assert (rep.accepted, rep.continuation_rows, len(rep.rejected)) == (0, 1, 4)
    assert "tried columns ID" in got[(None, "id")]
    assert "column Regular price" in got[(21, "price")]
    assert "tried title columns Name" in got[(22, "title")]
    assert "without '..'" in got[(23, "image")]
    asyncio.run(eng.close(snapshot=False))


def main_mapping_choices_match() -> bool:
    from kuamo.cli import MAPPING_CHOICES
    from kuamo.engine.catalog_io import MAPPINGS

    return MAPPING_CHOICES == MAPPINGS


def test_variant_rows_are_rejected_as_repeats_in_a_feed_that_is_not_shopify(tmp_path) -> None:
    path = write(tmp_path / "feed.csv", ["id", "title", "image"], [
        ["a1", "Pan", "red.png"], ["a1", "", "blue.png"], ["b2", "Mug", "blue.png"]])
    eng = make_engine(tmp_path)
    rep = index_catalog(path, engine=eng, progress=False)
    assert (rep.accepted, rep.continuation_rows, [(r.id, r.field) for r in rep.rejected]) == (2, 0, [("a1", "id")])
    asyncio.run(eng.close(snapshot=False))


@pytest.mark.parametrize(("cell", "text"), [
    ("<p>Soft <b>cotton</b></p><ul><li>machine wash</li></ul>", "Soft cotton machine wash"),
    ("Fish &amp; chips <br/>for two", "Fish & chips for two"),
    ("size < 5 and > 3", "size < 5 and > 3"),  # no tag: left as written
])
def test_html_descriptions_become_text(tmp_path, cell, text) -> None:
    product, _ = to_product({"id": "d1", "title": "t", "description": cell}, GENERIC, tmp_path)
    assert product.description == text


def test_woocommerce_variations_beyond_the_limit_or_with_a_bad_price_give_none(tmp_path) -> None:
    """--limit reads the first rows in every pass, the variations' too; a variation whose price is not a
    number gives no price (the parent keeps none rather than a wrong one)."""
    path = write(tmp_path / "woo" / "wc-product-export.csv", WOO_HEADER, [
        woo_row(id="30", type="variable", sku="CAP", name="Cap", published="1"),
        woo_row(id="31", type="variation", sku="CAP-1", name="Cap - 1", published="1", regular_price="n/a",
                parent="CAP"),
        woo_row(id="32", type="variation", sku="CAP-2", name="Cap - 2", published="1", regular_price="9",
                parent="CAP")])
    eng = make_engine(tmp_path)
    rep = index_catalog(path, engine=eng, progress=False, limit=2)
    cap = asyncio.run(eng.get(30))
    assert (rep.accepted, cap.price, cap.attributes["SKU"]) == (1, None, "CAP CAP-1")
    index_catalog(path, engine=eng, progress=False)
    cap = asyncio.run(eng.get(30))
    assert (cap.price, cap.attributes["SKU"]) == (9.0, "CAP CAP-1 CAP-2")
    asyncio.run(eng.close(snapshot=False))
