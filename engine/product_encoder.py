"""The encoder role: text and image towers + the fusion layout, turning products into fused vectors and
queries into blocks. Stateless apart from the image blend (chosen per catalog), so any number of them (one
per Ray actor, one per replica) make the same vectors from the same model files.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from kuamo.engine.config import EncoderConfig
from kuamo.engine.errors import InvalidInput, KuamoError
from kuamo.engine.fusion import FusionLayout
from kuamo.engine.ids import canonical_id, row_key
from kuamo.engine.photo_colour import colour_prompts, dominant_colours, tower_colour
from kuamo.engine.rows import content_hash, document_text, scalar_blocks
from kuamo.engine.split_rule import never_trained_on
from kuamo.engine.store import StoredRow, check_product
from kuamo.engine.trained_products import UntrainedOnly, untrained_only
from kuamo.engine.types import Product, Rejection

BASE_BLOCKS = ("image", "text", "rating", "price")


class TextEncoderLike(Protocol):
    dim: int

    def encode(self, texts: Sequence[str], kind: str = "query") -> np.ndarray: ...


class ImageEncoderLike(Protocol):
    dim: int

    def encode(self, items: Sequence[bytes]) -> np.ndarray: ...


@dataclasses.dataclass(frozen=True)
class Pending:
    """A validated product waiting for its vector: its position in the request, the photo and its hash."""

    row: int
    product: Product
    image: bytes | None
    content_hash: str


def encoder_fingerprint(enc: Any) -> str:
    if enc is None:
        return "none"
    fp = getattr(enc, "fingerprint", None)
    if isinstance(fp, str):
        return fp
    tower = getattr(enc, "tower", None)
    path = getattr(tower, "model_path", None)
    sha = getattr(tower, "sha256", "")
    beta = getattr(enc, "beta", 1.0)
    zero_shot = getattr(enc, "zero_shot", None)
    blend = f":beta={beta}:{getattr(zero_shot, 'form', '')}" if beta < 1 else ""
    # the weights' sha256, not only the file name: a re-export with new weights writes the same file name
    return f"{type(enc).__name__}:{enc.dim}:{getattr(path, 'name', '')}{':' + sha[:16] if sha else ''}{blend}"


def describe_fingerprint(fp: str) -> str:
    try:
        d = json.loads(fp)
        return f"text {d['text']}, image {d['image']}"
    except (ValueError, TypeError, KeyError):
        return fp


class ProductEncoder:
    """Encoders + layout. `fingerprint` names the models, the layout and the image blend: a stored vector is
    comparable with new queries only when it was made under the same fingerprint."""

    def __init__(self, text_encoder: TextEncoderLike, image_encoder: ImageEncoderLike | None = None, *,
                 numeric_attributes: tuple[str, ...] = (), image_aligned: bool | None = None,
                 photo_colours: bool = True) -> None:
        self.text_encoder = text_encoder
        self.photo_colours = photo_colours  # read each photo's dominant colours at ingest (engine/photo_colour.py)
        self._prompt_vecs: np.ndarray | None = None
        self.image_encoder = image_encoder
        image_dim = image_encoder.dim if image_encoder is not None else text_encoder.dim
        # The text vector can stand in for the image block only when both live in one space.
        self.image_aligned = (image_dim == text_encoder.dim) if image_aligned is None else image_aligned
        self.layout = FusionLayout.default(text_dim=text_encoder.dim, image_dim=image_dim,
                                           numeric_attributes=numeric_attributes)
        self.numeric_names = tuple(n for n in self.layout.names if n not in BASE_BLOCKS)
        self.fingerprint = ""
        self.refresh_fingerprint()

    @classmethod
    def load(cls, model_dir: Path, config: EncoderConfig, *, numeric_attributes: tuple[str, ...] = (),
             image_blend: float | None = None) -> ProductEncoder:
        """The real towers from an exported model directory (what a Ray actor or a replica runs)."""
        from kuamo.engine.artifacts import ModelArtifacts
        from kuamo.engine.encoders import ImageEncoder, TextEncoder

        artifacts = ModelArtifacts(model_dir, verify=config.verify_checksums)
        text = TextEncoder(artifacts, config)
        image = ImageEncoder(artifacts, config) if "image" in artifacts.towers else None
        enc = cls(text, image, numeric_attributes=numeric_attributes)
        if image_blend is not None:
            enc.set_blend(image_blend)
        return enc

    def refresh_fingerprint(self) -> str:
        self.fingerprint = json.dumps({"layout": self.layout.to_dict(),
                                       "text": encoder_fingerprint(self.text_encoder),
                                       "image": encoder_fingerprint(self.image_encoder)}, sort_keys=True)
        return self.fingerprint

    # -- the per-catalog image blend (zero_shot_blend) ---------------------------------------------------
    @property
    def can_blend(self) -> bool:
        return getattr(self.image_encoder, "zero_shot", None) is not None

    @property
    def blend_sample_keep(self) -> UntrainedOnly | None:
        """Which products the blend chooser may sample: only those the head never trained on, where it names
        them (engine/trained_products.py: its training products' keys, an adapted head's split rule); None = any."""
        spec = getattr(getattr(self.image_encoder, "tower", None), "spec", None) or {}
        return untrained_only(getattr(self.image_encoder, "trained", None),
                              never_trained_on(spec.get("alignment") or {}))

    @property
    def beta(self) -> float:
        return float(getattr(self.image_encoder, "beta", 1.0))

    def set_blend(self, beta: float) -> None:
        if self.image_encoder is not None and hasattr(self.image_encoder, "set_blend"):
            self.image_encoder.set_blend(beta)
        self.refresh_fingerprint()

    # -- queries ------------------------------------------------------------------------------------------
    def validate_text(self, text: Any, field: str) -> str:
        check = getattr(self.text_encoder, "validate", None)
        if check is not None:
            try:
                return check(text)
            except InvalidInput as exc:
                raise InvalidInput(exc.message, field=field) from exc
        if not isinstance(text, str) or not text.strip():
            raise InvalidInput("text must be a non-empty string", field=field)
        return text

    def encode_query_batch(self, texts: list[str]) -> list[Any]:
        """Batcher fn: one bad text fails only its own request."""
        out: list[Any] = [None] * len(texts)
        good: list[int] = []
        for i, t in enumerate(texts):
            try:
                self.validate_text(t, "text")
                good.append(i)
            except InvalidInput as exc:
                out[i] = exc
        if good:
            vecs = self.text_encoder.encode([texts[i] for i in good], kind="query")
            for row, i in enumerate(good):
                out[i] = vecs[row]
        return out

    def encode_image_batch(self, images: list[bytes]) -> list[Any]:
        """Batcher fn: a photo that does not decode fails only itself; the others still get vectors."""
        assert self.image_encoder is not None
        try:
            vecs = self.image_encoder.encode(images)
            return [vecs[i] for i in range(len(images))]
        except InvalidInput:
            out: list[Any] = []
            for img in images:
                try:
                    out.append(self.image_encoder.encode([img])[0])
                except InvalidInput as exc:
                    out.append(exc)
            return out

    # -- products -----------------------------------------------------------------------------------------
    def colours_of(self, image: bytes, image_vec: np.ndarray | None) -> tuple[str, ...]:
        """The photo's dominant colours: from its vector where the towers share a space, else its pixels."""
        if image_vec is not None and self.image_aligned:
            if self._prompt_vecs is None:
                v = self.text_encoder.encode(colour_prompts(), "query")
                self._prompt_vecs = v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
            return tower_colour(image_vec, self._prompt_vecs)
        try:
            return dominant_colours(image)
        except InvalidInput:
            return ()

    def check_row(self, row: int, p: Any, image: Any) -> Pending:
        """Validate one product of a write (raises InvalidInput naming the field); ids in canonical form."""
        if not isinstance(p, Product):
            raise InvalidInput(f"expected a Product, got {type(p).__name__}", field="product")
        pid = canonical_id(p.id)
        if pid != p.id or isinstance(pid, str) != isinstance(p.id, str):
            p = dataclasses.replace(p, id=pid)  # "123" is the integer id 123
        check_product(p)
        if image is not None and not isinstance(image, bytes | bytearray):
            raise InvalidInput(f"image must be bytes, got {type(image).__name__}", field="image")
        text = document_text(p)
        if text or not image:  # a photo-only product has no text to check; nothing at all is refused
            # the text tower's limits apply per row: one long description must not fail the chunk
            self.validate_text(text, "description" if p.description.strip() else "title")
        img = bytes(image) if image else None
        return Pending(row, p, img, content_hash(p, img, self.fingerprint))

    def encode_rows(self, todo: Sequence[Pending]) -> tuple[list[StoredRow], list[Rejection]]:
        """Fused vectors for validated products; a photo that does not decode rejects only its row."""
        texts = [document_text(t.product) for t in todo]
        with_text = [k for k, t in enumerate(texts) if t]  # photo-only products keep an empty text block
        encoded = self.text_encoder.encode([texts[k] for k in with_text], kind="document") if with_text else []
        text_vecs: dict[int, np.ndarray] = dict(zip(with_text, encoded, strict=True))
        image_vecs: dict[int, np.ndarray] = {}
        bad: list[Rejection] = []
        with_img = [(k, t) for k, t in enumerate(todo) if t.image is not None]
        if with_img and self.image_encoder is not None:  # no image tower: the image block stays empty
            results = self.encode_image_batch([t.image for _, t in with_img])  # type: ignore[misc]
            for (k, t), res in zip(with_img, results, strict=True):
                if isinstance(res, Exception):
                    msg = res.message if isinstance(res, KuamoError) else str(res)
                    bad.append(Rejection(row=t.row, id=t.product.id, field="image", reason=msg))
                else:
                    image_vecs[k] = res
        bad_ids = {b.id for b in bad}
        rows = []
        for k, t in enumerate(todo):
            p = t.product
            if p.id in bad_ids:
                continue
            if k not in text_vecs and k not in image_vecs:  # photo-only, and this engine has no image tower
                bad.append(Rejection(row=t.row, id=p.id, field="title", reason="no title or description, and no "
                                     "image tower to encode its photo with"))
                continue
            blocks = {"text": text_vecs.get(k), "image": image_vecs.get(k), **scalar_blocks(p, self.numeric_names)}
            try:
                vec = self.layout.product_vector(blocks)
            except InvalidInput as exc:  # e.g. a price of 0 has no place on the log scale
                bad.append(Rejection(row=t.row, id=p.id, field=exc.field or "product", reason=exc.message))
                continue
            colours = self.colours_of(t.image, image_vecs.get(k)) if self.photo_colours and t.image else ()
            rows.append(StoredRow(product=p, vector=vec, content_hash=t.content_hash, photo_colours=colours))
        return rows, bad


def row_keys(rows: Sequence[StoredRow]) -> np.ndarray:
    return np.asarray([row_key(r.product.id) for r in rows], dtype=np.int64)
