"""The attribute names and category paths a catalog has, so that a filter on one it never had (`colour` for
`baseColour`, a misspelled category) is INVALID_ARGUMENT naming the nearest known ones, not OK with 0 hits."""

from __future__ import annotations

import difflib
from collections.abc import Iterable

from kuamo.engine.errors import InvalidInput
from kuamo.engine.photo_colour import PHOTO_COLOUR_FILTER
from kuamo.engine.types import CATEGORY_SEP, Filters


def _nearest(name: str, known: Iterable[str], n: int = 3) -> str:
    close = difflib.get_close_matches(name, sorted(known), n=n, cutoff=0.5)
    if not close:  # case or a prefix often tells more than edit distance
        close = [k for k in sorted(known) if k.lower().startswith(name.lower()[:3])][:n]
    return f"; nearest known: {', '.join(repr(c) for c in close)}" if close else ""


class CatalogVocabulary:
    """Attribute names only grow (an attribute a deleted product had still names a real field); category
    prefixes follow the catalog (re-read after every write: the category column is indexed)."""

    def __init__(self) -> None:
        self.attributes: set[str] = set()
        self.categories: set[str] = set()  # every prefix of every category path

    def add_attributes(self, names: Iterable[str]) -> None:
        self.attributes.update(names)

    def set_categories(self, paths: Iterable[str]) -> None:
        prefixes = set()
        for path in paths:
            parts = [p for p in path.split(CATEGORY_SEP) if p]
            prefixes.update(CATEGORY_SEP.join(parts[: i + 1]) for i in range(len(parts)))
        self.categories = prefixes

    def check(self, f: Filters) -> None:
        """InvalidInput for an attribute or category the catalog never had (nothing is checked while the
        catalog is empty: then every filter is as unknown as any other)."""
        if not self.attributes and not self.categories:
            return
        for name in f.attributes:
            if name not in self.attributes and name != PHOTO_COLOUR_FILTER:
                raise InvalidInput(f"the catalog has no attribute {name!r}{_nearest(name, self.attributes)}",
                                   field="filters.attributes")
        prefix = (f.category_prefix or "").strip(CATEGORY_SEP)
        if prefix and prefix not in self.categories:
            raise InvalidInput(f"the catalog has no category {prefix!r}{_nearest(prefix, self.categories)}",
                               field="filters.category_prefix")
