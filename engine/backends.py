"""Which catalog backend an engine runs on, from its configuration. Milvus is imported only when chosen, so
the plain install (without kuamo[scale]) never needs pymilvus."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from kuamo.engine.catalog_backend import CatalogBackend
from kuamo.engine.errors import InvalidInput
from kuamo.engine.index import IndexConfig

BACKENDS = ("embedded", "milvus")


@dataclass(frozen=True, kw_only=True)
class MilvusSettings:
    uri: str = ""  # http://host:19530, a Milvus Lite file (tests), or a Zilliz Cloud endpoint
    token: str = ""  # "user:password" or an API key; never logged
    collection: str = "kuamo"
    index_type: str = "FLAT"  # FLAT, IVF_FLAT, IVF_SQ8, HNSW, AUTOINDEX, ...
    consistency: str = "Strong"  # what a search on another replica sees after an acknowledged write
    timeout_s: float = 10.0


def open_backend(kind: str, *, data_dir: Path, dim: int, index: IndexConfig, synchronous: str,
                 snapshot_every: int, milvus: MilvusSettings) -> CatalogBackend:
    if kind == "embedded":
        from kuamo.engine.embedded_backend import EmbeddedBackend

        return EmbeddedBackend(data_dir, dim=dim, index=index, synchronous=synchronous, snapshot_every=snapshot_every)
    if kind == "milvus":
        if not milvus.uri:
            raise InvalidInput("the milvus backend needs a URI (--milvus-uri or [milvus] uri)", field="milvus_uri")
        try:
            from kuamo.engine.milvus_backend import MilvusBackend
        except ImportError as exc:
            raise InvalidInput(f"the milvus backend needs pymilvus: pip install 'kuamo[scale]' ({exc})",
                               field="backend") from exc
        return MilvusBackend(milvus.uri, token=milvus.token, collection=milvus.collection, dim=dim,
                             index_type=milvus.index_type, consistency=milvus.consistency, timeout_s=milvus.timeout_s)
    raise InvalidInput(f"backend must be one of {list(BACKENDS)}, got {kind!r}", field="backend")
