"""A filter on an attribute or category the catalog never had is an error naming the nearest known ones."""

from __future__ import annotations

import pytest

from kuamo.engine.errors import InvalidInput
from kuamo.engine.types import Filters
from kuamo.engine.vocabulary import CatalogVocabulary


def _vocab() -> CatalogVocabulary:
    v = CatalogVocabulary()
    v.add_attributes(["baseColour", "gender", "season"])
    v.set_categories(["Apparel/Topwear/Shirts", "Apparel/Bottomwear/Jeans", "Footwear/Shoes/Sports Shoes"])
    return v


def test_known_names_and_every_prefix_pass() -> None:
    v = _vocab()
    for f in (Filters(attributes={"baseColour": "Red"}), Filters(category_prefix="Apparel"),
              Filters(category_prefix="Apparel/Topwear"), Filters(category_prefix="Footwear/Shoes/Sports Shoes/"),
              Filters()):
        v.check(f)


def test_unknown_attribute_names_the_nearest() -> None:
    with pytest.raises(InvalidInput, match=r"no attribute 'colour'.*'baseColour'") as e:
        _vocab().check(Filters(attributes={"colour": "Red"}))
    assert e.value.field == "filters.attributes"


def test_misspelled_category_names_the_nearest() -> None:
    with pytest.raises(InvalidInput, match=r"no category 'Apparel/Topwaer'.*'Apparel/Topwear'") as e:
        _vocab().check(Filters(category_prefix="Apparel/Topwaer"))
    assert e.value.field == "filters.category_prefix"
    with pytest.raises(InvalidInput, match="no category 'Apparel/Top'"):  # a prefix must end at a level
        _vocab().check(Filters(category_prefix="Apparel/Top"))


def test_an_empty_catalog_checks_nothing() -> None:
    CatalogVocabulary().check(Filters(attributes={"anything": 1}, category_prefix="Nowhere"))
