"""A catalog remembers which encoders made its vectors: opened with other models (a re-export with new
weights) it is refused with a message naming the fix, and `kuamo index` re-embeds it, after which the new
models serve it and its own titles find its products again."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from fake_encoders import FakeImageEncoder, FakeTextEncoder
from test_ingest import write_generic_csv

from kuamo.engine.artifacts import ArtifactError
from kuamo.engine.engine import Engine, EngineConfig
from kuamo.engine.ingest import index_catalog
from kuamo.engine.product_encoder import encoder_fingerprint as _encoder_fingerprint
from kuamo.engine.types import Product, Query
from kuamo.engine.vector_provenance import ENCODERS_META


class RetrainedText(FakeTextEncoder):
    """Same file name, new weights: every vector moves (here: the dimensions are rolled)."""

    fingerprint = "fake-text-v2"

    def encode(self, texts, kind="query"):
        return np.roll(super().encode(texts, kind), 3, axis=1)


def open_engine(tmp_path: Path, text=None, **cfg) -> Engine:
    return Engine(EngineConfig(data_dir=tmp_path / "data", **cfg), text_encoder=text or FakeTextEncoder(),
                  image_encoder=FakeImageEncoder())


def test_new_models_are_refused_until_the_catalog_is_re_embedded(tmp_path) -> None:
    path = write_generic_csv(tmp_path / "cat")
    eng = open_engine(tmp_path)
    index_catalog(path, engine=eng, progress=False)
    assert eng.store.get_meta(ENCODERS_META) == eng.fingerprint
    eng.store.close()

    with pytest.raises(ArtifactError) as e:
        open_engine(tmp_path, RetrainedText())
    assert e.value.field == "data_dir" and "kuamo index" in str(e.value) and "fake-text-v1" in str(e.value)

    eng2 = open_engine(tmp_path, RetrainedText(), allow_stale_vectors=True)
    assert eng2.stale_vectors is not None and "fake-text-v1" in eng2.stale_vectors
    rep = index_catalog(path, engine=eng2, progress=False)
    assert rep.unchanged == 0 and rep.accepted == 3  # every product re-embedded, none skipped as unchanged
    assert rep.stale and rep.stale_left == 0 and eng2.stale_vectors is None
    hit = asyncio.run(eng2.search(Query(text="blue jeans", k=1))).hits[0]
    assert hit.id == 2
    eng2.store.close()
    open_engine(tmp_path, RetrainedText()).store.close()  # now recorded as made by the new models


def test_products_not_in_the_file_keep_the_catalog_stale(tmp_path) -> None:
    path = write_generic_csv(tmp_path / "cat")
    eng = open_engine(tmp_path)
    index_catalog(path, engine=eng, progress=False)
    asyncio.run(eng.upsert([Product(id=99, title="green hat", category="Apparel/Hats")]))  # not in the file
    eng.store.close()
    eng2 = open_engine(tmp_path, RetrainedText(), allow_stale_vectors=True)
    rep = index_catalog(path, engine=eng2, progress=False)
    assert rep.stale_left == 1 and eng2.stale_vectors is not None
    eng2.store.close()
    with pytest.raises(ArtifactError):
        open_engine(tmp_path, RetrainedText())


def test_a_catalog_without_a_record_is_refused(tmp_path) -> None:
    eng = open_engine(tmp_path)
    asyncio.run(eng.upsert([Product(id=1, title="red shirt", category="Apparel")]))
    eng.store.close()
    with sqlite3.connect(tmp_path / "data" / "catalog.sqlite") as con:  # as an older kuamo left it
        con.execute("DELETE FROM meta WHERE key = ?", (ENCODERS_META,))
    with pytest.raises(ArtifactError, match="no record of the models"):
        open_engine(tmp_path)


def test_an_empty_catalog_takes_any_models(tmp_path) -> None:
    open_engine(tmp_path).store.close()
    eng = open_engine(tmp_path, RetrainedText())
    assert eng.stale_vectors is None and eng.store.get_meta(ENCODERS_META) == eng.fingerprint
    eng.store.close()


def test_the_fingerprint_of_a_real_tower_includes_its_weights(tmp_path) -> None:
    from kuamo.engine.artifacts import TowerArtifact

    class Enc:
        dim = 8

        def __init__(self, sha: str) -> None:
            self.tower = TowerArtifact(name="text", model_path=Path("text.int8.onnx"), precision="int8",
                                       spec={"dim": 8}, sha256=sha)

    assert _encoder_fingerprint(Enc("a" * 64)) != _encoder_fingerprint(Enc("b" * 64))
