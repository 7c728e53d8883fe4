"""Raw rows -> (Product, image bytes) with the column mappings (engine/feed_files.py reads the files into rows).

Mappings: "fashion" (the Kaggle fashion products.csv), "generic" (obvious e-commerce column names, matched
whatever their case; unknown columns become attributes; Google Merchant Center's among them), "shopify" and
"woocommerce" (the two platforms' product CSV exports, detected by their columns).
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, NamedTuple

from kuamo.engine.catalog_map import CatalogConfig, category_of, check_columns
from kuamo.engine.errors import InvalidInput
from kuamo.engine.feed_values import amount_text, first_image_ref, html_text, is_url
from kuamo.engine.ids import ProductId, canonical_id, row_key
from kuamo.engine.photo_fetch import fetch_failure, photo_name
from kuamo.engine.store import check_owner
from kuamo.engine.types import CATEGORY_SEP, AttrValue, Product, category_leaf

MAPPINGS = ("auto", "fashion", "generic", "shopify", "woocommerce")


class Variations(NamedTuple):
    """What a product's variant rows on rows of their own carry (engine/variations.py)."""

    price: float | None  # the lowest: a shopper sees "from 19.99", and a price filter finds the product
    codes: tuple[str, ...]  # their SKUs


@dataclass(frozen=True, kw_only=True)
class ColumnMapping:
    name: str
    id: tuple[str, ...]
    title: tuple[str, ...]
    description: tuple[str, ...] = ()
    category: tuple[str, ...] = ()  # aliases: the first present column holds the whole path
    category_levels: tuple[str, ...] = ()  # or: one column per level, joined into one path (fashion)
    category_sep: str | None = None  # separator inside a single category column; None = guess (catalog_map)
    category_depth: int | None = None  # keep the first N levels of the path
    brand: tuple[str, ...] = ()
    price: tuple[str, ...] = ()
    rating: tuple[str, ...] = ()
    image: tuple[str, ...] = ()
    image_template: str | None = None  # e.g. "images/{id}.jpg" relative to the catalog file
    image_required: bool = False
    fetched_photos: str | None = None  # folder (in the catalog directory) holding the photos of URL cells
    # a row right below a row with the same id and no title of its own continues that product (Shopify's
    # variant and extra-photo rows): left out, not rejected
    continuation_rows: bool = False
    # (column, values whatever their case) that say the product is not for sale now (a Shopify draft): the row is
    # left out, counted, and its stored product deleted (engine/ingest.py)
    unlisted_when: tuple[tuple[str, tuple[str, ...]], ...] = ()
    # the variant rows' option columns, (column naming the option, column holding the value): each option's
    # values over a product's rows become one attribute named by the option ("Size": "S, M, L"); and the
    # columns of per-variant codes, kept together as the attribute "SKU" (with_variants)
    variant_options: tuple[tuple[str, str], ...] = ()
    variant_codes: tuple[str, ...] = ()
    # (column, token): a row whose column lists the token is one variant of a product another row holds
    # (WooCommerce's Type "variation"): left out and counted with the continuation rows
    variant_row_when: tuple[str, str] | None = None
    # (column naming a variant row's parent, column of a product's own code): WooCommerce's Parent holds the
    # parent's SKU, or "id:<ID>" when it has none. Its variant rows can lie anywhere below it (the export is in
    # ID order), so a pass before the run joins them (engine/variations.py) into `variations`
    variant_parent: tuple[str, str] | None = None
    variations: dict[str, Variations] | None = None  # parent reference -> what its variant rows carry
    list_sep: str | None = None  # image and category cells that list several, first one kept (WooCommerce ",")
    attributes: tuple[str, ...] | None = None  # None = every column not mapped above
    numeric_attributes: tuple[str, ...] = ()  # parsed as numbers
    aliases_first: bool = True  # for tuple fields: the first column present wins

    def mapped_columns(self) -> set[str]:
        cols = set()
        for f in (self.id, self.title, self.description, self.category, self.category_levels, self.brand,
                  self.price, self.rating, self.image):
            cols.update(f)
        return cols


FASHION = ColumnMapping(
    name="fashion", id=("id",), title=("productDisplayName",),
    category_levels=("masterCategory", "subCategory", "articleType"),
    image_template="images/{id}.jpg", image_required=True,
    attributes=("gender", "baseColour", "season", "usage", "year"), numeric_attributes=("year",),
)

GENERIC = ColumnMapping(
    name="generic", id=("id", "product_id", "sku_id", "item_id"),
    title=("title", "name", "product_name", "productDisplayName"),
    description=("description", "desc", "details"),
    # product_type / google_product_category / image_link: Google Merchant Center's names
    category=("category", "category_path", "categories", "product_type", "google_product_category"),
    brand=("brand", "manufacturer"),
    price=("price", "sale_price", "list_price"), rating=("rating", "stars", "average_rating"),
    image=("image", "image_path", "image_file", "image_ref", "image_link", "image_url"),
    numeric_attributes=("year", "popularity", "reviews", "review_count"),
)


# Shopify's product CSV export: one row per variant and per extra photo, the product's fields on its first row
SHOPIFY = ColumnMapping(
    name="shopify", id=("Handle",), title=("Title",), description=("Body (HTML)",),
    category=("Product Category", "Type"), brand=("Vendor",), price=("Variant Price",),
    image=("Image Src", "Variant Image"), attributes=("Type", "Tags", "Status", "Published", "Gift Card"),
    continuation_rows=True, unlisted_when=(("Status", ("draft", "archived")), ("Published", ("false",))),
    variant_options=tuple((f"Option{i} Name", f"Option{i} Value") for i in (1, 2, 3)), variant_codes=("Variant SKU",),
)
# WooCommerce's product CSV export: variable products on one row (their options' values listed there), each
# variation on a row of its own with Type "variation" and a Parent; Published 1 / 0 (private) / -1 (draft)
WOOCOMMERCE = ColumnMapping(
    name="woocommerce", id=("ID",), title=("Name",), description=("Description", "Short description"),
    category=("Categories",), brand=("Brands", "Brand"), price=("Sale price", "Regular price"), image=("Images",),
    attributes=("Type", "SKU", "Tags", "In stock?", "Published"), unlisted_when=(
        ("Published", ("0", "-1")), ("Visibility in catalog", ("hidden",))),
    variant_options=tuple((f"Attribute {i} name", f"Attribute {i} value(s)") for i in range(1, 6)),
    variant_row_when=("Type", "variation"), variant_parent=("Parent", "SKU"), list_sep=",",
)
WOOCOMMERCE_COLUMNS = {"id", "type", "regular price", "parent"}
NO_OPTION = "default title"  # Shopify's Option1 Value for a product without options (Option1 Name "Title")
VARIANTS = "__variants__"  # the row key with_variants adds: {attribute: value} gathered from the variant rows
VARIANT_CODES = "SKU"
MAX_VARIANT_ROWS = 5_000  # rows held for one product (Shopify allows 2,048 variants and 250 photos)
SHOPIFY_COLUMNS = {"handle", "variant price"}  # what tells a Shopify export (auto), whatever their case


def pick_mapping(name: str, columns: list[str]) -> ColumnMapping:
    if name not in MAPPINGS:
        raise InvalidInput(f"mapping must be one of {MAPPINGS}, got {name!r}", field="mapping")
    if name == "fashion" or (name == "auto" and {"productDisplayName", "masterCategory"} <= set(columns)):
        return FASHION
    folded = {c.strip().casefold() for c in columns}
    if name == "shopify" or (name == "auto" and SHOPIFY_COLUMNS <= folded):
        return SHOPIFY
    if name == "woocommerce" or (name == "auto" and WOOCOMMERCE_COLUMNS <= folded):
        return WOOCOMMERCE
    return GENERIC


ALIAS_FIELDS = ("id", "title", "description", "category", "category_levels", "brand", "price", "rating", "image",
                 "attributes", "numeric_attributes")


def _as_written(m: ColumnMapping, columns: list[str]) -> ColumnMapping:
    """The mapping with its column names as this file writes them: "Title", " Price " and "IMAGE_LINK" are
    title, price and image_link (spreadsheet exports capitalise); a name the file has exactly wins."""
    exact = set(columns)
    written: dict[str, str] = {}
    for c in columns:
        written.setdefault(c.strip().casefold(), c)

    def name(alias: str) -> str:
        return alias if alias in exact else written.get(alias.casefold(), alias)

    return dataclasses.replace(m, **{f: tuple(map(name, aliases)) for f in ALIAS_FIELDS
                                     if (aliases := getattr(m, f)) is not None},
                               unlisted_when=tuple((name(c), values) for c, values in m.unlisted_when),
                               variant_options=tuple((name(a), name(b)) for a, b in m.variant_options),
                               variant_codes=tuple(map(name, m.variant_codes)),
                               variant_row_when=None if m.variant_row_when is None else (
                                   name(m.variant_row_when[0]), m.variant_row_when[1]),
                               variant_parent=None if m.variant_parent is None else (
                                   name(m.variant_parent[0]), name(m.variant_parent[1])))


def mapping_for(cfg: CatalogConfig, columns: list[str]) -> ColumnMapping:
    """The named (or detected) mapping, its column names matched to the file's whatever their case, with the
    configured columns (exact names) and category-path settings on top."""
    m = pick_mapping(cfg.mapping, columns)
    m = _as_written(m, columns)
    check_columns(cfg.map, columns)
    changes: dict[str, Any] = {target: (col,) for target, col in cfg.map.items()}
    if "category" in cfg.map:
        changes["category_levels"] = ()
    if "image" in cfg.map:
        changes["image_template"] = None
    if changes:
        changes["name"] = f"{m.name}+map"
    m = dataclasses.replace(m, **changes, category_depth=cfg.category_depth)
    return dataclasses.replace(m, category_sep=cfg.category_path) if cfg.category_path else m


class RowError(Exception):
    def __init__(self, field: str, reason: str, id: ProductId | None = None) -> None:
        super().__init__(reason)
        self.field, self.reason, self.id = field, reason, id


def _first_of(row: dict[str, Any], cols: tuple[str, ...]) -> tuple[str, Any]:
    """(column, value) of the first column holding a value, or ("", None)."""
    for c in cols:
        v = row.get(c)
        if v is not None and not (isinstance(v, str) and not v.strip()):
            return c, v
    return "", None


def _first(row: dict[str, Any], cols: tuple[str, ...]) -> Any:
    return _first_of(row, cols)[1]


def row_title(row: dict[str, Any], m: ColumnMapping) -> str:
    """The row's title as to_product reads it ("" when it has none)."""
    return cell_text(row, m.title) or ""


def row_leaf(row: dict[str, Any], m: ColumnMapping) -> str:
    """The row's leaf category as to_product files it ("" when it has none)."""
    return "" if "__error__" in row else category_leaf(_category(row, m, row_title(row, m)))


def price_of(row: dict[str, Any], m: ColumnMapping) -> float | None:
    """The row's price as to_product reads it (RowError when the cell is not a price)."""
    return _number(row, m.price, "price")


def cell_text(row: dict[str, Any], columns: tuple[str, ...]) -> str | None:
    """The first of `columns` holding a value, as text stripped; None when none does (blank cells hold none)."""
    v = _first(row, columns)
    return None if v is None else str(v).strip()


def _number(row: dict[str, Any], cols: tuple[str, ...], field: str, *, lo: float = 0.0,
            hi: float = math.inf) -> float | None:
    col, v = _first_of(row, cols)
    if v is None:
        return None
    try:
        f = float(amount_text(v) if isinstance(v, str) else v)
    except (TypeError, ValueError):
        raise RowError(field, f"bad {field} in column {col}: {v!r} is not a number") from None
    if not math.isfinite(f) or not lo <= f <= hi:
        raise RowError(field, f"bad {field} in column {col}: {f} is outside {lo}..{hi}")
    return f


def _attr(v: Any, numeric: bool) -> AttrValue | None:
    if v is None or (isinstance(v, str) and not v.strip()):
        return None
    if numeric:
        try:
            f = float(v)
        except (TypeError, ValueError):
            return str(v).strip()
        return int(f) if f.is_integer() else f
    if isinstance(v, bool | int | float):
        return v if not isinstance(v, float) or math.isfinite(v) else None
    return str(v).strip()


def _inside(root: Path, ref: str, pid: ProductId) -> Path:
    """The image file a row names, which must lie inside the catalog directory: a catalog is data, and must
    not make the indexer read (and serve the likeness of) /etc/passwd or another tenant's files."""
    rel = Path(ref)
    if "\x00" in ref or rel.is_absolute() or ".." in rel.parts:
        raise RowError("image", f"image path {ref!r} must be relative to the catalog directory, without '..'", pid)
    path = root / rel
    try:
        inside = path.resolve().is_relative_to(root.resolve())
    except (OSError, RuntimeError) as exc:  # a symlink loop
        raise RowError("image", f"image path {ref!r} cannot be resolved: {exc}", pid) from None
    if not inside:
        raise RowError("image", f"image path {ref!r} leads outside the catalog directory (a symlink)", pid)
    return path


def _image_cell(row: dict[str, Any], m: ColumnMapping) -> tuple[str, str | None]:
    """(column, the photo it names: the cell, or the first of a JSON list), or ("", None) without one."""
    col, cell = _first_of(row, m.image)
    if cell is not None and m.list_sep is not None:
        cell = first_listed(str(cell), m.list_sep)
    return col, first_image_ref(cell) if cell is not None else None


def photo_url(row: dict[str, Any], m: ColumnMapping) -> str | None:
    """The URL of the row's photo when its image cell names one (what --fetch-photos downloads), else None."""
    ref = _image_cell(row, m)[1]
    return ref.strip() if ref is not None and is_url(ref) else None


def _fetched(root: Path, m: ColumnMapping, column: str, url: str, pid: ProductId) -> Path:
    """The local copy of a photo named by URL (engine/photo_fetch.py put it there), or why there is none."""
    if m.fetched_photos is None:
        raise RowError("image", f"image in column {column} is a URL ({url[:80]}): download the photos with "
                       "kuamo index --fetch-photos (into the catalog directory), or map a column of local paths "
                       "(--map image=COLUMN)", pid)
    folder = root / m.fetched_photos
    path = folder / photo_name(url)
    if path.is_file():
        return path
    failure = fetch_failure(folder, url)
    raise RowError("image", f"photo {url[:120]} could not be fetched: {failure}" if failure else
                   f"photo {url[:120]} has not been fetched (run kuamo index --fetch-photos)", pid)


def _tried(cols: tuple[str, ...]) -> str:
    return ", ".join(cols) if cols else "(none)"


def _row_id(row: dict[str, Any], m: ColumnMapping) -> ProductId:
    col, raw = _first_of(row, m.id)
    if raw is None:
        raise RowError("id", f"no id: tried columns {_tried(m.id)} (map one with --map id=COLUMN)")
    try:
        return canonical_id(raw.strip() if isinstance(raw, str) else raw, f"id in column {col}")
    except InvalidInput as exc:
        raise RowError("id", f"bad {exc.message}") from None


def readable_id(row: dict[str, Any], m: ColumnMapping) -> ProductId | None:
    """The row's product id under the mapping, or None when it has none to read (a malformed line, no id
    column, a bad id): to_product says why when the row is ingested."""
    if "__error__" in row:
        return None
    try:
        return _row_id(row, m)
    except RowError:
        return None


def variant_row(row: dict[str, Any], m: ColumnMapping) -> bool:
    """The row is one variant of a product another row holds (ColumnMapping.variant_row_when)."""
    if m.variant_row_when is None:
        return False
    col, token = m.variant_row_when
    v = row.get(col)
    return isinstance(v, str) and token in {t.strip().casefold() for t in v.split(",")}


def first_listed(text: str, sep: str) -> str:
    """The first entry of a cell that lists several, separated by `sep` (a backslash escapes it:
    WooCommerce writes "Shirts\\, Tops" for a category named with a comma)."""
    entry = re.split(rf"(?<!\\){re.escape(sep)}", text, maxsplit=1)[0]
    return entry.replace("\\" + sep, sep).strip()


def is_unlisted(row: dict[str, Any], m: ColumnMapping) -> bool:
    """The row says its product is not for sale now (ColumnMapping.unlisted_when: a Shopify draft)."""
    return any(isinstance(v := row.get(col), str | bool) and str(v).strip().casefold() in values
               for col, values in m.unlisted_when)


def _category(row: dict[str, Any], m: ColumnMapping, title: str) -> str:
    if m.category_levels:
        return CATEGORY_SEP.join(str(row[c]).strip().replace(CATEGORY_SEP, "-") for c in m.category_levels
                                 if _first(row, (c,)) is not None)
    raw = _first(row, m.category)
    if raw is not None and m.list_sep is not None:  # "Clothing > Tshirts, Sale": the first category listed
        raw = first_listed(str(raw), m.list_sep)
    return category_of(raw, sep=m.category_sep, depth=m.category_depth, title=title)


def to_product(row: dict[str, Any], m: ColumnMapping, root: Path) -> tuple[Product, Path | None]:
    """One raw row -> Product and the image file to read (or RowError naming the field)."""
    if "__error__" in row:
        raise RowError("row", row["__error__"])
    pid = _row_id(row, m)
    title = row_title(row, m)
    try:
        price = price_of(row, m)
        rating = _number(row, m.rating, "rating", hi=5.0)
    except RowError as exc:
        exc.id = pid
        raise
    attr_cols = m.attributes if m.attributes is not None else tuple(
        c for c in row if c not in m.mapped_columns() and not c.startswith("__"))
    attributes = {}
    for c in attr_cols:
        v = _attr(row.get(c), c in m.numeric_attributes)
        if v is not None:
            attributes[c] = v
    # a product's sizes, colours and SKUs: gathered over its variant rows (with_variants), or listed on its row
    for k, v in (row[VARIANTS] if VARIANTS in row else dict(_options(row, m, [row]))).items():
        attributes.setdefault(k, v)
    if (joined := _variations_of(row, m, pid)) is not None:
        price = price if price is not None else joined.price
        own = attributes.get(VARIANT_CODES)
        codes = ([str(own)] if own is not None else []) + list(joined.codes)
        if codes:
            attributes[VARIANT_CODES] = " ".join(dict.fromkeys(codes))
    image_path: Path | None = None
    image_col, ref = _image_cell(row, m)
    if ref is not None and is_url(ref):
        image_path = _fetched(root, m, image_col, ref, pid)
    if ref is None and m.image_template:
        ref = m.image_template.format(id=pid)
    if ref is None and not title:  # a photo-only product is fine, a text-only one too; neither is nothing
        raise RowError("title", f"no title and no photo: tried title columns {_tried(m.title)} and image columns "
                       f"{_tried(m.image)} (map them with --map title=COLUMN,image=COLUMN)", pid)
    if ref is not None and image_path is None:
        image_path = _inside(root, str(ref), pid)
        if not image_path.is_file():
            raise RowError("image", f"missing image: {image_path} does not exist", pid)
    elif m.image_required:
        raise RowError("image", f"missing image: the row names no image (tried columns {_tried(m.image)})", pid)
    desc = html_text(_first(row, m.description))
    brand = _first(row, m.brand)
    product = Product(id=pid, title=title, description=str(desc or "").strip(), category=_category(row, m, title),
                      brand=None if brand is None else str(brand).strip(), price=price, rating=rating,
                      attributes=attributes, image_ref=None if ref is None else str(ref))
    return product, image_path


def parent_refs(row: dict[str, Any], m: ColumnMapping, pid: ProductId) -> list[str]:
    """How variant rows name this product in their parent column: its own code, and "id:<ID>"."""
    if m.variant_parent is None:
        return []
    code = cell_text(row, (m.variant_parent[1],))
    return [f"id:{pid}"] + ([code] if code is not None else [])


def _variations_of(row: dict[str, Any], m: ColumnMapping, pid: ProductId) -> Variations | None:
    if not m.variations:
        return None
    found = [m.variations[r] for r in parent_refs(row, m, pid) if r in m.variations]
    if not found:
        return None
    prices = [v.price for v in found if v.price is not None]
    return Variations(min(prices) if prices else None, tuple(c for v in found for c in v.codes))


@dataclass
class RowBatch:
    products: list[Product] = field(default_factory=list)
    images: list[bytes | None] = field(default_factory=list)
    rows: list[int] = field(default_factory=list)  # file row number of each product


class Repeat(NamedTuple):
    pid: ProductId  # this row's id
    first_id: ProductId  # the id of the row that had it first (the same, or another with its row key)
    first_row: int
    continuation: bool  # the row continues the product above it (ColumnMapping.continuation_rows)


class RowKind(NamedTuple):
    """What one raw row is in an ingest run (FirstRows.classify): "product" (to_product takes it from here),
    "continuation" (a Shopify variant or extra-photo row, a WooCommerce variation: part of a product another row
    holds; left out, counted), "repeat" (an earlier row has its id: rejected, `repeat` says which) or "unlisted"
    (a draft: left out, its stored product `pid` deleted after the run)."""

    kind: Literal["product", "continuation", "repeat", "unlisted"]
    repeat: Repeat | None = None
    pid: ProductId | None = None


class FirstRows:
    """The file row that first had each product id, for an ingest run (single process and Ray alike): the first
    row with an id is indexed, a later one is rejected naming it. Keyed by row key, so "7" and 7 are one id."""

    def __init__(self) -> None:
        self._seen: dict[int, tuple[ProductId, int]] = {}
        self._previous: int | None = None  # row key of the last row with a readable id

    def repeat(self, row: dict[str, Any], n: int, m: ColumnMapping) -> Repeat | None:
        """The earlier row with this row's id (or row key), or None when row `n` is the first, or has no
        readable id (to_product says why)."""
        pid = readable_id(row, m)
        if pid is None:
            return None
        key = row_key(pid)
        previous, self._previous = self._previous, key
        first = self._seen.setdefault(key, (pid, n))
        if first[1] == n:
            return None
        continues = m.continuation_rows and previous == key and _first(row, m.title) is None
        return Repeat(pid, *first, continuation=continues)

    def classify(self, row: dict[str, Any], n: int, m: ColumnMapping) -> RowKind:
        """The one place a raw row is told apart (single process, Ray's reader, the passes over products). A
        draft whose id cannot be read stays a "product": to_product rejects it, naming the id columns tried."""
        if variant_row(row, m):
            return RowKind("continuation")
        again = self.repeat(row, n, m)
        if again is not None:
            return RowKind("continuation" if again.continuation else "repeat", repeat=again)
        if is_unlisted(row, m) and (pid := readable_id(row, m)) is not None:
            return RowKind("unlisted", pid=pid)
        return RowKind("product")


def with_variants(rows: Iterable[tuple[int, dict[str, Any]]], m: ColumnMapping) -> Iterator[tuple[int, dict[str, Any]]]:
    """The rows in file order, each product's first row carrying VARIANTS: its options' values and variant codes
    over it and the continuation rows below it (a Shopify product's sizes and colours: "Size": "S, M, L",
    "SKU": "TEE-S TEE-M TEE-L"), so a shopper's "tee XL" or a SKU finds it. The rows of one product are held
    until the next product's (at most MAX_VARIANT_ROWS)."""
    if not m.continuation_rows or not (m.variant_options or m.variant_codes):
        yield from rows
        return
    held: list[tuple[int, dict[str, Any]]] = []
    key: int | None = None
    for n, row in rows:
        pid = readable_id(row, m)
        here = None if pid is None else row_key(pid)
        if held and here is not None and here == key and _first(row, m.title) is None \
                and len(held) < MAX_VARIANT_ROWS:
            held.append((n, row))
            continue
        yield from _gathered(held, m)
        held, key = [(n, row)], here
    yield from _gathered(held, m)


def _gathered(held: list[tuple[int, dict[str, Any]]], m: ColumnMapping) -> Iterator[tuple[int, dict[str, Any]]]:
    if not held:
        return
    (n, first), rest = held[0], held[1:]
    found = dict(_options(first, m, [r for _, r in held]))
    yield (n, {**first, VARIANTS: found}) if found else (n, first)
    yield from rest


def _options(first: dict[str, Any], m: ColumnMapping, rows: list[dict[str, Any]]) -> Iterator[tuple[str, str]]:
    """(attribute, value) for each option the product's first row names, its values over `rows` ("Size",
    "S, M, L"), then ("SKU", the variant codes); a value cell may list several ("Blue, Green" in WooCommerce)."""
    for name_col, value_col in m.variant_options:
        name = _first(first, (name_col,))
        values = [str(v).strip() for r in rows if (v := _first(r, (value_col,))) is not None]
        values = [v for v in dict.fromkeys(values) if v.casefold() != NO_OPTION]
        if name is not None and values:
            yield str(name).strip(), ", ".join(values)
    codes = [str(v).strip() for r in rows for c in m.variant_codes if (v := _first(r, (c,))) is not None]
    if codes:
        yield VARIANT_CODES, " ".join(dict.fromkeys(codes))


def product_rows(rows: Iterable[tuple[int, dict[str, Any]]], m: ColumnMapping) -> Iterator[tuple[int, dict[str, Any]]]:
    """The rows that are products under the mapping: continuation rows (a Shopify variant or extra photo) and
    unlisted ones (a draft) left out, for the passes that only look at products (the blend sample, the photo
    fetch, `kuamo align`, the ids --prune keeps)."""
    if not m.continuation_rows and not m.unlisted_when and m.variant_row_when is None:
        yield from rows
        return
    seen = FirstRows()
    for n, row in with_variants(rows, m):
        if seen.classify(row, n, m).kind in ("product", "repeat"):  # a repeat is rejected later, as a product
            yield n, row


def repeat_reason(pid: ProductId, first_id: ProductId, first_row: int) -> str:
    """Why a row whose id an earlier row had is rejected: the same id, or another id with its row key."""
    if first_id == pid:  # both canonical (canonical_id): "7" and 7 are one id
        return f"id {pid!r} appears again: row {first_row} has it already (the first row with an id is indexed)"
    try:
        check_owner(pid, first_id)
    except InvalidInput as exc:
        return f"{exc.message} (row {first_row})"
    return f"id {pid!r} appears again (row {first_row})"
