"""The embedded catalog backend (the default): one SQLite file (engine/store.py, the source of truth) and a
FAISS index (engine/index.py, a cache of the store's vectors) with snapshots.

Start-up loads the index snapshot and replays the store's changes after the snapshot's seq, or rebuilds from
the store when there is no usable snapshot. Every write commits to the store first, then updates the index;
the index is re-planned when the catalog outgrew it and snapshotted every `snapshot_every` changes.
Writers are serialised by the caller (the engine's write lock); searches run concurrently with each other.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from kuamo.engine.bm25 import Bm25Index
from kuamo.engine.catalog_backend import Candidates
from kuamo.engine.errors import ArtifactError, KuamoError
from kuamo.engine.ids import ProductId, row_key
from kuamo.engine.index import IndexConfig, VectorIndex
from kuamo.engine.lexical import COLUMN_WEIGHTS, query_terms
from kuamo.engine.store import CatalogStore, StoredRow
from kuamo.engine.types import Filters, Product
from kuamo.engine.understanding import Facets, facets_of

log = logging.getLogger(__name__)


class RWLock:
    """Many concurrent FAISS searches, or one writer. Writer-preferring so an ingest makes progress."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._readers = 0
        self._writer = False
        self._waiting_writers = 0

    def acquire_read(self) -> None:
        with self._cond:
            while self._writer or self._waiting_writers:
                self._cond.wait()
            self._readers += 1

    def release_read(self) -> None:
        with self._cond:
            self._readers -= 1
            if not self._readers:
                self._cond.notify_all()

    def acquire_write(self) -> None:
        with self._cond:
            self._waiting_writers += 1
            while self._writer or self._readers:
                self._cond.wait()
            self._waiting_writers -= 1
            self._writer = True

    def release_write(self) -> None:
        with self._cond:
            self._writer = False
            self._cond.notify_all()


class EmbeddedBackend:
    """Implements CatalogBackend on `data_dir`/catalog.sqlite + `data_dir`/index/."""

    kind = "embedded"

    def __init__(self, data_dir: Path | str, *, dim: int, index: IndexConfig | None = None,
                 synchronous: str = "NORMAL", snapshot_every: int = 20_000) -> None:
        self.data_dir = Path(data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.dim = dim
        self.index_config = index or IndexConfig()
        self.snapshot_every = snapshot_every
        self.index_dir = self.data_dir / "index"
        self.store = CatalogStore(self.data_dir / "catalog.sqlite", dim=dim, synchronous=synchronous)
        self._lock = RWLock()
        self.index_seq = 0
        self._changes_since_snapshot = 0
        self.recovery: dict[str, Any] = {}
        self.index: VectorIndex | None = None  # recover() after the engine checked layout and encoders
        self._bm25: Bm25Index | None = None  # built from the FTS5 table on first lexical use
        self._facets: dict[int, Facets] = {}  # what query understanding reads, kept in step with the BM25
        self._colour_values: frozenset[str] | None = None  # the facets' colours; None = to recount
        self._bm25_lock = threading.Lock()

    # -- recovery -----------------------------------------------------------------------------------------
    def recover(self) -> None:
        """Snapshot + replay, or a full rebuild; then check the index and the store agree."""
        t0 = time.perf_counter()
        index: VectorIndex | None = None
        mode = "rebuild"
        if self.index_dir.exists():
            try:
                index = VectorIndex.load(self.index_dir, mmap=True)
                index.cfg = self.index_config  # search settings and thresholds are the operator's, not the snapshot's
                if index.dim != self.dim:
                    raise ArtifactError(f"snapshot is {index.dim}-d, layout is {self.dim}-d")
                seq = int(index.seq)
                up, gone, last = self.store.changes_since(seq)
                if len(gone):
                    index.remove(gone)
                if len(up):
                    ids, vecs = self.store.vectors(up)
                    index.upsert(ids, vecs)
                self.index_seq = last
                self._changes_since_snapshot = len(up) + len(gone)
                mode = f"snapshot@{seq}+replay({len(up)} upserts, {len(gone)} deletes)"
                if len(index) != self.store.count():
                    raise ArtifactError(f"index holds {len(index)} vectors, store {self.store.count()}")
            except (KuamoError, OSError, ValueError, RuntimeError, KeyError) as exc:
                log.warning("index snapshot in %s unusable (%s); rebuilding from the store", self.index_dir, exc)
                index = None
                mode = f"rebuild (snapshot unusable: {exc})"
        if index is None:
            self.index_seq, index = self._fresh_index()
            self._changes_since_snapshot = len(index)
        self.index = index
        if self.store.lexical_count() != self.store.count():  # written in the products' transactions: never
            log.warning("lexical index out of step with the store; rebuilding it")  # expected, but cheap to see
            self.store.rebuild_lexical()
        self.recovery = {"mode": mode, "seconds": round(time.perf_counter() - t0, 3), "vectors": len(index),
                         "seq": self.index_seq}
        log.info("index recovered: %s", self.recovery)

    def _fresh_index(self) -> tuple[int, VectorIndex]:
        """An index built (and trained) from every vector in the store, with the change it is current to."""
        index = VectorIndex(self.dim, self.index_config)
        seq = self.store.last_seq()  # read before the vectors: replaying a bit twice is harmless
        ids, vecs = self.store.all_vectors()
        index.build(ids, vecs)
        return seq, index

    def _live(self) -> VectorIndex:
        if self.index is None:
            raise RuntimeError("EmbeddedBackend.recover() was not called")
        return self.index

    # -- metadata -----------------------------------------------------------------------------------------
    def get_meta(self, key: str) -> str | None:
        return self.store.get_meta(key)

    def set_meta(self, key: str, value: str) -> None:
        self.store.set_meta(key, value)

    # -- writes -------------------------------------------------------------------------------------------
    def write(self, rows: Sequence[StoredRow]) -> None:
        seq = self.store.upsert(rows)  # durable first: the index is a cache of the store
        ids = np.asarray([row_key(r.product.id) for r in rows], dtype=np.int64)
        vecs = np.stack([r.vector for r in rows]).astype(np.float32)
        self._lock.acquire_write()
        try:
            self._live().upsert(ids, vecs)
            self.index_seq = seq
        finally:
            self._lock.release_write()
        self._after_change(len(rows))

    def delete(self, keys: Sequence[int]) -> int:
        gone, seq = self.store.delete(keys)
        self._lock.acquire_write()
        try:
            if gone:
                self._live().remove(np.asarray(gone, dtype=np.int64))
            self.index_seq = seq
        finally:
            self._lock.release_write()
        self._after_change(len(gone))
        return len(gone)

    def _after_change(self, n: int) -> None:
        """Re-plan the index when the catalog outgrew it; snapshot every `snapshot_every` changes."""
        self._changes_since_snapshot += n
        if self._index_outgrown():
            self.reindex()
        if self._changes_since_snapshot >= self.snapshot_every:
            self.snapshot()

    def _index_outgrown(self) -> bool:
        # Upserts keep the index kind and IVF parameters; they were chosen for the size at build time.
        index = self._live()
        n, cfg = len(index), index.cfg
        if index.kind == "flat":
            return n >= cfg.flat_threshold
        if n < cfg.flat_threshold // 2:
            return True
        nlist = int(index.params.get("nlist", 0))
        return cfg.nlist is None and nlist > 0 and 4 * n ** 0.5 > 2 * nlist  # catalog grew ~4x since training

    def reindex(self) -> None:
        """Build a fresh index from the store beside the live one, then swap (searches go on meanwhile;
        no write can slip in because the caller serialises writes)."""
        t0 = time.perf_counter()
        _, fresh = self._fresh_index()  # index_seq stays: the caller kept every write out
        self._lock.acquire_write()
        try:
            self.index = fresh
        finally:
            self._lock.release_write()
        self._changes_since_snapshot = max(self._changes_since_snapshot, self.snapshot_every)
        log.info("index re-planned as %s %s for %d vectors in %.2fs", fresh.kind, fresh.params, len(fresh),
                 time.perf_counter() - t0)

    def snapshot(self) -> None:
        """Atomic snapshot tagged with the last change it contains; then prune the replayed log."""
        self._lock.acquire_read()  # writers are serialised by the caller; readers may continue
        try:
            seq = self.index_seq
            self._live().save(self.index_dir, seq=seq)
        finally:
            self._lock.release_read()
        self.store.prune_changes(seq)
        self._changes_since_snapshot = 0

    # -- reads --------------------------------------------------------------------------------------------
    @property
    def has_string_ids(self) -> bool:
        return self.store.has_string_ids

    def get(self, key: int, shown: ProductId | None = None) -> Product:
        return self.store.get(key, shown)

    def get_many(self, keys: Sequence[int]) -> dict[int, Product]:
        return self.store.get_many(keys)

    def owners(self, keys: Sequence[int]) -> dict[int, ProductId]:
        return self.store.owners(keys)

    def hashes(self, keys: Sequence[int]) -> dict[int, str]:
        return self.store.hashes(keys)

    def vectors(self, keys: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """From the index's float32 copy (the same vectors as the store's, without a SQLite read)."""
        self._lock.acquire_read()
        try:
            index = self._live()
            present = [int(k) for k in keys if int(k) in index]  # a concurrent delete may have taken one
            got = np.asarray(present, dtype=np.int64)
            vecs = index.vectors(got) if present else np.zeros((0, self.dim), dtype=np.float32)
        finally:
            self._lock.release_read()
        return got, vecs

    def keys(self) -> np.ndarray:
        return self.store.ids()

    def count(self) -> int:
        return self.store.count()

    def categories(self) -> list[str]:
        return self.store.categories()

    def attribute_names(self) -> set[str]:
        return self.store.attribute_names()

    def allowed_keys(self, filters: Filters) -> np.ndarray | None:
        """Row keys passing the filters, None when the filter is empty (recommendations' popular list)."""
        return self.store.allowed_ids(filters)

    def search(self, queries: np.ndarray, n: int, *, filters: Filters, nprobe: int | None = None,
               rerank_factor: int | None = None) -> Candidates:
        t_f = time.perf_counter()
        allowed = self.store.allowed_ids(filters)
        filter_ms = (time.perf_counter() - t_f) * 1000
        self._lock.acquire_read()
        try:
            scores, ids = self._live().search(queries, n, nprobe=nprobe, rerank_factor=rerank_factor,
                                              allowed_ids=allowed)
        finally:
            self._lock.release_read()
        return Candidates(scores, ids, None if allowed is None else len(allowed), filter_ms)

    supports_lexical = True

    def lexical(self, text: str, n: int, *, filters: Filters) -> Candidates:
        """BM25 over the FTS5 table of the catalog's SQLite file, scored as FTS5 scores it but in memory
        (engine/bm25.py: FTS5 itself took 15-23 ms a query on fashion); filtered by the vector path's SQL."""
        terms = query_terms(text)
        keys, scores = np.zeros(0, dtype=np.int64), np.zeros(0)
        if terms and n > 0:
            allowed = self.store.allowed_ids(filters)
            with self._bm25_lock:
                keys, scores = self._bm25_in_step().search(terms, n, allowed)
        return Candidates(scores.astype(np.float32).reshape(1, -1), keys.astype(np.int64).reshape(1, -1))

    def lexical_current(self) -> bool:
        """Whether the in-memory BM25 and facets already hold every change this backend committed, so a hybrid
        query reads them without catching up on the change log (the engine may then search on its event loop)."""
        index = self._bm25
        return index is not None and index.seq == self.index_seq

    def facets(self, keys: Sequence[int]) -> dict[int, Facets]:
        """The understanding's facets of the stored `keys`, from memory (in step with the store, as the BM25)."""
        with self._bm25_lock:
            self._bm25_in_step()
            got = self._facets
            return {k: got[k] for k in keys if k in got}

    def facet_colours(self) -> frozenset[str]:
        """Every colour value the catalog's products hold (lower-case), in step with the store."""
        with self._bm25_lock:
            self._bm25_in_step()
            if self._colour_values is None:
                self._colour_values = frozenset(f.colour for f in self._facets.values() if f.colour)
            return self._colour_values

    def _read_facets(self, keys: list[int] | None) -> dict[int, Facets]:
        """Facets of `keys` (every product when None) from the store: products and their photo colours."""
        keys = self.store.ids().tolist() if keys is None else keys
        colours = self.store.photo_colours(keys)
        return {k: facets_of(p, colours.get(k, ())) for k, p in self.store.get_many(keys).items()}

    def warm_lexical(self) -> None:
        """Build the in-memory BM25 now (at open, where lexical ranking is on) rather than in the first query."""
        with self._bm25_lock:
            self._bm25_in_step()

    def _bm25_in_step(self) -> Bm25Index:
        """The in-memory BM25 holding every change the store has committed (read-your-writes): built from the
        FTS5 rows on first use, then the store's change log applied; a pruned log means a rebuild."""
        last = self.store.last_seq()  # read before the rows: a change made meanwhile is applied twice, harmlessly
        index = self._bm25
        if index is not None and index.seq == last:
            return index
        try:
            if index is None:
                raise ArtifactError("not built yet")
            up, gone, last = self.store.changes_since(index.seq)
            index.remove(gone.tolist())
            index.upsert(self.store.lexical_rows(up.tolist()))
            for k in gone.tolist():
                self._facets.pop(k, None)
            self._facets.update(self._read_facets(up.tolist()))
        except ArtifactError:
            index = Bm25Index(COLUMN_WEIGHTS)
            index.upsert(self.store.lexical_rows())
            self._facets = self._read_facets(None)
        index.seq = last
        self._colour_values = None
        self._bm25 = index
        return index

    # -- upkeep -------------------------------------------------------------------------------------------
    def check(self) -> None:
        """A local file is always there once opened."""

    def stats(self) -> dict:
        index = self._live()
        return {"products": self.store.count(), "indexed": len(index), "store_seq": self.store.last_seq(),
                "index_seq": self.index_seq, "index": {**index.stats(), "recovery": self.recovery}}

    def close(self) -> None:
        self.store.close()
