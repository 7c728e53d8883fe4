"""Catalog files -> raw rows (engine/catalog_io.py maps the rows onto products).

Formats, by file name: .csv (separated by ",", ";", tab or "|", read from the header line), .tsv, .jsonl /
.ndjson, .xml (an RSS 2.0 or Atom product feed such as Google Merchant Center's: one row per <item> or
<entry>, namespaces dropped from the tag names), .parquet (only when pyarrow is importable); each text format
also gzip-compressed (.csv.gz, .xml.gz, ...). Text formats must be UTF-8 (XML: the encoding it declares).
"""

from __future__ import annotations

import codecs
import csv
import gzip
import itertools
import json
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from kuamo.engine.errors import InvalidInput

DELIMITERS = (",", ";", "\t", "|")  # what a ".csv" export may be separated by (spreadsheets in many locales: ";")
TEXT_FORMATS = (".csv", ".tsv", ".jsonl", ".ndjson")
FORMATS = (*TEXT_FORMATS, ".xml", ".parquet")
XML_ROWS = ("item", "entry")  # RSS 2.0 / Atom: the elements that are one product each
HEADER_ROWS = 1000  # rows whose keys make a JSONL / XML / Parquet catalog's columns


def file_format(path: Path) -> str:
    """The format a catalog file's name says (".csv" for "feed.csv.gz"), or InvalidInput naming the choices."""
    suffixes = [s.lower() for s in path.suffixes]
    fmt = suffixes[-2] if len(suffixes) >= 2 and suffixes[-1] == ".gz" else (suffixes[-1] if suffixes else "")
    if fmt not in FORMATS or (fmt == ".parquet" and suffixes[-1] == ".gz"):
        raise InvalidInput(f"unknown catalog format {''.join(path.suffixes)!r}: use .csv, .tsv, .jsonl, .xml (each "
                           "may be .gz-compressed) or .parquet", field="path")
    return fmt


def _open_bytes(path: Path) -> IO[bytes]:
    return gzip.open(path, "rb") if path.suffix.lower() == ".gz" else open(path, "rb")


def _open_text(path: Path) -> IO[str]:
    # utf-8-sig: a byte-order mark (spreadsheet exports write one) is not part of the first column's name
    return gzip.open(path, "rt", newline="", encoding="utf-8-sig") if path.suffix.lower() == ".gz" else \
        open(path, newline="", encoding="utf-8-sig")


def csv_delimiter(path: Path) -> str:
    """The separator of a CSV file's header line: the most frequent of DELIMITERS ("," on a tie); a .tsv file
    is tab-separated."""
    if file_format(path) == ".tsv":
        return "\t"
    with _open_bytes(path) as f:
        header = f.readline().decode("utf-8", errors="replace")
    counts = {d: header.count(d) for d in DELIMITERS}
    best = max(DELIMITERS, key=lambda d: counts[d])
    return best if counts[best] > counts[","] else ","


def check_utf8(path: Path, chunk: int = 1 << 20) -> None:
    """A text catalog must be UTF-8: InvalidInput naming the first undecodable byte's line, before any row is
    stored (a merchant's cp1252 or GBK export would otherwise fail halfway through the ingest)."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    lines = 1
    with _open_bytes(path) as f:
        while True:
            try:
                block = f.read(chunk)
            except (OSError, EOFError) as exc:  # a broken .gz
                raise InvalidInput(f"{path.name} cannot be read: {exc}", field="path") from None
            try:
                decoder.decode(block, final=not block)
            except UnicodeDecodeError as exc:  # exc.object: the bytes held back from the last block + this one
                line = lines + exc.object[:exc.start].count(b"\n")
                raise InvalidInput(f"{path.name} is not UTF-8 text: byte 0x{exc.object[exc.start]:02x} on line "
                                   f"{line} cannot be decoded; save the file as UTF-8 (e.g. iconv -f cp1252 -t "
                                   "utf-8, or -f gbk for a Chinese export)", field="path") from None
            if not block:
                return
            lines += block.count(b"\n")


def read_rows(path: Path, limit: int | None = None) -> Iterator[tuple[int, dict[str, Any]]]:
    """(1-based data row number: the CSV row, JSONL line or XML item; row dict) for the first `limit` rows (all
    when None: `kuamo index --limit` counts rows, in every pass). Malformed JSONL lines and XML come back as
    {"__error__": reason}."""
    fmt = file_format(path)
    try:
        yield from itertools.islice(_read_rows(path, fmt), limit)
    except UnicodeDecodeError:  # header_of checked the file; it changed since
        check_utf8(path)
        raise


def _read_rows(path: Path, fmt: str) -> Iterator[tuple[int, dict[str, Any]]]:
    if fmt in (".csv", ".tsv"):
        delimiter = csv_delimiter(path)
        with _open_text(path) as f:
            reader = csv.DictReader(f, delimiter=delimiter)
            for n, row in enumerate(reader, start=1):
                yield n, row
    elif fmt in (".jsonl", ".ndjson"):
        with _open_text(path) as f:
            for n, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as exc:
                    yield n, {"__error__": f"not valid JSON: {exc}"}
                    continue
                yield n, obj if isinstance(obj, dict) else {"__error__": "line is not a JSON object"}
    elif fmt == ".xml":
        yield from _xml_rows(path)
    else:
        try:
            import pyarrow.parquet as pq
        except ImportError as exc:
            raise InvalidInput("reading Parquet needs pyarrow, which is not installed; convert to CSV or JSONL",
                               field="path") from exc
        n = 0
        for batch in pq.ParquetFile(path).iter_batches(batch_size=4096):
            for row in batch.to_pylist():
                n += 1
                yield n, row


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]  # "{http://base.google.com/ns/1.0}price" -> "price"


def _xml_rows(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """One row per <item> (RSS) or <entry> (Atom), streamed: each child element with text is a column, the
    first of a repeated one wins (additional_image_link, a second product_type); nested ones (shipping) are
    left out. A file that stops parsing gives one {"__error__"} row after the items read before."""
    from xml.etree.ElementTree import ParseError, iterparse

    n = 0
    try:
        with _open_bytes(path) as f:
            for _, elem in iterparse(f, events=("end",)):
                if _local(elem.tag) not in XML_ROWS:
                    continue
                n += 1
                row: dict[str, Any] = {}
                for child in elem:
                    key = _local(child.tag)
                    if len(child) == 0 and key not in row:
                        row[key] = (child.text or "").strip() or child.get("href", "")  # Atom: <link href=..>
                elem.clear()
                yield n, row
    except (ParseError, OSError, EOFError) as exc:
        yield n + 1, {"__error__": f"the XML stops parsing after {n} items: {exc}"}


def header_of(path: Path) -> list[str]:
    """The catalog's columns (every reader calls this first: a text catalog is checked to be UTF-8 here). A CSV
    has its header; JSONL, XML and Parquet rows may each carry other keys (an optional <g:brand>), so there it is
    every key of the first HEADER_ROWS rows, in the order first seen."""
    fmt = file_format(path)
    if fmt in TEXT_FORMATS:
        check_utf8(path)
    columns: dict[str, None] = {}
    for i, (_, row) in enumerate(read_rows(path)):
        columns.update(dict.fromkeys(c for c in row if c != "__error__"))
        if fmt in (".csv", ".tsv") or i + 1 >= HEADER_ROWS:
            break
    return list(columns)
