"""The catalog store: one SQLite file (WAL) holding products, their fused vectors and a change log.

It is the source of truth. Every write commits product + vector + change row in one transaction, so
the vector index (a cache of `vectors`) can always be rebuilt, or brought up to date by replaying the
changes after its snapshot's sequence number.
"""

from __future__ import annotations

import json
import math
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kuamo.engine.errors import ArtifactError, InvalidInput, NotFound
from kuamo.engine.ids import ProductId, canonical_id, row_key
from kuamo.engine.lexical import COLUMN_WEIGHTS, COLUMNS, document_columns, match_expression
from kuamo.engine.rules import filter_sql, validate_filters
from kuamo.engine.sqlite_util import connect_wal, immediate_tx
from kuamo.engine.types import Filters, Product

SCHEMA_VERSION = 2  # 2: products.ext_id (string ids); a version-1 store is migrated on open

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS products (
    id INTEGER PRIMARY KEY,
    title TEXT NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    category TEXT NOT NULL DEFAULT '',
    brand TEXT,
    price REAL,
    rating REAL,
    attributes TEXT NOT NULL DEFAULT '{}',
    image_ref TEXT,
    content_hash TEXT NOT NULL,
    ext_id TEXT  -- the catalog's id when it is a string (id is then its hash, engine/ids.py); NULL = str(id)
);
CREATE INDEX IF NOT EXISTS products_category ON products(category);
CREATE INDEX IF NOT EXISTS products_brand ON products(brand);
CREATE INDEX IF NOT EXISTS products_price ON products(price);
CREATE INDEX IF NOT EXISTS products_rating ON products(rating);
CREATE TABLE IF NOT EXISTS vectors (id INTEGER PRIMARY KEY, vec BLOB NOT NULL);
-- the dominant colours kuamo read off a product's photo (engine/photo_colour.py), comma-separated
CREATE TABLE IF NOT EXISTS photo_colours (id INTEGER PRIMARY KEY, colours TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS changes (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id INTEGER NOT NULL,
    op TEXT NOT NULL CHECK (op IN ('upsert', 'delete'))
);
"""

_COLS = "id, title, description, category, brand, price, rating, attributes, image_ref, ext_id"

# The lexical (BM25) index: an FTS5 table in the same file, rowid = the product's row key, written in the same
# transaction as the product, so the two agree after any crash. The terms are made by engine/lexical.py (CJK
# bigrams, plural stemming); FTS5 only splits them on spaces. A new LEXICAL_VERSION rebuilds it on open.
LEXICAL_VERSION = "3"  # 2: a lone letter glued to CJK is no term ("T恤"); 3: no lone Latin letter is
LEXICAL_SCHEMA = (f"CREATE VIRTUAL TABLE lexical USING fts5({', '.join(COLUMNS)}, "
                  "tokenize='unicode61 remove_diacritics 0')")
_LEX_INSERT = f"INSERT INTO lexical(rowid, {', '.join(COLUMNS)}) VALUES (?,?,?,?,?)"


@dataclass(frozen=True)
class StoredRow:
    """One product ready to commit: its fused vector and the hash of everything it was built from."""

    product: Product
    vector: np.ndarray
    content_hash: str
    photo_colours: tuple[str, ...] = ()  # read off its photo at ingest (engine/photo_colour.py)


def _row_to_product(r: tuple) -> Product:
    return Product(id=r[0] if r[9] is None else r[9], title=r[1], description=r[2], category=r[3], brand=r[4],
                   price=r[5], rating=r[6], attributes=json.loads(r[7]), image_ref=r[8])


def _note_lexical_seq(db: sqlite3.Connection, seq: int) -> None:
    """The last change the lexical index holds, written in the change's own transaction: a store another build
    wrote to without it is found behind on open and rebuilt."""
    db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('lexical_seq', ?)", (str(seq),))


def check_product(p: Product) -> None:
    """Raise InvalidInput naming the field when a product cannot be stored."""
    pid = canonical_id(p.id)
    if pid != p.id or isinstance(pid, str) != isinstance(p.id, str):
        raise InvalidInput(f"id {p.id!r} is not in canonical form (engine/ids.py canonical_id: {pid!r})", field="id")
    if not isinstance(p.title, str):
        raise InvalidInput("title must be a string", field="title")
    for name in ("price", "rating"):
        v = getattr(p, name)
        if v is None:
            continue
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(float(v)) or v < 0:
            raise InvalidInput(f"{name} must be a finite non-negative number, got {v!r}", field=name)
    if p.rating is not None and p.rating > 5:
        raise InvalidInput(f"rating must be within 0..5, got {p.rating}", field="rating")
    for k, v in p.attributes.items():
        if not isinstance(k, str) or not isinstance(v, str | int | float | bool):
            raise InvalidInput(f"attribute {k!r} must map a name to a string, number or bool", field="attributes")
        if isinstance(v, float) and not math.isfinite(v):
            raise InvalidInput(f"attribute {k!r} is not finite", field="attributes")


def check_owner(pid: ProductId, owner: ProductId) -> None:
    """InvalidInput when `pid`'s row key is held by another id (a 63-bit hash collision)."""
    if owner != pid or isinstance(owner, str) != isinstance(pid, str):
        raise InvalidInput(f"id {pid!r} has the same row key ({row_key(pid)}) as the stored id {owner!r}; "
                           "give one of them another id", field="id")


class CatalogStore:
    """Thread-safe (one connection behind a lock; SQLite work here is short)."""

    def __init__(self, path: Path | str, *, dim: int | None = None, synchronous: str = "NORMAL") -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._db = connect_wal(self.path, synchronous=synchronous)
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.executescript(SCHEMA)
        version = self.get_meta("schema_version")
        if version == "1":
            self._migrate_v1()
            version = str(SCHEMA_VERSION)
        if version is None:
            self.set_meta("schema_version", str(SCHEMA_VERSION))
        elif int(version) != SCHEMA_VERSION:
            raise ArtifactError(f"{self.path} has schema version {version}, this build reads {SCHEMA_VERSION}")
        self.dim = dim
        stored_dim = self.get_meta("dim")
        if dim is not None:
            if stored_dim is None:
                self.set_meta("dim", str(dim))
            elif int(stored_dim) != dim:
                raise ArtifactError(f"{self.path} holds {stored_dim}-d vectors but the layout is {dim}-d; "
                                    "re-index into a new data directory")
        elif stored_dim is not None:
            self.dim = int(stored_dim)

        self.has_string_ids = self._db.execute(
            "SELECT 1 FROM products WHERE ext_id IS NOT NULL LIMIT 1").fetchone() is not None
        # a build without the lexical index (or another version of it) may have written since: rebuild it
        if (self.get_meta("lexical_version") != LEXICAL_VERSION
                or int(self.get_meta("lexical_seq") or -1) != self.last_seq()):
            self.rebuild_lexical()

    # -- the lexical index ------------------------------------------------------------------------
    def rebuild_lexical(self) -> int:
        """(Re)build the BM25 index from the products, in one transaction; returns the rows indexed. Runs on
        open for a store made before the index existed (or with another LEXICAL_VERSION)."""
        with self._tx() as db:
            db.execute("DROP TABLE IF EXISTS lexical")
            db.execute(LEXICAL_SCHEMA)
            weights = ", ".join(str(w) for w in COLUMN_WEIGHTS)
            db.execute("INSERT INTO lexical(lexical, rank) VALUES ('rank', ?)", (f"bm25({weights})",))
            n = 0
            cur = db.execute(f"SELECT {_COLS} FROM products")
            while rows := cur.fetchmany(5000):
                db.executemany(_LEX_INSERT, [(r[0], *document_columns(_row_to_product(r))) for r in rows])
                n += len(rows)
            db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('lexical_version', ?)", (LEXICAL_VERSION,))
            row = db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'changes'").fetchone()
            _note_lexical_seq(db, 0 if row is None else int(row[0]))
        return n

    def lexical_rows(self, keys: Sequence[int] | None = None) -> list[tuple[int, tuple[str, ...]]]:
        """(row key, the FTS5 row's column texts) of `keys` that exist, or of every row (engine/bm25.py)."""
        sql = f"SELECT rowid, {', '.join(COLUMNS)} FROM lexical"
        with self._lock:
            if keys is None:
                return [(int(r[0]), tuple(r[1:])) for r in self._db.execute(sql)]
            out = []
            for start in range(0, len(keys), 500):
                chunk = [int(k) for k in keys[start: start + 500]]
                out += [(int(r[0]), tuple(r[1:])) for r in self._db.execute(
                    f"{sql} WHERE rowid IN ({','.join('?' * len(chunk))})", chunk)]
            return out

    def lexical_count(self) -> int:
        with self._lock:
            return self._db.execute("SELECT count(*) FROM lexical").fetchone()[0]

    def lexical(self, query_terms: Sequence[str], n: int, filters: Filters | None = None) -> list[tuple[int, float]]:
        """Up to `n` (row key, BM25 score > 0) best first, among the products passing `filters`, matching any
        of `query_terms` (engine/lexical.py query_terms); [] for no terms. FTS5's own answer: searches use
        engine/bm25.py (the same scores ~50x faster), which is tested and benchmarked against this."""
        if not query_terms or n <= 0:
            return []
        sql = "SELECT lexical.rowid, -rank FROM lexical"
        params: list = [match_expression(query_terms)]
        where = "lexical MATCH ?"
        if filters is not None and not filters.is_empty():
            validate_filters(filters)
            fwhere, fparams = filter_sql(filters)
            sql += " JOIN products ON products.id = lexical.rowid"
            where += f" AND {fwhere}"
            params += fparams
        with self._lock:
            return [(int(k), float(sc)) for k, sc in self._db.execute(
                f"{sql} WHERE {where} ORDER BY rank LIMIT ?", (*params, int(n)))]

    def _migrate_v1(self) -> None:
        """Version 1 kept integer ids only: add the external-id column (NULL = the integer id itself)."""
        with self._tx() as db:
            if "ext_id" not in {r[1] for r in db.execute("PRAGMA table_info(products)")}:
                db.execute("ALTER TABLE products ADD COLUMN ext_id TEXT")
            db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _tx(self) -> AbstractContextManager[sqlite3.Connection]:
        return immediate_tx(self._lock, self._db)

    # -- meta -------------------------------------------------------------------------------------
    def get_meta(self, key: str) -> str | None:
        with self._lock:
            row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else row[0]

    def set_meta(self, key: str, value: str) -> None:
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (key, value))

    # -- writes -----------------------------------------------------------------------------------
    def upsert(self, rows: Sequence[StoredRow]) -> int:
        """Commit all rows (product, vector, change) in ONE transaction; returns the last change seq. A row
        whose id hashes to the key another stored id holds is refused (InvalidInput), never overwritten."""
        if not rows:
            return self.last_seq()
        keys = []
        for r in rows:
            check_product(r.product)
            keys.append(row_key(r.product.id))
            if self.dim is not None and r.vector.shape != (self.dim,):
                raise InvalidInput(f"vector of product {r.product.id} has shape {r.vector.shape}, "
                                   f"expected ({self.dim},)", field="vector")
        with self._tx() as db:
            owners = self._owners(db, keys)
            for key, r in zip(keys, rows, strict=True):
                check_owner(r.product.id, owners.get(key, r.product.id))
            db.executemany(
                f"INSERT OR REPLACE INTO products({_COLS}, content_hash) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                [(key, p.title, p.description, p.category, p.brand,
                  None if p.price is None else float(p.price), None if p.rating is None else float(p.rating),
                  json.dumps(p.attributes, ensure_ascii=False, sort_keys=True), p.image_ref,
                  p.id if isinstance(p.id, str) else None, r.content_hash)
                 for key, r in zip(keys, rows, strict=True) for p in [r.product]])
            db.executemany("INSERT OR REPLACE INTO vectors(id, vec) VALUES (?, ?)",
                           [(key, np.ascontiguousarray(r.vector, dtype=np.float32).tobytes())
                            for key, r in zip(keys, rows, strict=True)])
            db.executemany("DELETE FROM lexical WHERE rowid = ?", [(key,) for key in keys])
            db.executemany(_LEX_INSERT, [(key, *document_columns(r.product))
                                         for key, r in zip(keys, rows, strict=True)])
            db.executemany("DELETE FROM photo_colours WHERE id = ?", [(key,) for key in keys])
            db.executemany("INSERT INTO photo_colours(id, colours) VALUES (?, ?)",
                           [(key, ",".join(r.photo_colours)) for key, r in zip(keys, rows, strict=True)
                            if r.photo_colours])
            db.executemany("INSERT INTO changes(id, op) VALUES (?, 'upsert')", [(key,) for key in keys])
            seq = db.execute("SELECT max(seq) FROM changes").fetchone()[0]
            _note_lexical_seq(db, seq)
        self.has_string_ids = self.has_string_ids or any(isinstance(r.product.id, str) for r in rows)
        return seq

    @staticmethod
    def _owners(db: sqlite3.Connection, keys: Sequence[int]) -> dict[int, ProductId]:
        out: dict[int, ProductId] = {}
        for start in range(0, len(keys), 500):
            chunk = [int(k) for k in keys[start: start + 500]]
            q = f"SELECT id, ext_id FROM products WHERE id IN ({','.join('?' * len(chunk))})"
            out.update((k, k if e is None else e) for k, e in db.execute(q, chunk))
        return out

    def owners(self, keys: Sequence[int]) -> dict[int, ProductId]:
        """The stored external id of each row key that exists."""
        with self._lock:
            return self._owners(self._db, keys)

    def delete(self, ids: Sequence[int]) -> tuple[list[int], int]:
        """Delete the products that exist; returns (deleted ids, last change seq)."""
        ids = [int(i) for i in dict.fromkeys(ids)]
        with self._tx() as db:
            present = [i for i in ids if db.execute("SELECT 1 FROM products WHERE id = ?", (i,)).fetchone()]
            db.executemany("DELETE FROM products WHERE id = ?", [(i,) for i in present])
            db.executemany("DELETE FROM vectors WHERE id = ?", [(i,) for i in present])
            db.executemany("DELETE FROM lexical WHERE rowid = ?", [(i,) for i in present])
            db.executemany("DELETE FROM photo_colours WHERE id = ?", [(i,) for i in present])
            db.executemany("INSERT INTO changes(id, op) VALUES (?, 'delete')", [(i,) for i in present])
            seq = db.execute("SELECT coalesce(max(seq), 0) FROM changes").fetchone()[0]
            _note_lexical_seq(db, seq)
        return present, seq

    def prune_changes(self, upto_seq: int) -> int:
        """Forget changes an index snapshot already contains (keeps the newest row so seq never restarts)."""
        with self._lock:
            last = self.last_seq()
            cur = self._db.execute("DELETE FROM changes WHERE seq <= ? AND seq < ?", (upto_seq, last))
            return cur.rowcount

    # -- reads ------------------------------------------------------------------------------------
    def last_seq(self) -> int:
        with self._lock:
            # sqlite_sequence keeps the high-water mark even after pruning.
            row = self._db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'changes'").fetchone()
        return 0 if row is None else int(row[0])

    def count(self) -> int:
        with self._lock:
            return self._db.execute("SELECT count(*) FROM products").fetchone()[0]

    def categories(self) -> list[str]:
        """The distinct category paths of the catalog (indexed column)."""
        with self._lock:
            return [r[0] for r in self._db.execute("SELECT DISTINCT category FROM products")]

    def attribute_names(self) -> set[str]:
        """Every attribute name any stored product has (one scan; the engine then adds what it writes)."""
        with self._lock:
            return {r[0] for r in self._db.execute(
                "SELECT DISTINCT j.key FROM products, json_each(products.attributes) AS j")}

    def get(self, id: int, shown: ProductId | None = None) -> Product:
        """The product at row key `id` (`shown`: the id as the caller wrote it, for the error)."""
        got = self.get_many([id])
        if id not in got:
            raise NotFound(f"no product with id {id if shown is None else shown!r}", field="id")
        return got[id]

    def get_many(self, ids: Sequence[int]) -> dict[int, Product]:
        out: dict[int, Product] = {}
        ids = [int(i) for i in ids]
        with self._lock:
            for start in range(0, len(ids), 500):  # stay under SQLite's bound-parameter limit
                chunk = ids[start: start + 500]
                q = f"SELECT {_COLS} FROM products WHERE id IN ({','.join('?' * len(chunk))})"
                for r in self._db.execute(q, chunk):
                    out[r[0]] = _row_to_product(r)
        return out

    def photo_colours(self, ids: Sequence[int] | None = None) -> dict[int, tuple[str, ...]]:
        """Row key -> the colours read off its photo, for the `ids` that have some (every row when None)."""
        sql = "SELECT id, colours FROM photo_colours"
        with self._lock:
            if ids is None:
                return {int(k): tuple(c.split(",")) for k, c in self._db.execute(sql)}
            out: dict[int, tuple[str, ...]] = {}
            ids = [int(i) for i in ids]
            for start in range(0, len(ids), 500):
                chunk = ids[start: start + 500]
                out.update((int(k), tuple(c.split(","))) for k, c in self._db.execute(
                    f"{sql} WHERE id IN ({','.join('?' * len(chunk))})", chunk))
            return out

    def hashes(self, ids: Sequence[int]) -> dict[int, str]:
        out: dict[int, str] = {}
        ids = [int(i) for i in ids]
        with self._lock:
            for start in range(0, len(ids), 500):
                chunk = ids[start: start + 500]
                q = f"SELECT id, content_hash FROM products WHERE id IN ({','.join('?' * len(chunk))})"
                out.update(self._db.execute(q, chunk).fetchall())
        return out

    def vectors(self, ids: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """(found ids, (n, dim) float32) for the ids that exist, in the order asked."""
        ids = [int(i) for i in ids]
        found: dict[int, bytes] = {}
        with self._lock:
            for start in range(0, len(ids), 500):
                chunk = ids[start: start + 500]
                q = f"SELECT id, vec FROM vectors WHERE id IN ({','.join('?' * len(chunk))})"
                found.update(self._db.execute(q, chunk).fetchall())
        keep = [i for i in ids if i in found]
        vecs = np.stack([np.frombuffer(found[i], dtype=np.float32) for i in keep]) if keep else \
            np.zeros((0, self.dim or 0), dtype=np.float32)
        return np.asarray(keep, dtype=np.int64), vecs

    def iter_vectors(self, batch: int = 20_000) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """All (ids, vectors) in id order, in batches (for a full index rebuild)."""
        last = -1
        while True:
            with self._lock:
                rows = self._db.execute("SELECT id, vec FROM vectors WHERE id > ? ORDER BY id LIMIT ?",
                                        (last, batch)).fetchall()
            if not rows:
                return
            ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
            vecs = np.frombuffer(b"".join(r[1] for r in rows), dtype=np.float32).reshape(len(rows), -1)
            yield ids, vecs
            last = int(ids[-1])

    def ids(self) -> np.ndarray:
        with self._lock:
            return np.fromiter((r[0] for r in self._db.execute("SELECT id FROM products")), dtype=np.int64)

    def all_vectors(self) -> tuple[np.ndarray, np.ndarray]:
        parts = list(self.iter_vectors())
        if not parts:
            return np.zeros(0, dtype=np.int64), np.zeros((0, self.dim or 0), dtype=np.float32)
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])

    def changes_since(self, seq: int) -> tuple[np.ndarray, np.ndarray, int]:
        """Net effect of changes after `seq`: (ids to (re)load from `vectors`, ids to remove, last seq).
        Raises ArtifactError when the log was pruned past `seq` (the caller must rebuild)."""
        with self._lock:
            first = self._db.execute("SELECT min(seq) FROM changes").fetchone()[0]
            last = self.last_seq()
            if seq < last and first is not None and first > seq + 1:
                raise ArtifactError(f"change log starts at {first}, cannot replay from {seq}")
            rows = self._db.execute(
                "SELECT c.id, p.id IS NOT NULL FROM (SELECT DISTINCT id FROM changes WHERE seq > ?) c "
                "LEFT JOIN products p ON p.id = c.id", (seq,)).fetchall()
        up = np.asarray([r[0] for r in rows if r[1]], dtype=np.int64)
        gone = np.asarray([r[0] for r in rows if not r[1]], dtype=np.int64)
        return up, gone, last

    def allowed_ids(self, filters: Filters) -> np.ndarray | None:
        """Ids passing the filters, or None when the filter is empty (= everything)."""
        if filters.is_empty():
            return None
        validate_filters(filters)
        where, params = filter_sql(filters)
        with self._lock:
            rows = self._db.execute(f"SELECT id FROM products WHERE {where}", params).fetchall()
        return np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
