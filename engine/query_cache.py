"""The query cache: normalised query text -> text-tower vector, in front of the text batcher.

Real query logs repeat (a few head queries are much of the traffic) and the text tower is the one cost that
sets the loaded p99 (benchmarks/results/server.md), so a repeated query should not pay it again. LRU, bounded
both by entries and by bytes; keyed by the models' fingerprint too, so vectors of other models are never
served: when the fingerprint changes (a new image blend, other encoders) the cache empties itself.

Normalisation (`normalise_query`) is applied to every text query whether the cache is on or off, so on and off
give the same vectors: NFKC (the tokenizer applies it anyway), whitespace runs -> one space, trimmed. Case is
kept: the text tower is cased ("Red Dress" vs "red dress": cosine 0.983).
"""

from __future__ import annotations

import re
import threading
import unicodedata
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

DEFAULT_ENTRIES = 20_000  # 384-d float32 vectors: ~1.6 KB each with the key, ~32 MB at most
DEFAULT_MAX_BYTES = 64 << 20
ENTRY_OVERHEAD = 200  # bytes per entry beyond the vector and the key (dict slot, tuple, array header)
_SPACES = re.compile(r"\s+")


def normalise_query(text: str) -> str:
    """The form a query text is encoded (and cached) in."""
    return _SPACES.sub(" ", unicodedata.normalize("NFKC", text)).strip()


@dataclass(frozen=True)
class CacheStats:
    hits: int
    misses: int
    evictions: int
    invalidations: int
    entries: int
    bytes: int
    max_entries: int
    max_bytes: int

    def to_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


class QueryCache:
    """Thread-safe LRU of query vectors. `max_entries` 0 turns it off (every lookup misses, nothing is kept)."""

    def __init__(self, max_entries: int = DEFAULT_ENTRIES, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        if max_entries < 0 or max_bytes < 0:
            raise ValueError("query cache bounds must be >= 0")
        self.max_entries = int(max_entries)
        self.max_bytes = int(max_bytes)
        self._items: OrderedDict[str, tuple[np.ndarray, int]] = OrderedDict()
        self._bytes = 0
        self._fingerprint: str | None = None
        self._lock = threading.Lock()
        self.hits = self.misses = self.evictions = self.invalidations = 0

    @property
    def enabled(self) -> bool:
        return self.max_entries > 0 and self.max_bytes > 0

    def _check_fingerprint(self, fingerprint: str) -> None:
        # under the lock: vectors of other models must never be served
        if fingerprint != self._fingerprint:
            if self._items:
                self.invalidations += 1
            self._items.clear()
            self._bytes = 0
            self._fingerprint = fingerprint

    def get(self, text: str, fingerprint: str) -> np.ndarray | None:
        """The cached vector of normalised `text` under these models, or None (counted as a miss)."""
        with self._lock:
            self._check_fingerprint(fingerprint)
            got = self._items.get(text)
            if got is None:
                self.misses += 1
                return None
            self._items.move_to_end(text)
            self.hits += 1
            return got[0]

    def put(self, text: str, fingerprint: str, vector: np.ndarray) -> None:
        if not self.enabled:
            return
        vec = np.array(vector, dtype=np.float32, copy=True)
        vec.setflags(write=False)  # shared by every later hit: nobody may change it in place
        size = vec.nbytes + len(text.encode("utf-8")) + ENTRY_OVERHEAD
        if size > self.max_bytes:
            return
        with self._lock:
            if self._fingerprint is None:
                self._fingerprint = fingerprint
            elif fingerprint != self._fingerprint:
                return  # encoded by models that were replaced meanwhile
            old = self._items.pop(text, None)
            if old is not None:
                self._bytes -= old[1]
            self._items[text] = (vec, size)
            self._bytes += size
            while len(self._items) > self.max_entries or self._bytes > self.max_bytes:
                _, (_, s) = self._items.popitem(last=False)
                self._bytes -= s
                self.evictions += 1

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._bytes = 0

    def __len__(self) -> int:
        return len(self._items)

    def stats(self) -> CacheStats:
        with self._lock:
            return CacheStats(hits=self.hits, misses=self.misses, evictions=self.evictions,
                              invalidations=self.invalidations, entries=len(self._items), bytes=self._bytes,
                              max_entries=self.max_entries, max_bytes=self.max_bytes)
