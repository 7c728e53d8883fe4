"""The two SQLite habits the catalog store and the personal store share: a WAL connection usable from
worker threads, and an IMMEDIATE transaction under the owner's lock (writers queue instead of failing)."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def connect_wal(path: Path | str, *, synchronous: str = "NORMAL") -> sqlite3.Connection:
    db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=30)
    db.execute("PRAGMA journal_mode=WAL")
    # NORMAL in WAL mode survives a process crash (kill -9); FULL also survives power loss.
    db.execute(f"PRAGMA synchronous={synchronous}")
    return db


@contextmanager
def immediate_tx(lock: threading.RLock, db: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    with lock:
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
