"""The catalog backend role: product rows, their fused vectors, the vector index, filters, deletes and
durability, behind one protocol. `Engine` orchestrates encoders, ranking and a backend; it never reaches
into SQLite, FAISS or Milvus itself.

Two backends implement it: `EmbeddedBackend` (engine/embedded_backend.py: one SQLite file + a FAISS index
snapshot, the default) and `MilvusBackend` (engine/milvus_backend.py: a Milvus collection shared by
stateless replicas). All methods are synchronous and thread-safe; the engine calls them from worker threads.

Keys: every product is addressed by its 63-bit row key (engine/ids.py row_key); the catalog's own id (an
integer, or a string SKU) is stored with the row and given back by `owners` / `get`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple, Protocol, runtime_checkable

import numpy as np

from kuamo.engine.ids import ProductId
from kuamo.engine.store import StoredRow
from kuamo.engine.types import Filters, Product
from kuamo.engine.understanding import Facets


class Candidates(NamedTuple):
    """What a backend's search returns for a matrix of queries."""

    scores: np.ndarray  # (m, n) float32, exact inner products, best first
    keys: np.ndarray  # (m, n) int64 row keys, -1 where fewer than n products passed the filters
    allowed: int | None = None  # how many products passed the filters; None when unfiltered or unknown
    filter_ms: float = 0.0  # of the search's time, what evaluating the filters took (when it is separate)


@runtime_checkable
class CatalogBackend(Protocol):
    kind: str  # "embedded" or "milvus": named in stats, health and errors
    dim: int  # the fused vector's dimension

    # -- metadata the engine keeps with the catalog (layout, encoder fingerprint, image blend) -----------
    def get_meta(self, key: str) -> str | None: ...

    def set_meta(self, key: str, value: str) -> None: ...

    # -- writes: durable (and, for a shared backend, visible to other replicas) when they return ------------
    def write(self, rows: Sequence[StoredRow]) -> None:
        """Insert or replace products with their vectors and content hashes, all or none."""
        ...

    def delete(self, keys: Sequence[int]) -> int:
        """Delete by row key; the number that existed."""
        ...

    # -- reads ------------------------------------------------------------------------------------------
    @property
    def has_string_ids(self) -> bool:
        """True once any stored product has a string id (hits then need `owners` to name them)."""
        ...

    def get(self, key: int, shown: ProductId | None = None) -> Product:
        """The product, or NotFound(field="id") naming `shown` (the id the caller wrote)."""
        ...

    def get_many(self, keys: Sequence[int]) -> dict[int, Product]: ...

    def facet_colours(self) -> frozenset[str]:
        """Every colour value the catalog's products hold, lower-case (query understanding recognises them)."""
        ...

    def facets(self, keys: Sequence[int]) -> dict[int, Facets]:
        """Row key -> what query understanding's boosts read (engine/understanding.py), for the stored keys."""
        ...

    def owners(self, keys: Sequence[int]) -> dict[int, ProductId]:
        """Row key -> the catalog's own id, for the keys that are stored."""
        ...

    def hashes(self, keys: Sequence[int]) -> dict[int, str]:
        """Row key -> content hash (an unchanged product is not re-encoded)."""
        ...

    def vectors(self, keys: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """(the keys found, their fused vectors (n, dim) float32), in the order found."""
        ...

    def keys(self) -> np.ndarray:
        """Every stored row key (int64)."""
        ...

    def count(self) -> int: ...

    def categories(self) -> list[str]:
        """The distinct category paths (unsorted, may include "")."""
        ...

    def attribute_names(self) -> set[str]: ...

    # -- search -----------------------------------------------------------------------------------------
    def search(self, queries: np.ndarray, n: int, *, filters: Filters, nprobe: int | None = None,
               rerank_factor: int | None = None) -> Candidates:
        """Top `n` by inner product for each row of `queries` (m, dim) among the products passing `filters`,
        scored exactly (approximate candidates are re-ranked on their stored vectors)."""
        ...

    supports_lexical: bool  # False: `lexical` raises Unsupported (the engine then ranks by the vectors alone)

    def lexical(self, text: str, n: int, *, filters: Filters) -> Candidates:
        """Top `n` by BM25 over title, brand, category/attribute values and description (engine/lexical.py),
        among the products passing `filters`, for ONE query text: scores (1, m) BM25 > 0 best first, keys (1, m),
        m <= n (no padding; m = 0 when no term matches or the text has no terms). The index is kept in step
        with the products by the backend's own writes."""
        ...

    # -- upkeep -----------------------------------------------------------------------------------------
    def check(self) -> None:
        """Raise BackendUnavailable (naming the backend and why) when it cannot serve now."""
        ...

    def stats(self) -> dict:
        """{"products": n, "indexed": n in the vector index, "index": {kind, parameters, ...}}, and where they
        apply "store_seq" / "index_seq" (the embedded change log) or "uri" (where the catalog lives)."""
        ...

    def reindex(self) -> None:
        """Rebuild the vector index from the stored vectors (after the whole catalog was re-embedded)."""
        ...

    def snapshot(self) -> None:
        """Make restart cheap (the embedded index snapshot); a no-op where the backend persists itself."""
        ...

    def close(self) -> None: ...
