"""The engine over the real exported towers (behind the real batchers) on a slice of the fashion catalog."""

from __future__ import annotations

import asyncio

import pytest

# The engine needs C2's fusion/index and C3's batcher; skip (not fail) until they are in the tree.
for _mod in ("kuamo.engine.fusion", "kuamo.engine.index", "kuamo.engine.batcher"):
    pytest.importorskip(_mod)

from kuamo.engine.engine import Engine, EngineConfig  # noqa: E402
from kuamo.engine.ingest import aindex_catalog  # noqa: E402
from kuamo.engine.types import Filters, Query  # noqa: E402

pytestmark = pytest.mark.models


def test_fashion_slice_end_to_end(tmp_path, model_dir, fashion_dir) -> None:
    async def main() -> None:
        eng = await Engine.open(EngineConfig(model_dir=model_dir, data_dir=tmp_path / "data"))
        try:
            rep = await aindex_catalog(fashion_dir / "products.csv", eng, limit=48, progress=False, batch_size=16)
            assert rep.accepted > 40
            probe = await eng.get(eng.store.all_vectors()[0][5].item())
            # a product's own title finds it (text block), and it survives a category filter
            res = await eng.search(Query(text=probe.title, k=3, explain=True))
            assert probe.id in [h.id for h in res.hits]
            assert res.hits[0].explanation.contributions["text"] > 0
            top = probe.category.split("/")[0]
            res = await eng.search(Query(text=probe.title, k=5, filters=Filters(category_prefix=top)))
            assert res.hits and all(h.product.category.startswith(top + "/") for h in res.hits)
            # its own photo finds it through the image block
            photo = (fashion_dir / "images" / f"{probe.id}.jpg").read_bytes()
            res = await eng.search(Query(image=photo, k=3))
            assert res.hits[0].id == probe.id
            many = await eng.search_many([Query(text=t, k=2) for t in ("red shirt", "black watch", "sandals")])
            assert [len(r.hits) for r in many] == [2, 2, 2]
            st = await eng.stats()
            assert st.products == st.indexed == rep.accepted
        finally:
            await eng.close()

    asyncio.run(main())


def test_first_indexing_chooses_the_image_blend_once(tmp_path, model_dir, fashion_dir) -> None:
    """The real towers on 120 held-out fashion products (the shipped head never trained on them, so the chooser
    samples every one): the blend is chosen on the catalog's first indexing, stored, and a reopened engine
    encodes with it."""
    import json

    from fashion_slices import fashion_slice

    from kuamo.engine.vector_provenance import BLEND_META
    from kuamo.engine.zero_shot_blend import BETAS

    path = fashion_slice(fashion_dir, tmp_path / "cat" / "products.csv", 120)
    cfg = EngineConfig(model_dir=model_dir, data_dir=tmp_path / "data")

    async def main() -> None:
        eng = await Engine.open(cfg)
        try:
            assert eng.image_blend_pending
            rep = await aindex_catalog(path, eng, progress=False, batch_size=64, image_root=fashion_dir)
            assert rep.image_blend is not None and rep.image_blend["photos"] == 120
            assert rep.image_blend["beta"] in BETAS and set(rep.image_blend["scores"]) == {str(b) for b in BETAS}
            assert json.loads(eng.store.get_meta(BLEND_META))["beta"] == rep.image_blend["beta"]
            again = await aindex_catalog(path, eng, progress=False, image_root=fashion_dir)
            assert again.image_blend is None and again.unchanged == rep.accepted  # chosen once; nothing re-encoded
        finally:
            await eng.close()
        reopened = await Engine.open(cfg)
        try:
            assert reopened.image_encoder.beta == rep.image_blend["beta"] and not reopened.image_blend_pending
        finally:
            await reopened.close()

    asyncio.run(main())
