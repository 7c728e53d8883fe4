"""A merchant feed that names its photos by URL (Google Merchant Center's image_link), end to end with the real
models: real fashion photos served by an HTTP server on a loopback port, `kuamo index --fetch-photos` through
the CLI, a search by photo that finds the product, and the web page showing the fetched copy."""

from __future__ import annotations

import asyncio
import csv
import functools
import json
import threading
import urllib.request
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import pytest
from server_thread import ServerThread

from kuamo.cli import main
from kuamo.engine.engine import Engine
from kuamo.engine.photo_fetch import FETCHED_DIR
from kuamo.engine.types import Query
from kuamo.server.app import engine_config
from kuamo.server.config import ServerConfig

pytestmark = pytest.mark.models
N = 24


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


def test_a_feed_of_photo_urls_indexes_searches_and_shows(model_dir, fashion_dir, tmp_path, capsys) -> None:
    images = fashion_dir / "images"
    with open(fashion_dir / "products.csv", newline="", encoding="utf-8") as f:
        rows = [r for r in csv.DictReader(f) if (images / f"{r['id']}.jpg").is_file()][:N]
    cdn = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(QuietHandler, directory=str(images)))
    threading.Thread(target=cdn.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{cdn.server_address[1]}"
    shop = tmp_path / "shop"
    shop.mkdir()
    feed = shop / "gmc.tsv"
    with open(feed, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, delimiter="\t")
        w.writerow(["id", "title", "image_link", "price", "product_type"])
        for r in rows:
            w.writerow([f"SKU-{r['id']}", r["productDisplayName"], f"{base}/{r['id']}.jpg", "19.99 USD",
                        f"{r['masterCategory']} > {r['subCategory']} > {r['articleType']}"])
        w.writerow(["SKU-gone", "A product whose photo is gone", f"{base}/no-such-photo.jpg", "1.00 USD", "X"])
    data = tmp_path / "data"
    try:
        rc = main(["index", str(feed), "--fetch-photos", "--data", str(data), "--models", str(model_dir)])
    finally:
        cdn.shutdown()
        cdn.server_close()
    report = json.loads(capsys.readouterr().out)
    assert rc == 0, report
    assert (report["accepted"], report["rejected"]) == (N, 1)
    assert report["photos"]["fetched"] == N and report["photos"]["failures"] == {"HTTP 404 File not found": 1}
    assert "could not be fetched: HTTP 404" in report["rejections"][0]["reason"]
    stored = sorted(p.suffix for p in (shop / FETCHED_DIR).iterdir())
    assert stored == [""] * N + [".failed"] + [".meta"] * N  # N photos, their Last-Modified, one failure

    cfg = ServerConfig(model_dir=model_dir, data_dir=data, http_port=0, catalog_dir=shop)

    async def by_photo() -> list[str]:
        eng = await Engine.open(engine_config(cfg))
        try:
            out = []
            for r in rows[:5]:
                res = await eng.search(Query(image=(images / f"{r['id']}.jpg").read_bytes(), k=1))
                out.append(str(res.hits[0].id))
            return out
        finally:
            await eng.close()

    assert asyncio.run(by_photo()) == [f"SKU-{r['id']}" for r in rows[:5]]
    srv = ServerThread(cfg).load()
    try:
        first = rows[0]["id"]
        with urllib.request.urlopen(f"http://127.0.0.1:{srv.server.http_port}/photos/SKU-{first}", timeout=10) as r:
            assert r.headers["Content-Type"] == "image/jpeg"
            assert r.read() == (images / f"{first}.jpg").read_bytes()
    finally:
        srv.stop()
