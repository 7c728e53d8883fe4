"""`kuamo align --finetune` on a small real subset: the file it writes carries the backbone delta, fuses into
the image ONNX graph with the tuned network's outputs, and is named in the manifest so a later head-only
`kuamo align` can refuse features from a tower it cannot rebuild."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

pytestmark = pytest.mark.models


@pytest.fixture(scope="module")
def tuned_file(model_dir: Path, fashion_dir: Path, tmp_path_factory) -> tuple[Path, dict]:
    from kuamo.export.align_finetune import run_finetune
    from kuamo.export.finetune import FinetuneRecipe

    out = tmp_path_factory.mktemp("tuned") / "head.npz"
    recipe = FinetuneRecipe(epochs=1, stop_epoch=None, batch=16, hidden=32)
    card = run_finetune(catalog=fashion_dir, model_dir=model_dir, out=out, recipe=recipe, limit=120,
                        cache_dir=out.parent / "cache", progress=lambda _m: None)
    return out, card


def test_card_and_file(tuned_file) -> None:
    from kuamo.export.tuned_backbone import backbone_arrays

    path, card = tuned_file
    written = json.loads(path.with_name("align.json").read_text())
    assert written["recipe"] == card["recipe"] and written["data"] == card["data"]
    assert written["metrics_held_out"]["known_item"] == card["metrics_held_out"]["known_item"]
    assert card["recipe"]["epochs"] == 1 and card["history"][0]["epoch"] == 1
    assert card["data"]["train"] + card["data"]["held_out"] == 120
    assert 0 <= card["metrics_held_out"]["known_item"]["R@10"] <= 100
    assert len(backbone_arrays(path)) == 2 * 147  # q + scale for every tuned tensor


def test_tuned_file_fuses_into_onnx(tuned_file, model_dir: Path, fashion_dir: Path, tmp_path: Path) -> None:
    from kuamo.engine.artifacts import TowerArtifact
    from kuamo.engine.config import EncoderConfig
    from kuamo.engine.encoders import ImageEncoder
    from kuamo.engine.imaging import ImagePreprocess
    from kuamo.export.align import tuned_base
    from kuamo.export.image_tower import export_image_tower, load_photos
    from kuamo.export.pipeline import write_manifest
    from kuamo.export.samples import load_fashion
    from kuamo.export.tuned_backbone import backbone_arrays, delta_digest, load_tuned, tower_outputs

    path, _ = tuned_file
    backbone, head = load_tuned(path)
    delta = backbone_arrays(path)
    spec = export_image_tower(tmp_path, head=head, int8=False, backbone_delta=delta, progress=lambda _m: None,
                              head_card={"head_path": str(path)})
    assert spec["source"]["finetuned"]["delta_sha256"] == delta_digest(delta)
    assert spec["parity"]["fp32_vs_torch_embedding"]["cosine_min"] >= 0.9999
    items = load_fashion(fashion_dir)[200:216]
    enc = ImageEncoder.from_tower(TowerArtifact("image", tmp_path / "image.onnx", "fp32", spec), EncoderConfig())
    got = enc.encode([it.image_path.read_bytes() for it in items])
    feats, logits = tower_outputs(backbone, load_photos(items, ImagePreprocess()))
    with torch.no_grad():
        want = head(torch.from_numpy(feats), torch.from_numpy(logits)).numpy()
    assert (got * want).sum(1).min() > 0.999
    # stage 2 (`kuamo align` on this export) finds the delta again through the file it was exported from
    text = json.loads((model_dir / "manifest.json").read_text())["towers"]["text"]
    for name in {*text["files"].values(), text["tokenizer"]}:
        (tmp_path / name).symlink_to((model_dir / name).resolve())
    write_manifest(tmp_path, {"text": text, "image": spec})
    assert delta_digest(tuned_base(tmp_path)) == delta_digest(delta)
    # the delta really moved the exported network: the same head on the pretrained backbone (torch, no second
    # export) lands far from the ONNX output (measured: mean cosine 0.72 with this 120-photo recipe)
    from kuamo.export.effnet_lite import load_pretrained

    plain, _ = load_pretrained()
    feats, logits = tower_outputs(plain.eval(), load_photos(items, ImagePreprocess()))
    with torch.no_grad():
        untuned = head(torch.from_numpy(feats), torch.from_numpy(logits)).numpy()
    assert (got * untuned).sum(1).mean() < 0.99


def test_head_only_align_refuses_a_tower_it_cannot_rebuild(model_dir: Path, tmp_path: Path) -> None:
    from kuamo.engine.artifacts import ModelArtifacts
    from kuamo.export.align import tuned_base
    from kuamo.export.align_head import default_head_path
    from kuamo.export.tuned_backbone import backbone_arrays, delta_digest

    manifest = json.loads((model_dir / "manifest.json").read_text())
    manifest["towers"]["image"]["source"]["finetuned"] = {"delta_sha256": "0" * 16}
    fake = tmp_path / "models"
    fake.mkdir()
    for name in manifest["files"]:
        (fake / name).symlink_to((model_dir / name).resolve())
    (fake / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="found neither in the file"):
        tuned_base(fake)
    # the real export: the shipped delta when it was exported fine-tuned, nothing for a pretrained tower
    shipped = backbone_arrays(default_head_path())
    finetuned = "finetuned" in ModelArtifacts(model_dir).towers["image"]["source"]
    assert delta_digest(tuned_base(model_dir)) == delta_digest(shipped if finetuned else {})
