"""Colour read off product photos: CIELAB, the background, the tower's reading, and their place in the store
and in query understanding's colour boost."""

from __future__ import annotations

import asyncio
import io

import numpy as np
import pytest
from fake_encoders import fake_engine, png
from PIL import Image

from kuamo.engine.errors import InvalidInput
from kuamo.engine.photo_colour import PALETTE, dominant_colours, srgb_to_lab, tower_colour
from kuamo.engine.store import CatalogStore, StoredRow
from kuamo.engine.types import Filters, Product, Query


def photo(product: tuple[int, int, int], background: tuple[int, int, int] | None) -> bytes:
    """A 90x120 shot of a product block on a plain `background`, or (None) on stripes of four colours."""
    if background is None:
        stripes = np.array([(200, 30, 40), (50, 100, 200), (240, 210, 50), (25, 25, 25)], dtype=np.uint8)
        arr = np.repeat(stripes[np.arange(90) * 4 // 90][None], 120, axis=0)
    else:
        arr = np.full((120, 90, 3), background, dtype=np.uint8)
    arr[30:100, 20:70] = product  # the product fills ~32% of the frame, as a packshot does
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=95)
    return buf.getvalue()


def test_cielab_reference_values() -> None:
    lab = srgb_to_lab(np.array([[255, 255, 255], [0, 0, 0], [255, 0, 0]]))
    assert np.allclose(lab[0], [100, 0, 0], atol=0.05) and np.allclose(lab[1], [0, 0, 0], atol=0.05)
    assert np.allclose(lab[2], [53.24, 80.09, 67.20], atol=0.05)


def test_dominant_colours_of_packshots() -> None:
    assert dominant_colours(photo((200, 30, 40), (255, 255, 255)))[0] == "Red"  # white studio backdrop dropped
    assert dominant_colours(photo((30, 40, 85), (235, 235, 235)))[0] == "Navy Blue"  # light grey backdrop
    assert dominant_colours(photo((245, 245, 245), (250, 250, 250))) == ("White",)  # white on white: all pixels
    assert dominant_colours(photo((50, 150, 70), None)) == ("Green",)  # a busy border: every pixel counts
    with pytest.raises(InvalidInput):
        dominant_colours(b"not an image")


def test_tower_colour_is_the_nearest_prompt() -> None:
    prompts = np.eye(len(PALETTE), dtype=np.float32)
    assert tower_colour(prompts[list(PALETTE).index("Olive")], prompts) == ("Olive",)
    assert tower_colour(np.zeros(len(PALETTE), dtype=np.float32), prompts) == ()


def test_store_keeps_photo_colours_with_their_product(tmp_path) -> None:
    s = CatalogStore(tmp_path / "c.sqlite", dim=4)
    vec = np.ones(4, dtype=np.float32)
    s.upsert([StoredRow(Product(id=1, title="a"), vec, "h1", photo_colours=("Red", "White")),
              StoredRow(Product(id=2, title="b"), vec, "h2", photo_colours=("Blue",))])
    assert s.photo_colours() == {1: ("Red", "White"), 2: ("Blue",)}
    s.upsert([StoredRow(Product(id=1, title="a2"), vec, "h3")])  # replaced without a photo: its colours go
    s.delete([2])
    assert s.photo_colours() == {} and s.photo_colours([1, 2]) == {}
    bad = StoredRow(Product(id=3, title="c"), np.ones(5, dtype=np.float32), "h", photo_colours=("Red",))
    with pytest.raises(InvalidInput):
        s.upsert([StoredRow(Product(id=4, title="d"), vec, "h4", photo_colours=("Green",)), bad])
    assert s.photo_colours() == {}  # a failed write leaves none behind
    s.close()


def test_understanding_uses_the_photo_where_the_row_names_no_colour(tmp_path) -> None:
    products = [Product(id=1, title="cotton tee", category="Apparel/Tshirts"),
                Product(id=2, title="cotton tee", category="Apparel/Tshirts", attributes={"colour": "Blue"}),
                Product(id=3, title="cotton tee", category="Apparel/Tshirts")]
    q = Query(text="red tee", k=3, explain=True, weights={"understanding": 0.05})
    with fake_engine(tmp_path / "data", photo_colours=True) as eng:
        asyncio.run(eng.upsert(products, [png("red"), png("red"), png("green")]))
        assert eng.backend.store.photo_colours() == {1: ("Red",), 2: ("Red",), 3: ("Green",)}
        by_id = {h.id: h.explanation.contributions for h in asyncio.run(eng.search(q)).hits}
        assert by_id[1].get("colour=Red (photo)") == 0.05
        assert not any(k.startswith("colour=") for k in by_id[2])  # its own field says Blue: the field wins
        assert not any(k.startswith("colour=") for k in by_id[3])
    with fake_engine(tmp_path / "data", photo_colours=False) as off:
        by_id = {h.id: h.explanation.contributions for h in asyncio.run(off.search(q)).hits}
        assert not any(k.startswith("colour=") for c in by_id.values() for k in c)


def test_filter_on_the_photo_colour(tmp_path) -> None:
    with fake_engine(tmp_path / "data") as eng:
        asyncio.run(eng.upsert([Product(id=i, title="cotton tee", attributes={"size": "M"}) for i in range(4)],
                               [png("red"), png("green"), png("red"), None]))
        for value in ("Red", "red", " RED "):
            res = asyncio.run(eng.search(Query(text="tee", k=4, filters=Filters(attributes={"photo_colour": value}))))
            assert {h.id for h in res.hits} == {0, 2}
        both = Filters(attributes={"photo_colour": "Green", "size": "M"})
        assert [h.id for h in asyncio.run(eng.search(Query(text="tee", k=4, filters=both))).hits] == [1]
        for bad in ("Mauve", 3, ""):
            with pytest.raises(InvalidInput) as exc:
                asyncio.run(eng.search(Query(text="tee", filters=Filters(attributes={"photo_colour": bad}))))
            assert exc.value.field == "filters.attributes" and "Navy Blue" in exc.value.message


def test_milvus_filters_refuse_the_photo_colour() -> None:
    from kuamo.engine.errors import Unsupported
    from kuamo.engine.milvus_filters import milvus_expr

    with pytest.raises(Unsupported):
        milvus_expr(Filters(attributes={"photo_colour": "Red"}))
