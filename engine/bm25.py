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
    they outnumber the live ones, then the postings are compacted. Terms are interned to ids and each row keeps
    only its term ids (int32, to take its counts back on removal): ~14 MB for the fashion catalog."""

    def __init__(self, column_weights: Sequence[float]) -> None:
        self.column_weights = tuple(float(w) for w in column_weights)
        self.seq = -1  # the store change this index holds (set by the owner)
        self._slot_of: dict[int, int] = {}
        self._keys = np.zeros(0, dtype=np.int64)
        self._length = np.zeros(0, dtype=np.float32)  # D per slot
        self._alive = np.zeros(0, dtype=bool)
        self._slot_terms: list[np.ndarray | None] = []  # per slot: its term ids (None = dead)
        self._term_id: dict[str, int] = {}
        self._postings: list[_Postings] = []  # by term id
        self._rows_of = np.zeros(0, dtype=np.int32)  # n(t) over live rows, by term id
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
            ids = self._slot_terms[slot]
            assert ids is not None
            self._rows_of[ids] -= 1  # a row holds each term id once
            self._tokens -= float(self._length[slot])
            self._alive[slot] = False
            self._slot_terms[slot] = None
            self._dead_postings += len(ids)
            self._live_postings -= len(ids)
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
        weighted, length = self._weigh(columns)
        slot = len(self._slot_terms)  # slots are never reused: a term's postings hold each slot at most once
        if slot >= len(self._keys):  # grow by half: amortised appends
            cap = max(1024, slot + slot // 2)
            self._keys = np.concatenate([self._keys, np.zeros(cap - len(self._keys), dtype=np.int64)])
            self._length = np.concatenate([self._length, np.zeros(cap - len(self._length), dtype=np.float32)])
            self._alive = np.concatenate([self._alive, np.zeros(cap - len(self._alive), dtype=bool)])
        self._keys[slot], self._length[slot], self._alive[slot] = key, length, True
        ids = np.fromiter((self._intern(t) for t in weighted), dtype=np.int32, count=len(weighted))
        for tid, f in zip(ids.tolist(), weighted.values(), strict=True):
            self._postings[tid].add(slot, f)
        self._rows_of[ids] += 1
        self._slot_terms.append(ids)
        self._slot_of[key] = slot
        self._tokens += length
        self._live_postings += len(ids)

    def _intern(self, term: str) -> int:
        tid = self._term_id.get(term)
        if tid is None:
            tid = self._term_id[term] = len(self._postings)
            self._postings.append(_Postings())
            if tid >= len(self._rows_of):
                self._rows_of = np.concatenate([self._rows_of, np.zeros(max(256, tid // 2), dtype=np.int32)])
        return tid

    def _maybe_compact(self) -> None:
        """Drop dead slots from every posting list once they outnumber the live postings; live slots are
        renumbered in order, so each term's postings stay sorted and unique."""
        if self._dead_postings <= max(10_000, self._live_postings):
            return
        used = len(self._slot_terms)
        live = np.flatnonzero(self._alive[:used])
        renumber = np.full(used, -1, dtype=np.int32)
        renumber[live] = np.arange(len(live), dtype=np.int32)
        for post in self._postings:
            slots, freqs = post.arrays()
            keep = self._alive[slots]
            post.slots, post.freqs, post.tf = renumber[slots[keep]], freqs[keep], None
        self._keys = self._keys[live].copy()
        self._length = self._length[live].copy()
        self._alive = np.ones(len(live), dtype=bool)
        self._slot_terms = [self._slot_terms[s] for s in live.tolist()]
        self._slot_of = {int(k): i for i, k in enumerate(self._keys.tolist())}
        self._dead_postings = 0

    # -- reads ----------------------------------------------------------------------------------------
    def search(self, terms: Sequence[str], n: int, allowed: np.ndarray | None = None
               ) -> tuple[np.ndarray, np.ndarray]:
        """Up to `n` (row keys int64, scores float64 > 0), best first, over the rows holding any of `terms`;
        `allowed` (row keys) limits them as a filter would. Ties go to the smaller key."""
        none = (np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float64))
        rows = len(self._slot_of)
        if not terms or n <= 0 or rows == 0:
            return none
        avgdl = self._tokens / rows
        score = np.zeros(len(self._slot_terms), dtype=np.float64)
        for t in dict.fromkeys(terms):
            tid = self._term_id.get(t)
            hits = 0 if tid is None else int(self._rows_of[tid])
            if tid is None or hits <= 0:
                continue
            post = self._postings[tid]
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
            return none
        if hit.size > n:  # a common term hits half the catalog: sort only the top n (and ties at the cut)
            got = score[hit]
            cut = np.partition(got, hit.size - n)[hit.size - n]
            keep = got >= cut
            hit, keys = hit[keep], keys[keep]
        order = np.lexsort((keys, -score[hit]))[:n]
        return keys[order], score[hit[order]]
