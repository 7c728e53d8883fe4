"""The stable id splits every trainer, evaluator and the engine agree on (evaluation/split.py re-exports them).

They live in the engine because the image-blend chooser needs them too: after `kuamo align --catalog`, the
chooser samples only products the adapted head never trained on (its held-out and validation tenths), since
on trained-on products an adapted head looks better than it is for the products added later."""

from __future__ import annotations

import hashlib
from collections.abc import Callable

HELD_OUT_PERCENT = 10
SPLIT_RULE = f"sha1(str(id))[:4] mod 100 < {HELD_OUT_PERCENT}"
VALIDATION_PERCENT = 10
VALIDATION_RULE = (f"not held out and sha1('val:' + str(id))[:4] mod 100 < {VALIDATION_PERCENT} -> validation "
                   "(early stopping and the regularisation choice; never trained on)")


def id_bucket(product_id: int | str, salt: str = "") -> int:
    """0..99 from sha1(salt + id string): the stable buckets every split here is made of."""
    digest = hashlib.sha1(f"{salt}{product_id}".encode()).digest()
    return int.from_bytes(digest[:4], "big") % 100


def is_held_out(product_id: int | str) -> bool:
    """Stable 90/10 split: sha1 of the id string, first 4 bytes mod 100 < 10 -> held out."""
    return id_bucket(product_id) < HELD_OUT_PERCENT


def is_validation(product_id: int | str) -> bool:
    """A second stable 10% of what is not held out: what adapting early-stops on. Kept apart from the held-out
    split so the figures reported on that one were not chosen on it."""
    return not is_held_out(product_id) and id_bucket(product_id, "val:") < VALIDATION_PERCENT


def never_trained_on(alignment: dict) -> Callable[[int | str], bool] | None:
    """For a head adapted to a catalog (its card, as the manifest carries it, names a validation split): is a
    product one it never trained on. None for other heads (the shipped ones trained on another catalog)."""
    if not (alignment.get("data") or {}).get("validation_split"):
        return None
    return lambda pid: is_held_out(pid) or is_validation(pid)
