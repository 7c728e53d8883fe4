"""BM25 in memory, scoring exactly as SQLite FTS5's bm25() scores the `lexical` table (engine/store.py).

Why: FTS5 answers `MATCH 'a OR b' ORDER BY rank LIMIT n` by scoring every row that holds any term, in C but one
row at a time through its auxiliary-function API: 15-23 ms a query on the 20,873-product fashion catalog, where
the whole vector search takes ~1 ms. Here each term's postings are two numpy arrays (slot, column-weighted
frequency) and a query is a few vectorised adds over them: the same scores in well under a millisecond.

The FTS5 table stays the durable copy (written in the products' transactions, so it survives any crash); this
index is rebuilt from it on first use and kept in step through the store's change log (`changes_since`), so
it never holds anything the store does not.

FTS5's bm25 (sqlite ext/fts5/fts5_aux.c, fts5Bm25Function), k1 = 1.2, b = 0.75:
  score(doc) = sum over query terms t of IDF(t) * f(t) * (k1 + 1) / (f(t) + k1 * (1 - b + b * D / avgdl))
  f(t)   = sum over t's occurrences in the row of its column's weight
  D      = the row's tokens over all columns; avgdl = all tokens / rows
  IDF(t) = ln((N - n(t) + 0.5) / (n(t) + 0.5)), or 1e-6 where that is <= 0; N = rows, n(t) = rows holding t
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence

import numpy as np

K1, B = 1.2, 0.75
MIN_IDF = 1e-6


class _Postings:
    """One term's (slot, weighted frequency) pairs; appends wait in lists until the next read."""

    __slots__ = ("freqs", "pending_freqs", "pending_slots", "slots", "tf", "tf_avgdl")

    def __init__(self) -> None:
        self.slots = np.zeros(0, dtype=np.int32)
        self.freqs = np.zeros(0, dtype=np.float32)
        self.pending_slots: list[int] = []
        self.pending_freqs: list[float] = []
        self.tf: np.ndarray | None = None  # the BM25 frequency part per posting, for avgdl = tf_avgdl
        self.tf_avgdl = 0.0

    def add(self, slot: int, freq: float) -> None:
        self.pending_slots.append(slot)
        self.pending_freqs.append(freq)

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        if self.pending_slots:
            self.slots = np.concatenate([self.slots, np.asarray(self.pending_slots, dtype=np.int32)])
            self.freqs = np.concatenate([self.freqs, np.asarray(self.pending_freqs, dtype=np.float32)])
            self.pending_slots, self.pending_freqs = [], []
        return self.slots, self.freqs

    def frequency_part(self, length: np.ndarray, avgdl: float) -> tuple[np.ndarray, np.ndarray]:
        """(slots, f (k1 + 1) / (f + k1 (1 - b + b D / avgdl))): kept until a write moves avgdl or adds a
        posting, so a read-mostly catalog pays one gather-add per query term."""
        slots, freqs = self.arrays()
        if self.tf is None or self.tf_avgdl != avgdl or len(self.tf) != len(slots):
            f = freqs.astype(np.float64)
            norm = K1 * (1 - B + B * length[slots].astype(np.float64) / avgdl)
            self.tf, self.tf_avgdl = f * (K1 + 1) / (f + norm), avgdl
        return slots, self.tf


class Bm25Index:
    """Rows are (key, column texts of space-separated terms), as in the FTS5 table; `column_weights` as given
    to FTS5's bm25(). A replaced or removed row leaves dead postings behind (skipped by the alive mask) until
    they outnumber the live ones, then the postings are rebuilt."""

    def __init__(self, column_weights: Sequence[float]) -> None:
        self.column_weights = tuple(float(w) for w in column_weights)
        self.seq = -1  # the store change this index holds (set by the owner)
        self._slot_of: dict[int, int] = {}
        self._keys = np.zeros(0, dtype=np.int64)
        self._length = np.zeros(0, dtype=np.float32)  # D per slot
        self._alive = np.zeros(0, dtype=bool)
        self._terms: list[dict[str, float] | None] = []  # per slot: term -> weighted frequency (None = dead)
        self._postings: dict[str, _Postings] = {}
        self._rows_of: Counter[str] = Counter()  # n(t) over live rows
        self._tokens = 0.0  # all tokens of live rows
        self._dead_postings = 0
        self._live_postings = 0

    def __len__(self) -> int:
        return len(self._slot_of)

    # -- writes ---------------------------------------------------------------------------------------
    def upsert(self, rows: Iterable[tuple[int, Sequence[str]]]) -> None:
        for key, columns in rows:
            self.remove([key])
            self._add(int(key), columns)
        self._maybe_compact()

    def remove(self, keys: Iterable[int]) -> None:
        for key in keys:
            slot = self._slot_of.pop(int(key), None)
            if slot is None:
                continue
            terms = self._terms[slot]
            assert terms is not None
            self._rows_of.subtract(terms.keys())
            self._tokens -= float(self._length[slot])
            self._alive[slot] = False
            self._terms[slot] = None
            self._dead_postings += len(terms)
            self._live_postings -= len(terms)
        self._maybe_compact()

    def _weigh(self, columns: Sequence[str]) -> tuple[dict[str, float], int]:
        """term -> column-weighted frequency, and the row's tokens (FTS5 splits our terms on spaces)."""
        if len(columns) != len(self.column_weights):
            raise ValueError(f"a row has {len(columns)} columns, the index {len(self.column_weights)}")
        weighted: dict[str, float] = {}
        length = 0
        for text, w in zip(columns, self.column_weights, strict=True):
            words = text.split()
            length += len(words)
            for t in words:
                weighted[t] = weighted.get(t, 0.0) + w
        return weighted, length

    def _add(self, key: int, columns: Sequence[str]) -> None:
        self._add_weighted(key, *self._weigh(columns))

    def _add_weighted(self, key: int, weighted: dict[str, float], length: float) -> None:
        slot = len(self._terms)  # slots are never reused: a term's postings hold each slot at most once
        if slot >= len(self._keys):  # grow by half: amortised appends
            cap = max(1024, slot + slot // 2)
            self._keys = np.concatenate([self._keys, np.zeros(cap - len(self._keys), dtype=np.int64)])
            self._length = np.concatenate([self._length, np.zeros(cap - len(self._length), dtype=np.float32)])
            self._alive = np.concatenate([self._alive, np.zeros(cap - len(self._alive), dtype=bool)])
        self._keys[slot], self._length[slot], self._alive[slot] = key, length, True
        self._terms.append(weighted)
        self._slot_of[key] = slot
        for t, f in weighted.items():
            self._postings.setdefault(t, _Postings()).add(slot, f)
        self._rows_of.update(weighted.keys())
        self._tokens += length
        self._live_postings += len(weighted)

    def _maybe_compact(self) -> None:
        """Rebuild the postings without dead slots once those outnumber the live ones."""
        if self._dead_postings <= max(10_000, self._live_postings):
            return
        live = [(int(self._keys[s]), t, float(self._length[s])) for s, t in enumerate(self._terms) if t is not None]
        seq = self.seq
        self.__init__(self.column_weights)  # type: ignore[misc]
        self.seq = seq
        for key, weighted, length in live:
            self._add_weighted(key, weighted, length)

    # -- reads ----------------------------------------------------------------------------------------
    def search(self, terms: Sequence[str], n: int, allowed: np.ndarray | None = None) -> list[tuple[int, float]]:
        """Up to `n` (key, score > 0), best first, over the rows holding any of `terms`; `allowed` (row keys)
        limits them as a filter would. Ties go to the smaller key."""
        rows = len(self._slot_of)
        if not terms or n <= 0 or rows == 0:
            return []
        avgdl = self._tokens / rows
        score = np.zeros(len(self._terms), dtype=np.float64)
        for t in dict.fromkeys(terms):
            post = self._postings.get(t)
            hits = self._rows_of.get(t, 0)
            if post is None or hits <= 0:
                continue
            idf = math.log((rows - hits + 0.5) / (hits + 0.5))
            idf = idf if idf > 0 else MIN_IDF
            slots, tf = post.frequency_part(self._length, avgdl)
            score[slots] += idf * tf  # unique slots per term
        score[~self._alive[: len(score)]] = 0
        hit = np.flatnonzero(score > 0)
        keys = self._keys[hit]
        if allowed is not None:
            keep = np.isin(keys, np.asarray(allowed, dtype=np.int64))
            hit, keys = hit[keep], keys[keep]
        if hit.size == 0:
            return []
        order = np.lexsort((keys, -score[hit]))[:n]
        return [(int(keys[i]), float(score[hit[i]])) for i in order]
