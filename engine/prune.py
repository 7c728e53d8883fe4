"""`kuamo index FEED --prune`: the feed is the whole catalog, so the stored products it no longer lists (sold out,
discontinued) are deleted after the run, single process and Ray alike.

A product counts as listed when any row of the file carries its id, whether that row was indexed, unchanged or
rejected this time: a photo that failed to download must not delete the product's earlier version. Pruning is
refused, and nothing deleted, when the run failed (more rows rejected than allowed), when the run read only
part of the file (--limit), and when it would delete more than max_prune_share of the stored products: a
truncated download or the wrong file must not empty the catalog.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING

from kuamo.engine.catalog_io import ColumnMapping, product_rows, readable_id
from kuamo.engine.catalog_map import CatalogConfig
from kuamo.engine.errors import InvalidInput
from kuamo.engine.feed_files import read_rows
from kuamo.engine.ids import row_key

if TYPE_CHECKING:
    from kuamo.engine.engine import Engine
    from kuamo.engine.ingest import IngestReport

LISTED_EXAMPLES = 5  # deleted ids named in the report


def check_prune(cfg: CatalogConfig, limit: int | None) -> None:
    """Before anything is read: --prune deletes what the file does not list, so it needs the whole file."""
    if cfg.prune and limit is not None:
        raise InvalidInput("--prune needs the whole file: with --limit every product after the limit would be "
                           "deleted; drop one of them", field="prune")


def listed_keys(path: Path, m: ColumnMapping) -> set[int]:
    """Row keys of every id the file carries (rows whose id cannot be read list nothing)."""
    ids = (readable_id(row, m) for _, row in product_rows(read_rows(path), m))
    return {row_key(pid) for pid in ids if pid is not None}


async def prune_unlisted(engine: Engine, report: IngestReport, path: Path, m: ColumnMapping, cfg: CatalogConfig,
                         *, failed: bool) -> None:
    """Delete the stored products `path` does not list, or say in report.pruned why not."""
    stored = await asyncio.to_thread(lambda: {int(k) for k in engine.backend.keys()})
    listed = await asyncio.to_thread(listed_keys, path, m)
    gone = sorted(stored - listed)
    share = len(gone) / len(stored) if stored else 0.0
    report.pruned = {"stored": len(stored), "unlisted": len(gone), "deleted": 0, "share": round(share, 4)}
    if failed:
        report.pruned["refused"] = "the run failed (rejected rows above --max-rejected-share): nothing deleted"
    elif share > cfg.max_prune_share:
        report.pruned["refused"] = (f"{len(gone)} of {len(stored)} stored products ({share:.1%}) are not in "
                                    f"{path.name}, above --max-prune-share {cfg.max_prune_share:g}: nothing deleted "
                                    "(a truncated or wrong file?); raise it if the catalog really shrank")
    elif gone:
        owners = await asyncio.to_thread(engine.backend.owners, gone[:LISTED_EXAMPLES])
        report.pruned["deleted"] = await engine.delete(gone)
        report.pruned["examples"] = [str(owners.get(k, k)) for k in gone[:LISTED_EXAMPLES]]
