"""How a product becomes encoder inputs and a content hash (what makes a re-ingest a no-op)."""

from __future__ import annotations

import hashlib
import json
import math
from typing import Any

from kuamo.engine.types import Product


def document_text(p: Product) -> str:
    """The text the text tower sees for a product: title, then description when there is one, else its
    category; "" for a photo-only product (its text block stays empty: never a placeholder such as its id)."""
    parts = [p.title.strip(), p.description.strip()]
    return "\n".join(x for x in parts if x) or p.category.replace("/", " ").strip()


def numeric_attribute(p: Product, name: str) -> float | None:
    v = p.attributes.get(name)
    if isinstance(v, bool) or v is None:
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def scalar_blocks(p: Product, numeric_attributes: tuple[str, ...]) -> dict[str, Any]:
    blocks: dict[str, Any] = {"rating": p.rating, "price": p.price}
    for name in numeric_attributes:
        blocks[name] = numeric_attribute(p, name)
    return blocks


def content_hash(p: Product, image: bytes | None, fingerprint: str) -> str:
    """sha256 over the product fields, the photo bytes and the encoder/layout fingerprint: any change in
    one of them means the stored vector is stale."""
    h = hashlib.sha256()
    h.update(json.dumps(p.to_dict(), sort_keys=True, ensure_ascii=False, default=str).encode())
    h.update(b"\0img\0" + (hashlib.sha256(image).digest() if image else b"-"))
    h.update(b"\0fp\0" + fingerprint.encode())
    return h.hexdigest()
