"""The catalog backend on Milvus (engine/catalog_backend.py): one collection shared by stateless replicas.

The same code serves Milvus Lite (a local `.db` path, which pymilvus runs in-process, or a `milvus-lite
server` over http://127.0.0.1:PORT) and a Milvus cluster, all through `pymilvus.MilvusClient`. pymilvus is
imported when a backend is built, so the plain install (without the `scale` extra) still imports this module.

Collections (Milvus >= 2.5: nullable fields):
- `{collection}`: `key` INT64 primary key (engine/ids.py row key, auto_id off), `ext_id` VARCHAR (the
  catalog's own id as text) with `ext_is_str` BOOL (so `owners`/`get` give an int id back as an int, as
  engine/store.py does), title, description, category, brand (nullable), price and rating (nullable
  DOUBLE), attributes JSON, image_ref (nullable), content_hash, and `vector` FLOAT_VECTOR(dim) indexed
  for inner product (IP).
- `{collection}_meta`: the engine's metadata (`get_meta`/`set_meta`): `name` VARCHAR primary key, `value`
  VARCHAR, and a 2-d dummy vector because Milvus loads no collection without one. A collection and not
  collection properties: properties are not meant for arbitrary keys and sizes, rows are.

No partition key. Milvus prunes partitions only for `==` / `in` on the key, while kuamo's category filter is
a segment prefix (a string range, engine/milvus_filters.py) that spans many category paths, so a hashed
category partition key would prune nothing and only split the data. (Milvus Lite 3.x does support
`is_partition_key`, hashing values into 16 bucket partitions, so Lite did not force this choice.)

Consistency: every read passes `consistency` (default "Strong") as its consistency level. Strong makes
Milvus wait, for each search/query, until every write acknowledged before the request arrived is visible,
so a replica reading right after another replica's `write` returned sees that write. "Bounded" (Milvus's own
default) lets other replicas read up to a few seconds stale (the server's graceful time, 5 s by default);
"Session" only guarantees read-your-writes within this process (pymilvus tracks the last write time per
process); "Eventually" guarantees nothing about timing. Milvus Lite serves every read from one process and
is strongly consistent whatever the level says.

Writes: `write` validates every row first (InvalidInput names the field), refuses an id whose row key
another stored id holds (as the SQLite store does; the look-up and the upsert are two requests, so two
replicas writing colliding ids at the same moment are not caught), then sends one upsert and returns once
Milvus has
acknowledged it. Milvus has no multi-request transaction: one upsert request is applied whole or rejected
whole, so a write is all-or-none when it fits in one request (below `max_request_bytes`, 32 MiB). A larger
write is sent as several requests, each all-or-none; if one fails, the earlier ones stay applied and the
error says so. Upserts are idempotent, so re-sending the write completes it. Acknowledged means written to
Milvus's log (the message queue of a cluster; Milvus Lite's WAL, written to the OS but fsynced only when
Lite closes, so a power loss can lose the last writes there, a process crash does not).

Search: Milvus finds `n * rerank_factor` candidates (only `n` for FLAT, which is exact already; at most
16384, Milvus's limit) among the products passing the filter, returns their stored vectors with them, and
the candidates are re-scored here exactly (float32 inner product) and the best `n` kept. That moves
limit x dim floats per query over the wire (queries are batched so one reply stays under 64 MiB). `allowed`
is a `count(*)` under the same filter (one more query) when there is a filter. An `ids` filter is inlined
in the expression as `key in [...]` (up to 100,000 keys, ~2 MB of expression text).

Errors: every pymilvus/gRPC failure becomes a KuamoError naming the backend and URI (never the token):
BackendUnavailable("milvus at URI: unreachable (...)") when the server cannot be reached and "no answer within
T s" when it does not answer in time: each call carries `timeout_s` as its deadline and pymilvus stops
retrying at it (a refused connection fails at once; a silent server costs timeout_s, at most about twice
that when an attempt hangs to its own deadline after quick failures);
BackendUnavailable("milvus at URI: the token was refused ...") on UNAUTHENTICATED / PERMISSION_DENIED;
InvalidInput for what Milvus calls a caller error; BackendUnavailable("milvus at URI: <operation> failed:
...") for anything else. A collection whose vector dimension is not `dim`, or that lacks kuamo's fields,
is an ArtifactError. After a server restart the next calls fail as unreachable until gRPC's reconnect
backoff lets the channel through again (about a second); a collection found released (a restarted Milvus
Lite server loads nothing by itself) is loaded again and the call retried once.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, TypeVar
from urllib.parse import urlparse

import numpy as np

from kuamo.engine.catalog_backend import Candidates
from kuamo.engine.errors import ArtifactError, BackendUnavailable, InvalidInput, KuamoError, NotFound, Unsupported
from kuamo.engine.ids import ProductId, row_key
from kuamo.engine.milvus_filters import milvus_expr, milvus_string
from kuamo.engine.rules import validate_filters
from kuamo.engine.store import StoredRow, check_owner, check_product
from kuamo.engine.types import Filters, Product
from kuamo.engine.understanding import Facets, facets_of

__all__ = ["MilvusBackend"]

T = TypeVar("T")

MAX_TOPK = 16_384  # Milvus: limit (+ offset) of one search or query
MAX_K = 1000  # as engine/index.py IndexConfig.max_k
DEFAULT_NPROBE, MAX_NPROBE = 64, 1024  # as engine/index.py IndexConfig
DEFAULT_RERANK, MAX_RERANK = 10, 100
MAX_TEXT_BYTES = 65_535  # Milvus VARCHAR max_length (checked here in UTF-8 bytes, the stricter reading)
MAX_ID_BYTES = 1024  # engine/ids.py MAX_ID_CHARS = 256 characters of up to 4 bytes
MAX_HASH_BYTES = 256
MAX_META_KEY_BYTES = 512
MAX_JSON_BYTES = 65_536  # Milvus's default cap on one JSON value
MAX_REQUEST_BYTES = 32 << 20  # a cluster proxy takes 64 MiB per gRPC message by default
MAX_REPLY_BYTES = 64 << 20  # search replies carry every candidate's vector
ID_CHUNK = 1000  # keys per get/delete request: bounds the expression and the reply
ITER_BATCH = 4096  # rows per query_iterator page (Milvus caps a page at 16384)
CONSISTENCY = ("Strong", "Bounded", "Session", "Eventually")
EXACT_INDEXES = {"FLAT", "BRUTE_FORCE"}
# Build parameters used when none are given; any other index type gets Milvus's defaults.
DEFAULT_BUILD = {"IVF_FLAT": {"nlist": 1024}, "IVF_SQ8": {"nlist": 1024}, "IVF_PQ": {"nlist": 1024},
                 "HNSW": {"M": 16, "efConstruction": 200}}
# How Milvus versions word a refused token when it comes back as a status rather than UNAUTHENTICATED.
_REFUSED = ("auth check fail", "unauthenticated", "not authenticated", "authentication fail", "permission denied",
            "invalid token", "invalid api key")
PRODUCT_FIELDS = ["key", "ext_id", "ext_is_str", "title", "description", "category", "brand", "price", "rating",
                  "attributes", "image_ref"]


def _redact(uri: str) -> str:
    """The URI without credentials (user:password@ in the URI), for messages."""
    parsed = urlparse(uri)
    if parsed.scheme and (parsed.username or parsed.password):
        host = parsed.hostname or ""
        netloc = f"{host}:{parsed.port}" if parsed.port else host
        return parsed._replace(netloc=netloc).geturl()
    return uri


def _causes(err: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    e: BaseException | None = err
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        yield e
        e = e.__cause__ or e.__context__


def _not_loaded(err: BaseException) -> bool:
    """Whether Milvus refused because the collection is not loaded (code 101: CollectionNotLoaded)."""
    code, message = getattr(err, "code", None), str(getattr(err, "message", "")).lower()
    return code == 101 or "not loaded" in message or "state 'released'" in message


def _text_bytes(value: str, field: str, limit: int = MAX_TEXT_BYTES) -> int:
    n = len(value.encode("utf-8", "surrogatepass"))
    if n > limit:
        raise InvalidInput(f"is {n} bytes long in UTF-8, above the Milvus backend's limit of {limit}", field=field)
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as e:
        raise InvalidInput("is not valid unicode text", field=field) from e
    return n


def _index_param_class() -> type:
    from pymilvus.milvus_client.index import IndexParam

    class _IndexParam(IndexParam):
        """Sends the build parameters twice: flattened (what Milvus reads) and as one `params` JSON (what
        Milvus also merges, and the only form Milvus Lite 3.x reads)."""

        def __init__(self, field: str, index_type: str, metric: str, build: Mapping[str, Any]) -> None:
            super().__init__(field, index_type, "", metric_type=metric, **build)
            self._build = dict(build)

        def get_index_configs(self) -> dict:
            configs = dict(super().get_index_configs())
            if self._build:
                configs["params"] = dict(self._build)
            return configs

    return _IndexParam


class MilvusBackend:
    """CatalogBackend on a Milvus collection. Thread-safe: pymilvus clients are; writes are serialised in
    this process because Milvus Lite does not take concurrent writes to one collection."""

    kind = "milvus"

    def __init__(self, uri: str, *, token: str = "", collection: str = "kuamo", dim: int,
                 index_type: str = "FLAT", consistency: str = "Strong", timeout_s: float = 10.0,
                 index_params: Mapping[str, Any] | None = None,
                 max_request_bytes: int = MAX_REQUEST_BYTES) -> None:
        """Connect, create the collections when missing (with a `vector` index of `index_type` built with
        `index_params`, else DEFAULT_BUILD) and load them. An existing collection keeps its index."""
        if not isinstance(dim, int) or isinstance(dim, bool) or dim < 1:
            raise InvalidInput(f"dim must be a positive integer, got {dim!r}", field="dim")
        if consistency not in CONSISTENCY:
            raise InvalidInput(f"consistency must be one of {', '.join(CONSISTENCY)}, got {consistency!r}",
                               field="consistency")
        if not timeout_s > 0:
            raise InvalidInput(f"timeout_s must be positive, got {timeout_s!r}", field="timeout_s")
        if not collection or not collection.replace("_", "a").isalnum() or not collection.isascii():
            raise InvalidInput(f"collection {collection!r} must be letters, digits and _", field="collection")
        self.uri = uri
        self.shown_uri = _redact(uri)
        self.collection = collection
        self.meta_collection = f"{collection}_meta"
        self.dim = dim
        self.consistency = consistency
        self.timeout_s = float(timeout_s)
        self.max_request_bytes = int(max_request_bytes)
        if not isinstance(index_type, str) or not index_type.replace("_", "A").isalnum():
            raise InvalidInput(f"index_type {index_type!r} must be a Milvus index name like HNSW", field="index_type")
        self._requested_index = index_type.upper()
        self._build = dict(DEFAULT_BUILD.get(self._requested_index, {}) if index_params is None else index_params)
        self._write_lock = threading.Lock()
        self._closed = False
        try:
            from pymilvus import MilvusClient
        except ImportError as e:
            raise BackendUnavailable(f"milvus at {self.shown_uri}: pymilvus is not installed "
                                     "(pip install 'kuamo[scale]')") from e
        self._client = self._call("connect", lambda timeout: MilvusClient(
            uri=uri, token=token, timeout=timeout, dedicated=True))
        try:
            self._ensure_collections()
        except BaseException:
            self.close()
            raise

    # -- plumbing ---------------------------------------------------------------------------------------
    def _error(self, what: str, err: BaseException) -> KuamoError:
        """The KuamoError for a pymilvus/gRPC failure of `what` (see the module docstring)."""
        import grpc
        from pymilvus.exceptions import MilvusException, ParamError

        where = f"milvus at {self.shown_uri}"
        refused = (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED)
        chain = list(_causes(err))
        for e in chain:
            code = e.code() if isinstance(e, grpc.RpcError) and callable(getattr(e, "code", None)) else \
                getattr(e, "code", None) if isinstance(e, MilvusException) else None
            message = e.details() if isinstance(e, grpc.RpcError) and callable(getattr(e, "details", None)) \
                else getattr(e, "message", "") or str(e)
            if code in refused or (isinstance(e, MilvusException) and (
                    e.code == 1800 or e.compatible_code == 3 or any(m in str(e.message).lower() for m in _REFUSED))):
                return BackendUnavailable(f"{where}: the token was refused ({message}); check the token "
                                          f"(during {what})")
            if code == grpc.StatusCode.DEADLINE_EXCEEDED:
                return BackendUnavailable(f"{where}: no answer within {self.timeout_s:g} s ({message}) "
                                          f"(during {what})")
            if code == grpc.StatusCode.UNAVAILABLE:
                return BackendUnavailable(f"{where}: unreachable ({message}) (during {what})")
        top = chain[0]
        message = getattr(top, "message", "") or str(top) or type(top).__name__
        if isinstance(top, MilvusException) and (top.code == 2 or "Fail connecting" in message
                                                  or "Retry timeout" in message):  # 2: CONNECT_FAILED
            return BackendUnavailable(f"{where}: unreachable ({message}) (during {what})")
        if isinstance(top, ParamError) or (isinstance(top, MilvusException) and top.is_input_error):
            return InvalidInput(f"{where} refused the {what}: {message}")
        return BackendUnavailable(f"{where}: {what} failed: {message}")

    def _call(self, what: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """fn(*args, timeout=timeout_s, **kwargs), its failures turned into KuamoErrors. A collection found
        released (a restarted Milvus Lite server loads nothing; an operator may release one) is loaded again
        and the call retried once."""
        if getattr(self, "_closed", False):
            raise BackendUnavailable(f"milvus at {self.shown_uri}: the backend is closed (during {what})")
        try:
            try:
                return fn(*args, timeout=self.timeout_s, **kwargs)
            except Exception as e:
                if not _not_loaded(e):
                    raise
            for name in (self.collection, self.meta_collection):
                self._client.load_collection(name, timeout=self.timeout_s)
            return fn(*args, timeout=self.timeout_s, **kwargs)
        except KuamoError:
            raise
        except Exception as e:
            raise self._error(what, e) from e

    def _read(self) -> dict[str, Any]:
        return {"consistency_level": self.consistency}

    # -- collections ------------------------------------------------------------------------------------
    def _ensure_collections(self) -> None:
        """Create what is missing (collection, then its vector index: a create that failed halfway is
        completed on the next open), check the catalog's schema, load both collections."""
        c = self._client
        for name, schema, index_type, metric, build in (
                (self.collection, self._product_schema, self._requested_index, "IP", self._build),
                (self.meta_collection, self._meta_schema, "FLAT", "L2", {})):
            if not self._call("has_collection", c.has_collection, name):
                # Another replica may create it at the same moment: a failed create is fine if it now exists.
                self._tolerate(lambda timeout, n=name, s=schema: c.create_collection(
                    n, schema=s(), consistency_level=self.consistency, timeout=timeout),
                    "create_collection", lambda n=name: self._call("has_collection", c.has_collection, n))
            if name == self.collection:
                self._check_schema()
            if not self._vector_indexes(name):
                params = c.prepare_index_params()
                params.append(_index_param_class()("vector", index_type, metric, build))
                self._tolerate(lambda timeout, n=name, p=params: c.create_index(n, p, timeout=timeout),
                               "create_index", lambda n=name: bool(self._vector_indexes(n)))
            self._call("load", c.load_collection, name)
        self._index = self._describe_index()

    def _tolerate(self, fn: Callable[..., Any], what: str, done: Callable[[], bool]) -> None:
        try:
            self._call(what, fn)
        except KuamoError:
            if not done():
                raise

    def _vector_indexes(self, name: str) -> list[str]:
        return list(self._call("list_indexes", lambda timeout: self._client.list_indexes(
            name, field_name="vector", timeout=timeout)) or [])

    def _product_schema(self) -> Any:
        from pymilvus import DataType, MilvusClient

        s = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        s.add_field("key", DataType.INT64, is_primary=True)
        s.add_field("ext_id", DataType.VARCHAR, max_length=MAX_ID_BYTES)
        s.add_field("ext_is_str", DataType.BOOL)
        for name in ("title", "description", "category"):
            s.add_field(name, DataType.VARCHAR, max_length=MAX_TEXT_BYTES)
        s.add_field("brand", DataType.VARCHAR, max_length=MAX_TEXT_BYTES, nullable=True)
        s.add_field("price", DataType.DOUBLE, nullable=True)
        s.add_field("rating", DataType.DOUBLE, nullable=True)
        s.add_field("attributes", DataType.JSON)
        s.add_field("image_ref", DataType.VARCHAR, max_length=MAX_TEXT_BYTES, nullable=True)
        s.add_field("content_hash", DataType.VARCHAR, max_length=MAX_HASH_BYTES)
        s.add_field("vector", DataType.FLOAT_VECTOR, dim=self.dim)
        return s

    @staticmethod
    def _meta_schema() -> Any:
        from pymilvus import DataType, MilvusClient

        s = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        s.add_field("name", DataType.VARCHAR, is_primary=True, max_length=MAX_META_KEY_BYTES)
        s.add_field("value", DataType.VARCHAR, max_length=MAX_TEXT_BYTES)
        s.add_field("vector", DataType.FLOAT_VECTOR, dim=2)
        return s

    def _check_schema(self) -> None:
        desc = self._call("describe_collection", self._client.describe_collection, self.collection)
        fields = {f["name"]: f for f in desc.get("fields", [])}
        missing = [n for n in [*PRODUCT_FIELDS, "content_hash", "vector"] if n not in fields]
        if missing:
            raise ArtifactError(f"milvus at {self.shown_uri}: collection {self.collection!r} is not a kuamo "
                                f"catalog (no {', '.join(missing)} field); use another collection name")
        stored = int((fields["vector"].get("params") or {}).get("dim", -1))
        if stored != self.dim:
            raise ArtifactError(f"milvus at {self.shown_uri}: collection {self.collection!r} holds {stored}-d "
                                f"vectors but the layout is {self.dim}-d; index into another collection")

    def _describe_index(self) -> dict[str, Any]:
        names = self._vector_indexes(self.collection)
        if not names:
            return {"index_type": "FLAT", "params": {}, "state": "none"}
        got = self._call("describe_index", self._client.describe_index, self.collection, names[0]) or {}
        known = {"index_type", "metric_type", "params", "field_name", "index_name", "total_rows",
                 "indexed_rows", "pending_index_rows", "state"}
        params = got.get("params") or {}
        if isinstance(params, str):  # some servers give the `params` entry back as the JSON text it was sent as
            try:
                params = json.loads(params)
            except ValueError:
                params = {}
        params = dict(params) if isinstance(params, dict) else {}
        params.update({k: v for k, v in got.items() if k not in known})  # Milvus gives build params flat
        return {"index_type": str(got.get("index_type", "FLAT")).upper(), "params": params,
                "state": str(got.get("state", "")), "indexed_rows": got.get("indexed_rows"),
                "total_rows": got.get("total_rows")}

    # -- metadata ---------------------------------------------------------------------------------------
    def get_meta(self, key: str) -> str | None:
        _text_bytes(key, "meta key", MAX_META_KEY_BYTES)
        rows = self._call("get_meta", self._client.query, self.meta_collection,
                          filter=f"name == {milvus_string(key, 'meta key')}", output_fields=["value"], **self._read())
        return None if not rows else str(rows[0]["value"])

    def set_meta(self, key: str, value: str) -> None:
        _text_bytes(key, "meta key", MAX_META_KEY_BYTES)
        _text_bytes(value, f"meta {key}")
        with self._write_lock:
            self._call("set_meta", self._client.upsert, self.meta_collection,
                       [{"name": key, "value": value, "vector": [0.0, 0.0]}])

    # -- writes -----------------------------------------------------------------------------------------
    def _record(self, r: StoredRow) -> tuple[dict[str, Any], int]:
        """The Milvus row of a stored row and its approximate size on the wire."""
        p = r.product
        check_product(p)
        for name in ("description", "category"):
            if not isinstance(getattr(p, name), str):
                raise InvalidInput(f"{name} must be a string", field=name)
        for name in ("brand", "image_ref"):
            if getattr(p, name) is not None and not isinstance(getattr(p, name), str):
                raise InvalidInput(f"{name} must be a string or absent", field=name)
        if not isinstance(r.content_hash, str):
            raise InvalidInput("content hash must be a string", field="content_hash")
        vec = np.ascontiguousarray(r.vector, dtype=np.float32)
        if vec.shape != (self.dim,):
            raise InvalidInput(f"vector of product {p.id!r} has shape {vec.shape}, expected ({self.dim},)",
                               field="vector")
        if not np.isfinite(vec).all():  # Milvus refuses NaN/inf vectors; say which product
            raise InvalidInput(f"vector of product {p.id!r} is not finite", field="vector")
        attrs = json.dumps(p.attributes, ensure_ascii=False, sort_keys=True)
        size = 4 * self.dim + _text_bytes(attrs, "attributes", MAX_JSON_BYTES)
        size += _text_bytes(str(p.id), "id", MAX_ID_BYTES) + _text_bytes(r.content_hash, "content_hash",
                                                                          MAX_HASH_BYTES)
        for name in ("title", "description", "category", "brand", "image_ref"):
            v = getattr(p, name)
            size += 0 if v is None else _text_bytes(v, name)
        rec = {"key": row_key(p.id), "ext_id": str(p.id), "ext_is_str": isinstance(p.id, str), "title": p.title,
               "description": p.description, "category": p.category, "brand": p.brand,
               "price": None if p.price is None else float(p.price),
               "rating": None if p.rating is None else float(p.rating),
               "attributes": json.loads(attrs), "image_ref": p.image_ref, "content_hash": r.content_hash,
               "vector": vec.tolist()}
        return rec, size + 200  # field framing

    def write(self, rows: Sequence[StoredRow]) -> None:
        """Upsert the rows (see the module docstring for what all-or-none means here)."""
        if not rows:
            return
        records: dict[int, tuple[dict[str, Any], int]] = {}
        ids: dict[int, ProductId] = {}
        for r in rows:
            rec, size = self._record(r)
            records[rec["key"]] = (rec, size)  # the last row of a key wins, as INSERT OR REPLACE
            ids[rec["key"]] = r.product.id
        with self._write_lock:
            owners = self.owners(list(records))
            for key, pid in ids.items():
                check_owner(pid, owners.get(key, pid))
            chunks: list[list[dict[str, Any]]] = [[]]
            used = 0
            for rec, size in records.values():
                if chunks[-1] and used + size > self.max_request_bytes:
                    chunks.append([])
                    used = 0
                chunks[-1].append(rec)
                used += size
            for i, chunk in enumerate(chunks):
                try:
                    self._call("write", self._client.upsert, self.collection, chunk)
                except KuamoError as e:
                    if i:
                        e.message = (f"{e.message}; {sum(map(len, chunks[:i]))} of {len(records)} rows were "
                                     "written before it (upserts are idempotent: write them again)")
                        e.args = (e.message,)
                    raise

    def delete(self, keys: Sequence[int]) -> int:
        """Delete by row key; the number that existed (counted just before the delete)."""
        wanted = [int(k) for k in dict.fromkeys(int(k) for k in keys)]
        gone = 0
        with self._write_lock:
            for start in range(0, len(wanted), ID_CHUNK):
                present = list(self._get(wanted[start: start + ID_CHUNK], ["key"]))
                if present:
                    self._call("delete", self._client.delete, self.collection, ids=present)
                gone += len(present)
        return gone

    # -- reads ------------------------------------------------------------------------------------------
    def _get(self, keys: Sequence[int], fields: list[str]) -> dict[int, dict[str, Any]]:
        """Row key -> the row's `fields`, for the keys that are stored."""
        out: dict[int, dict[str, Any]] = {}
        wanted = list(dict.fromkeys(int(k) for k in keys))
        for start in range(0, len(wanted), ID_CHUNK):
            chunk = wanted[start: start + ID_CHUNK]
            rows = self._call("get", self._client.query, self.collection, filter=f"key in {chunk}",
                              output_fields=fields, limit=len(chunk), **self._read())
            out.update((int(r["key"]), r) for r in rows)
        return out

    @property
    def has_string_ids(self) -> bool:
        """Always True: another replica may write the first string id at any time, and asking Milvus on every
        search (a filtered scan) cost seconds on Milvus Lite's 20,873-product fashion catalog; the engine then
        names hits through `owners` (one primary-key lookup of the k hits)."""
        return True

    @staticmethod
    def _product(r: dict[str, Any]) -> Product:
        attrs = r.get("attributes")
        if isinstance(attrs, str | bytes):
            attrs = json.loads(attrs)
        return Product(id=str(r["ext_id"]) if r["ext_is_str"] else int(r["key"]), title=r["title"],
                       description=r["description"], category=r["category"], brand=r.get("brand"),
                       price=None if r.get("price") is None else float(r["price"]),
                       rating=None if r.get("rating") is None else float(r["rating"]),
                       attributes=dict(attrs or {}), image_ref=r.get("image_ref"))

    def get(self, key: int, shown: ProductId | None = None) -> Product:
        got = self.get_many([key])
        if int(key) not in got:
            raise NotFound(f"no product with id {key if shown is None else shown!r}", field="id")
        return got[int(key)]

    def get_many(self, keys: Sequence[int]) -> dict[int, Product]:
        return {k: self._product(r) for k, r in self._get(keys, PRODUCT_FIELDS).items()}

    def facet_colours(self) -> frozenset[str]:
        """None known here (the collection is not read whole): queries name colours through the lexicon alone."""
        return frozenset()

    def facets(self, keys: Sequence[int]) -> dict[int, Facets]:
        """From the products (no photo colours: the collection has no field for them yet)."""
        return {k: facets_of(p) for k, p in self.get_many(keys).items()}

    def owners(self, keys: Sequence[int]) -> dict[int, ProductId]:
        return {k: str(r["ext_id"]) if r["ext_is_str"] else k
                for k, r in self._get(keys, ["key", "ext_id", "ext_is_str"]).items()}

    def hashes(self, keys: Sequence[int]) -> dict[int, str]:
        return {k: str(r["content_hash"]) for k, r in self._get(keys, ["key", "content_hash"]).items()}

    def vectors(self, keys: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """(the keys found, their vectors (n, dim) float32), in the order asked (as CatalogStore.vectors)."""
        found = self._get(keys, ["key", "vector"])
        keep = [int(k) for k in keys if int(k) in found]
        if not keep:
            return np.zeros(0, dtype=np.int64), np.zeros((0, self.dim), dtype=np.float32)
        vecs = np.asarray([found[k]["vector"] for k in keep], dtype=np.float32).reshape(len(keep), self.dim)
        return np.asarray(keep, dtype=np.int64), vecs

    def _scan(self, what: str, fields: list[str]) -> Iterator[dict[str, Any]]:
        """Every row's `fields`, page by page (query_iterator: no limit+offset cap)."""
        it = self._call(what, self._client.query_iterator, self.collection, batch_size=ITER_BATCH,
                        output_fields=fields, **self._read())
        try:
            while True:
                page = self._call(what, lambda timeout: it.next())
                if not page:
                    return
                yield from page
        finally:
            try:
                it.close()
            except Exception:  # closing a finished or broken iterator: nothing to do
                pass

    def keys(self) -> np.ndarray:
        return np.fromiter((int(r["key"]) for r in self._scan("keys", ["key"])), dtype=np.int64)

    def _count(self, expr: str) -> int:
        rows = self._call("count", self._client.query, self.collection, filter=expr,
                          output_fields=["count(*)"], **self._read())
        return int(rows[0]["count(*)"]) if rows else 0

    def count(self) -> int:
        return self._count("")

    def categories(self) -> list[str]:
        return list({str(r["category"]) for r in self._scan("categories", ["category"])})

    def attribute_names(self) -> set[str]:
        names: set[str] = set()
        for r in self._scan("attribute_names", ["attributes"]):
            attrs = r.get("attributes")
            if isinstance(attrs, str | bytes):
                attrs = json.loads(attrs)
            names.update(attrs or {})
        return names

    # -- search -----------------------------------------------------------------------------------------
    def _search_params(self, limit: int, nprobe: int) -> dict[str, Any]:
        kind, build = self._index["index_type"], self._index["params"]
        params: dict[str, Any] = {}
        if kind.startswith("IVF") or kind == "SCANN":
            nlist = int(build.get("nlist", 0) or 0)
            params["nprobe"] = min(nprobe, nlist) if nlist else nprobe
        elif kind.startswith("HNSW"):
            params["ef"] = max(limit, 64)  # ef must cover the limit
        return {"metric_type": "IP", "params": params}

    supports_lexical = False

    def lexical(self, text: str, n: int, *, filters: Filters) -> Candidates:
        """Not yet on Milvus: Unsupported, and the engine ranks by the vectors alone (a query that asks for
        weights.lexical > 0 explicitly is told so). The plan: milvus-lite 3.2.2 has Milvus's BM25 Function
        (milvus_lite/engine/collection.py: a FunctionType.BM25 maps a VARCHAR field with an analyzer to a sparse
        field searched with metric BM25; jieba is an optional analyzer). Add a `lexical_text` VARCHAR field
        (engine/lexical.py's terms, space-joined, so both backends see the same terms; the "whitespace"
        analyzer) and its BM25 sparse output to the collection schema, written by the same insert as the
        vector (so one write holds both), a collection made before it re-created by `kuamo index`; search it
        with the filter expression of `search`. Caveat read in that source: milvus-lite keeps BM25 IDF per
        segment (a TODO there), so its scores differ slightly from one global IDF."""
        raise Unsupported("lexical (BM25) search is not implemented on the Milvus backend yet; "
                          "set weights.lexical to 0 or use the embedded backend", field="weights.lexical")

    def search(self, queries: np.ndarray, n: int, *, filters: Filters, nprobe: int | None = None,
               rerank_factor: int | None = None) -> Candidates:
        if isinstance(n, bool) or not isinstance(n, int | np.integer) or not 1 <= int(n) <= MAX_K:
            raise InvalidInput(f"k must be an integer in 1..{MAX_K}, got {n!r}", field="k")
        n = int(n)
        nprobe = DEFAULT_NPROBE if nprobe is None else nprobe
        if isinstance(nprobe, bool) or not isinstance(nprobe, int | np.integer) or not 1 <= nprobe <= MAX_NPROBE:
            raise InvalidInput(f"nprobe must be in 1..{MAX_NPROBE}, got {nprobe!r}", field="nprobe")
        rf = DEFAULT_RERANK if rerank_factor is None else rerank_factor
        if isinstance(rf, bool) or not isinstance(rf, int | np.integer) or not 1 <= rf <= MAX_RERANK:
            raise InvalidInput(f"rerank_factor must be in 1..{MAX_RERANK}, got {rf!r}", field="rerank_factor")
        xq = np.ascontiguousarray(queries, dtype=np.float32)
        if xq.ndim != 2 or xq.shape[1] != self.dim:
            raise InvalidInput(f"query vectors must be (nq, {self.dim}), got {xq.shape}", field="query")
        if not np.isfinite(xq).all():
            raise InvalidInput("query vectors are not finite", field="query")
        validate_filters(filters)
        expr = milvus_expr(filters)
        out_s = np.full((len(xq), n), -np.inf, dtype=np.float32)
        out_k = np.full((len(xq), n), -1, dtype=np.int64)
        allowed = None if filters.is_empty() else self._count(expr)
        if not len(xq) or allowed == 0:
            return Candidates(out_s, out_k, allowed)
        limit = n if self._index["index_type"] in EXACT_INDEXES else min(n * int(rf), MAX_TOPK)
        params = self._search_params(limit, int(nprobe))
        # The candidates come back with their vectors: keep each reply under MAX_REPLY_BYTES (and Milvus's nq cap).
        step = max(1, min(MAX_TOPK, MAX_REPLY_BYTES // (limit * (4 * self.dim + 64))))
        for q0 in range(0, len(xq), step):
            res = self._call("search", self._client.search, self.collection, data=xq[q0: q0 + step].tolist(),
                             anns_field="vector", filter=expr, limit=limit, output_fields=["vector"],
                             search_params=params, **self._read())
            for qi, hits in enumerate(res, start=q0):
                if not len(hits):
                    continue
                keys = np.fromiter((int(h["key"]) for h in hits), dtype=np.int64, count=len(hits))
                vecs = np.asarray([h["entity"]["vector"] for h in hits], dtype=np.float32).reshape(len(hits), -1)
                scores = vecs @ xq[qi]  # exact, on the stored vectors
                top = np.argsort(-scores, kind="stable")[:n]
                out_s[qi, : len(top)], out_k[qi, : len(top)] = scores[top], keys[top]
        return Candidates(out_s, out_k, allowed)

    # -- upkeep -----------------------------------------------------------------------------------------
    def check(self) -> None:
        from pymilvus.client.types import LoadState

        state = self._call("check", self._client.get_load_state, self.collection).get("state")
        if state == LoadState.NotLoad:  # a restarted Milvus (Lite loads nothing on start): load it again
            for name in (self.collection, self.meta_collection):
                self._call("load", self._client.load_collection, name)
            state = self._call("check", self._client.get_load_state, self.collection).get("state")
        if state != LoadState.Loaded:
            raise BackendUnavailable(f"milvus at {self.shown_uri}: collection {self.collection!r} is not loaded "
                                     f"({state})")

    def stats(self) -> dict:
        self._index = self._describe_index()  # an index build may have finished since
        n = self.count()
        return {"products": n, "indexed": n, "uri": self.shown_uri,
                "index": {"kind": self.kind, "collection": self.collection, "dim": self.dim,
                          "consistency": self.consistency, **self._index}}

    def reindex(self) -> None:
        """Milvus maintains its index as rows change: nothing to rebuild after a re-embed."""

    def snapshot(self) -> None:
        """Nothing to do: Milvus persists itself."""

    def close(self) -> None:
        """Close the connection (idempotent). A Milvus Lite `.db` keeps its in-process server until the
        process exits, as pymilvus runs it; reopening the same path in this process reuses it."""
        if self._closed:
            return
        self._closed = True
        client = getattr(self, "_client", None)
        if client is not None:
            try:
                client.close()
            except Exception:  # the channel is going away either way
                pass
