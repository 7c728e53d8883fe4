"""`kuamo index CATALOG`: read a catalog file, encode in batches, commit, report rejected rows.

Resumable and idempotent: each product's content hash (fields + photo bytes + encoder/layout) is stored
with it, and rows whose hash matches are skipped, so re-running after a crash or on an unchanged file
only re-reads files. Bad rows never stop the run; they are listed with the field and the reason.
"""

from __future__ import annotations

import asyncio
import dataclasses
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kuamo.engine.catalog_io import (
    ColumnMapping,
    FirstRows,
    RowBatch,
    RowError,
    mapping_for,
    photo_url,
    product_rows,
    readable_id,
    repeat_reason,
    row_leaf,
    row_title,
    to_product,
    with_variants,
)
from kuamo.engine.catalog_map import CatalogConfig, check_config
from kuamo.engine.errors import InvalidInput
from kuamo.engine.feed_files import header_of, read_rows
from kuamo.engine.ids import ProductId, row_key
from kuamo.engine.photo_fetch import FETCHED_DIR, fetch_all
from kuamo.engine.prune import check_prune, prune_unlisted
from kuamo.engine.types import Product, Rejection
from kuamo.engine.variations import gather_variations
from kuamo.engine.zero_shot_blend import AUTO, SAMPLE, BlendChoice, covering, parse_image_blend

if TYPE_CHECKING:
    from kuamo.engine.engine import Engine, EngineConfig


@dataclass
class IngestReport:
    path: str
    mapping: str
    rows_read: int = 0
    accepted: int = 0  # encoded and committed
    unchanged: int = 0  # skipped: same content hash as the stored product
    rejected: list[Rejection] = field(default_factory=list)
    seconds: float = 0.0
    image_blend: dict | None = None  # set or chosen on this run, else None
    stale: str | None = None  # why the catalog's vectors were re-embedded (other models made them), else None
    stale_left: int = 0  # products still holding vectors from other models (not in this file)
    continuation_rows: int = 0  # rows continuing the product above (a Shopify variant or extra photo): left out
    unlisted_ids: list[ProductId] = field(default_factory=list)  # products a row says are not for sale (drafts)
    unlisted: dict | None = None  # {"rows", "deleted"} when a row said so (finish_run), else None
    pruned: dict | None = None  # --prune: what was deleted, or why nothing was (engine/prune.py), else None
    photos: dict | None = None  # --fetch-photos: what was downloaded (photo_fetch.FetchSummary), else None

    @property
    def rejected_share(self) -> float:
        """Rejected rows / rows read; 1.0 when no row was read (an empty or unreadable feed indexed nothing)."""
        return len(self.rejected) / self.rows_read if self.rows_read else 1.0

    def failed(self, max_rejected_share: float = 1.0) -> bool:
        """Too many rows rejected: above the share, or all of them (also none read) at the default 1.0."""
        share = self.rejected_share
        return share > max_rejected_share or (max_rejected_share >= 1.0 and share >= 1.0)

    @property
    def rows_per_s(self) -> float:
        return self.rows_read / self.seconds if self.seconds else 0.0

    def to_dict(self) -> dict[str, Any]:
        reasons: dict[str, int] = {}
        for r in self.rejected:
            reasons[r.field] = reasons.get(r.field, 0) + 1
        return {"path": self.path, "mapping": self.mapping, "rows_read": self.rows_read,
                "accepted": self.accepted, "unchanged": self.unchanged, "rejected": len(self.rejected),
                "rejected_by_field": reasons, "continuation_rows": self.continuation_rows, "unlisted": self.unlisted,
                "rejected_share": round(self.rejected_share, 4), "seconds": round(self.seconds, 2),
                "rows_per_s": round(self.rows_per_s, 1), "image_blend": self.image_blend,
                "re_embedded_because": self.stale, "stale_left": self.stale_left, "photos": self.photos,
                "pruned": self.pruned,
                "rejections": [{"row": r.row, "id": r.id, "field": r.field, "reason": r.reason}
                               for r in self.rejected]}


async def aindex_catalog(path: Path | str, engine: Engine, *, mapping: str = "auto", limit: int | None = None,
                         batch_size: int = 256, progress: bool = True, image_root: Path | str | None = None,
                         snapshot: bool = True, catalog: CatalogConfig | None = None) -> IngestReport:
    """Ingest into an open engine. Rejection.row is the 1-based data row (CSV) or line (JSONL). `catalog`
    (column map, category paths) wins over `mapping`. Progress lines go to stderr: stdout is the report's."""
    path = Path(path)
    if batch_size < 1:
        raise InvalidInput(f"batch_size must be >= 1, got {batch_size}", field="batch_size")
    cfg, m, root = run_settings(path, limit, catalog, mapping, image_root)
    report = IngestReport(path=str(path), mapping=m.name)
    m = await fetch_feed_photos(engine, report, path, m, cfg, root, limit, progress)
    m = await asyncio.to_thread(gather_variations, path, m, limit)  # WooCommerce's variable products
    t0 = time.perf_counter()
    await start_run(engine, report, path, m, root, limit, progress)

    from tqdm import tqdm

    bar = tqdm(total=limit, unit="rows", desc=f"index {path.name}", disable=not progress, file=sys.stderr)
    batch = RowBatch()
    seen = FirstRows()  # the first row with an id is indexed (as a Ray run does)

    async def flush() -> None:
        if not batch.products:
            return
        res = await engine.upsert(batch.products, batch.images)
        report.accepted += len(res.accepted)
        report.unchanged += len(res.unchanged)
        # upsert numbers rejections by position in the batch; report the file row instead.
        report.rejected += [Rejection(row=batch.rows[r.row], id=r.id, field=r.field, reason=r.reason)
                            for r in res.rejected]
        bar.update(len(batch.rows))
        batch.products, batch.images, batch.rows = [], [], []

    try:
        for n, row in with_variants(read_rows(path, limit), m):
            report.rows_read += 1
            kind = seen.classify(row, n, m)
            if kind.kind == "continuation":
                report.continuation_rows += 1
            elif kind.kind == "repeat" and (again := kind.repeat) is not None:
                report.rejected.append(Rejection(row=n, id=again.pid, field="id", reason=repeat_reason(
                    again.pid, again.first_id, again.first_row)))
            elif kind.kind == "unlisted" and kind.pid is not None:
                report.unlisted_ids.append(kind.pid)
            if kind.kind != "product":
                bar.update(1)
                continue
            try:
                product, image_path = to_product(row, m, root)
                image = await asyncio.to_thread(image_path.read_bytes) if image_path is not None else None
            except RowError as exc:
                report.rejected.append(Rejection(row=n, id=exc.id, field=exc.field, reason=exc.reason))
                bar.update(1)
                continue
            except OSError as exc:
                report.rejected.append(Rejection(row=n, id=None, field="image", reason=f"unreadable image: {exc}"))
                bar.update(1)
                continue
            batch.products.append(product)
            batch.images.append(image)
            batch.rows.append(n)
            if len(batch.products) >= batch_size:
                await flush()
        await flush()
    finally:
        bar.close()
    await finish_run(engine, report, path, m, cfg, snapshot=snapshot, progress=progress)
    report.seconds = time.perf_counter() - t0
    return report


def run_settings(path: Path, limit: int | None, catalog: CatalogConfig | None, mapping: str,
                 image_root: Path | str | None) -> tuple[CatalogConfig, ColumnMapping, Path]:
    """Before anything is read (single process and Ray alike): the checked settings, the file's column mapping
    (an unknown format or a non-UTF-8 file fails here) and the directory its photos are relative to."""
    if not path.is_file():
        raise InvalidInput(f"catalog file {path} does not exist", field="path")
    if limit is not None and limit < 0:
        raise InvalidInput(f"limit must be >= 0, got {limit}", field="limit")
    cfg = check_config(catalog if catalog is not None else CatalogConfig(mapping=mapping))
    check_prune(cfg, limit)
    m = mapping_for(cfg, header_of(path))
    return cfg, m, Path(image_root) if image_root is not None else path.parent


async def fetch_feed_photos(engine: Engine, report: IngestReport, path: Path, m: ColumnMapping, cfg: CatalogConfig,
                            root: Path, limit: int | None, progress: bool) -> ColumnMapping:
    """--fetch-photos, before anything else reads a photo (single process and Ray alike): every photo URL of
    the rows to index downloaded into root/FETCHED_DIR; the mapping then reads URL cells from there."""
    if not cfg.fetch_photos:
        return m
    urls = await asyncio.to_thread(_photo_urls, path, m, limit)
    from tqdm import tqdm

    with tqdm(total=len(urls), unit="photos", desc="fetch photos", disable=not progress, file=sys.stderr) as bar:
        summary = await asyncio.to_thread(fetch_all, urls, root / FETCHED_DIR,
                                          max_bytes=engine.config.encoder.max_image_bytes,
                                          workers=cfg.fetch_workers, progress=bar.update,
                                          revalidate=cfg.refetch_photos)
    report.photos = summary.to_dict()
    if progress and summary.failed:
        say(f"{summary.failed} of {summary.urls} photo URLs could not be fetched ({summary.failures}); their rows "
            f"are rejected with the reason, and the next run tries them again")
    return dataclasses.replace(m, fetched_photos=FETCHED_DIR)


def _photo_urls(path: Path, m: ColumnMapping, limit: int | None) -> list[str]:
    urls = []
    for _, row in product_rows(read_rows(path, limit), m):
        url = photo_url(row, m)
        if url is not None:
            urls.append(url)
    return urls


async def start_run(engine: Engine, report: IngestReport, path: Path, m: Any, root: Path, limit: int | None,
                    progress: bool) -> None:
    """Before any row is encoded (single process and Ray alike): the image blend, set, re-chosen or chosen,
    and whether this run re-embeds the catalog's vectors."""
    choice = await _blend_for_run(engine, path, m, root, limit)
    if choice is not None:
        report.image_blend = choice.to_dict()
        rule = getattr(engine, "blend_sample_keep", None) if choice.source != "set" else None
        if rule is not None:
            report.image_blend["sample"] = rule.why
        if progress:
            how = "set" if choice.source == "set" else \
                f"chosen on {choice.photos} of its photos{' the head never trained on' if rule else ''}"
            say(f"image blend for this catalog: {choice.beta:g} x tuned vector + {1 - choice.beta:g} x zero-shot map "
                f"({how}: {choice.reason}){'; provisional' if choice.provisional else ''}")
    report.stale = engine.stale_vectors  # after the blend: a changed beta re-embeds like a model change
    if report.stale and progress:
        say(f"re-embedding every product of this catalog: {report.stale}")


async def finish_run(engine: Engine, report: IngestReport, path: Path, m: ColumnMapping, cfg: CatalogConfig, *,
                     snapshot: bool, progress: bool) -> None:
    """After the last row (single process and Ray alike): unlisted products deleted, --prune, products left with
    other models' vectors, and the index snapshot."""
    await delete_unlisted(engine, report, failed=report.failed(cfg.max_rejected_share))
    if progress and report.unlisted:
        u = report.unlisted
        said = u.get("refused") or (f"deleted the {u['deleted']} an earlier run had stored" if u["deleted"] else "")
        say(f"{u['rows']} rows are drafts or unpublished: left out" + (f"; {said}" if said else ""))
    if cfg.prune:
        await prune_unlisted(engine, report, path, m, cfg, failed=report.failed(cfg.max_rejected_share))
        if progress and report.pruned:
            p = report.pruned
            say(f"prune: {p['refused']}" if "refused" in p else
                f"prune: deleted {p['deleted']} of {p['stored']} stored products that {path.name} no longer lists")
    if report.stale:
        report.stale_left = await engine.settle_stale_vectors()
        if report.stale_left and progress:
            say(f"{report.stale_left} products are not in {path.name} and keep vectors from other models: "
                "upsert them again (with their photos) or delete them")
    deleted = (report.pruned or {}).get("deleted") or (report.unlisted or {}).get("deleted")
    if snapshot and (report.accepted or deleted):
        await engine.snapshot()


async def delete_unlisted(engine: Engine, report: IngestReport, *, failed: bool) -> None:
    """The stored products whose rows say they are not for sale now (a Shopify draft or archived product) are
    deleted: the feed says so of each by name, so this needs no --prune; not after a failed run, as --prune."""
    if not report.unlisted_ids:
        return
    named = {row_key(pid): pid for pid in report.unlisted_ids}
    stored = await asyncio.to_thread(engine.backend.owners, sorted(named))
    mine = [pid for key, pid in named.items() if stored.get(key) == pid]  # not another id sharing its row key
    report.unlisted = {"rows": len(report.unlisted_ids), "deleted": 0}
    if failed:
        report.unlisted["refused"] = "the run failed (rejected rows above --max-rejected-share): nothing deleted"
    elif mine:
        report.unlisted["deleted"] = await engine.delete(mine)


async def _blend_for_run(engine: Engine, path: Path, m: Any, root: Path, limit: int | None) -> BlendChoice | None:
    """Set, re-choose or choose the image blend before the rows are encoded (engine.config.image_blend:
    a beta, "auto", or None = only when it is due); None when this run leaves it as it is."""
    want = parse_image_blend(engine.config.image_blend)
    if isinstance(want, float):
        return engine.set_image_blend(want)
    if not engine.can_blend or (want is None and not engine.image_blend_pending):
        return None
    rule = getattr(engine, "blend_sample_keep", None)
    products, images = await asyncio.to_thread(blend_sample, path, m, root, limit,
                                               keep=rule.keep if rule is not None else None)
    if want is None and not engine.image_blend_due(sum(1 for img in images if img)):
        return None
    return await asyncio.to_thread(engine.calibrate_image_blend, products, images, force=want == AUTO)


def say(line: str) -> None:
    """A line for the person at the terminal: stderr, so stdout carries only the JSON report."""
    print(line, file=sys.stderr, flush=True)


def blend_sample(path: Path, m: Any, root: Path, limit: int | None, n: int = SAMPLE,
                 keep: Callable[[Product], bool] | None = None) -> tuple[list[Product], list[bytes | None]]:
    """Up to `n` products over the rows to be indexed, each category of the catalog covered and the rest spread
    evenly (zero_shot_blend.covering: files are often sorted by category), with their photo bytes; rows that
    fail to parse or read are skipped here and reported by the run. `keep` limits the sample to the products it
    accepts (those the head never trained on: engine/trained_products.py)."""
    # a counting pass notes the candidate rows' numbers and leaves (not rows: never all held in memory)
    numbers, leaves = [], []
    for i, row in _candidate_rows(path, m, limit, keep):
        numbers.append(i)
        leaves.append(row_leaf(row, m))
    wanted = {numbers[k] for k in covering(leaves, n)}
    last = max(wanted, default=-1)
    products: list[Product] = []
    images: list[bytes | None] = []
    for i, (_, row) in enumerate(product_rows(read_rows(path, limit), m)):
        if i > last:
            break
        if i not in wanted:
            continue
        try:
            product, image_path = to_product(row, m, root)
            image = image_path.read_bytes() if image_path is not None else None
        except (RowError, OSError):
            continue
        products.append(product)
        images.append(image)
    return products, images


def _candidate_rows(path: Path, m: Any, limit: int | None,
                    keep: Callable[[Product], bool] | None) -> Iterator[tuple[int, dict[str, Any]]]:
    """(number, row) of the rows the sample may take: all of them, or those whose products `keep` accepts,
    judged by id and title alone (not a whole to_product per row, which stats its photo; a row whose id
    cannot be read is not sampled then)."""
    for i, (_, row) in enumerate(product_rows(read_rows(path, limit), m)):
        if keep is None:
            yield i, row
        elif (pid := readable_id(row, m)) is not None and keep(Product(id=pid, title=row_title(row, m))):
            yield i, row


def index_catalog(path: Path | str, *, engine: Engine | None = None, config: EngineConfig | None = None,
                  **kwargs: Any) -> IngestReport:
    """Synchronous entry point for the CLI: opens the engine from `config` (real models) when no
    engine is given, ingests, snapshots the index and closes what it opened."""
    if (engine is None) == (config is None):
        raise InvalidInput("give exactly one of engine or config", field="engine")
    catalog = kwargs.get("catalog")
    if catalog is not None and Path(path).is_file():  # a bad column map fails before the models load
        mapping_for(check_config(catalog), header_of(Path(path)))

    async def run() -> IngestReport:
        from kuamo.engine.engine import Engine

        eng = engine if engine is not None else await Engine.open(config)  # type: ignore[arg-type]
        try:
            return await aindex_catalog(path, eng, **kwargs)
        finally:
            if engine is None:
                await eng.close()

    return asyncio.run(run())
