"""The engine: the orchestration of its roles. Encoders (engine/product_encoder.py, behind dynamic batchers),
the catalog backend (engine/catalog_backend.py: embedded SQLite + FAISS, or Milvus), ranking
(engine/ranking.py), personalisation (engine/personalisation.py) and the record of which models made the
catalog's vectors (engine/vector_provenance.py).

Write path: validate -> hash (skip unchanged) -> encode -> fuse -> backend write (one per chunk, under one
write lock). Query path: encode (batched) -> fuse with per-query weights (+ the shopper's profile) -> the
backend's exact candidates (concurrent queries batched) -> ranking.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from kuamo.engine import blas_threads
from kuamo.engine.backends import MilvusSettings, open_backend
from kuamo.engine.batcher import BatcherConfig, DynamicBatcher
from kuamo.engine.catalog_backend import CatalogBackend
from kuamo.engine.category_prior import DEFAULT_CANDIDATES, DEFAULT_TEMPERATURE, DEFAULT_WEIGHT
from kuamo.engine.config import DEFAULT_LEXICAL_WEIGHT, DEFAULT_MODEL_DIR, DEFAULT_UNDERSTANDING_WEIGHT, EncoderConfig
from kuamo.engine.embedded_backend import EmbeddedBackend
from kuamo.engine.errors import ArtifactError, InvalidInput, KuamoError, NotReady, Unsupported
from kuamo.engine.errors import names as listed
from kuamo.engine.errors import shown as plain
from kuamo.engine.ids import ProductId, canonical_id, key_of, row_key
from kuamo.engine.index import IndexConfig
from kuamo.engine.personal import Event, PersonalConfig, check_user_id
from kuamo.engine.personalisation import Personaliser
from kuamo.engine.product_encoder import ImageEncoderLike, Pending, ProductEncoder, TextEncoderLike
from kuamo.engine.query_cache import DEFAULT_ENTRIES, DEFAULT_MAX_BYTES, QueryCache, normalise_query
from kuamo.engine.ranking import MAX_LEXICAL_WEIGHT, RANKING_WEIGHTS, Ranker, SearchJob, block_weights
from kuamo.engine.result_cache import ResultCache, result_key
from kuamo.engine.rules import check_attr_name, validate_filters, validate_modifiers
from kuamo.engine.store import StoredRow, check_owner
from kuamo.engine.trained_products import UntrainedOnly
from kuamo.engine.types import (
    EngineStats,
    Health,
    Product,
    Query,
    RecommendQuery,
    Rejection,
    SearchResult,
    Timings,
    UpsertResult,
)
from kuamo.engine.understanding import CANDIDATE_CATEGORY_MIN_SHARE
from kuamo.engine.vector_provenance import VectorProvenance
from kuamo.engine.vocabulary import CatalogVocabulary
from kuamo.engine.zero_shot_blend import BlendChoice

__all__ = ["Engine", "EngineConfig", "ImageEncoderLike", "TextEncoderLike"]


def _default_weights() -> dict[str, float]:
    return {"text": 0.5, "image": 0.5, "rating": 0.25, "price": 0.25}


# Recommend example weights are relative (the query vector is a weighted sum): above this a few float32
# products overflow to inf and the ranking is NaN (found by tests/unit/server/test_properties.py)
MAX_EXAMPLE_WEIGHT = 1e6


@dataclass(frozen=True, kw_only=True)
class EngineConfig:
    model_dir: Path = DEFAULT_MODEL_DIR
    data_dir: Path = Path("data/kuamo")  # catalog.sqlite + index/ snapshot
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    text_batcher: BatcherConfig = field(default_factory=BatcherConfig)
    image_batcher: BatcherConfig = field(default_factory=BatcherConfig)
    index: IndexConfig = field(default_factory=IndexConfig)
    # Declared numeric attributes that get a fused block: "name:lo:hi" or "name:lo:hi:log" (see fusion).
    numeric_attributes: tuple[str, ...] = ()
    # Weights for the blocks a query fills that the caller does not weight (score = sum of weight x cosine).
    default_weights: dict[str, float] = field(default_factory=_default_weights)
    # A text query also fills the image block when the image tower is aligned to the text space.
    text_fills_image: bool = True
    # ...and a photo-only query the text block (cross-modal photo -> titles); off until measured useful.
    image_fills_text: bool = False
    # A photo-only query re-ranks at least `photo_candidates` candidates by visual score plus this weight (in
    # units of its image weight) times the agreement of the predicted categories (category_prior); 0 = off.
    photo_category_weight: float = DEFAULT_WEIGHT
    category_temperature: float = DEFAULT_TEMPERATURE
    photo_candidates: int = DEFAULT_CANDIDATES
    # Choose the image blend with the zero-shot map when `kuamo index` finds it pending (zero_shot_blend); off =
    # the exported vector as it is.
    calibrate_image_blend: bool = True
    # `kuamo index`: None = choose when pending; "auto" = choose again now; a beta in 0..1 = use it (both bind
    # the catalog and re-embed it when beta changes). Checked by zero_shot_blend.parse_image_blend.
    image_blend: float | str | None = None
    # Open a catalog whose vectors other models made (or an older kuamo that kept no record), so `kuamo index`
    # can re-embed it; off, opening it is an error: its vectors and new queries would not be comparable.
    allow_stale_vectors: bool = False
    # NumPy BLAS threads in this process (engine/blas_threads.py); None leaves them as they are.
    blas_threads: int | None = 1
    max_k: int = 1000
    max_batch_queries: int = 256
    # Concurrent searches are batched into one index call (one worker: no oversubscribed BLAS threads).
    search_batcher: BatcherConfig = field(default_factory=lambda: BatcherConfig(max_batch_size=64, max_wait_ms=0.0))
    # A plain search of at most this many candidates on the embedded backend runs on the event loop instead of
    # the search thread (0 = always the thread): it costs ~0.4 ms there, while under load each hand-over to a
    # thread waits for the GIL (up to the switch interval per release) and for loop turns: 4-23 ms of a cache
    # miss under the Zipf log's 32 clients (README, Zipf log). Filtered and widened (photo) searches, a
    # hybrid one whose BM25 must first catch up on a write, and any search while a write is committing (it could
    # wait for the store's lock) keep the thread.
    inline_search_candidates: int = 100
    personal: PersonalConfig = field(default_factory=PersonalConfig)
    recommend_interests: int = 5  # Recommend: also search from this many of the shopper's top products
    upsert_chunk: int = 256  # rows per store transaction + index update: bounds how long a write blocks searches
    snapshot_every: int = 20_000  # changes between automatic index snapshots
    sqlite_synchronous: str = "NORMAL"
    # The catalog backend: "embedded" (SQLite + FAISS in data_dir) or "milvus" (a shared Milvus collection;
    # the replica then holds no catalog state). See engine/backends.py and docs/scale.md.
    backend: str = "embedded"
    milvus: MilvusSettings = field(default_factory=MilvusSettings)
    # Query text -> text vector LRU in front of the text batcher (engine/query_cache.py); 0 entries = off.
    query_cache_entries: int = DEFAULT_ENTRIES
    query_cache_bytes: int = DEFAULT_MAX_BYTES
    # Whole text query -> its answer, dropped at every catalog write (engine/result_cache.py); 0 = off. Off here
    # (evaluations and benchmarks measure the search), on in the server (server/config.py); embedded backend only:
    # a Milvus replica does not see the other replicas' writes.
    result_cache_entries: int = 0
    # Hybrid ranking: base score = vector score + lexical_weight x BM25 / the query's best BM25 (engine/ranking.py
    # fuse_lexical) over the vector candidates and the BM25 top `lexical_candidates`; a query's weights.lexical
    # overrides it, 0 = off. Default chosen on the validation split (benchmarks/results/hybrid.md).
    lexical_weight: float = DEFAULT_LEXICAL_WEIGHT
    lexical_candidates: int = 100
    # Query understanding (engine/understanding.py): each recognised colour, gender, category or price phrase
    # the product matches adds this much to its base score (soft, never a filter); weights.understanding
    # overrides it per query, 0 = off. Chosen on the validation split (benchmarks/results/hybrid.md).
    understanding_weight: float = DEFAULT_UNDERSTANDING_WEIGHT
    # A query whose words name no category takes the leaf category shared by this share of its best vector
    # matches (engine/understanding.py category_from_candidates); above 1 = never. Chosen on the validation split.
    understanding_category_share: float = CANDIDATE_CATEGORY_MIN_SHARE
    # Read each photo's dominant colours at ingest (engine/photo_colour.py); the understanding's colour boost uses
    # them for products without a colour attribute. Off: nothing is read, and stored ones are not used.
    photo_colours: bool = True


class Engine:
    """Implements EngineProtocol. Construct with encoders (tests inject fakes), or `await Engine.open(cfg)`."""

    def __init__(self, config: EngineConfig, *, text_encoder: TextEncoderLike,
                 image_encoder: ImageEncoderLike | None = None, batched: bool = False,
                 image_aligned: bool | None = None, backend: CatalogBackend | None = None) -> None:
        self.config = config
        self.encoder = ProductEncoder(text_encoder, image_encoder, numeric_attributes=config.numeric_attributes,
                                      image_aligned=image_aligned, photo_colours=config.photo_colours)
        self.backend = backend if backend is not None else open_backend(
            config.backend, data_dir=Path(config.data_dir), dim=self.encoder.layout.dim, index=config.index,
            synchronous=config.sqlite_synchronous, snapshot_every=config.snapshot_every, milvus=config.milvus)
        try:
            self.provenance = VectorProvenance(config, self.encoder, self.backend)
            if isinstance(self.backend, EmbeddedBackend):
                self.backend.recover()
        except (ArtifactError, KuamoError):
            self.backend.close()  # refused: leave no connection to the catalog behind
            raise
        self._blas_capped = blas_threads.acquire(config.blas_threads)
        self.ranker = Ranker(config, self.encoder, self.backend)
        # Profiles and events live in the embedded catalog's SQLite file (engine/personalisation.py)
        self.personaliser = (Personaliser(config, self.backend, self.ranker)
                             if isinstance(self.backend, EmbeddedBackend) else None)
        self._write_lock = asyncio.Lock()
        self.query_cache = QueryCache(config.query_cache_entries, config.query_cache_bytes)
        self.result_cache = ResultCache(config.result_cache_entries if self.backend.kind == "embedded" else 0)
        self._generation = 0  # bumped after each committed write and model/blend change (engine/result_cache.py)
        self.vocabulary = CatalogVocabulary()
        self.vocabulary.add_attributes(self.backend.attribute_names())
        self._refresh_categories()
        self._text_batcher: DynamicBatcher | None = None
        self._image_batcher: DynamicBatcher | None = None
        self._search_batcher: DynamicBatcher | None = None
        if batched:
            # cost = length: batches group texts of similar length, so less padding
            self._text_batcher = DynamicBatcher(self.encoder.encode_query_batch, config.text_batcher, name="text",
                                                cost=len)
            if image_encoder is not None:
                self._image_batcher = DynamicBatcher(self.encoder.encode_image_batch, config.image_batcher,
                                                     name="image")
            self._search_batcher = DynamicBatcher(self.ranker.search_jobs, config.search_batcher, name="search")
        self._started = not batched
        self._closed = False

    # -- the roles, as earlier callers (tests, tools) name them ---------------------------------------
    @property
    def text_encoder(self) -> TextEncoderLike:
        return self.encoder.text_encoder

    @property
    def image_encoder(self) -> ImageEncoderLike | None:
        return self.encoder.image_encoder

    @property
    def layout(self) -> Any:
        return self.encoder.layout

    @property
    def numeric_names(self) -> tuple[str, ...]:
        return self.encoder.numeric_names

    @property
    def image_aligned(self) -> bool:
        return self.encoder.image_aligned

    @property
    def fingerprint(self) -> str:
        return self.encoder.fingerprint

    @property
    def stale_vectors(self) -> str | None:
        return self.provenance.stale_vectors

    def _embedded(self) -> EmbeddedBackend:
        if not isinstance(self.backend, EmbeddedBackend):
            raise Unsupported(f"this needs the embedded backend; this engine runs on {self.backend.kind}")
        return self.backend

    @property
    def store(self) -> Any:
        """The embedded backend's SQLite store."""
        return self._embedded().store

    @property
    def index(self) -> Any:
        """The embedded backend's FAISS index."""
        return self._embedded().index

    @property
    def index_seq(self) -> int:
        return self._embedded().index_seq

    @property
    def recovery(self) -> dict[str, Any]:
        return self._embedded().recovery

    def _personal(self) -> Personaliser:
        if self.personaliser is None:
            raise Unsupported(f"personalisation (events, profiles, recommendations, user_id) is served on the "
                              f"embedded backend only; this replica runs on {self.backend.kind} (docs/scale.md)",
                              field="user_id")
        return self.personaliser

    @property
    def personal(self) -> Any:
        return self._personal().store

    def pseudonym(self, user_id: str) -> str:
        return self._personal().pseudonym(user_id)

    # -- lifecycle --------------------------------------------------------------------------------
    @classmethod
    async def open(cls, config: EngineConfig) -> Engine:
        """Load the exported models, wrap them in batchers, open the catalog backend and start."""
        from kuamo.engine.artifacts import ModelArtifacts
        from kuamo.engine.encoders import ImageEncoder, TextEncoder

        artifacts = ModelArtifacts(config.model_dir, verify=config.encoder.verify_checksums)
        text = TextEncoder(artifacts, config.encoder)
        image = ImageEncoder(artifacts, config.encoder) if "image" in artifacts.towers else None
        engine = await asyncio.to_thread(cls, config, text_encoder=text, image_encoder=image, batched=True)
        await engine.start()
        return engine

    async def start(self) -> None:
        for b in (self._text_batcher, self._image_batcher, self._search_batcher):
            if b is not None:
                await b.start()
        self._started = True

    async def close(self, *, snapshot: bool = True) -> None:
        if self._closed:
            return
        self._started = False
        for b in (self._text_batcher, self._image_batcher, self._search_batcher):
            if b is not None:
                await b.stop()
        if snapshot:
            await self.snapshot()
        if self.personaliser is not None:
            self.personaliser.close()
        self.backend.close()
        self._closed = True
        if self._blas_capped:
            self._blas_capped = False
            blas_threads.release()

    async def snapshot(self) -> None:
        async with self._write_lock:
            await asyncio.to_thread(self.backend.snapshot)

    # -- per-catalog image blend (vector_provenance) ------------------------------------------------
    @property
    def can_blend(self) -> bool:
        return self.encoder.can_blend

    @property
    def blend_sample_keep(self) -> UntrainedOnly | None:
        return self.encoder.blend_sample_keep

    def stored_blend(self) -> dict | None:
        return self.provenance.stored_blend()

    @property
    def image_blend_pending(self) -> bool:
        return self.provenance.image_blend_pending

    def image_blend_due(self, photos: int) -> bool:
        return self.provenance.image_blend_due(photos)

    def calibrate_image_blend(self, products: Sequence[Product], images: Sequence[bytes | None], *,
                              force: bool = False) -> BlendChoice:
        return self.provenance.calibrate(products, images, force=force)

    def set_image_blend(self, beta: float) -> BlendChoice:
        choice = self.provenance.set_blend(beta)
        self._catalog_changed()  # query vectors change with the blend
        return choice

    async def settle_stale_vectors(self) -> int:
        """After re-embedding a stale catalog: how many products still hold vectors from other models. At 0 the
        catalog is recorded as made by these encoders and the index is rebuilt (trained) on the new vectors."""
        if self.provenance.stale_vectors is None:
            return 0
        async with self._write_lock:
            left = await asyncio.to_thread(self.provenance.still_stale)
            if left == 0:
                await asyncio.to_thread(self.backend.reindex)  # trained on the new vectors, not the old ones
                self._catalog_changed()
                self.provenance.settled()
        return left

    # -- encoding ---------------------------------------------------------------------------------
    def _validate_text(self, text: Any, field: str) -> str:
        return self.encoder.validate_text(text, field)

    async def embed_text(self, texts: Sequence[str], kind: str = "query") -> np.ndarray:
        self._require_ready()
        if kind not in ("query", "document"):
            raise InvalidInput(f"kind must be 'query' or 'document', got {kind!r}", field="kind")
        if not texts:
            return np.zeros((0, self.text_encoder.dim), dtype=np.float32)
        items = [self._validate_text(t, f"texts[{i}]") for i, t in enumerate(texts)]
        if kind == "query" and self._text_batcher is not None:
            return np.stack(await asyncio.gather(*(self._text_batcher.submit(t) for t in items)))
        return await asyncio.to_thread(self.text_encoder.encode, items, kind)

    def text_tokens(self, texts: Sequence[str], kind: str = "query") -> list[int]:
        """Tokens per text as the text tower counts them (prefix and special tokens included); an encoder
        without a tokenizer (the tests' fakes) counts words."""
        tokenize = getattr(self.text_encoder, "tokenize", None)
        if tokenize is None:
            return [len(str(t).split()) for t in texts]
        return [len(ids) for ids in tokenize(list(texts), kind)]

    async def categories(self) -> list[str]:
        """The catalog's distinct category paths, sorted (the web page's category filter)."""
        self._require_open()
        return sorted(c for c in await asyncio.to_thread(self.backend.categories) if c)

    def text_model_name(self) -> str:
        """The text tower's model as the manifest names it (what /v1/embeddings answers as `model`)."""
        spec = getattr(getattr(self.text_encoder, "tower", None), "spec", {})
        return str(spec.get("source", {}).get("model") or type(self.text_encoder).__name__)

    async def embed_image(self, images: Sequence[bytes]) -> np.ndarray:
        self._require_ready()
        if self.image_encoder is None:
            raise NotReady("no image tower is loaded")
        if not images:
            return np.zeros((0, self.image_encoder.dim), dtype=np.float32)
        if self._image_batcher is not None:
            return np.stack(await asyncio.gather(*(self._image_batcher.submit(bytes(b)) for b in images)))
        return await asyncio.to_thread(self.image_encoder.encode, list(images))

    async def _query_text_vec(self, text: str) -> tuple[np.ndarray, float]:
        """The query vector and the seconds it waited for an encoder batch; a repeated query (same normalised
        text, same models) comes from the query cache without waiting."""
        text = normalise_query(text) or text  # cache on or off: the same text reaches the tower
        cache, fp = self.query_cache, self.encoder.fingerprint
        if cache.enabled:
            hit = cache.get(text, fp)
            if hit is not None:
                return hit, 0.0
        if self._text_batcher is not None:
            vec, waited = await self._text_batcher.submit_timed(text)
        else:
            vec, waited = (await asyncio.to_thread(self.text_encoder.encode, [text], "query"))[0], 0.0
        cache.put(text, fp, vec)
        return vec, waited

    async def _query_image_vec(self, image: bytes) -> tuple[np.ndarray, float]:
        if self.image_encoder is None:
            raise InvalidInput("this engine has no image tower; send text", field="image")
        if self._image_batcher is not None:
            return await self._image_batcher.submit_timed(image)
        return (await asyncio.to_thread(self.image_encoder.encode, [image]))[0], 0.0

    # -- search -----------------------------------------------------------------------------------
    def _require_ready(self) -> None:
        if self._closed:
            raise NotReady("engine is closed")
        if not self._started:
            raise NotReady("engine is starting")

    def _validate_query(self, q: Query) -> None:
        if not isinstance(q, Query):
            raise InvalidInput(f"expected a Query, got {type(q).__name__}", field="query")
        if isinstance(q.k, bool) or not isinstance(q.k, int) or not 1 <= q.k <= self.config.max_k:
            raise InvalidInput(f"k must be an integer in 1..{self.config.max_k}, got {q.k!r}", field="k")
        if q.text is None and q.image is None and q.rating is None and q.price is None and not q.targets:
            raise InvalidInput("a query needs text, an image, a rating, a price or an attribute target",
                               field="query")
        if q.text is not None:
            self._validate_text(q.text, "text")
        if q.image is not None and (not isinstance(q.image, bytes | bytearray) or not q.image):
            raise InvalidInput("image must be non-empty bytes", field="image")
        if q.rating is not None and not (isinstance(q.rating, int | float) and 0 <= q.rating <= 5):
            raise InvalidInput(f"rating target must be within 0..5, got {plain(q.rating)}", field="rating")
        if q.price is not None and not (isinstance(q.price, int | float) and 0 <= q.price < float("inf")):
            raise InvalidInput(f"price target must be a finite non-negative number, got {plain(q.price)}",
                               field="price")
        for name in q.targets:
            check_attr_name(name, "targets")
            if name not in self.numeric_names:
                raise InvalidInput(f"{name!r} is not a declared numeric attribute ({listed(self.numeric_names)})",
                                   field="targets")
        validate_filters(q.filters)
        self.vocabulary.check(q.filters)
        validate_modifiers(q.modifiers)
        self._validate_ranking_weights(q)
        if q.user_id is not None:
            check_user_id(q.user_id)
        if q.user_weight is not None and not (isinstance(q.user_weight, int | float)
                                              and 0 <= q.user_weight <= 1):
            raise InvalidInput(f"user_weight must be within 0..1, got {plain(q.user_weight)}", field="user_weight")
        if q.collapse is not None:
            check_attr_name(q.collapse, "collapse")

    def _validate_ranking_weights(self, q: Query) -> None:
        if not isinstance(q.weights, dict):
            return
        for name in RANKING_WEIGHTS:
            w = q.weights.get(name, 0.0)
            if isinstance(w, bool) or not isinstance(w, int | float) or not 0 <= float(w) <= MAX_LEXICAL_WEIGHT:
                raise InvalidInput(f"weights.{name} must be a number within 0..{MAX_LEXICAL_WEIGHT:g} (0 = off), "
                                   f"got {w!r}", field=f"weights.{name}")
        w = q.weights.get("lexical", 0.0)
        if float(w) > 0 and not getattr(self.backend, "supports_lexical", False):
            raise Unsupported(f"the {self.backend.kind} backend has no lexical index yet; send weights.lexical 0",
                              field="weights.lexical")

    def _weights_for(self, blocks: dict[str, Any], given: dict[str, float]) -> dict[str, float]:
        # Naming any block weight replaces the defaults: blocks not named count 0 (the v1 contract: {"text": 1}
        # is a text-only search). "category", "lexical" and "understanding" are the Ranker's score parts, not
        # fused blocks: naming only those keeps the default block weights.
        named = block_weights({k: v for k, v in given.items() if k not in RANKING_WEIGHTS})
        if named:
            return named
        d = self.config.default_weights
        return {name: float(d.get(name, d.get("attribute", 0.25))) for name, v in blocks.items() if v is not None}

    async def _query_blocks(self, q: Query) -> tuple[dict[str, Any], float, float]:
        """Blocks, encode ms (without the queue wait) and queue ms (the longest wait of the towers, which run
        side by side)."""
        t0 = time.perf_counter()
        jobs = []
        if q.text is not None:
            jobs.append(self._query_text_vec(q.text))
        if q.image is not None:
            jobs.append(self._query_image_vec(bytes(q.image)))
        # one tower: awaited directly; gather would wrap it in a task, three more turns of a loop that may be
        # busy with thousands of cached answers a second
        timed = [await jobs[0]] if len(jobs) == 1 else await asyncio.gather(*jobs)
        vecs = [v for v, _ in timed]
        queue_ms = max((w for _, w in timed), default=0.0) * 1000
        text_vec = vecs[0] if q.text is not None else None
        image_vec = vecs[-1] if q.image is not None else None
        blocks: dict[str, Any] = {}
        if text_vec is not None:
            blocks["text"] = text_vec
        elif image_vec is not None and self.config.image_fills_text and self.image_aligned:
            blocks["text"] = image_vec
        if image_vec is not None:
            blocks["image"] = image_vec
        elif text_vec is not None and self.config.text_fills_image and self.image_aligned:
            blocks["image"] = text_vec
        if q.rating is not None:
            blocks["rating"] = float(q.rating)
        if q.price is not None:
            blocks["price"] = float(q.price)
        for name, v in q.targets.items():
            blocks[name] = float(v)
        return blocks, (time.perf_counter() - t0) * 1000 - queue_ms, queue_ms

    async def query_vector(self, query: Query) -> np.ndarray:
        """The fused query vector a search would send to the backend (without the shopper's profile): for
        exact comparisons across backends (kuamo bench scale)."""
        self._require_ready()
        self._validate_query(query)
        blocks, _, _ = await self._query_blocks(query)
        return self.layout.query_vector(blocks, self._weights_for(blocks, query.weights)).astype(np.float32)

    async def search(self, query: Query) -> SearchResult:
        t0 = time.perf_counter()
        self._require_ready()
        self._validate_query(query)
        key = result_key(query) if self.result_cache.enabled else None
        generation = self._generation
        if key is not None:
            hit = self.result_cache.get(key, generation)
            if hit is not None:
                return dataclasses.replace(hit, timings=Timings(total_ms=(time.perf_counter() - t0) * 1000))
        res = await self._search(query, t0)
        if key is not None:
            self.result_cache.put(key, generation, res)
        return res

    def _catalog_changed(self) -> None:
        """After a committed write or a model/blend change: no cached answer from before may be served."""
        self._generation += 1
        self.result_cache.clear()

    async def _search(self, query: Query, t0: float) -> SearchResult:
        personaliser = self._personal() if query.user_id is not None else None
        blocks, encode_ms, queue_ms = await self._query_blocks(query)
        qvec = self.layout.query_vector(blocks, self._weights_for(blocks, query.weights)).astype(np.float32)
        profile_vec = None
        if personaliser is not None:
            beta = self.config.personal.profile_weight if query.user_weight is None else query.user_weight
            taste = (await asyncio.to_thread(personaliser.taste, personaliser.pseudonym(query.user_id))
                     if beta > 0 else None)
            if taste is not None:  # a shopper without events gets the plain search
                profile_vec = (beta * taste).astype(np.float32)
                qvec = ((1 - beta) * qvec + profile_vec).astype(np.float32)
        job = SearchJob(query, qvec, encode_ms, t0, profile_vec=profile_vec, queue_ms=queue_ms)
        return await self._external_ids(await self._run_search(job))

    async def _external_ids(self, res: SearchResult) -> SearchResult:
        """Hits name products by the catalog's own ids (the backend works in row keys)."""
        if not self.backend.has_string_ids or not res.hits:
            return res
        owners = await asyncio.to_thread(self.backend.owners, [h.id for h in res.hits])
        return dataclasses.replace(res, hits=[dataclasses.replace(h, id=owners.get(h.id, h.id)) for h in res.hits])

    def _searches_inline(self, q: Query) -> bool:
        """Whether this search is cheap and local enough to run on the event loop (EngineConfig above)."""
        hybrid = self.ranker.lexical_weight(q) > 0 or self.ranker.understanding_weight(q) > 0
        return (self.backend.kind == "embedded" and not self._write_lock.locked() and q.filters.is_empty()
                and self.ranker.n_candidates(q) <= self.config.inline_search_candidates
                and (not hybrid or self.backend.lexical_current()))

    async def _run_search(self, job: SearchJob) -> SearchResult:
        if self._searches_inline(job.query):
            # one turn of the loop first: with the query vector cached nothing else in a search yields, and a
            # task that searches in a loop would starve every other task on it
            await asyncio.sleep(0)
            result = self.ranker.search_jobs([job])[0]
        elif self._search_batcher is not None:
            return await self._search_batcher.submit(job)
        else:
            result = (await asyncio.to_thread(self.ranker.search_jobs, [job]))[0]
        if isinstance(result, BaseException):
            raise result
        return result

    async def search_many(self, queries: Sequence[Query]) -> list[SearchResult]:
        if len(queries) > self.config.max_batch_queries:
            raise InvalidInput(f"at most {self.config.max_batch_queries} queries per call, got {len(queries)}",
                               field="queries")
        # Concurrent submits land in the same encoder batches.
        return list(await asyncio.gather(*(self.search(q) for q in queries)))

    # -- personalisation --------------------------------------------------------------------------
    async def record_events(self, events: Sequence[Event]) -> tuple[int, list[Rejection]]:
        """Store valid events (pseudonymised) and update the profiles; returns (recorded, rejections)."""
        self._require_ready()
        return await asyncio.to_thread(self._personal().record, events)

    async def forget_user(self, user_id: str) -> int:
        """Delete every event and the profile of a shopper; returns the number of events deleted."""
        self._require_open()
        personaliser = self._personal()
        check_user_id(user_id)
        return await asyncio.to_thread(personaliser.forget, personaliser.pseudonym(user_id))

    async def recommend(self, rq: RecommendQuery) -> SearchResult:
        t0 = time.perf_counter()
        self._require_ready()
        personaliser = self._personal()
        if not isinstance(rq.k, int) or isinstance(rq.k, bool) or not 1 <= rq.k <= self.config.max_k:
            raise InvalidInput(f"k must be an integer in 1..{self.config.max_k}, got {rq.k!r}", field="k")
        validate_filters(rq.filters)
        self.vocabulary.check(rq.filters)
        validate_modifiers(rq.modifiers)
        for name, ex in (("positives", rq.positives), ("negatives", rq.negatives)):
            for pid, w in ex.items():
                if not isinstance(w, int | float) or not np.isfinite(w) or not 0 < w <= MAX_EXAMPLE_WEIGHT:
                    raise InvalidInput(f"weight of product {pid} must be a number > 0 and <= {MAX_EXAMPLE_WEIGHT:g}, "
                                       f"got {plain(w)}", field=name)
        pseudo = personaliser.pseudonym(check_user_id(rq.user_id)) if rq.user_id is not None else None
        keyed = dataclasses.replace(rq, positives={key_of(i, "positives"): w for i, w in rq.positives.items()},
                                    negatives={key_of(i, "negatives"): w for i, w in rq.negatives.items()})
        shown = {key_of(i): i for i in (*rq.positives, *rq.negatives)}
        return await self._external_ids(await asyncio.to_thread(personaliser.recommend, keyed, pseudo, t0, shown))

    # -- writes -----------------------------------------------------------------------------------
    async def upsert(self, products: Sequence[Product],
                     images: Sequence[bytes | None] | None = None) -> UpsertResult:
        """Validate, skip unchanged, encode and commit in chunks; each chunk is one backend write, so
        searches wait at most one chunk."""
        self._require_open()
        if images is not None and len(images) != len(products):
            raise InvalidInput(f"{len(images)} images for {len(products)} products", field="images")
        imgs: list[bytes | None] = list(images) if images is not None else [None] * len(products)
        accepted: list[ProductId] = []
        unchanged: list[ProductId] = []
        rejected: list[Rejection] = []
        chunk = max(1, self.config.upsert_chunk)
        seen: dict[int, ProductId] = {}  # row key -> id, within this upsert
        for start in range(0, len(products), chunk):
            todo: list[Pending] = []
            for i in range(start, min(start + chunk, len(products))):
                p = products[i]
                try:
                    t = self.encoder.check_row(i, p, imgs[i])
                    key = row_key(t.product.id)
                    if key in seen:
                        check_owner(t.product.id, seen[key])  # two ids with one row key: a hash collision
                        raise InvalidInput(f"id {t.product.id} appears twice in one upsert", field="id")
                except InvalidInput as exc:
                    rejected.append(Rejection(row=i, id=getattr(p, "id", None), field=exc.field or "product",
                                              reason=exc.message))
                    continue
                seen[key] = t.product.id
                todo.append(t)
            todo = await asyncio.to_thread(self._drop_collisions, todo, rejected)
            old = self.provenance.fresh_hashes(
                await asyncio.to_thread(self.backend.hashes, [row_key(t.product.id) for t in todo]))
            fresh = [t for t in todo if old.get(row_key(t.product.id)) != t.content_hash]
            unchanged += [t.product.id for t in todo if old.get(row_key(t.product.id)) == t.content_hash]
            if not fresh:
                continue
            rows, bad = await asyncio.to_thread(self.encoder.encode_rows, fresh)
            rejected += bad
            if rows:
                await self.write_rows(rows)
                accepted += [r.product.id for r in rows]
        return UpsertResult(accepted=accepted, rejected=rejected, unchanged=unchanged)

    async def write_rows(self, rows: list[StoredRow]) -> None:
        """Commit rows whose vectors are already made (by this engine's encoder, or by Ray workers running
        the same model files: engine/ray_ingest.py)."""
        self._require_open()
        async with self._write_lock:
            await asyncio.to_thread(self._commit, rows)

    def _drop_collisions(self, todo: list[Pending], rejected: list[Rejection]) -> list[Pending]:
        """Rows whose row key another stored id holds are rejected here, before any encoding."""
        owners = self.backend.owners([row_key(t.product.id) for t in todo])
        keep = []
        for t in todo:
            try:
                check_owner(t.product.id, owners.get(row_key(t.product.id), t.product.id))
            except InvalidInput as exc:
                rejected.append(Rejection(row=t.row, id=t.product.id, field="id", reason=exc.message))
                continue
            keep.append(t)
        return keep

    def _commit(self, rows: list[StoredRow]) -> None:
        # the generation moves after everything a search reads is current (categories too), and also when the
        # write failed midway: no answer from before may be served either way
        try:
            self.provenance.record_default_blend()
            self.backend.write(rows)
            self.vocabulary.add_attributes(name for r in rows for name in r.product.attributes)
            self.provenance.note_written(row_key(r.product.id) for r in rows)
            self._refresh_categories()
        finally:
            self._catalog_changed()

    def _refresh_categories(self) -> None:
        """Re-read the catalog's category paths (at start and after each write), once for both their readers:
        the filter vocabulary and the photo queries' category prior."""
        paths = self.backend.categories()
        self.vocabulary.set_categories(paths)
        self.ranker.refresh_category_prior(paths)

    async def delete(self, ids: Sequence[ProductId]) -> int:
        self._require_open()
        clean = [key_of(i, "ids") for i in ids]
        async with self._write_lock:
            return await asyncio.to_thread(self._delete, clean)

    def _delete(self, ids: list[int]) -> int:
        try:
            gone = self.backend.delete(ids)
            self._refresh_categories()
        finally:  # as in _commit
            self._catalog_changed()
        return gone

    # -- reads ------------------------------------------------------------------------------------
    def _require_open(self) -> None:
        if self._closed:
            raise NotReady("engine is closed")

    async def get(self, id: ProductId) -> Product:
        self._require_open()
        pid = canonical_id(id)
        return await asyncio.to_thread(self.backend.get, row_key(pid), pid)  # NotFound(field="id") when absent

    async def stats(self) -> EngineStats:
        self._require_open()
        batchers = {b.name if hasattr(b, "name") else str(i): b.metrics()
                    for i, b in enumerate((self._text_batcher, self._image_batcher, self._search_batcher))
                    if b is not None}
        s = await asyncio.to_thread(self.backend.stats)
        return EngineStats(products=s["products"], indexed=s["indexed"], store_seq=s.get("store_seq", 0),
                           index_seq=s.get("index_seq", 0), layout=self.layout.to_dict(),
                           index={**s.get("index", {}), "backend": self.backend.kind}, batchers=batchers,
                           query_cache=self.query_cache.stats().to_dict(), result_cache=self.result_cache.stats(),
                           data_dir=str(self.config.data_dir) if self.backend.kind == "embedded"
                           else str(s.get("uri", self.backend.kind)))

    async def health(self) -> Health:
        if self._closed:
            return Health(ready=False, reason="closed")
        if not self._started:
            return Health(ready=False, reason="starting")
        try:
            await asyncio.to_thread(self.backend.check)
            # the embedded index's length costs nothing; a shared backend is asked (and so checked)
            n = (len(self.backend.index) if isinstance(self.backend, EmbeddedBackend)
                 else await asyncio.to_thread(self.backend.count))
        except KuamoError as exc:
            return Health(ready=False, reason=exc.message)
        return Health(ready=True, reason=f"{n} products indexed" + (
            "" if self.backend.kind == "embedded" else f" ({self.backend.kind})"))
