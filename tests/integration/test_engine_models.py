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
