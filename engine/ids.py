"""Product ids as catalogs have them, and the int64 row key the store and the vector index use.

The external id is an int (a canonical non-negative decimal below 2^63: today's catalogs) or a string (hex
ids, SKUs with letters, "007"). Its row key is the int itself, or a stable 63-bit blake2b hash of the
string, the same in every process and on every machine (never Python's hash()). A hash that lands on a
key another id already holds is refused at upsert by the store, never overwritten.
"""

from __future__ import annotations

import hashlib

import numpy as np

from kuamo.engine.errors import InvalidInput
from kuamo.engine.types import MAX_ID, ProductId

__all__ = ["MAX_ID_CHARS", "ProductId", "canonical_id", "key_of", "row_key"]
MAX_ID_CHARS = 256
_PERSON = b"kuamo-product-id"  # blake2b personalisation: these keys hash nothing else


def canonical_id(raw: object, field: str = "id") -> ProductId:
    """int for integer ids (also "123" written as text), str for any other id; InvalidInput otherwise."""
    if isinstance(raw, bool) or not isinstance(raw, int | np.integer | str):
        raise InvalidInput(f"{field} must be an integer or a string, got {type(raw).__name__}", field=field)
    if not isinstance(raw, str):
        if not 0 <= int(raw) <= MAX_ID:
            raise InvalidInput(f"{field} {int(raw)} is outside 0..2^63-1; send it as a string", field=field)
        return int(raw)
    if not raw:
        raise InvalidInput(f"{field} is an empty string", field=field)
    if len(raw) > MAX_ID_CHARS:
        raise InvalidInput(f"{field} has {len(raw)} characters, above the limit of {MAX_ID_CHARS}", field=field)
    if not raw.isprintable() or raw != raw.strip():
        raise InvalidInput(f"{field} {raw[:40]!r} has control characters or surrounding spaces", field=field)
    if raw.isascii() and raw.isdigit() and (raw == "0" or raw[0] != "0") and int(raw) <= MAX_ID:
        return int(raw)
    return raw


def row_key(pid: ProductId) -> int:
    """The int64 key of a canonical id (see canonical_id)."""
    if not isinstance(pid, str):
        return int(pid)
    digest = hashlib.blake2b(pid.encode("utf-8"), digest_size=8, person=_PERSON).digest()
    return int.from_bytes(digest, "big") & MAX_ID


def key_of(raw: object, field: str = "id") -> int:
    return row_key(canonical_id(raw, field))
