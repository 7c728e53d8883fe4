"""The exported image tower (models/default) through the runtime ImageEncoder, on real fashion photos:
parity with PyTorch, sensible ImageNet classes, footwear neighbours, INT8 agreement, bad input."""

from __future__ import annotations

import io
import random
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from kuamo.engine.artifacts import ModelArtifacts
from kuamo.engine.config import EncoderConfig
from kuamo.engine.encoders import ImageEncoder
from kuamo.engine.errors import InvalidInput
from kuamo.export.samples import FashionItem, load_fashion, packaged_lines

pytestmark = pytest.mark.models


@pytest.fixture(scope="module")
def artifacts(model_dir: Path) -> ModelArtifacts:
    art = ModelArtifacts(model_dir)
    if "image" not in art.towers:
        pytest.skip(f"{model_dir} has no image tower")
    return art


@pytest.fixture(scope="module")
def encoder(artifacts: ModelArtifacts) -> ImageEncoder:
    return ImageEncoder(artifacts, EncoderConfig(precision="fp32"))


@pytest.fixture(scope="module")
def catalog(fashion_dir: Path) -> list[FashionItem]:
    return load_fashion(fashion_dir)


@pytest.fixture(scope="module")
def by_type(catalog: list[FashionItem]) -> dict[str, list[FashionItem]]:
    groups: dict[str, list[FashionItem]] = defaultdict(list)
    for item in catalog:
        groups[item.attrs["articleType"]].append(item)
    return groups


def _photos(items: list[FashionItem]) -> list[bytes]:
    return [it.image_path.read_bytes() for it in items]


def test_fp32_onnx_matches_pytorch_on_real_photos(encoder: ImageEncoder, catalog: list[FashionItem],
                                                  model_dir: Path) -> None:
    torch = pytest.importorskip("torch")
    from kuamo.export.image_tower import exported_torch_tower

    items = random.Random(11).sample(catalog, 16)
    photos = _photos(items)
    tower = exported_torch_tower(model_dir)  # the fine-tuned backbone and fused head when the export has them
    names = tower.output_names
    got = encoder.encode_outputs(photos, names)
    with torch.no_grad():
        x = torch.from_numpy(np.stack([encoder.load(p) for p in photos]))  # the runtime's own preprocessing
        refs = [t.numpy() for t in tower(x)]
    for name, ref in zip(names, refs, strict=True):
        out = got[name]
        cos = (ref * out).sum(1) / np.linalg.norm(ref, axis=1) / np.linalg.norm(out, axis=1)
        assert cos.min() >= 0.9999


def test_zero_shot_map_matches_the_fused_head(encoder: ImageEncoder, catalog: list[FashionItem],
                                              model_dir: Path) -> None:
    """The map exported beside the graph is the head's own class-text buffer: from the runtime's logits the
    engine's (centred) zero-shot vectors match the head's, and beta 1 is the exported embedding."""
    torch = pytest.importorskip("torch")
    from kuamo.export.image_tower import exported_torch_tower

    if encoder.zero_shot is None:
        pytest.skip("this export has no zero-shot map")
    head = exported_torch_tower(model_dir).head
    photos = _photos(random.Random(12).sample(catalog, 8))
    outs = encoder.encode_outputs(photos, ["logits", "embedding"])
    with torch.no_grad():
        # the engine's map is the head's class-text buffer, centred (ZeroShotMap)
        text = head.class_text - head.class_text.mean(dim=0, keepdim=True)
        ref = torch.nn.functional.normalize(torch.softmax(torch.from_numpy(outs["logits"]), dim=1) @ text, dim=1)
    got = encoder.zero_shot.vectors(outs["logits"])
    assert ((ref.numpy() * got).sum(1)).min() >= 0.999  # fp16 map vs the fp32 buffer
    assert np.allclose(encoder.zero_shot.blend(outs["embedding"], outs["logits"], 1.0),
                       outs["embedding"] / np.linalg.norm(outs["embedding"], axis=1, keepdims=True), atol=1e-6)


@pytest.mark.parametrize(("article", "expected"), [
    ("Watches", {"analog clock", "digital watch", "stopwatch", "wall clock", "digital clock", "magnetic compass"}),
    ("Sports Shoes", {"running shoe", "Loafer", "clog", "sandal", "cowboy boot"}),
    ("Sunglasses", {"sunglass", "sunglasses"}),
])
def test_imagenet_classes_are_sensible(encoder: ImageEncoder, by_type: dict, article: str, expected: set) -> None:
    names = packaged_lines("imagenet_classes.txt")
    assert len(names) == 1000
    items = by_type[article][:10]
    logits = encoder.encode_outputs(_photos(items), ["logits"])["logits"]
    predicted = [names[i] for i in logits.argmax(1)]
    assert sum(p in expected for p in predicted) >= 7, predicted


def test_shoe_neighbours_by_features_are_mostly_footwear(encoder: ImageEncoder, catalog: list[FashionItem]) -> None:
    items = random.Random(5).sample(catalog, 200)
    feats = encoder.encode(_photos(items), output="features")
    footwear = np.array([it.attrs["masterCategory"] == "Footwear" for it in items])
    shoes = [i for i, it in enumerate(items) if it.attrs["articleType"] in ("Sports Shoes", "Casual Shoes")]
    assert len(shoes) >= 5 and footwear.mean() < 0.4  # the sample really is mixed
    hits = []
    for q in shoes[:8]:
        scores = feats @ feats[q]
        scores[q] = -np.inf
        hits.extend(footwear[np.argsort(-scores)[:5]])
    assert np.mean(hits) >= 0.7 and np.mean(hits) > 2 * footwear.mean()


def test_served_int8_agrees_with_fp32(artifacts: ModelArtifacts, encoder: ImageEncoder,
                                      catalog: list[FashionItem]) -> None:
    spec = artifacts.towers["image"]
    assert spec["parity"]["fp32_vs_torch"]["cosine_min"] >= 0.9999
    if "int8" not in spec["files"]:
        assert spec["serve"] == "fp32" and spec["serve_reason"]
        pytest.skip(f"no INT8 image model: {spec['serve_reason']}")
    assert spec["parity"]["int8_vs_fp32"]["passed"] and spec["parity"]["int8_vs_fp32"]["n"] >= 200
    int8 = ImageEncoder(artifacts, EncoderConfig(precision="int8"))
    photos = _photos(random.Random(23).sample(catalog, 48))
    name = spec["embedding_output"]
    cos = (int8.encode(photos, output=name) * encoder.encode(photos, output=name)).sum(1)
    assert cos.mean() >= 0.98 and cos.min() >= 0.9


def _big_png(pixels_over: int) -> bytes:
    side = int(pixels_over ** 0.5) + 1
    buf = io.BytesIO()
    Image.new("L", (side, side), 255).save(buf, format="PNG")  # one flat colour: a few KB, many pixels
    return buf.getvalue()


def test_bad_images_raise_invalid_input(encoder: ImageEncoder, catalog: list[FashionItem]) -> None:
    jpeg = catalog[0].image_path.read_bytes()
    bad = {
        "zero bytes": b"",
        "random bytes": random.Random(0).randbytes(2048),
        "truncated jpeg": jpeg[: len(jpeg) // 2],
        "png above the pixel limit": _big_png(encoder.cfg.max_image_pixels),
    }
    for what, data in bad.items():
        with pytest.raises(InvalidInput) as err:
            encoder.encode([data])
        assert err.value.field == "image", what
    assert encoder.encode([jpeg]).shape == (1, encoder.dim)  # the intact photo still encodes


@pytest.mark.parametrize("beta", ["0.5", -0.1, 1.5, True, None])
def test_bad_blend_is_invalid_input(encoder: ImageEncoder, beta: object) -> None:
    with pytest.raises(InvalidInput) as e:
        encoder.set_blend(beta)  # type: ignore[arg-type]
    assert e.value.field == "image_blend" and encoder.beta == 1.0


def test_gate_and_calibration_photos_are_disjoint_and_calibration_can_be_none(catalog: list[FashionItem]) -> None:
    from kuamo.engine.imaging import ImagePreprocess
    from kuamo.export.image_tower import gate_and_calibration_photos

    paths = [it.image_path for it in catalog[:12]]
    pre = ImagePreprocess()
    gate, calibration = gate_and_calibration_photos(8, 4, pre, photos=paths)
    assert gate.shape == (8, 3, pre.size, pre.size) and calibration.shape == (4, 3, pre.size, pre.size)
    assert not any(np.array_equal(g, c) for g in gate for c in calibration)
    only_gate, none = gate_and_calibration_photos(8, 0, pre, photos=paths)  # what an FP32-only export decodes
    assert only_gate.shape == (8, 3, pre.size, pre.size) and none.shape == (0, 3, pre.size, pre.size)
