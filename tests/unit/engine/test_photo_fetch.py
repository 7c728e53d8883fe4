"""Photos a feed names by URL, downloaded by `kuamo index --fetch-photos` (engine/photo_fetch.py) from a real
HTTP server on a loopback port: what is stored, what a failure tells the row, what a second run does."""

from __future__ import annotations

import asyncio
import csv
import threading
import time
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from fake_encoders import FakeImageEncoder, FakeTextEncoder, png

from kuamo.cli import main
from kuamo.engine.catalog_io import GENERIC, RowError, to_product
from kuamo.engine.catalog_map import CatalogConfig
from kuamo.engine.engine import Engine, EngineConfig
from kuamo.engine.errors import InvalidInput
from kuamo.engine.ingest import index_catalog
from kuamo.engine.photo_fetch import FAILED_SUFFIX, FETCHED_DIR, fetch_all, fetch_failure, photo_name
from kuamo.engine.types import Query

LIMIT = 4096  # bytes a photo may have in these tests


class PhotoServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.hits: Counter[str] = Counter()
        self.first_ask: dict[str, float] = {}
        self.mutable = "red"  # the colour behind /mutable.png and /noetag.png; a test may change it
        self.broken: set[str] = set()  # paths answering 500
        self.conditional: list[str | None] = []  # If-None-Match of each /mutable.png request
        self.lock = threading.Lock()

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class Handler(BaseHTTPRequestHandler):
    server: PhotoServer

    def log_message(self, *args: object) -> None:  # quiet test output
        pass

    def do_GET(self) -> None:
        with self.server.lock:
            self.server.hits[self.path] += 1
            hits = self.server.hits[self.path]
        name = self.path.rsplit("/", 1)[-1]
        if self.path in self.server.broken:
            self._send(500, b"down")
        elif self.path == "/mutable.png":  # an ETag per content, 304 when the client has it
            etag = f'"{self.server.mutable}"'
            self.server.conditional.append(self.headers.get("If-None-Match"))
            if self.headers.get("If-None-Match") == etag:
                self.send_response(304)
                self.end_headers()
            else:
                body = png(self.server.mutable)
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("ETag", etag)
                self.end_headers()
                self.wfile.write(body)
        elif self.path == "/noetag.png":
            self._send(200, png(self.server.mutable))
        elif self.path.startswith("/img/"):
            self._send(200, png(name.split(".")[0]))
        elif self.path == "/flaky.png" and hits == 1:
            self._send(503, b"busy")
        elif self.path == "/flaky.png":
            self._send(200, png("green"))
        elif self.path == "/big.png":
            self._send(200, b"\x89PNG" + b"0" * (2 * LIMIT))
        elif self.path == "/big-unannounced.png":  # no Content-Length: the limit holds while reading
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"\x89PNG" + b"0" * (2 * LIMIT))
            self.close_connection = True
        elif self.path == "/throttled.png":  # 429 until a second has passed since the first ask
            first = self.server.first_ask.setdefault(self.path, time.monotonic())
            if time.monotonic() - first < 1.0:
                self.send_response(429)
                self.send_header("Retry-After", "1")
                self.send_header("Content-Length", "0")
                self.end_headers()
            else:
                self._send(200, png("red"))
        elif self.path == "/slow.png":
            time.sleep(1.5)
            self._send(200, png("red"))
        elif self.path == "/empty.png":
            self._send(200, b"")
        elif self.path == "/soft404.png":  # a CDN's "not found" page, with status 200
            self._send(200, b"<html>Not found</html>", "text/html; charset=utf-8")
        else:
            self._send(404, b"no such photo")

    def _send(self, code: int, body: bytes, kind: str | None = None) -> None:
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        if kind:
            self.send_header("Content-Type", kind)
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def server() -> Iterator[PhotoServer]:
    srv = PhotoServer()
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def fetch(urls: list[str], folder: Path, **kw: object):
    return fetch_all(urls, folder, max_bytes=LIMIT, workers=4, timeout_s=kw.pop("timeout_s", 5.0),
                     backoff_s=0.05, **kw)


def test_each_url_is_stored_once_under_its_hash(server, tmp_path) -> None:
    urls = [f"{server.base}/img/red.png", f"{server.base}/img/blue.png", f" {server.base}/img/red.png "]
    got = fetch(urls, tmp_path)
    assert (got.urls, got.fetched, got.cached, got.failed) == (2, 2, 0, 0)
    assert (tmp_path / photo_name(urls[0])).read_bytes() == png("red")
    assert (tmp_path / photo_name(urls[1])).read_bytes() == png("blue")
    assert server.hits["/img/red.png"] == 1  # the same URL twice (spaces aside) is one download
    again = fetch(urls, tmp_path)
    assert (again.fetched, again.cached) == (0, 2) and server.hits["/img/red.png"] == 1


@pytest.mark.parametrize(("path", "reason"), [
    ("/missing.png", "HTTP 404"),
    ("/big.png", f"too large: {2 * LIMIT + 4:,} bytes, above the photo limit of {LIMIT:,}"),
    ("/big-unannounced.png", f"too large: over the photo limit of {LIMIT:,} bytes"),
    ("/empty.png", "empty: the server sent no bytes"),
    ("/soft404.png", "not an image: the server sent 22 bytes of text/html; charset=utf-8"),
])
def test_a_failed_url_leaves_its_reason_and_no_photo(server, tmp_path, path, reason) -> None:
    url = server.base + path
    got = fetch([url], tmp_path)
    assert (got.fetched, got.failed) == (0, 1)
    assert not (tmp_path / photo_name(url)).exists()
    assert reason in fetch_failure(tmp_path, url)
    assert server.hits[path] == 1  # a final answer is not asked again
    assert not list(tmp_path.glob("*.part"))


def test_a_busy_server_is_asked_again_and_a_later_run_retries_what_failed(server, tmp_path) -> None:
    url = f"{server.base}/flaky.png"
    got = fetch([url], tmp_path)  # 503, then 200 on the second attempt
    assert (got.fetched, got.failed, server.hits["/flaky.png"]) == (1, 0, 2)
    missing = f"{server.base}/img-later/red.png"
    assert fetch([missing], tmp_path).failed == 1 and fetch_failure(tmp_path, missing)
    assert fetch([missing], tmp_path).failed == 1 and server.hits["/img-later/red.png"] == 2  # tried again


def test_a_throttled_url_waits_as_long_as_the_server_asks(server, tmp_path) -> None:
    url = f"{server.base}/throttled.png"  # backoff alone (0.05 s, 0.1 s) would give up inside the second
    got = fetch([url], tmp_path)
    assert (got.fetched, got.failed, server.hits["/throttled.png"]) == (1, 0, 2)


def test_refetch_asks_by_etag_and_takes_a_changed_photo(server, tmp_path) -> None:
    url = f"{server.base}/mutable.png"
    assert fetch([url], tmp_path).fetched == 1
    server.mutable = "blue"  # the merchant replaced the photo behind the same URL
    assert fetch([url], tmp_path).cached == 1 and (tmp_path / photo_name(url)).read_bytes() == png("red")
    got = fetch([url], tmp_path, revalidate=True)
    assert (got.updated, got.fetched, got.cached) == (1, 0, 0)
    assert (tmp_path / photo_name(url)).read_bytes() == png("blue")
    again = fetch([url], tmp_path, revalidate=True)  # unchanged since: 304, nothing downloaded
    assert (again.cached, again.updated, again.bytes) == (1, 0, 0)
    assert server.conditional == [None, '"red"', '"blue"']


def test_refetch_keeps_the_stored_photo_when_asking_fails_or_nothing_changed(server, tmp_path) -> None:
    urls = [f"{server.base}/mutable.png", f"{server.base}/noetag.png"]
    assert fetch(urls, tmp_path).fetched == 2
    server.broken.add("/mutable.png")
    got = fetch(urls, tmp_path, revalidate=True)
    assert (got.kept, got.cached, got.failed, got.updated) == (1, 1, 0, 0)  # no validators: same bytes, cached
    assert (tmp_path / photo_name(urls[0])).read_bytes() == png("red")
    assert fetch_failure(tmp_path, urls[0]) is None  # its row still has its photo


def test_a_timeout_and_a_closed_port_are_reasons_not_crashes(server, tmp_path) -> None:
    slow = f"{server.base}/slow.png"
    got = fetch([slow], tmp_path, timeout_s=0.3, attempts=1)
    assert got.failed == 1 and fetch_failure(tmp_path, slow) == "timed out"
    closed = "http://127.0.0.1:9/nothing.png"  # discard port: nothing listens
    got = fetch([closed], tmp_path, attempts=1)
    assert got.failed == 1 and fetch_failure(tmp_path, closed).startswith("cannot connect")
    ftp = "ftp://127.0.0.1/a.png"
    assert fetch([ftp], tmp_path).failed == 1 and "not http(s)" in fetch_failure(tmp_path, ftp)


def feed(tmp_path: Path, base: str) -> Path:
    path = tmp_path / "shop" / "products.tsv"
    path.parent.mkdir(parents=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, delimiter="\t")
        w.writerow(["id", "title", "image_link", "price"])
        w.writerow(["SKU-1", "Red Pan", f"{base}/img/red.png", "15.00 USD"])
        w.writerow(["SKU-2", "Blue Mug", f"{base}/img/blue.png", "4.50 USD"])
        w.writerow(["SKU-3", "Lost Cup", f"{base}/gone.png", "3.00 USD"])
    return path


def make_engine(tmp_path: Path) -> Engine:
    return Engine(EngineConfig(data_dir=tmp_path / "data"), text_encoder=FakeTextEncoder(),
                  image_encoder=FakeImageEncoder())


def test_a_feed_of_photo_urls_indexes_with_fetch_photos(server, tmp_path) -> None:
    path = feed(tmp_path, server.base)
    eng = make_engine(tmp_path)
    rep = index_catalog(path, engine=eng, progress=False, catalog=CatalogConfig(fetch_photos=True))
    assert rep.accepted == 2 and [(r.id, r.field) for r in rep.rejected] == [("SKU-3", "image")]
    assert "could not be fetched: HTTP 404" in rep.rejected[0].reason
    assert rep.to_dict()["photos"] | {"seconds": 0, "bytes": 0} == {
        "urls": 3, "fetched": 2, "cached": 0, "failed": 1, "updated": 0, "kept": 0, "bytes": 0, "seconds": 0,
        "failures": {"HTTP 404 Not Found": 1}}
    mug = asyncio.run(eng.get("SKU-2"))
    assert mug.image_ref == f"{server.base}/img/blue.png"  # the product keeps its URL; the copy is kuamo's
    assert (path.parent / FETCHED_DIR / photo_name(mug.image_ref)).is_file()
    assert asyncio.run(eng.search(Query(image=png("blue"), k=1))).hits[0].id == "SKU-2"
    # a second run downloads only what failed, and re-embeds nothing
    again = index_catalog(path, engine=eng, progress=False, catalog=CatalogConfig(fetch_photos=True))
    assert (again.unchanged, again.photos["cached"], again.photos["failed"]) == (2, 2, 1)
    assert server.hits["/img/red.png"] == 1 and server.hits["/gone.png"] == 2
    asyncio.run(eng.close(snapshot=False))


def test_refetch_photos_re_embeds_a_product_whose_photo_changed(server, tmp_path) -> None:
    path = tmp_path / "shop" / "feed.csv"
    path.parent.mkdir()
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerows([["id", "title", "image_link"], ["tee", "Tee", f"{server.base}/mutable.png"],
                     ["pan", "Pan", f"{server.base}/img/green.png"]])
    eng = make_engine(tmp_path)
    assert index_catalog(path, engine=eng, progress=False, catalog=CatalogConfig(fetch_photos=True)).accepted == 2
    server.mutable = "blue"
    rep = index_catalog(path, engine=eng, progress=False, catalog=CatalogConfig(refetch_photos=True))
    assert (rep.accepted, rep.unchanged, rep.photos["updated"], rep.photos["cached"]) == (1, 1, 1, 1)
    assert asyncio.run(eng.search(Query(image=png("blue"), k=1))).hits[0].id == "tee"
    asyncio.run(eng.close(snapshot=False))


def test_without_fetch_photos_a_url_says_how_to_get_it(server, tmp_path) -> None:
    path = feed(tmp_path, server.base)
    eng = make_engine(tmp_path)
    rep = index_catalog(path, engine=eng, progress=False)
    assert rep.accepted == 0 and rep.photos is None and sum(server.hits.values()) == 0
    assert all("--fetch-photos" in r.reason for r in rep.rejected)
    asyncio.run(eng.close(snapshot=False))


def test_a_url_fetched_and_then_missing_names_both_runs(tmp_path) -> None:
    m = GENERIC.__class__(**{**GENERIC.__dict__, "fetched_photos": FETCHED_DIR})
    row = {"id": "a1", "title": "Pan", "image_link": "https://cdn.example/pan.jpg"}
    with pytest.raises(RowError) as exc:
        to_product(row, m, tmp_path)
    assert "has not been fetched (run kuamo index --fetch-photos)" in exc.value.reason
    (tmp_path / FETCHED_DIR).mkdir()
    (tmp_path / FETCHED_DIR / (photo_name(row["image_link"]) + FAILED_SUFFIX)).write_text("HTTP 410 Gone\n")
    with pytest.raises(RowError) as exc:
        to_product(row, m, tmp_path)
    assert exc.value.reason.endswith("could not be fetched: HTTP 410 Gone")


@pytest.mark.parametrize(("flags", "message"), [
    (["--fetch-workers", "0"], "fetch_workers must be an integer within 1..256, got 0"),
    (["--fetch-workers", "100000"], "fetch_workers must be an integer within 1..256"),
])
def test_bad_fetch_settings_are_refused_before_any_download(server, tmp_path, capsys, flags, message) -> None:
    path = feed(tmp_path, server.base)
    assert main(["index", str(path), "--fetch-photos", *flags, "--data", str(tmp_path / "d")]) == 2
    assert message in capsys.readouterr().err
    assert sum(server.hits.values()) == 0


def test_a_shopify_export_fetches_each_products_photo_not_its_extra_ones(server, tmp_path) -> None:
    path = tmp_path / "shop" / "products_export.csv"
    path.parent.mkdir()
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["Handle", "Title", "Variant Price", "Image Src", "Image Position"])
        w.writerow(["red-pan", "Red Pan", "15.00", f"{server.base}/img/red.png", "1"])
        w.writerow(["red-pan", "", "17.00", "", ""])  # a variant
        w.writerow(["red-pan", "", "", f"{server.base}/img/extra.png", "2"])  # an extra photo
        w.writerow(["blue-mug", "Blue Mug", "4.50", f"{server.base}/img/blue.png", "1"])
    eng = make_engine(tmp_path)
    rep = index_catalog(path, engine=eng, progress=False, catalog=CatalogConfig(fetch_photos=True))
    assert (rep.accepted, rep.continuation_rows, rep.rejected) == (2, 2, [])
    assert rep.photos["urls"] == 2 and "/img/extra.png" not in server.hits
    asyncio.run(eng.close(snapshot=False))
    # --limit counts rows in every pass: the first 3 rows are the pan and its two continuations, so the mug's
    # photo (row 4) is not downloaded either
    (path.parent / FETCHED_DIR / photo_name(f"{server.base}/img/blue.png")).unlink()
    server.hits.clear()
    eng = make_engine(tmp_path / "trial")
    rep = index_catalog(path, engine=eng, progress=False, limit=3, catalog=CatalogConfig(fetch_photos=True))
    assert (rep.rows_read, rep.accepted, rep.continuation_rows, rep.photos["urls"]) == (3, 1, 2, 1)
    assert server.hits == {}  # the pan's photo was stored by the first run; the mug's was not asked for
    asyncio.run(eng.close(snapshot=False))


def test_a_catalog_directory_that_cannot_be_written_is_a_clear_error(server, tmp_path) -> None:
    blocker = tmp_path / "shop" / FETCHED_DIR
    blocker.parent.mkdir()
    blocker.write_text("a file where the folder would go")
    with pytest.raises(InvalidInput, match=r"cannot store fetched photos in .*kuamo-photos"):
        fetch([f"{server.base}/img/red.png"], blocker)
    assert sum(server.hits.values()) == 0
