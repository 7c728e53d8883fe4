"""`kuamo demo`: index the fashion catalog if needed, start the gRPC server on loopback, send real text,
Chinese, filtered and photo queries through the client, print the answers, keep serving (or --once)."""

from __future__ import annotations

import asyncio
import csv
import dataclasses
from pathlib import Path

from kuamo.engine.config import RECOMMENDED_HYBRID_WEIGHTS
from kuamo.engine.types import Filters, Query
from kuamo.server.config import ServerConfig

TEXT_QUERIES = (
    ("men's watch", Filters()),
    ("男士手表", Filters()),
    ("red dress for women", Filters()),
    ("红色连衣裙", Filters()),
    ("men's running shoes", Filters()),
    ("女士手提包", Filters()),
    ("watch", Filters(attributes={"gender": "Women"})),
)
PHOTO_ARTICLES = ("Sports Shoes", "Watches")
DEMO_HTTP_PORT = 8080


def _photo_queries(catalog: Path) -> list[tuple[str, bytes]]:
    found: dict[str, tuple[str, bytes]] = {}
    with open(catalog / "products.csv", newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            a = row.get("articleType")
            img = catalog / "images" / f"{row['id']}.jpg"
            if a in PHOTO_ARTICLES and a not in found and img.exists():
                found[a] = (row["productDisplayName"], img.read_bytes())
            if len(found) == len(PHOTO_ARTICLES):
                break
    return list(found.values())


async def _queries(port: int, catalog: Path) -> None:
    from kuamo.server.client import AsyncClient
    from kuamo.server.table import format_result

    async with AsyncClient(f"127.0.0.1:{port}") as client:
        for text, filters in TEXT_QUERIES:
            res = await client.search(Query(text=text, k=5, filters=filters, explain=True))
            where = "" if filters.is_empty() else f"  filters {filters.attributes}"
            print(f"\n> search {text!r}{where}\n{format_result(res, explain=True)}")
        for title, photo in _photo_queries(catalog):
            res = await client.search(Query(image=photo, k=5))
            print(f"\n> search by photo of {title!r}\n{format_result(res)}")
            res = await client.search(Query(image=photo, text="red", k=5, weights={"image": 0.6, "text": 0.4}))
            print(f"\n> like the photo of {title!r} but red (vectors only)\n{format_result(res)}")
            hybrid = RECOMMENDED_HYBRID_WEIGHTS  # BM25 + query understanding (off by default)
            for text in ("like this but red", "同款 红色"):
                res = await client.search(Query(image=photo, text=text, k=5, explain=True, weights=hybrid))
                print(f"\n> photo of {title!r} + {text!r}, weights {hybrid}\n"
                      f"{format_result(res, explain=True)}")


def run_demo(cfg: ServerConfig, *, catalog: Path, once: bool) -> int:
    from kuamo.engine.catalog_ready import ensure_index
    from kuamo.server.app import engine_config, run_loop, serve

    ensure_index(catalog, engine_config(cfg))
    # the search page on its own port unless configured otherwise; photos come from the demo's catalog
    cfg = dataclasses.replace(cfg, host="127.0.0.1", http_port=cfg.http_port if cfg.http_port >= 0 else DEMO_HTTP_PORT,
                              catalog_dir=cfg.catalog_dir or catalog)
    stop = asyncio.Event()

    async def on_ready(srv) -> None:  # type: ignore[no-untyped-def]
        print(f"kuamo serving on 127.0.0.1:{srv.port} (metrics on :{srv.metrics_port}); search page: "
              f"http://127.0.0.1:{srv.http_port}/", flush=True)
        await _queries(srv.port, catalog)
        if once:
            stop.set()
        else:
            print(f"\nstill serving on 127.0.0.1:{srv.port}; open http://127.0.0.1:{srv.http_port}/ or try: "
                  f"kuamo search --target 127.0.0.1:{srv.port} \"蓝色牛仔裤\"   (Ctrl-C to stop)", flush=True)

    async def main() -> None:
        await serve(cfg, on_ready=on_ready, stop_event=stop)

    run_loop(cfg, main())
    return 0
