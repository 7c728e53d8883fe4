"""The engine facade: encoders (behind dynamic batchers) + fusion layout + catalog store + vector index.

Write path: validate -> hash (skip unchanged) -> encode -> fuse -> store commit (one transaction per
chunk, with its change rows) -> index update. Start-up: load the index snapshot, replay the store's
changes after the snapshot's seq, or rebuild from the store when there is no usable snapshot.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import math
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from kuamo.engine import blas_threads
from kuamo.engine.batcher import BatcherConfig, DynamicBatcher
from kuamo.engine.category_prior import (
    DEFAULT_CANDIDATES,
    DEFAULT_TEMPERATURE,
    DEFAULT_WEIGHT,
    CategoryPrior,
    leaf_names,
)
from kuamo.engine.config import DEFAULT_MODEL_DIR, EncoderConfig
from kuamo.engine.errors import ArtifactError, InvalidInput, KuamoError, NotFound, NotReady
from kuamo.engine.fusion import FusionLayout
from kuamo.engine.ids import ProductId, canonical_id, key_of, row_key
from kuamo.engine.index import IndexConfig, VectorIndex
from kuamo.engine.personal import Event, PersonalConfig, PersonalStore, Pseudonymiser, check_user_id, validate_event
from kuamo.engine.rows import content_hash, document_text, scalar_blocks
from kuamo.engine.rules import apply_modifiers, check_attr_name, validate_filters, validate_modifiers
from kuamo.engine.store import CatalogStore, StoredRow, check_owner, check_product
from kuamo.engine.types import (
    EngineStats,
    Explanation,
    Health,
    Hit,
    Product,
    Query,
    RecommendQuery,
    Rejection,
    SearchResult,
    Timings,
    UpsertResult,
)
from kuamo.engine.vocabulary import CatalogVocabulary
from kuamo.engine.zero_shot_blend import BlendChoice, choose_for_photos, grown_enough, is_provisional

log = logging.getLogger(__name__)
BLEND_META = "image_blend"  # store meta: the catalog's image blend (zero_shot_blend), JSON
ENCODERS_META = "encoders"  # store meta: the fingerprint of the encoders that made the catalog's vectors


class TextEncoderLike(Protocol):
    dim: int

    def encode(self, texts: Sequence[str], kind: str = "query") -> np.ndarray: ...


class ImageEncoderLike(Protocol):
    dim: int

    def encode(self, items: Sequence[bytes]) -> np.ndarray: ...


def _default_weights() -> dict[str, float]:
    return {"text": 0.5, "image": 0.5, "rating": 0.25, "price": 0.25}


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
    # Weights for the blocks a query fills when the caller gives none (renormalised over present blocks).
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
    personal: PersonalConfig = field(default_factory=PersonalConfig)
    recommend_interests: int = 5  # Recommend: also search from this many of the shopper's top products
    upsert_chunk: int = 256  # rows per store transaction + index update: bounds how long a write blocks searches
    snapshot_every: int = 20_000  # changes between automatic index snapshots
    sqlite_synchronous: str = "NORMAL"


@dataclass
class _SearchJob:
    query: Query
    qvec: np.ndarray
    encode_ms: float
    t0: float
    filter_ms: float = 0.0
    profile_vec: np.ndarray | None = None  # the part of qvec that came from the shopper's profile
    exclude: frozenset[int] = frozenset()  # recommendations: never return these
    explain_as: str | None = None  # scores not from qvec alone: explain the base score as this one part
    queue_ms: float = 0.0  # waiting for an encoder batch


RECOMMEND_TAU = 0.05  # how much a weaker interest is discounted in the best-match ranking


class _RWLock:
    """Many concurrent FAISS searches, or one writer. Writer-preferring so an ingest makes progress."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._readers = 0
        self._writer = False
        self._waiting_writers = 0

    def acquire_read(self) -> None:
        with self._cond:
            while self._writer or self._waiting_writers:
                self._cond.wait()
            self._readers += 1

    def release_read(self) -> None:
        with self._cond:
            self._readers -= 1
            if not self._readers:
                self._cond.notify_all()

    def acquire_write(self) -> None:
        with self._cond:
            self._waiting_writers += 1
            while self._writer or self._readers:
                self._cond.wait()
            self._waiting_writers -= 1
            self._writer = True

    def release_write(self) -> None:
        with self._cond:
            self._writer = False
            self._cond.notify_all()


def _encoder_fingerprint(enc: Any) -> str:
    if enc is None:
        return "none"
    fp = getattr(enc, "fingerprint", None)
    if isinstance(fp, str):
        return fp
    tower = getattr(enc, "tower", None)
    path = getattr(tower, "model_path", None)
    sha = getattr(tower, "sha256", "")
    beta = getattr(enc, "beta", 1.0)
    blend = f":beta={beta}" if beta < 1 else ""
    # the weights' sha256, not only the file name: a re-export with new weights writes the same file name
    return f"{type(enc).__name__}:{enc.dim}:{getattr(path, 'name', '')}{':' + sha[:16] if sha else ''}{blend}"


def _describe_fingerprint(fp: str) -> str:
    try:
        d = json.loads(fp)
        return f"text {d['text']}, image {d['image']}"
    except (ValueError, TypeError, KeyError):
        return fp


class Engine:
    """Implements EngineProtocol. Construct with encoders (tests inject fakes), or `await Engine.open(cfg)`."""

    def __init__(self, config: EngineConfig, *, text_encoder: TextEncoderLike,
                 image_encoder: ImageEncoderLike | None = None, batched: bool = False,
                 image_aligned: bool | None = None) -> None:
        self.config = config
        self._blas_capped = blas_threads.acquire(config.blas_threads)
        self.text_encoder = text_encoder
        self.image_encoder = image_encoder
        image_dim = image_encoder.dim if image_encoder is not None else text_encoder.dim
        # The text vector can stand in for the image block only when both live in one space.
        self.image_aligned = (image_dim == text_encoder.dim) if image_aligned is None else image_aligned
        self.layout = FusionLayout.default(text_dim=text_encoder.dim, image_dim=image_dim,
                                           numeric_attributes=config.numeric_attributes)
        self.numeric_names = tuple(n for n in self.layout.names if n not in ("image", "text", "rating", "price"))
        data_dir = Path(config.data_dir)
        data_dir.mkdir(parents=True, exist_ok=True)
        self.index_dir = data_dir / "index"
        self.store = CatalogStore(data_dir / "catalog.sqlite", dim=self.layout.dim,
                                  synchronous=config.sqlite_synchronous)
        self._check_layout()
        stored_blend = self.store.get_meta(BLEND_META)
        if stored_blend is not None and image_encoder is not None and hasattr(image_encoder, "set_blend"):
            image_encoder.set_blend(json.loads(stored_blend)["beta"])  # the catalog's vectors were made with it
        self._set_fingerprint()
        self._rewritten: set[int] = set()  # products re-embedded since opening a stale catalog
        try:
            self.stale_vectors = self._check_encoders()
        except ArtifactError:
            self.store.close()  # refused: leave no connection to the file behind
            raise
        self.pseudonym = Pseudonymiser.from_config(config.personal, data_dir)
        self.personal = PersonalStore(data_dir / "catalog.sqlite", config.personal, self.layout.dim)
        self._index_lock = _RWLock()
        self._write_lock = asyncio.Lock()
        self.index_seq = 0
        self._changes_since_snapshot = 0
        self.recovery: dict[str, Any] = {}
        self.vocabulary = CatalogVocabulary()
        self.vocabulary.add_attributes(self.store.attribute_names())
        self.index = self._recover()
        self._category_prior: CategoryPrior | None = None
        self._category_name_vecs: dict[str, np.ndarray] = {}
        self._refresh_categories()
        self._text_batcher: DynamicBatcher | None = None
        self._image_batcher: DynamicBatcher | None = None
        self._search_batcher: DynamicBatcher | None = None
        if batched:
            # cost = length: batches group texts of similar length, so less padding
            self._text_batcher = DynamicBatcher(self._encode_query_batch, config.text_batcher, name="text",
                                                cost=len)
            if image_encoder is not None:
                self._image_batcher = DynamicBatcher(self._encode_image_batch, config.image_batcher, name="image")
            self._search_batcher = DynamicBatcher(self._search_jobs, config.search_batcher, name="search")
        self._started = not batched
        self._closed = False

    # -- lifecycle --------------------------------------------------------------------------------
    @classmethod
    async def open(cls, config: EngineConfig) -> Engine:
        """Load the exported models, wrap them in batchers, recover the index and start."""
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
            async with self._write_lock:
                await asyncio.to_thread(self._save_snapshot)
        self.personal.close()
        self.store.close()
        self._closed = True
        if self._blas_capped:
            self._blas_capped = False
            blas_threads.release()

    def _set_fingerprint(self) -> None:
        self.fingerprint = json.dumps({"layout": self.layout.to_dict(),
                                       "text": _encoder_fingerprint(self.text_encoder),
                                       "image": _encoder_fingerprint(self.image_encoder)}, sort_keys=True)

    # -- per-catalog image blend (zero_shot_blend) ---------------------------------------------------
    @property
    def can_blend(self) -> bool:
        return getattr(self.image_encoder, "zero_shot", None) is not None

    def stored_blend(self) -> dict | None:
        raw = self.store.get_meta(BLEND_META)
        return None if raw is None else json.loads(raw)

    @property
    def image_blend_pending(self) -> bool:
        """True while no choice binds the catalog: none made, or made on a catalog that stored nothing, or
        provisional (too few photos; zero_shot_blend.is_provisional)."""
        if not (self.config.calibrate_image_blend and self.can_blend):
            return False
        stored = self.stored_blend()
        return (stored is None or is_provisional(stored)
                or (self.store.count() == 0 and stored.get("source") != "set"))

    def image_blend_due(self, photos: int) -> bool:
        """Choose now, on a run that offers `photos` photos? A pending choice on an empty catalog, yes; a
        provisional one only once the run offers REGROW times the photos it was made on."""
        if not self.image_blend_pending:
            return False
        stored = self.stored_blend()
        return stored is None or self.store.count() == 0 or grown_enough(stored, photos)

    def calibrate_image_blend(self, products: Sequence[Product], images: Sequence[bytes | None], *,
                              force: bool = False) -> BlendChoice:
        """Choose the image blend on a sample of the catalog about to be indexed, while it is pending (or
        `force`: --image-blend auto). Photos that do not decode are left out of the sample; products without a
        title take part in the category and label-free measures only. A changed beta marks every stored
        vector stale: the run re-embeds them (the model-change path, settle_stale_vectors)."""
        if not self.can_blend or not (force or self.image_blend_pending):
            raise InvalidInput("the image blend is chosen while it is pending (or with --image-blend auto), on a "
                               "catalog whose image tower has a zero-shot map; this one is fixed or cannot blend",
                               field="image_blend")
        pairs = [(p, bytes(img)) for p, img in zip(products, images, strict=True) if img]
        choice = choose_for_photos(self.image_encoder, lambda texts: self.text_encoder.encode(texts, "query"),
                                   [b for _, b in pairs], [p.title for p, _ in pairs],
                                   [p.category_parts[-1] if p.category_parts else "" for p, _ in pairs])
        self._apply_blend(choice)
        return choice

    def set_image_blend(self, beta: float) -> BlendChoice:
        """The operator's beta (--image-blend BETA): binds the catalog; re-embeds it when beta changes."""
        if beta < 1 and not self.can_blend:
            raise InvalidInput("this image tower has no zero-shot map to blend with; re-run `kuamo export`",
                               field="image_blend")
        choice = BlendChoice(float(beta), 0, reason="set by the operator (--image-blend)", source="set")
        self._apply_blend(choice)
        return choice

    def _apply_blend(self, choice: BlendChoice) -> None:
        enc = self.image_encoder
        if enc is not None and hasattr(enc, "set_blend"):
            enc.set_blend(choice.beta)
        self.store.set_meta(BLEND_META, json.dumps(choice.to_dict()))
        before = self.fingerprint
        self._set_fingerprint()
        if self.store.count() == 0:
            self.store.set_meta(ENCODERS_META, self.fingerprint)
            self.stale_vectors = None
        elif self.store.get_meta(ENCODERS_META) == self.fingerprint:
            self.stale_vectors = None  # back to the beta the stored vectors were made with
        elif self.fingerprint != before:
            self.stale_vectors = (f"the image blend changed to beta {choice.beta:g}; the stored vectors were made "
                                  "with another")
            self._rewritten.clear()  # anything re-embedded in this session used the old beta

    # -- which encoders made the catalog's vectors ---------------------------------------------------
    def _check_encoders(self) -> str | None:
        """None when the stored vectors were made by these encoders (an empty catalog takes them); else why
        not. Such a catalog opens only with allow_stale_vectors (for `kuamo index` to re-embed it)."""
        stored = self.store.get_meta(ENCODERS_META)
        if stored == self.fingerprint:
            return None
        if self.store.count() == 0:
            self.store.set_meta(ENCODERS_META, self.fingerprint)
            return None
        why = ("its vectors carry no record of the models that made them (an older kuamo wrote it)" if stored is None
               else f"its vectors were made by other models ({_describe_fingerprint(stored)})")
        if not self.config.allow_stale_vectors:
            raise ArtifactError(
                f"{self.store.path}: {why}, not by the models in {self.config.model_dir} "
                f"({_describe_fingerprint(self.fingerprint)}); their vectors and new queries would not be "
                "comparable. Re-embed it with `kuamo index CATALOG --models DIR --data DIR`, or serve it with the "
                "models that made it", field="data_dir")
        log.warning("%s: %s; opened to re-embed it", self.store.path, why)
        return why

    async def settle_stale_vectors(self) -> int:
        """After re-embedding a stale catalog: how many products still hold vectors from other models. At 0 the
        catalog is recorded as made by these encoders and the index is rebuilt (trained) on the new vectors."""
        if self.stale_vectors is None:
            return 0
        async with self._write_lock:
            left = int(np.count_nonzero(~np.isin(self.store.ids(), np.fromiter(self._rewritten, np.int64))))
            if left == 0:
                await asyncio.to_thread(self._rebuild_index)  # trained on the new vectors, not the old ones
                self.store.set_meta(ENCODERS_META, self.fingerprint)
                self.stale_vectors = None
                self._rewritten.clear()
        return left

    def _record_blend(self) -> None:
        # the first commit records the blend the catalog's vectors are made with; provisional (0 photos), so
        # a later `kuamo index` with enough photos chooses (and re-embeds) instead of keeping it for good
        if self.store.get_meta(BLEND_META) is None and self.can_blend:
            beta = self.image_encoder.beta  # type: ignore[union-attr]
            self.store.set_meta(BLEND_META, json.dumps(BlendChoice(
                beta, 0, reason="not chosen: products arrived before any choice", source="default").to_dict()))

    def _check_layout(self) -> None:
        stored = self.store.get_meta("layout")
        mine = json.dumps(self.layout.to_dict(), sort_keys=True)
        if stored is None:
            self.store.set_meta("layout", mine)
        elif json.loads(stored) != json.loads(mine):
            raise ArtifactError(f"{self.store.path} was built with a different fusion layout ({stored}); "
                                "use a new data directory or re-index", field="data_dir")

    # -- recovery ---------------------------------------------------------------------------------
    def _recover(self) -> VectorIndex:
        """Snapshot + replay, or a full rebuild; then check the index and the store agree."""
        t0 = time.perf_counter()
        index: VectorIndex | None = None
        mode = "rebuild"
        if self.index_dir.exists():
            try:
                index = VectorIndex.load(self.index_dir, mmap=True)
                index.cfg = self.config.index  # search settings and thresholds are the operator's, not the snapshot's
                if index.dim != self.layout.dim:
                    raise ArtifactError(f"snapshot is {index.dim}-d, layout is {self.layout.dim}-d")
                seq = int(index.seq)
                up, gone, last = self.store.changes_since(seq)
                if len(gone):
                    index.remove(gone)
                if len(up):
                    ids, vecs = self.store.vectors(up)
                    index.upsert(ids, vecs)
                self.index_seq = last
                self._changes_since_snapshot = len(up) + len(gone)
                mode = f"snapshot@{seq}+replay({len(up)} upserts, {len(gone)} deletes)"
                if len(index) != self.store.count():
                    raise ArtifactError(f"index holds {len(index)} vectors, store {self.store.count()}")
            except (KuamoError, OSError, ValueError, RuntimeError, KeyError) as exc:
                log.warning("index snapshot in %s unusable (%s); rebuilding from the store", self.index_dir, exc)
                index = None
                mode = f"rebuild (snapshot unusable: {exc})"
        if index is None:
            self.index_seq, index = self._fresh_index()
            self._changes_since_snapshot = len(index)
        self.recovery = {"mode": mode, "seconds": round(time.perf_counter() - t0, 3), "vectors": len(index),
                         "seq": self.index_seq}
        log.info("index recovered: %s", self.recovery)
        return index

    def _fresh_index(self) -> tuple[int, VectorIndex]:
        """An index built (and trained) from every vector in the store, with the change it is current to."""
        index = VectorIndex(self.layout.dim, self.config.index)
        seq = self.store.last_seq()  # read before the vectors: replaying a bit twice is harmless
        ids, vecs = self.store.all_vectors()
        index.build(ids, vecs)
        return seq, index

    def _save_snapshot(self) -> None:
        """Atomic snapshot tagged with the last change it contains; then prune the replayed log."""
        self._index_lock.acquire_read()  # writers are serialised by _write_lock; readers may continue
        try:
            seq = self.index_seq
            self.index.save(self.index_dir, seq=seq)
        finally:
            self._index_lock.release_read()
        self.store.prune_changes(seq)
        self._changes_since_snapshot = 0

    async def snapshot(self) -> None:
        async with self._write_lock:
            await asyncio.to_thread(self._save_snapshot)

    # -- encoding ---------------------------------------------------------------------------------
    def _validate_text(self, text: Any, field: str) -> str:
        check = getattr(self.text_encoder, "validate", None)
        if check is not None:
            try:
                return check(text)
            except InvalidInput as exc:
                raise InvalidInput(exc.message, field=field) from exc
        if not isinstance(text, str) or not text.strip():
            raise InvalidInput("text must be a non-empty string", field=field)
        return text

    def _encode_query_batch(self, texts: list[str]) -> list[Any]:
        """Batcher fn: one bad text fails only its own request."""
        out: list[Any] = [None] * len(texts)
        good: list[int] = []
        for i, t in enumerate(texts):
            try:
                self._validate_text(t, "text")
                good.append(i)
            except InvalidInput as exc:
                out[i] = exc
        if good:
            vecs = self.text_encoder.encode([texts[i] for i in good], kind="query")
            for row, i in enumerate(good):
                out[i] = vecs[row]
        return out

    def _encode_image_batch(self, images: list[bytes]) -> list[Any]:
        assert self.image_encoder is not None
        try:
            vecs = self.image_encoder.encode(images)
            return [vecs[i] for i in range(len(images))]
        except InvalidInput:
            out: list[Any] = []
            for img in images:  # find the bad one(s); the others still get vectors
                try:
                    out.append(self.image_encoder.encode([img])[0])
                except InvalidInput as exc:
                    out.append(exc)
            return out

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
        return sorted(c for c in await asyncio.to_thread(self.store.categories) if c)

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
        """The query vector and the seconds it waited for an encoder batch."""
        if self._text_batcher is not None:
            return await self._text_batcher.submit_timed(text)
        return (await asyncio.to_thread(self.text_encoder.encode, [text], "query"))[0], 0.0

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
            raise InvalidInput(f"rating target must be within 0..5, got {q.rating!r}", field="rating")
        if q.price is not None and not (isinstance(q.price, int | float) and 0 <= q.price < float("inf")):
            raise InvalidInput(f"price target must be a finite non-negative number, got {q.price!r}",
                               field="price")
        for name in q.targets:
            check_attr_name(name, "targets")
            if name not in self.numeric_names:
                raise InvalidInput(f"{name!r} is not a declared numeric attribute {list(self.numeric_names)}",
                                   field="targets")
        validate_filters(q.filters)
        self.vocabulary.check(q.filters)
        validate_modifiers(q.modifiers)
        if q.user_id is not None:
            check_user_id(q.user_id)
        if q.user_weight is not None and not (isinstance(q.user_weight, int | float)
                                              and 0 <= q.user_weight <= 1):
            raise InvalidInput(f"user_weight must be within 0..1, got {q.user_weight!r}", field="user_weight")

    def _weights_for(self, blocks: dict[str, Any], given: dict[str, float]) -> dict[str, float]:
        if given:
            return dict(given)
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
        timed = await asyncio.gather(*jobs)
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

    async def search(self, query: Query) -> SearchResult:
        t0 = time.perf_counter()
        self._require_ready()
        self._validate_query(query)
        blocks, encode_ms, queue_ms = await self._query_blocks(query)
        qvec = self.layout.query_vector(blocks, self._weights_for(blocks, query.weights)).astype(np.float32)
        profile_vec = None
        if query.user_id is not None:
            beta = self.config.personal.profile_weight if query.user_weight is None else query.user_weight
            taste = await asyncio.to_thread(self._taste, self.pseudonym(query.user_id)) if beta > 0 else None
            if taste is not None:  # a shopper without events gets the plain search
                profile_vec = (beta * taste).astype(np.float32)
                qvec = ((1 - beta) * qvec + profile_vec).astype(np.float32)
        return self._external_ids(await self._run_search(_SearchJob(query, qvec, encode_ms, t0,
                                                                    profile_vec=profile_vec, queue_ms=queue_ms)))

    def _external_ids(self, res: SearchResult) -> SearchResult:
        """Hits name products by the catalog's own ids (the index and the store work in row keys)."""
        if not self.store.has_string_ids or not res.hits:
            return res
        owners = self.store.owners([h.id for h in res.hits])
        return dataclasses.replace(res, hits=[dataclasses.replace(h, id=owners.get(h.id, h.id)) for h in res.hits])

    async def _run_search(self, job: _SearchJob) -> SearchResult:
        if self._search_batcher is not None:
            return await self._search_batcher.submit(job)
        result = (await asyncio.to_thread(self._search_jobs, [job]))[0]
        if isinstance(result, BaseException):
            raise result
        return result

    # -- personalisation --------------------------------------------------------------------------
    def _taste_of(self, vec: np.ndarray) -> np.ndarray | None:
        """A query vector from a product or profile vector: its image and text blocks, each re-normalised
        (a mean of unit vectors is shorter than one) and weighted by the default weights."""
        blocks = {}
        for name, sl in self.layout.slices().items():
            if name in ("image", "text") and float(np.linalg.norm(vec[sl])) > 1e-6:
                blocks[name] = vec[sl]
        if not blocks:
            return None
        d = self.config.default_weights
        return self.layout.query_vector(blocks, {n: d.get(n, 0.5) for n in blocks}).astype(np.float32)

    def _taste(self, pseudonym: str) -> np.ndarray | None:
        prof = self.personal.profile(pseudonym)
        return None if prof is None else self._taste_of(prof)

    def _vectors_of(self, ids: list[int]) -> dict[int, np.ndarray]:
        got, vecs = self.store.vectors(ids)
        return {int(i): v for i, v in zip(got.tolist(), vecs, strict=True)}

    async def record_events(self, events: Sequence[Event]) -> tuple[int, list[Rejection]]:
        """Store valid events (pseudonymised) and update the profiles; returns (recorded, rejections)."""
        self._require_ready()
        now = time.time()
        rows, at, rejected = [], [], []  # at: each valid event's position in `events`
        for i, e in enumerate(events):
            try:
                rows.append(validate_event(e, self.config.personal, now, i))
                at.append(i)
            except InvalidInput as exc:
                rejected.append(Rejection(row=i, id=None, field=(exc.field or "").split(".")[-1], reason=exc.message))

        def write() -> int:
            vecs = self._vectors_of(sorted({p for _, p, _, _ in rows}))
            keep = []
            for i, (u, p, k, ts) in zip(at, rows, strict=True):
                if p in vecs:
                    keep.append((self.pseudonym(u), p, k, ts))
                else:
                    pid = events[i].product_id
                    rejected.append(Rejection(row=i, id=pid, field="product_id", reason=f"no product with id {pid!r}"))
            self.personal.purge(now, self._vectors_of)
            return self.personal.add(keep, vecs) if keep else 0

        recorded = await asyncio.to_thread(write) if rows else 0
        return recorded, sorted(rejected, key=lambda r: r.row)

    async def forget_user(self, user_id: str) -> int:
        """Delete every event and the profile of a shopper; returns the number of events deleted."""
        self._require_open()
        check_user_id(user_id)
        return await asyncio.to_thread(self.personal.forget, self.pseudonym(user_id))

    async def recommend(self, rq: RecommendQuery) -> SearchResult:
        t0 = time.perf_counter()
        self._require_ready()
        if not isinstance(rq.k, int) or isinstance(rq.k, bool) or not 1 <= rq.k <= self.config.max_k:
            raise InvalidInput(f"k must be an integer in 1..{self.config.max_k}, got {rq.k!r}", field="k")
        validate_filters(rq.filters)
        self.vocabulary.check(rq.filters)
        validate_modifiers(rq.modifiers)
        for name, ex in (("positives", rq.positives), ("negatives", rq.negatives)):
            for pid, w in ex.items():
                if not isinstance(w, int | float) or not np.isfinite(w) or w <= 0:
                    raise InvalidInput(f"weight of product {pid} must be a finite number > 0, got {w!r}", field=name)
        pseudo = self.pseudonym(check_user_id(rq.user_id)) if rq.user_id is not None else None
        keyed = dataclasses.replace(rq, positives={key_of(i, "positives"): w for i, w in rq.positives.items()},
                                    negatives={key_of(i, "negatives"): w for i, w in rq.negatives.items()})
        shown = {key_of(i): i for i in (*rq.positives, *rq.negatives)}
        return self._external_ids(await asyncio.to_thread(self._recommend, keyed, pseudo, t0, shown))

    def _recommend(self, rq: RecommendQuery, pseudo: str | None, t0: float,
                   shown: dict[int, ProductId] | None = None) -> SearchResult:
        """`rq` names its examples by row key; `shown` maps them back to the ids the caller wrote."""
        examples = self._vectors_of(sorted({*rq.positives, *rq.negatives}))
        missing = sorted((set(rq.positives) | set(rq.negatives)) - set(examples))
        if missing:
            raise NotFound(f"no product with id {(shown or {}).get(missing[0], missing[0])!r}",
                           field="positives" if missing[0] in rq.positives else "negatives")
        qvec = np.zeros(self.layout.dim, dtype=np.float32)
        taste = self._taste(pseudo) if pseudo is not None else None
        if taste is not None:
            qvec += taste
        for ex, sign in ((rq.positives, 1.0), (rq.negatives, -1.0)):
            for pid, w in ex.items():
                t = self._taste_of(examples[pid])
                if t is not None:
                    qvec += sign * float(w) * t
        exclude = set(rq.positives) | set(rq.negatives)
        if pseudo is not None and not rq.include_purchased:
            exclude |= set(self.personal.purchased(pseudo))
        allowed = self.store.allowed_ids(rq.filters)
        if taste is None and not rq.positives:  # cold start: what is popular within the filters
            ranked = [(p, s) for p, s in self.personal.popular(time.time(), rq.k + len(exclude), allowed)
                      if p not in exclude][: rq.k]
            products = self.store.get_many([p for p, _ in ranked]) if rq.include_products else {}
            hits = [Hit(id=p, score=s, product=products.get(p),
                        explanation=Explanation(contributions={"popularity": s}, base_score=s) if rq.explain else None)
                    for p, s in ranked]
            return SearchResult(hits=hits, allowed=None if allowed is None else len(allowed),
                                timings=Timings(total_ms=(time.perf_counter() - t0) * 1000))
        k = min(rq.k + len(exclude), self.config.max_k)
        q = Query(text="", k=k, filters=rq.filters, modifiers=rq.modifiers, explain=rq.explain,
                  include_products=rq.include_products)
        job = _SearchJob(q, qvec, 0.0, t0, profile_vec=taste if taste is not None and rq.explain else None,
                         exclude=frozenset(exclude))
        if taste is not None:
            res = self._multi_interest(job, pseudo, allowed)  # type: ignore[arg-type]
        else:
            res = self._search_jobs([job])[0]
        if isinstance(res, BaseException):
            raise res
        hits = [h for h in res.hits if h.id not in exclude][: rq.k]
        return SearchResult(hits=hits, allowed=res.allowed, timings=res.timings)

    def _multi_interest(self, job: _SearchJob, pseudo: str, allowed: np.ndarray | None) -> SearchResult:
        """A shopper with two tastes (say black shoes and red dresses) has a mean profile between them,
        near neither. So Recommend also searches from each of the products they engaged with most and
        ranks a candidate by its best match: max over queries of similarity + TAU * ln(weight / top weight)."""
        interests = self.personal.interests(pseudo, time.time(), self.config.recommend_interests)
        vecs = self._vectors_of([p for p, _ in interests])
        queries, weights = [job.qvec], [max((w for _, w in interests), default=1.0)]
        for pid, w in interests:
            t = self._taste_of(vecs[pid]) if pid in vecs else None
            if t is not None:
                queries.append(t)
                weights.append(w)
        t_s = time.perf_counter()
        n = self._n_candidates(job.query)
        self._index_lock.acquire_read()
        try:
            scores, ids = self.index.search(np.stack(queries), n, allowed_ids=allowed)
        finally:
            self._index_lock.release_read()
        best: dict[int, float] = {}
        for row, w in enumerate(weights):
            bonus = RECOMMEND_TAU * math.log(w / weights[0]) if w > 0 else -math.inf
            for sc, pid in zip(scores[row], ids[row], strict=True):
                if pid >= 0 and pid not in job.exclude:
                    best[int(pid)] = max(best.get(int(pid), -math.inf), float(sc) + bonus)
        ranked = sorted(best.items(), key=lambda kv: -kv[1])[:n]
        job.explain_as = "profile"
        return self._finish(job, np.asarray([s for _, s in ranked], dtype=np.float32),
                            np.asarray([p for p, _ in ranked], dtype=np.int64), allowed,
                            (time.perf_counter() - t_s) * 1000)

    def _search_jobs(self, jobs: list[_SearchJob]) -> list[SearchResult | BaseException]:
        """Batcher fn: queries that arrived together and share index settings (no filter, same nprobe and
        re-rank factor) go through the index as ONE matrix, so 32 concurrent queries read the vectors once
        instead of 32 times; filtered queries are searched one by one. One bad query fails only itself."""
        out: list[SearchResult | BaseException] = [None] * len(jobs)  # type: ignore[list-item]
        allowed: list[np.ndarray | None] = [None] * len(jobs)
        groups: dict[tuple, list[int]] = {}
        for i, job in enumerate(jobs):
            try:
                t_f = time.perf_counter()
                allowed[i] = self.store.allowed_ids(job.query.filters)
                job.filter_ms = (time.perf_counter() - t_f) * 1000
            except Exception as exc:
                out[i] = exc
                continue
            widened = self._n_candidates(job.query) > self._n_candidates(job.query, category=False)
            key = ("all", job.query.nprobe, job.query.rerank_factor, widened) if allowed[i] is None else ("filtered", i)
            groups.setdefault(key, []).append(i)
        for members in groups.values():
            t_s = time.perf_counter()
            n_cand = max(self._n_candidates(jobs[i].query) for i in members)
            q0 = jobs[members[0]].query
            try:
                self._index_lock.acquire_read()
                try:
                    scores, ids = self.index.search(np.stack([jobs[i].qvec for i in members]), n_cand,
                                                    nprobe=q0.nprobe, rerank_factor=self._rerank_factor(q0, n_cand),
                                                    allowed_ids=allowed[members[0]])
                finally:
                    self._index_lock.release_read()
            except Exception as exc:
                for i in members:
                    out[i] = exc
                continue
            search_ms = (time.perf_counter() - t_s) * 1000
            for row, i in enumerate(members):
                try:
                    out[i] = self._finish(jobs[i], scores[row], ids[row], allowed[i], search_ms)
                except Exception as exc:
                    out[i] = exc
        return out

    def _n_candidates(self, q: Query, *, category: bool = True) -> int:
        # Modifiers re-order the candidates: fetch k x factor of them so a boosted product can climb in.
        n = q.k
        if not q.modifiers.is_empty():
            n = min(q.k * max(int(self._query_rf(q)), 1), self.index.cfg.max_k)
        if category and self._is_photo_query(q) and self._category_prior is not None:
            n = max(n, min(self.config.photo_candidates, self.index.cfg.max_k))
        return n

    def _query_rf(self, q: Query) -> int:
        return q.rerank_factor if q.rerank_factor is not None else self.index.cfg.rerank_factor

    def _rerank_factor(self, q: Query, n_cand: int) -> int | None:
        """The index's exact re-rank factor for `n_cand` results. A photo query widened to its category
        candidates keeps the approximate-candidate budget of the plain query (k x factor, at least the
        widened count) instead of multiplying it: the widened list is re-scored exactly anyway."""
        plain = self._n_candidates(q, category=False)
        if n_cand <= plain:
            return q.rerank_factor
        return max(1, -(-plain * int(self._query_rf(q)) // n_cand))

    @staticmethod
    def _is_photo_query(q: Query) -> bool:
        return q.image is not None and q.text is None

    def _category_bonus(self, job: _SearchJob, cand_ids: list[int]) -> np.ndarray | None:
        """Per candidate: the photo query's image weight x photo_category_weight x the agreement of the
        predicted categories of the query photo and the candidate's photo; None when it does not apply."""
        prior = self._category_prior
        if prior is None or not cand_ids or not self._is_photo_query(job.query):
            return None
        img = self.layout.slices()["image"]
        own = job.qvec if job.profile_vec is None else job.qvec - job.profile_vec
        qimg = own[img]
        w = float(np.linalg.norm(qimg))
        if w == 0:  # the caller weighted the image block to zero
            return None
        self._index_lock.acquire_read()
        try:
            present = [i for i in cand_ids if i in self.index]  # a concurrent delete may have taken one
            vecs = self.index.vectors(np.asarray(present, dtype=np.int64))[:, img] if present else None
        finally:
            self._index_lock.release_read()
        bonus = np.zeros(len(cand_ids), dtype=np.float32)
        if vecs is not None:
            got = dict(zip(present, prior.agreement(qimg, vecs), strict=True))
            bonus[:] = [got.get(i, 0.0) for i in cand_ids]
        return w * self.config.photo_category_weight * bonus

    def _finish(self, job: _SearchJob, scores: np.ndarray, ids: np.ndarray, allowed: np.ndarray | None,
                search_ms: float) -> SearchResult:
        """Modifiers, products and explanations for one query's candidates."""
        q, qvec = job.query, job.qvec
        n = self._n_candidates(q)
        t_r = time.perf_counter()
        keep = ids[:n] >= 0
        cand_ids = [int(i) for i in ids[:n][keep]]
        cand_scores = [float(s) for s in scores[:n][keep]]
        bonus = self._category_bonus(job, cand_ids)
        if bonus is not None:
            cand_scores = [s + float(b) for s, b in zip(cand_scores, bonus, strict=True)]
        category = dict(zip(cand_ids, bonus.tolist(), strict=True)) if bonus is not None else {}
        products: dict[int, Product] = {}
        if not q.modifiers.is_empty():  # modifiers read every candidate's product
            products = self.store.get_many(cand_ids)
        ranked = []
        for pid, base in zip(cand_ids, cand_scores, strict=True):
            final, applied = apply_modifiers(base, products.get(pid), q.modifiers)
            ranked.append((final, base, pid, applied))
        ranked.sort(key=lambda r: (-r[0], r[2]))
        ranked = ranked[: q.k]
        if q.include_products and not products:  # only the k answers (a photo query re-ranks 100 candidates)
            products = self.store.get_many([r[2] for r in ranked])
        contributions: dict[int, dict[str, float]] = {}
        if q.explain and ranked:
            got_ids, vecs = self.store.vectors([r[2] for r in ranked])
            for pid, vec in zip(got_ids.tolist(), vecs, strict=True):
                if job.explain_as is not None:
                    contributions[pid] = {job.explain_as: next(b for _, b, p, _ in ranked if p == pid)}
                elif job.profile_vec is None:
                    contributions[pid] = self.layout.contributions(qvec, vec)
                else:  # the query's own blocks, and what the shopper's profile added
                    contributions[pid] = {**self.layout.contributions(qvec - job.profile_vec, vec),
                                          "profile": float(job.profile_vec @ vec)}
                if pid in category:  # the photo query's category agreement (category_prior)
                    contributions[pid]["category"] = category[pid]
        hits = [Hit(id=pid, score=final, product=products.get(pid) if q.include_products else None,
                    explanation=Explanation(contributions=contributions.get(pid, {}), base_score=base,
                                            modifiers=applied) if q.explain else None)
                for final, base, pid, applied in ranked]
        rerank_ms = (time.perf_counter() - t_r) * 1000
        return SearchResult(hits=hits, allowed=None if allowed is None else len(allowed),
                            timings=Timings(queue_ms=job.queue_ms, encode_ms=job.encode_ms, filter_ms=job.filter_ms,
                                            search_ms=search_ms,
                                            rerank_ms=rerank_ms, total_ms=(time.perf_counter() - job.t0) * 1000))

    async def search_many(self, queries: Sequence[Query]) -> list[SearchResult]:
        if len(queries) > self.config.max_batch_queries:
            raise InvalidInput(f"at most {self.config.max_batch_queries} queries per call, got {len(queries)}",
                               field="queries")
        # Concurrent submits land in the same encoder batches.
        return list(await asyncio.gather(*(self.search(q) for q in queries)))

    # -- writes -----------------------------------------------------------------------------------
    async def upsert(self, products: Sequence[Product],
                     images: Sequence[bytes | None] | None = None) -> UpsertResult:
        """Validate, skip unchanged, encode and commit in chunks; each chunk is one store transaction
        followed by one index update, so searches wait at most one chunk."""
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
            part = list(range(start, min(start + chunk, len(products))))
            todo: list[tuple[int, Product, bytes | None, str]] = []
            for i in part:
                p = products[i]
                try:
                    if not isinstance(p, Product):
                        raise InvalidInput(f"expected a Product, got {type(p).__name__}", field="product")
                    pid = canonical_id(p.id)
                    if pid != p.id or isinstance(pid, str) != isinstance(p.id, str):
                        p = dataclasses.replace(p, id=pid)  # "123" is the integer id 123
                    check_product(p)
                    img = imgs[i]
                    if img is not None and not isinstance(img, bytes | bytearray):
                        raise InvalidInput(f"image must be bytes, got {type(img).__name__}", field="image")
                    text = document_text(p)
                    if text or not img:  # a photo-only product has no text to check; nothing at all is refused
                        # the text tower's limits apply per row: one long description must not fail the chunk
                        self._validate_text(text, "description" if p.description.strip() else "title")
                    key = row_key(p.id)
                    if key in seen:
                        check_owner(p.id, seen[key])  # two ids with one row key: a hash collision
                        raise InvalidInput(f"id {p.id} appears twice in one upsert", field="id")
                except InvalidInput as exc:
                    rejected.append(Rejection(row=i, id=getattr(p, "id", None), field=exc.field or "product",
                                              reason=exc.message))
                    continue
                seen[key] = p.id
                todo.append((i, p, bytes(img) if img else None, content_hash(p, img, self.fingerprint)))
            todo = await asyncio.to_thread(self._drop_collisions, todo, rejected)
            old = await asyncio.to_thread(self.store.hashes, [row_key(t[1].id) for t in todo])
            if self.stale_vectors is not None:  # a same hash does not prove the vector came from these models
                old = {i: h for i, h in old.items() if i in self._rewritten}
            fresh = [t for t in todo if old.get(row_key(t[1].id)) != t[3]]
            unchanged += [t[1].id for t in todo if old.get(row_key(t[1].id)) == t[3]]
            if not fresh:
                continue
            rows, bad = await asyncio.to_thread(self._encode_rows, fresh)
            rejected += bad
            if rows:
                async with self._write_lock:
                    await asyncio.to_thread(self._commit, rows)
                accepted += [r.product.id for r in rows]
        return UpsertResult(accepted=accepted, rejected=rejected, unchanged=unchanged)

    def _drop_collisions(self, todo: list[tuple[int, Product, bytes | None, str]], rejected: list[Rejection]
                         ) -> list[tuple[int, Product, bytes | None, str]]:
        """Rows whose row key another stored id holds are rejected here, before any encoding."""
        owners = self.store.owners([row_key(t[1].id) for t in todo])
        keep = []
        for t in todo:
            try:
                check_owner(t[1].id, owners.get(row_key(t[1].id), t[1].id))
            except InvalidInput as exc:
                rejected.append(Rejection(row=t[0], id=t[1].id, field="id", reason=exc.message))
                continue
            keep.append(t)
        return keep

    def _encode_rows(self, todo: list[tuple[int, Product, bytes | None, str]]
                     ) -> tuple[list[StoredRow], list[Rejection]]:
        texts = [document_text(p) for _, p, _, _ in todo]
        with_text = [k for k, t in enumerate(texts) if t]  # photo-only products keep an empty text block
        encoded = self.text_encoder.encode([texts[k] for k in with_text], kind="document") if with_text else []
        text_vecs: dict[int, np.ndarray] = dict(zip(with_text, encoded, strict=True))
        image_vecs: dict[int, np.ndarray] = {}
        bad: list[Rejection] = []
        with_img = [(k, t) for k, t in enumerate(todo) if t[2] is not None]
        if with_img:
            if self.image_encoder is None:
                pass  # no image tower: the image block stays empty
            else:
                results = self._encode_image_batch([t[2] for _, t in with_img])  # type: ignore[misc]
                for (k, t), res in zip(with_img, results, strict=True):
                    if isinstance(res, Exception):
                        msg = res.message if isinstance(res, KuamoError) else str(res)
                        bad.append(Rejection(row=t[0], id=t[1].id, field="image", reason=msg))
                    else:
                        image_vecs[k] = res
        bad_ids = {b.id for b in bad}
        rows = []
        for k, (row, p, _, h) in enumerate(todo):
            if p.id in bad_ids:
                continue
            if k not in text_vecs and k not in image_vecs:  # photo-only, and this engine has no image tower
                bad.append(Rejection(row=row, id=p.id, field="title", reason="no title or description, and no "
                                     "image tower to encode its photo with"))
                continue
            blocks = {"text": text_vecs.get(k), "image": image_vecs.get(k), **scalar_blocks(p, self.numeric_names)}
            try:
                vec = self.layout.product_vector(blocks)
            except InvalidInput as exc:  # e.g. a price of 0 has no place on the log scale
                bad.append(Rejection(row=row, id=p.id, field=exc.field or "product", reason=exc.message))
                continue
            rows.append(StoredRow(product=p, vector=vec, content_hash=h))
        return rows, bad

    def _commit(self, rows: list[StoredRow]) -> None:
        self._record_blend()
        seq = self.store.upsert(rows)  # durable first: the index is a cache of the store
        self.vocabulary.add_attributes(name for r in rows for name in r.product.attributes)
        ids = np.asarray([row_key(r.product.id) for r in rows], dtype=np.int64)
        if self.stale_vectors is not None:
            self._rewritten.update(ids.tolist())
        vecs = np.stack([r.vector for r in rows]).astype(np.float32)
        self._index_lock.acquire_write()
        try:
            self.index.upsert(ids, vecs)
            self.index_seq = seq
        finally:
            self._index_lock.release_write()
        self._after_change(len(rows))

    def _after_change(self, n: int) -> None:
        """Runs in the write path (under _write_lock): re-plan the index when the catalog outgrew it,
        snapshot every `snapshot_every` changes."""
        self._changes_since_snapshot += n
        self._refresh_categories()
        if self._index_outgrown():
            self._rebuild_index()
        if self._changes_since_snapshot >= self.config.snapshot_every:
            self._save_snapshot()

    def _refresh_categories(self) -> None:
        """Re-read the catalog's category paths (at start and after each write), once for both their readers:
        the filter vocabulary and the photo queries' category prior."""
        paths = self.store.categories()
        self.vocabulary.set_categories(paths)
        self._refresh_category_prior(paths)

    def _refresh_category_prior(self, paths: list[str]) -> None:
        """The prior over the catalog's leaf categories; encode only new names."""
        if not (self.config.photo_category_weight > 0 and self.image_aligned and self.image_encoder is not None):
            return
        names = leaf_names(paths)
        current = self._category_prior
        if current is not None and list(current.names) == names:
            return
        if len(names) < 2:  # one category or none: nothing to tell apart
            self._category_prior = None
            return
        new = [n for n in names if n not in self._category_name_vecs]
        if new:
            self._category_name_vecs.update(zip(new, self.text_encoder.encode(new, "query"), strict=True))
        # one assignment: a search in flight keeps the prior it read
        self._category_prior = CategoryPrior(names, np.stack([self._category_name_vecs[n] for n in names]),
                                             self.config.category_temperature)

    def _index_outgrown(self) -> bool:
        # Upserts keep the index kind and IVF parameters; they were chosen for the size at build time.
        n, cfg = len(self.index), self.index.cfg
        if self.index.kind == "flat":
            return n >= cfg.flat_threshold
        if n < cfg.flat_threshold // 2:
            return True
        nlist = int(self.index.params.get("nlist", 0))
        return cfg.nlist is None and nlist > 0 and 4 * n ** 0.5 > 2 * nlist  # catalog grew ~4x since training

    def _rebuild_index(self) -> None:
        """Build a fresh index from the store beside the live one, then swap (searches go on meanwhile;
        no write can slip in because the caller holds _write_lock)."""
        t0 = time.perf_counter()
        _, fresh = self._fresh_index()  # index_seq stays: the caller's lock kept every write out
        self._index_lock.acquire_write()
        try:
            self.index = fresh
        finally:
            self._index_lock.release_write()
        self._changes_since_snapshot = max(self._changes_since_snapshot, self.config.snapshot_every)
        log.info("index re-planned as %s %s for %d vectors in %.2fs", fresh.kind, fresh.params, len(fresh),
                 time.perf_counter() - t0)

    async def delete(self, ids: Sequence[ProductId]) -> int:
        self._require_open()
        clean = [key_of(i, "ids") for i in ids]
        async with self._write_lock:
            return await asyncio.to_thread(self._delete, clean)

    def _delete(self, ids: list[int]) -> int:
        gone, seq = self.store.delete(ids)
        self._index_lock.acquire_write()
        try:
            if gone:
                self.index.remove(np.asarray(gone, dtype=np.int64))
            self.index_seq = seq
        finally:
            self._index_lock.release_write()
        self._after_change(len(gone))
        return len(gone)

    # -- reads ------------------------------------------------------------------------------------
    def _require_open(self) -> None:
        if self._closed:
            raise NotReady("engine is closed")

    async def get(self, id: ProductId) -> Product:
        self._require_open()
        pid = canonical_id(id)
        return await asyncio.to_thread(self.store.get, row_key(pid), pid)  # NotFound(field="id") when absent

    async def stats(self) -> EngineStats:
        self._require_open()
        batchers = {b.name if hasattr(b, "name") else str(i): b.metrics()
                    for i, b in enumerate((self._text_batcher, self._image_batcher, self._search_batcher))
                    if b is not None}
        return EngineStats(products=self.store.count(), indexed=len(self.index), store_seq=self.store.last_seq(),
                           index_seq=self.index_seq, layout=self.layout.to_dict(),
                           index={**self.index.stats(), "recovery": self.recovery}, batchers=batchers,
                           data_dir=str(self.config.data_dir))

    async def health(self) -> Health:
        if self._closed:
            return Health(ready=False, reason="closed")
        if not self._started:
            return Health(ready=False, reason="starting")
        return Health(ready=True, reason=f"{len(self.index)} products indexed")

