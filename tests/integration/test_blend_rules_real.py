"""The blend rules over the real towers on a 140-product slice of the fashion catalog: a 30-photo trial run
chooses provisionally, the full slice chooses again, --image-blend 0 re-embeds the catalog, and a photo
collection (no titles, no categories) is judged label-free or, without centroids, keeps the tuned vector."""

from __future__ import annotations

import asyncio
import csv
import dataclasses
from pathlib import Path

import pytest

from kuamo.engine.engine import Engine, EngineConfig
from kuamo.engine.ingest import aindex_catalog
from kuamo.engine.types import Query
from kuamo.engine.vector_provenance import ENCODERS_META
from kuamo.engine.zero_shot_blend import MIN_SAMPLE, REGROW

pytestmark = pytest.mark.models


def _slice(fashion_dir: Path, out: Path, n: int, *, photo_only: bool = False) -> Path:
    with open(fashion_dir / "products.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    rows = rows[:: len(rows) // n][:n]
    if photo_only:  # a photo collection: ids and photos, nothing to measure a blend by
        rows = [{"id": r["id"], "image": f"images/{r['id']}.jpg"} for r in rows]
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return out


def test_trial_run_then_full_slice_then_set_blend(tmp_path, model_dir, fashion_dir) -> None:
    path = _slice(fashion_dir, tmp_path / "cat" / "products.csv", 140)
    cfg = EngineConfig(model_dir=model_dir, data_dir=tmp_path / "data", allow_stale_vectors=True)

    async def main() -> None:
        eng = await Engine.open(cfg)
        try:
            trial = await aindex_catalog(path, eng, limit=30, progress=False, image_root=fashion_dir)
            assert trial.image_blend["photos"] == 30 and trial.image_blend["provisional"]
            assert 140 >= REGROW * 30 and eng.image_blend_pending
            full = await aindex_catalog(path, eng, progress=False, image_root=fashion_dir)
            assert full.image_blend["photos"] == 140 and not full.image_blend["provisional"]
            changed = full.image_blend["beta"] != 1.0
            assert full.accepted == (140 if changed else 110) and full.stale_left == 0
            assert not eng.image_blend_pending and eng.store.get_meta(ENCODERS_META) == eng.fingerprint
        finally:
            await eng.close()
        eng = await Engine.open(dataclasses.replace(cfg, image_blend=0.0))
        try:
            rep = await aindex_catalog(path, eng, progress=False, image_root=fashion_dir)
            assert rep.image_blend["source"] == "set" and rep.stale and rep.accepted == 140 and rep.stale_left == 0
        finally:
            await eng.close()
        served = await Engine.open(EngineConfig(model_dir=model_dir, data_dir=tmp_path / "data"))  # not stale
        try:
            assert served.image_encoder.beta == 0.0
            probe = (await served.get(served.store.ids()[7].item()))
            photo = (fashion_dir / "images" / f"{probe.id}.jpg").read_bytes()
            assert probe.id in [h.id for h in (await served.search(Query(image=photo, k=3))).hits]
        finally:
            await served.close()

    asyncio.run(main())


def test_photo_collection_is_judged_without_labels(tmp_path, model_dir, fashion_dir) -> None:
    path = _slice(fashion_dir, tmp_path / "photos" / "photos.csv", MIN_SAMPLE + 10, photo_only=True)

    async def main() -> None:
        eng = await Engine.open(EngineConfig(model_dir=model_dir, data_dir=tmp_path / "data"))
        try:
            rep = await aindex_catalog(path, eng, progress=False, image_root=fashion_dir)
            choice = rep.image_blend
            assert choice["photos"] == MIN_SAMPLE + 10 and rep.accepted == MIN_SAMPLE + 10
            if getattr(eng.image_encoder, "centroids", None) is None:
                assert choice["beta"] == 1.0 and "image_centroids" in choice["reason"]
            else:  # fashion photos lie near the training photos: the tuned vector stays
                assert choice["beta"] == 1.0 and "label_free" in choice["scores"]["1.0"]
        finally:
            await eng.close()

    asyncio.run(main())
