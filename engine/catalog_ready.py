"""Make sure a data directory holds a catalog file indexed by the current models (the demo's and the
benchmarks' first run): index it when the store is empty, re-embed it when other models made its vectors."""

from __future__ import annotations

import asyncio
import dataclasses
import sys
from pathlib import Path

from kuamo.engine.engine import Engine, EngineConfig
from kuamo.engine.ingest import aindex_catalog


def ensure_index(catalog: Path, cfg: EngineConfig) -> None:
    """Index `catalog`/products.csv into cfg.data_dir on the first run, and again when the models changed since
    (the stored vectors were made by other models, which the engine refuses to serve); otherwise nothing."""
    async def run() -> None:
        eng = await Engine.open(dataclasses.replace(cfg, allow_stale_vectors=True))
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
