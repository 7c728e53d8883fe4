"""Shopper events, taste profiles and the privacy rules around them.

- User ids are pseudonymised on arrival: HMAC-SHA256(key, user id). Only the pseudonym is stored; the raw
  id is never written to the database or a log. The key comes from config / KUAMO_USER_KEY, else from a
  0600 key file in the data directory (created once), so pseudonyms survive restarts.
- A profile is the time-decayed, event-weighted sum of the fused vectors of the products a shopper
  touched, kept incrementally as (S, W, t_ref): S(t) = S(t_ref) * 2^(-(t - t_ref)/half_life) + w * v.
  Its taste vector is S / W.
- ForgetUser deletes a shopper's events and profile; a retention period drops old events (and the
  profiles they fed are rebuilt from what is left).
"""

from __future__ import annotations

import hashlib
import hmac
import math
import os
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from kuamo.engine.errors import InvalidInput, names
from kuamo.engine.ids import ProductId, key_of
from kuamo.engine.sqlite_util import connect_wal, immediate_tx

SCHEMA = """
CREATE TABLE IF NOT EXISTS events (user TEXT NOT NULL, product INTEGER NOT NULL, kind TEXT NOT NULL,
                                   weight REAL NOT NULL, ts REAL NOT NULL);
CREATE INDEX IF NOT EXISTS events_user ON events(user, ts);
CREATE INDEX IF NOT EXISTS events_ts ON events(ts);
CREATE INDEX IF NOT EXISTS events_product ON events(product);
CREATE TABLE IF NOT EXISTS profiles (user TEXT PRIMARY KEY, vec BLOB NOT NULL, wsum REAL NOT NULL,
                                     ref_ts REAL NOT NULL, n INTEGER NOT NULL);
"""
KEY_ENV = "KUAMO_USER_KEY"
MAX_USER_ID = 256
FUTURE_SLACK_S = 86_400.0


def _default_event_weights() -> dict[str, float]:
    return {"view": 1.0, "click": 2.0, "add_to_cart": 4.0, "purchase": 8.0}


@dataclass(frozen=True, kw_only=True)
class PersonalConfig:
    half_life_days: float = 14.0
    event_weights: dict[str, float] = field(default_factory=_default_event_weights)
    retention_days: float = 365.0  # events older than this are dropped
    profile_weight: float = 0.3  # default blend of the profile into a search that names a user
    user_key: str | None = None  # HMAC key; else KUAMO_USER_KEY; else a key file in the data dir


@dataclass(frozen=True, kw_only=True)
class Event:
    user_id: str
    product_id: ProductId  # the catalog's id: an int or a string (engine/ids.py)
    kind: str
    ts: float | None = None  # seconds since the epoch; None = now


class Pseudonymiser:
    def __init__(self, key: bytes) -> None:
        if len(key) < 16:
            raise InvalidInput("the user-id key must be at least 16 bytes", field="user_key")
        self._key = key

    def __call__(self, user_id: str) -> str:
        return hmac.new(self._key, user_id.encode("utf-8"), hashlib.sha256).hexdigest()

    def __repr__(self) -> str:  # never show the key
        return "Pseudonymiser(<key hidden>)"

    @classmethod
    def from_config(cls, cfg: PersonalConfig, data_dir: Path) -> Pseudonymiser:
        key = cfg.user_key or os.environ.get(KEY_ENV)
        if key:
            return cls(key.encode("utf-8"))
        path = data_dir / "user.key"
        if not path.exists():
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_hex(32))
        return cls(path.read_text().strip().encode("utf-8"))


def check_user_id(user_id: object, field: str = "user_id") -> str:
    if not isinstance(user_id, str) or not user_id.strip():
        raise InvalidInput("user id must be a non-empty string", field=field)
    if len(user_id) > MAX_USER_ID:
        raise InvalidInput(f"user id is longer than {MAX_USER_ID} characters", field=field)
    return user_id


def decayed_add(s: np.ndarray, w: float, ref_ts: float, vec: np.ndarray, weight: float, ts: float,
                half_life_s: float) -> tuple[np.ndarray, float, float]:
    """Add one event to a profile (S, W, t_ref); events may arrive out of order."""
    if ts >= ref_ts:
        f = 2.0 ** (-(ts - ref_ts) / half_life_s)
        return s * f + weight * vec, w * f + weight, ts
    f = 2.0 ** (-(ref_ts - ts) / half_life_s)
    return s + weight * f * vec, w + weight * f, ref_ts


class PersonalStore:
    """Events and profiles in the catalog's SQLite file (its own connection; WAL lets both write)."""

    def __init__(self, path: Path, cfg: PersonalConfig, dim: int) -> None:
        self.cfg, self.dim = cfg, dim
        self._lock = threading.RLock()
        self._db = connect_wal(path)
        self._db.create_function("exp", 1, math.exp, deterministic=True)  # not every SQLite build has it
        self._db.executescript(SCHEMA)
        self._last_purge = 0.0

    @property
    def half_life_s(self) -> float:
        return self.cfg.half_life_days * 86_400.0

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _tx(self) -> AbstractContextManager[sqlite3.Connection]:
        return immediate_tx(self._lock, self._db)

    def _load(self, db: sqlite3.Connection, user: str) -> tuple[np.ndarray, float, float, int] | None:
        row = db.execute("SELECT vec, wsum, ref_ts, n FROM profiles WHERE user = ?", (user,)).fetchone()
        if row is None:
            return None
        return np.frombuffer(row[0], dtype=np.float32).astype(np.float64), float(row[1]), float(row[2]), int(row[3])

    def add(self, rows: Sequence[tuple[str, int, str, float]], vectors: dict[int, np.ndarray]) -> int:
        """rows: (pseudonym, product id, kind, ts). One transaction: events and profile updates together."""
        weights = self.cfg.event_weights
        with self._tx() as db:
            db.executemany("INSERT INTO events(user, product, kind, weight, ts) VALUES (?,?,?,?,?)",
                           [(u, p, k, weights[k], ts) for u, p, k, ts in rows])
            by_user: dict[str, list[tuple[int, str, float]]] = {}
            for u, p, k, ts in rows:
                by_user.setdefault(u, []).append((p, k, ts))
            for u, evs in by_user.items():
                prof = self._load(db, u)
                s, w, ref, n = prof if prof is not None else (np.zeros(self.dim), 0.0, evs[0][2], 0)
                for p, k, ts in sorted(evs, key=lambda e: e[2]):
                    s, w, ref = decayed_add(s, w, ref, vectors[p].astype(np.float64), weights[k], ts, self.half_life_s)
                    n += 1
                db.execute("INSERT OR REPLACE INTO profiles(user, vec, wsum, ref_ts, n) VALUES (?,?,?,?,?)",
                           (u, s.astype(np.float32).tobytes(), w, ref, n))
        return len(rows)

    def profile(self, user: str) -> np.ndarray | None:
        """The taste vector S / W, or None for a shopper with no events."""
        with self._lock:
            prof = self._load(self._db, user)
        if prof is None or prof[1] <= 0:
            return None
        return (prof[0] / prof[1]).astype(np.float32)

    def interests(self, user: str, now: float, limit: int) -> list[tuple[int, float]]:
        """The products a shopper engaged with most, by decayed event weight (one query each in Recommend)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT product, SUM(weight * exp(-(? - ts) * ?)) AS s FROM events WHERE user = ? "
                "GROUP BY product ORDER BY s DESC LIMIT ?",
                (now, math.log(2) / self.half_life_s, user, limit)).fetchall()
        return [(int(p), float(w)) for p, w in rows]

    def purchased(self, user: str) -> list[int]:
        with self._lock:
            return [r[0] for r in self._db.execute(
                "SELECT DISTINCT product FROM events WHERE user = ? AND kind = 'purchase'", (user,))]

    def popular(self, now: float, limit: int, allowed: np.ndarray | None = None) -> list[tuple[int, float]]:
        """Products by decayed event weight over all shoppers (the cold-start answer)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT product, SUM(weight * exp(-(? - ts) * ?)) AS s FROM events GROUP BY product ORDER BY s DESC",
                (now, math.log(2) / self.half_life_s)).fetchall()
        allow = None if allowed is None else set(np.asarray(allowed).tolist())
        return [(int(p), float(s)) for p, s in rows if allow is None or p in allow][:limit]

    def forget(self, user: str) -> int:
        with self._tx() as db:
            n = db.execute("DELETE FROM events WHERE user = ?", (user,)).rowcount
            db.execute("DELETE FROM profiles WHERE user = ?", (user,))
        return int(n)

    def purge(self, now: float, vectors_of: Callable[[list[int]], dict[int, np.ndarray]], *,
              min_interval_s: float = 60.0) -> int:
        """Drop events past the retention period and rebuild the profiles they fed."""
        if now - self._last_purge < min_interval_s:
            return 0
        self._last_purge = now
        cutoff = now - self.cfg.retention_days * 86_400.0
        with self._lock:
            users = [r[0] for r in self._db.execute("SELECT DISTINCT user FROM events WHERE ts < ?", (cutoff,))]
        if not users:
            return 0
        with self._tx() as db:
            n = db.execute("DELETE FROM events WHERE ts < ?", (cutoff,)).rowcount
            for u in users:
                db.execute("DELETE FROM profiles WHERE user = ?", (u,))
                left = db.execute("SELECT product, kind, ts FROM events WHERE user = ? ORDER BY ts", (u,)).fetchall()
                if not left:
                    continue
                vecs = vectors_of(sorted({p for p, _, _ in left}))
                s, w, ref, cnt = np.zeros(self.dim), 0.0, left[0][2], 0
                for p, k, ts in left:
                    if p in vecs:
                        s, w, ref = decayed_add(s, w, ref, vecs[p].astype(np.float64), self.cfg.event_weights[k], ts,
                                                self.half_life_s)
                        cnt += 1
                db.execute("INSERT INTO profiles(user, vec, wsum, ref_ts, n) VALUES (?,?,?,?,?)",
                           (u, s.astype(np.float32).tobytes(), w, ref, cnt))
        return int(n)

    def counts(self) -> dict[str, int]:
        with self._lock:
            return {"events": self._db.execute("SELECT count(*) FROM events").fetchone()[0],
                    "profiles": self._db.execute("SELECT count(*) FROM profiles").fetchone()[0]}


def validate_event(e: Event, cfg: PersonalConfig, now: float, row: int) -> tuple[str, int, str, float]:
    """(user id, product row key, kind, ts) or InvalidInput naming events[row].<field>."""
    check_user_id(e.user_id, f"events[{row}].user_id")
    key = key_of(e.product_id, f"events[{row}].product_id")
    if e.kind not in cfg.event_weights:
        raise InvalidInput(f"kind {e.kind!r} is not one of {names(sorted(cfg.event_weights))}",
                           field=f"events[{row}].kind")
    ts = now if e.ts is None else e.ts
    if not isinstance(ts, int | float) or not math.isfinite(ts) or ts < 0 or ts > now + FUTURE_SLACK_S:
        raise InvalidInput(f"timestamp {ts!r} is not a time in the past (seconds since the epoch)",
                           field=f"events[{row}].ts")
    return e.user_id, key, e.kind, float(ts)


def now() -> float:
    return time.time()
