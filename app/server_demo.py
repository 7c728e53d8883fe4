"""`kuamo demo`: index the fashion catalog if needed, start the gRPC server on loopback, send real text,
Chinese, filtered and photo queries through the client, print the answers, keep serving (or --once)."""

from __future__ import annotations

import asyncio
import csv
import dataclasses
import sys
from pathlib import Path

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


def ensure_index(catalog: Path, cfg: ServerConfig) -> None:
    """Index the catalog on the first run, and again when the models changed since (the stored vectors were made
    by other models, which the engine refuses to serve); otherwise nothing."""
    from kuamo.engine.engine import Engine
    from kuamo.engine.ingest import aindex_catalog
    from kuamo.server.app import engine_config

    async def run() -> None:
        eng = await Engine.open(dataclasses.replace(engine_config(cfg), allow_stale_vectors=True))
        try:
            if eng.store.count() and eng.stale_vectors is None:
                return
            why = "first run only" if not eng.store.count() else f"the models changed: {eng.stale_vectors}"
            print(f"indexing {catalog} into {cfg.data_dir} ({why})", file=sys.stderr, flush=True)
            report = await aindex_catalog(catalog / "products.csv", eng)  # snapshots the index when done
            print(f"indexed {report.accepted} products in {report.seconds:.0f} s ({len(report.rejected)} rejected)",
                  file=sys.stderr, flush=True)
        finally:
            await eng.close(snapshot=False)

    asyncio.run(run())


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
            print(f"\n> like the photo of {title!r} but red\n{format_result(res)}")


def run_demo(cfg: ServerConfig, *, catalog: Path, once: bool) -> int:
    from kuamo.server.app import run_loop, serve

    ensure_index(catalog, cfg)
    cfg = dataclasses.replace(cfg, host="127.0.0.1")
    stop = asyncio.Event()

    async def on_ready(srv) -> None:  # type: ignore[no-untyped-def]
        print(f"kuamo serving on 127.0.0.1:{srv.port} (metrics on :{srv.metrics_port})", flush=True)
        await _queries(srv.port, catalog)
        if once:
            stop.set()
        else:
            print(f"\nstill serving on 127.0.0.1:{srv.port}; try: kuamo search --target 127.0.0.1:{srv.port} "
                  "\"蓝色牛仔裤\"   (Ctrl-C to stop)", flush=True)

    async def main() -> None:
        await serve(cfg, on_ready=on_ready, stop_event=stop)

    run_loop(cfg, main())
    return 0
