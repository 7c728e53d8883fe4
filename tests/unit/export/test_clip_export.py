"""`kuamo export --clip`: a tiny random CLIP, built offline with a CLIP-style tokenizer, exported as two
towers that the runtime serves with the same embeddings as PyTorch."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from PIL import Image  # noqa: E402
from tokenizers import Tokenizer, models, pre_tokenizers, processors  # noqa: E402

from kuamo.engine.artifacts import ModelArtifacts  # noqa: E402
from kuamo.engine.config import EncoderConfig  # noqa: E402
from kuamo.engine.encoders import ImageEncoder, TextEncoder  # noqa: E402
from kuamo.export.pipeline import run_export  # noqa: E402

WORDS = "a photo of the red blue dress shoes watch bag with steel strap for men women".split()


def _tokenizer() -> Tokenizer:
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1, "<unk>": 2, **{w: i + 3 for i, w in enumerate(WORDS)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        single="<|startoftext|> $A <|endoftext|>", special_tokens=[("<|startoftext|>", 0), ("<|endoftext|>", 1)])
    return tok


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    from transformers import CLIPConfig, CLIPModel

    ckpt = tmp_path_factory.mktemp("tiny-clip")
    torch.manual_seed(0)
    cfg = CLIPConfig(
        text_config={"vocab_size": len(WORDS) + 3, "hidden_size": 32, "intermediate_size": 64,
                     "num_hidden_layers": 2, "num_attention_heads": 2, "max_position_embeddings": 32,
                     "bos_token_id": 0, "eos_token_id": 1, "pad_token_id": 1},
        vision_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                       "num_attention_heads": 2, "image_size": 32, "patch_size": 8},
        projection_dim=16)
    model = CLIPModel(cfg).eval()
    model.save_pretrained(ckpt)
    _tokenizer().save(str(ckpt / "tokenizer.json"))
    (ckpt / "preprocessor_config.json").write_text(json.dumps({"image_mean": [0.5] * 3, "image_std": [0.5] * 3}))
    out = tmp_path_factory.mktemp("clip-models")
    run_export(out, clip=ckpt, progress=lambda _msg: None)
    return out, model


def test_manifest_has_both_towers_with_parity(exported) -> None:
    out, _ = exported
    towers = ModelArtifacts(out).towers
    for name in ("text", "image"):
        spec = towers[name]
        assert spec["dim"] == 16 and spec["source"]["kind"] == "clip"
        assert spec["parity"]["fp32_vs_torch"]["cosine_min"] >= 0.9999
        assert spec["serve"] in ("fp32", "int8") and "int8_vs_fp32" in spec["parity"]


def test_int8_towers_have_fixed_activation_scales_and_are_batch_invariant(exported) -> None:
    import onnx

    out, _ = exported
    towers = ModelArtifacts(out).towers
    for name in ("text", "image"):
        spec = towers[name]
        graph = onnx.load(str(out / spec["files"]["int8"])).graph
        ops = {n.op_type for n in graph.node}
        assert "DynamicQuantizeLinear" not in ops and "QuantizeLinear" in ops, name
        assert spec["quantization"]["calibration"]["items"] > 0
        measured = spec["batch_invariance"][spec["serve"]]
        assert measured["items"] >= 200 and measured["cosine_min"] >= 0.99999, (name, measured)


def test_text_embeddings_match_torch_on_a_padded_batch(exported) -> None:
    out, model = exported
    enc = TextEncoder(ModelArtifacts(out), EncoderConfig(precision="fp32"))
    texts = ["a photo of a red dress for women", "shoes", "watch with steel strap"]
    ours = enc.encode(texts, kind="query")
    with torch.no_grad():
        for text, vec in zip(texts, ours, strict=True):
            ids = torch.tensor(enc.tokenize([text], "query"))  # CLIP has no query prefix
            ref = model.get_text_features(input_ids=ids)[0].numpy()
            assert float(vec @ (ref / np.linalg.norm(ref))) >= 0.999


def test_image_embedding_matches_torch(exported) -> None:
    out, model = exported
    enc = ImageEncoder(ModelArtifacts(out), EncoderConfig(precision="fp32"))
    img = Image.new("RGB", (48, 40), (200, 30, 30))
    ours = enc.encode([img])[0]
    with torch.no_grad():
        ref = model.get_image_features(pixel_values=torch.from_numpy(enc.load(img))[None])[0].numpy()
    assert ours.shape == (16,) and float(ours @ (ref / np.linalg.norm(ref))) >= 0.999


def test_missing_tokenizer_is_a_clear_error(tmp_path: Path) -> None:
    from transformers import CLIPConfig, CLIPModel

    cfg = CLIPConfig(text_config={"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
                                  "num_attention_heads": 2, "vocab_size": 50},
                     vision_config={"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
                                    "num_attention_heads": 2, "image_size": 16, "patch_size": 8},
                     projection_dim=8)
    CLIPModel(cfg).save_pretrained(tmp_path / "ckpt")
    with pytest.raises(FileNotFoundError, match=r"tokenizer\.json"):
        run_export(tmp_path / "out", clip=tmp_path / "ckpt", progress=lambda _m: None)
