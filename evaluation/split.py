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
VALIDATION_RULE = (f"not held out and sha1('val:' + str(id))[:4] mod 100 < {VALIDATION_PERCENT} -> validation "
                   "(early stopping and the regularisation choice; never trained on)")


def is_validation(product_id: int | str) -> bool:
    """A second stable 10% of what is not held out: what adapting early-stops on. Kept apart from the held-out
    split so the figures reported on that one were not chosen on it."""
    if is_held_out(product_id):
        return False
    digest = hashlib.sha1(f"val:{product_id}".encode()).digest()
    return int.from_bytes(digest[:4], "big") % 100 < VALIDATION_PERCENT
