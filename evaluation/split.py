"""The held-out split every trainer and evaluator agrees on."""

from __future__ import annotations

import hashlib

HELD_OUT_PERCENT = 10
SPLIT_RULE = f"sha1(str(id))[:4] mod 100 < {HELD_OUT_PERCENT}"


def is_held_out(product_id: int | str) -> bool:
    """Stable 90/10 split: sha1 of the id string, first 4 bytes mod 100 < 10 -> held out."""
    digest = hashlib.sha1(str(product_id).encode("utf-8")).digest()
    return int.from_bytes(digest[:4], "big") % 100 < HELD_OUT_PERCENT

VALIDATION_PERCENT = 10
VALIDATION_RULE = f"{HELD_OUT_PERCENT} <= sha1(str(id))[:4] mod 100 < {HELD_OUT_PERCENT + VALIDATION_PERCENT}"


def is_validation(product_id: int | str) -> bool:
    """The next 10% (disjoint from the held-out split): where settings are chosen before the held-out report."""
    digest = hashlib.sha1(str(product_id).encode("utf-8")).digest()
    return HELD_OUT_PERCENT <= int.from_bytes(digest[:4], "big") % 100 < HELD_OUT_PERCENT + VALIDATION_PERCENT
