"""Alignment: the split is stable, the head round-trips, and a head trained on a small real subset fuses
into the image ONNX graph with the same outputs as in PyTorch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from kuamo.engine.trained_products import TrainedProducts, product_keys  # noqa: E402
from kuamo.evaluation.split import is_held_out  # noqa: E402
from kuamo.export.align import Recipe, template, train_head  # noqa: E402
from kuamo.export.align_head import TRAINED_KEYS, AlignHead, HeadShape  # noqa: E402


def test_split_is_stable_and_about_ten_percent() -> None:
    ids = range(10_000, 30_000)
    held = [is_held_out(i) for i in ids]
    assert held == [is_held_out(str(i)) for i in ids]  # same for int and str ids
    assert 0.08 < np.mean(held) < 0.12


def test_template_text() -> None:
    assert template({"baseColour": "Navy Blue", "articleType": "Shirts", "gender": "Men"}) == \
        "a photo of navy blue Shirts for men"
    assert template({"articleType": "Watches"}) == "a photo of Watches"


def test_head_roundtrip_keeps_outputs(tmp_path: Path) -> None:
    head = AlignHead(HeadShape(hidden=32), alpha=0.7).eval()
    head.class_text.normal_()
    f, lg = torch.rand(5, 1280), torch.randn(5, 1000)
    path = tmp_path / "h.npz"
    head.save(path)
    again = AlignHead.load(path)
    a, b = head(f, lg).detach().numpy(), again(f, lg).detach().numpy()
    assert a.shape == (5, 384) and np.allclose(np.linalg.norm(a, axis=1), 1, atol=1e-5)
    assert (a * b).sum(1).min() > 0.999  # int8 weight rows, fp16 buffers
    assert float(again.alpha) == pytest.approx(0.7, abs=1e-3)
    assert again.centroids is None and again.near_cosine is None  # older head files still load
    assert again.trained_keys is None


def test_head_file_carries_the_training_centroids(tmp_path: Path) -> None:
    """The label-free blend criterion's centroids travel in the head file (strict state-dict load still
    passes) and are unit rows of the pooled features' space."""
    from kuamo.export.centroids import training_centroids

    rng = np.random.default_rng(0)
    blobs = np.abs(rng.standard_normal((4, 1280))).astype(np.float32)
    feats = blobs[rng.integers(0, 4, 400)] + 0.01 * rng.random((400, 1280)).astype(np.float32)
    cen = training_centroids(feats, k=8)  # more centroids than blobs: k-means cannot merge two of them
    assert cen.shape == (8, 1280) and np.allclose(np.linalg.norm(cen.astype(np.float32), axis=1), 1, atol=1e-2)
    unit = blobs / np.linalg.norm(blobs, axis=1, keepdims=True)
    assert (unit @ cen.astype(np.float32).T).max(axis=1).min() > 0.99  # every blob found
    head = AlignHead(HeadShape(hidden=32)).eval()
    keys = product_keys([(1, "Blue Shirt"), ("sku-2", "Red Dress")])
    head.save(tmp_path / "h.npz", extra={"centroids": cen, "near_cosine": np.float32(0.75), TRAINED_KEYS: keys})
    again = AlignHead.load(tmp_path / "h.npz")
    assert np.allclose(again.centroids, cen.astype(np.float32)) and again.near_cosine == pytest.approx(0.75)
    assert again.trained_keys.dtype == np.uint64 and TrainedProducts(again.trained_keys).holds("sku-2", "Red Dress")


def test_near_cosine_is_what_most_unseen_products_reach() -> None:
    """near_cosine = the 5th percentile of unseen photos' best cosine to a centroid: 95 of 100 photos of the
    training kind count as near, and photos off every centroid do not."""
    from kuamo.export.centroids import near_cosine

    rng = np.random.default_rng(1)
    cen = np.eye(4, 64, dtype=np.float32)
    spread = np.linspace(0.0, 1.0, 100)  # off-axis weight: best cosine falls from 1 to 1/sqrt(2)
    unseen = cen[rng.integers(0, 4, 100)] + spread[:, None] * np.eye(64, dtype=np.float32)[10]
    near = near_cosine(unseen, cen)
    best = (unseen / np.linalg.norm(unseen, axis=1, keepdims=True) @ cen.T).max(axis=1)
    assert (best >= near).sum() == 95 and 0.7 < near < 0.75
    with pytest.raises(ValueError, match="at least one product"):
        near_cosine(np.zeros((0, 64), np.float32), cen)


def test_training_separates_pairs_on_synthetic_data() -> None:
    rng = np.random.default_rng(0)
    n, d = 600, 384
    targets = rng.standard_normal((n, d)).astype(np.float32)
    targets /= np.linalg.norm(targets, axis=1, keepdims=True)
    mix = rng.standard_normal((d, 1280)).astype(np.float32)
    feats = np.maximum(targets @ mix, 0).astype(np.float32)  # features that carry the target
    logits = rng.standard_normal((n, 1000)).astype(np.float32)
    head = train_head(feats, logits, targets, np.arange(n), Recipe(hidden=128, epochs=15, batch=128),
                      np.zeros((1000, d), np.float32), progress=lambda _m: None)
    with torch.no_grad():
        emb = head(torch.from_numpy(feats), torch.from_numpy(logits)).numpy()
    r1 = ((emb @ targets.T).argmax(axis=1) == np.arange(n)).mean()
    assert r1 > 0.5  # chance is 1/600


@pytest.mark.models
def test_head_fuses_into_image_onnx(model_dir: Path, fashion_dir: Path, tmp_path: Path) -> None:
    from kuamo.engine.artifacts import TowerArtifact
    from kuamo.engine.config import EncoderConfig
    from kuamo.engine.encoders import ImageEncoder
    from kuamo.export.align import extract_features, tuned_base
    from kuamo.export.image_tower import export_image_tower
    from kuamo.export.samples import load_fashion

    items = load_fashion(fashion_dir)[:240]
    data = extract_features(items, model_dir, tmp_path / "cache", progress=lambda _m: None)
    assert data["features"].shape == (240, 1280) and data["title"].shape == (240, 384)
    head = train_head(data["features"], data["logits"], data["title"], np.arange(240),
                      Recipe(hidden=64, epochs=8, batch=64), np.zeros((1000, 384), np.float32),
                      progress=lambda _m: None)
    # features came from the exported tower: fuse onto the same backbone (the shipped delta when fine-tuned)
    spec = export_image_tower(tmp_path, head=head, int8=False, progress=lambda _m: None,
                              backbone_delta=tuned_base(model_dir) or None)
    assert spec["embedding_output"] == "embedding" and spec["dim"] == 384
    assert spec["parity"]["fp32_vs_torch_embedding"]["cosine_min"] >= 0.9999
    enc = ImageEncoder.from_tower(TowerArtifact("image", tmp_path / "image.onnx", "fp32", spec), EncoderConfig())
    photos = [it.image_path.read_bytes() for it in items[:32]]
    emb = enc.encode(photos)
    with torch.no_grad():
        ref = head(torch.from_numpy(data["features"][:32]), torch.from_numpy(data["logits"][:32])).numpy()
    assert (emb * ref).sum(1).min() > 0.999
    # the fused tower still exposes the raw pooled features for image->image search
    assert enc.encode_outputs(photos[:2], ["features"])["features"].shape == (2, 1280)


def test_shipped_files_fashion_tuned_by_default_and_generic_on_request() -> None:
    from kuamo.export.pipeline import _alignment_head
    from kuamo.export.tuned_backbone import delta_digest

    head, card, delta = _alignment_head(None)
    assert head is not None and delta  # the default carries the fine-tuned backbone
    assert card["head_file"] == "align_head.npz"
    assert card["backbone"]["delta_sha256"] == delta_digest(delta)  # the card names the delta it ships with
    assert card["backbone"]["stage1"]["recipe"]["lr_backbone"] > 0  # and how stage 1 made it
    generic, gcard, gdelta = _alignment_head(Path("generic"))
    assert generic is not None and gdelta is None  # head only: the pretrained backbone stays
    assert "kind" not in gcard and gcard["recipe"]["alpha"] == pytest.approx(0.6)
    with pytest.raises(FileNotFoundError, match="kuamo align"):
        _alignment_head(Path("/nonexistent/head.npz"))


def _synthetic(n: int = 300, d: int = 384) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    targets = rng.standard_normal((n, d)).astype(np.float32)
    targets /= np.linalg.norm(targets, axis=1, keepdims=True)
    feats = np.maximum(targets @ rng.standard_normal((d, 1280)).astype(np.float32), 0).astype(np.float32)
    return feats, rng.standard_normal((n, 1000)).astype(np.float32), targets


def test_adapting_keeps_the_start_head_when_validation_never_improves() -> None:
    """Early stopping on a validation score: a head that only gets worse stops after `patience` epochs and
    comes back as the head it started from (nothing memorised is kept)."""
    from kuamo.export.align import AdaptRecipe

    feats, logits, targets = _synthetic()
    start = AlignHead(HeadShape(hidden=32), alpha=0.7).eval()
    scores = iter([50.0, 49.0, 48.0, 47.0, 46.0, 45.0])
    history: list[dict] = []
    head = train_head(feats, logits, targets, np.arange(300), AdaptRecipe(epochs=10, batch=100, patience=3),
                      np.zeros((1000, 384), np.float32), progress=lambda _m: None, init=start,
                      teacher=targets, validate=lambda _h: next(scores), history=history)
    assert [h["epoch"] for h in history] == [0, 1, 2, 3] and head.best_epoch == 0
    for k, v in start.state_dict().items():
        assert torch.equal(head.state_dict()[k], v), k
    assert float(head.alpha) == pytest.approx(0.7)  # AdaptRecipe keeps the start head's blend


def test_adapting_keeps_a_later_epoch_only_above_the_noise_margin() -> None:
    from kuamo.export.align import AdaptRecipe

    feats, logits, targets = _synthetic()
    scores = iter([50.0, 50.3, 52.0, 51.0, 50.0])
    head = train_head(feats, logits, targets, np.arange(300), AdaptRecipe(epochs=4, batch=100, patience=5),
                      np.zeros((1000, 384), np.float32), progress=lambda _m: None,
                      init=AlignHead(HeadShape(hidden=32)).eval(), teacher=targets, validate=lambda _h: next(scores))
    assert head.best_epoch == 2  # +0.3 at epoch 1 is under min_gain (0.5), +2.0 at epoch 2 is not


def test_templates_come_from_the_catalog_own_values() -> None:
    from kuamo.export.align import leaf_templates
    from kuamo.export.catalog_items import CatalogItem

    vocab = {"articleType": {"Watches": "手表"}, "baseColour": {"Black": "黑色"}, "gender": {"Men": "男士"}}
    items = [CatalogItem("a1", "Titan Black Watch", Path("x.jpg"), "Accessories/Watches/Watches",
                         {"colour": "Black", "gender": "Men"}),
             CatalogItem("b2", "Non-stick pan", Path("y.jpg"), "Home/Kitchen/Pans", {}),
             CatalogItem("c3", "Mystery", Path("z.jpg"), "", {})]
    en, zh = leaf_templates(items, vocab)
    assert en == ["a photo of black Watches for men", "a photo of Pans", ""]
    assert zh == ["男士黑色手表", "", ""]  # no Chinese name for "Pans": no Chinese template, never an empty text


def test_head_calibration_cli_names_a_missing_head_or_model_set(tmp_path: Path, capsys) -> None:
    from kuamo.export.centroids import main

    for argv, says in ((["--head", str(tmp_path / "none.npz"), "--models", str(tmp_path)], "is not a head file"),
                       (["--head", __file__, "--models", str(tmp_path)], "has no manifest.json")):
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 2 and says in capsys.readouterr().err
