"""The products a head trained on, named by key, so the image-blend chooser can leave them out of its sample.

On products it trained on a head looks better than it is for products it never saw: it learned their titles
and photos by heart. The shipped head trained on 90% of the fashion catalog, so when that catalog is indexed
the chooser's sample (spread over the whole file) was nine tenths trained-on products, and a measure that
rewards same-category photo neighbours read the memorised vectors as worse than they are for new products
(photo P@10 79.6 at beta 1 vs 86.3 at 0.75 on trained-on products; 75.2 vs 78.0 on held-out ones). The key is
of the id and the title together: another catalog's integer ids collide with the training catalog's, its
products' titles do not.

Shipped beside the image graph as TRAINED_FILE (sorted uint64 keys); heads adapted with `kuamo align --catalog`
are also told apart by their split rule (engine/split_rule.py never_trained_on)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from kuamo.engine.types import Product, ProductId

TRAINED_FILE = "image_trained_on.npy"
KEY_RULE = "sha1(str(id) + '\\n' + title.strip())[:8], big-endian uint64"


def product_key(product_id: ProductId, title: str) -> int:
    digest = hashlib.sha1(f"{product_id}\n{(title or '').strip()}".encode()).digest()
    return int.from_bytes(digest[:8], "big")


def product_keys(pairs: Iterable[tuple[ProductId, str]]) -> np.ndarray:
    """Sorted unique uint64 keys of (id, title) pairs: what a head file and TRAINED_FILE carry."""
    return np.unique(np.fromiter((product_key(i, t) for i, t in pairs), dtype=np.uint64))


class TrainedProducts:
    """Membership over the keys of the products a head trained on."""

    def __init__(self, keys: np.ndarray) -> None:
        self.keys = np.unique(np.asarray(keys, dtype=np.uint64))

    @classmethod
    def of(cls, artifacts: Any) -> TrainedProducts | None:
        """The keys a model set ships beside its image graph (manifest towers.image.trained_on), or None."""
        spec = artifacts.towers["image"].get("trained_on")
        return cls(np.load(artifacts.file(spec["file"]))) if spec and spec.get("file") else None

    def __len__(self) -> int:
        return len(self.keys)

    def holds(self, product_id: ProductId, title: str) -> bool:
        key = np.uint64(product_key(product_id, title))
        at = int(np.searchsorted(self.keys, key))
        return at < len(self.keys) and self.keys[at] == key


@dataclass(frozen=True)
class UntrainedOnly:
    """Which products the blend chooser may sample (`keep`), and what the ingest report says of it (`why`)."""

    keep: Callable[[Product], bool]
    why: str


def untrained_only(trained: TrainedProducts | None,
                   split_rule: Callable[[ProductId], bool] | None) -> UntrainedOnly | None:
    """The sample filter of a head that names what it trained on: by key (TRAINED_FILE), by an adapted head's
    split rule, or both; None when it names neither (any product may be sampled)."""
    if trained is None and split_rule is None:
        return None
    whys = ([f"not one of the {len(trained)} products the head trained on (id + title)"] if trained is not None
            else []) \
        + (["in the adapted head's held-out or validation split"] if split_rule else [])

    def keep(p: Product) -> bool:
        return (split_rule is None or split_rule(p.id)) and (trained is None or not trained.holds(p.id, p.title))

    return UntrainedOnly(keep, "products the head never trained on: " + " and ".join(whys))
