"""The result cache: a whole text query -> its answer, for the repeats that make up most of a real query log.

The query cache (engine/query_cache.py) spares a repeated query the text tower; under load what is left is the
search stage (FAISS IVF-PQ and the re-rank, ~0.4 ms of one search thread per query on 2 cores), which sets the
cached p99 (benchmarks/results/server.md, Zipf log). Like a search engine's request cache, this keeps the
answer itself:

- only text queries without a shopper (`user_id`) or a photo: their answer depends on nothing but the query,
  the catalog and the models;
- keyed by the whole query (its normalised text and every other field, `repr` of the dataclass), so another k,
  filter, weight or explain flag is another entry;
- every entry carries the catalog generation it was computed at (`Engine` bumps it after each committed write
  and when the models or the image blend change); an entry of another generation is never served, so a write is
  visible to the next query (read-your-writes), and an answer computed while a write was committing is dropped;
- LRU bounded by entries; 0 entries = off. The engine keeps it off by default (evaluations and benchmarks that
  repeat queries must measure the search); the server turns it on (server/config.py result_cache_entries).
"""

from __future__ import annotations

import dataclasses
import threading
from collections import OrderedDict

from kuamo.engine.query_cache import normalise_query
from kuamo.engine.types import Query, SearchResult

DEFAULT_SERVER_ENTRIES = 4096  # ~10 hits with their products each: ~2 KB an entry, ~8 MB at most


def result_key(q: Query) -> str | None:
    """The cache key of a query whose answer may be cached, else None."""
    if q.text is None or q.image is not None or q.user_id is not None:
        return None
    return repr(dataclasses.replace(q, text=normalise_query(q.text)))


class ResultCache:
    """Thread-safe LRU of (generation, SearchResult) by `result_key`."""

    def __init__(self, max_entries: int = 0) -> None:
        if max_entries < 0:
            raise ValueError("result cache entries must be >= 0")
        self.max_entries = int(max_entries)
        self._items: OrderedDict[str, tuple[int, SearchResult]] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = self.misses = self.evictions = 0

    @property
    def enabled(self) -> bool:
        return self.max_entries > 0

    def get(self, key: str, generation: int) -> SearchResult | None:
        with self._lock:
            got = self._items.get(key)
            if got is None or got[0] != generation:
                self.misses += 1
                return None
            self._items.move_to_end(key)
            self.hits += 1
            return got[1]

    def put(self, key: str, generation: int, result: SearchResult) -> None:
        if not self.enabled:
            return
        with self._lock:
            self._items[key] = (generation, result)
            self._items.move_to_end(key)
            while len(self._items) > self.max_entries:
                self._items.popitem(last=False)
                self.evictions += 1

    def clear(self) -> None:
        with self._lock:
            self._items.clear()

    def stats(self) -> dict[str, int]:
        with self._lock:
            return {"hits": self.hits, "misses": self.misses, "evictions": self.evictions,
                    "entries": len(self._items), "max_entries": self.max_entries}
