"""Which models made the catalog's vectors: the fusion layout, the encoders' fingerprint and the per-catalog
image blend (zero_shot_blend), kept as backend metadata. A catalog whose vectors other models made opens only
to be re-embedded (allow_stale_vectors); a changed blend marks every stored vector stale the same way.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

import numpy as np

from kuamo.engine.catalog_backend import CatalogBackend
from kuamo.engine.errors import ArtifactError, InvalidInput
from kuamo.engine.product_encoder import ProductEncoder, describe_fingerprint
from kuamo.engine.types import Product, category_leaf
from kuamo.engine.zero_shot_blend import BlendChoice, choose_for_photos, grown_enough, is_provisional

if TYPE_CHECKING:
    from kuamo.engine.engine import EngineConfig

log = logging.getLogger(__name__)
BLEND_META = "image_blend"  # backend meta: the catalog's image blend (zero_shot_blend), JSON
ENCODERS_META = "encoders"  # backend meta: the fingerprint of the encoders that made the catalog's vectors
LAYOUT_META = "layout"


class VectorProvenance:
    def __init__(self, config: EngineConfig, encoder: ProductEncoder, backend: CatalogBackend) -> None:
        self.config = config
        self.encoder = encoder
        self.backend = backend
        self._rewritten: set[int] = set()  # products re-embedded since opening a stale catalog
        self._check_layout()
        stored_blend = backend.get_meta(BLEND_META)
        if stored_blend is not None and encoder.image_encoder is not None:
            encoder.set_blend(json.loads(stored_blend)["beta"])  # the catalog's vectors were made with it
        self.stale_vectors: str | None = self._check_encoders()

    @property
    def fingerprint(self) -> str:
        return self.encoder.fingerprint

    def _where(self) -> str:
        return str(getattr(getattr(self.backend, "store", None), "path", None) or f"the {self.backend.kind} catalog")

    def _check_layout(self) -> None:
        stored = self.backend.get_meta(LAYOUT_META)
        mine = json.dumps(self.encoder.layout.to_dict(), sort_keys=True)
        if stored is None:
            self.backend.set_meta(LAYOUT_META, mine)
        elif json.loads(stored) != json.loads(mine):
            raise ArtifactError(f"{self._where()} was built with a different fusion layout ({stored}); "
                                "use a new data directory or re-index", field="data_dir")

    def _check_encoders(self) -> str | None:
        """None when the stored vectors were made by these encoders (an empty catalog takes them); else why
        not. Such a catalog opens only with allow_stale_vectors (for `kuamo index` to re-embed it)."""
        stored = self.backend.get_meta(ENCODERS_META)
        if stored == self.fingerprint:
            return None
        if self.backend.count() == 0:
            self.backend.set_meta(ENCODERS_META, self.fingerprint)
            return None
        why = ("its vectors carry no record of the models that made them (an older kuamo wrote it)" if stored is None
               else f"its vectors were made by other models ({describe_fingerprint(stored)})")
        if not self.config.allow_stale_vectors:
            raise ArtifactError(
                f"{self._where()}: {why}, not by the models in {self.config.model_dir} "
                f"({describe_fingerprint(self.fingerprint)}); their vectors and new queries would not be "
                "comparable. Re-embed it with `kuamo index CATALOG --models DIR --data DIR`, or serve it with the "
                "models that made it", field="data_dir")
        log.warning("%s: %s; opened to re-embed it", self._where(), why)
        return why

    # -- re-embedding a stale catalog -------------------------------------------------------------------
    def fresh_hashes(self, old: dict[int, str]) -> dict[int, str]:
        """The stored hashes that prove a product unchanged: while stale, only those re-embedded here."""
        if self.stale_vectors is None:
            return old
        return {i: h for i, h in old.items() if i in self._rewritten}

    def note_written(self, keys: Iterable[int]) -> None:
        if self.stale_vectors is not None:
            self._rewritten.update(int(k) for k in keys)

    def still_stale(self) -> int:
        """How many products still hold vectors from other models."""
        return int(np.count_nonzero(~np.isin(self.backend.keys(), np.fromiter(self._rewritten, np.int64))))

    def settled(self) -> None:
        """Every vector is now from these encoders: record it."""
        self.backend.set_meta(ENCODERS_META, self.fingerprint)
        self.stale_vectors = None
        self._rewritten.clear()

    # -- the per-catalog image blend ---------------------------------------------------------------------
    def stored_blend(self) -> dict | None:
        raw = self.backend.get_meta(BLEND_META)
        return None if raw is None else json.loads(raw)

    @property
    def image_blend_pending(self) -> bool:
        """True while no choice binds the catalog: none made, or made on a catalog that stored nothing, or
        provisional (too few photos; zero_shot_blend.is_provisional)."""
        if not (self.config.calibrate_image_blend and self.encoder.can_blend):
            return False
        stored = self.stored_blend()
        return (stored is None or is_provisional(stored)
                or (self.backend.count() == 0 and stored.get("source") != "set"))

    def image_blend_due(self, photos: int) -> bool:
        """Choose now, on a run that offers `photos` photos? A pending choice on an empty catalog, yes; a
        provisional one only once the run offers REGROW times the photos it was made on."""
        if not self.image_blend_pending:
            return False
        stored = self.stored_blend()
        return stored is None or self.backend.count() == 0 or grown_enough(stored, photos)

    def calibrate(self, products: Sequence[Product], images: Sequence[bytes | None], *,
                  force: bool = False) -> BlendChoice:
        """Choose the image blend on a sample of the catalog about to be indexed, while it is pending (or
        `force`: --image-blend auto). Photos that do not decode are left out of the sample; products without a
        title take part in the category and label-free measures only. A changed beta marks every stored
        vector stale: the run re-embeds them (the model-change path, Engine.settle_stale_vectors)."""
        enc = self.encoder
        if not enc.can_blend or not (force or self.image_blend_pending):
            raise InvalidInput("the image blend is chosen while it is pending (or with --image-blend auto), on a "
                               "catalog whose image tower has a zero-shot map; this one is fixed or cannot blend",
                               field="image_blend")
        pairs = [(p, bytes(img)) for p, img in zip(products, images, strict=True) if img]
        choice = choose_for_photos(enc.image_encoder, lambda texts: enc.text_encoder.encode(texts, "query"),
                                   [b for _, b in pairs], [p.title for p, _ in pairs],
                                   [category_leaf(p.category) for p, _ in pairs])
        self.apply(choice)
        return choice

    def set_blend(self, beta: float) -> BlendChoice:
        """The operator's beta (--image-blend BETA): binds the catalog; re-embeds it when beta changes."""
        if beta < 1 and not self.encoder.can_blend:
            raise InvalidInput("this image tower has no zero-shot map to blend with; re-run `kuamo export`",
                               field="image_blend")
        choice = BlendChoice(float(beta), 0, reason="set by the operator (--image-blend)", source="set")
        self.apply(choice)
        return choice

    def apply(self, choice: BlendChoice) -> None:
        before = self.fingerprint
        self.encoder.set_blend(choice.beta)
        self.backend.set_meta(BLEND_META, json.dumps(choice.to_dict()))
        if self.backend.count() == 0:
            self.backend.set_meta(ENCODERS_META, self.fingerprint)
            self.stale_vectors = None
        elif self.backend.get_meta(ENCODERS_META) == self.fingerprint:
            self.stale_vectors = None  # back to the beta the stored vectors were made with
        elif self.fingerprint != before:
            self.stale_vectors = (f"the image blend changed to beta {choice.beta:g}; the stored vectors were made "
                                  "with another")
            self._rewritten.clear()  # anything re-embedded in this session used the old beta

    def record_default_blend(self) -> None:
        """Before the first commit: record the blend the catalog's vectors are made with, provisional (0
        photos), so a later `kuamo index` with enough photos chooses (and re-embeds) instead of keeping it."""
        if self.backend.get_meta(BLEND_META) is None and self.encoder.can_blend:
            self.backend.set_meta(BLEND_META, json.dumps(BlendChoice(
                self.encoder.beta, 0, reason="not chosen: products arrived before any choice",
                source="default").to_dict()))
