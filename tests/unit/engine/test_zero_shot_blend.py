"""Per-catalog blend with the zero-shot map: the choice itself, and the engine fixing it once per catalog."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence

import numpy as np
import pytest
from fake_encoders import DIM, FakeImageEncoder, FakeTextEncoder, png, word_vec

from kuamo.engine.engine import Engine, EngineConfig
from kuamo.engine.errors import ArtifactError, InvalidInput
from kuamo.engine.product_encoder import encoder_fingerprint
from kuamo.engine.types import Product
from kuamo.engine.vector_provenance import BLEND_META
from kuamo.engine.zero_shot_blend import (
    BETAS,
    FAR_BETA,
    MARGIN,
    MIN_SAMPLE,
    NEAR_COSINE_FALLBACK,
    ZeroShotMap,
    choose_beta,
    label_free_beta,
    near_share,
    parse_near_cosine,
)

KINDS = ["lamp", "kettle", "pillow", "towel", "candle", "mirror"]


def per_measure(scores: dict[str, float]) -> float:
    """What the margin is measured on: the mean of the measures a catalog has (category mAP, title R@10)."""
    return sum(scores.values()) / len(scores)


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def test_blend_endpoints_are_the_embedding_and_the_zero_shot_map() -> None:
    rng = np.random.default_rng(0)
    zs = ZeroShotMap(rng.standard_normal((7, DIM)).astype(np.float32))
    emb, logits = rng.standard_normal((4, DIM)).astype(np.float32), rng.standard_normal((4, 7)).astype(np.float32)
    assert np.allclose(zs.blend(emb, logits, 1.0), unit(emb), atol=1e-6)
    assert np.allclose(zs.blend(emb, logits, 0.0), zs.vectors(logits), atol=1e-6)
    assert np.allclose(np.linalg.norm(zs.blend(emb, logits, 0.5), axis=1), 1, atol=1e-5)


def test_the_map_is_centred_so_a_component_every_class_shares_changes_nothing() -> None:
    # the class names' text vectors share one large direction; the map takes it off (ZeroShotMap)
    rng = np.random.default_rng(1)
    class_text = rng.standard_normal((7, DIM)).astype(np.float32)
    shared = 5.0 * unit(rng.standard_normal(DIM)).astype(np.float32)
    logits = rng.standard_normal((4, 7)).astype(np.float32)
    plain, shifted = ZeroShotMap(class_text), ZeroShotMap(class_text + shared)
    assert np.allclose(plain.vectors(logits), shifted.vectors(logits), atol=1e-5)
    uncentred = unit(np.exp(logits) / np.exp(logits).sum(1, keepdims=True) @ (class_text + shared))
    assert (uncentred * shifted.vectors(logits)).sum(1).max() < 0.9  # the uncentred map was mostly that direction


def test_a_blended_catalogs_fingerprint_names_the_centred_map() -> None:
    enc = BlendableImageEncoder()
    assert "centred" not in encoder_fingerprint(enc)  # beta 1: the map is not used
    enc.set_blend(0.5)
    assert encoder_fingerprint(enc).endswith(":beta=0.5:centred")


def _catalog(n: int, informative: str, seed: int = 0):
    """n products of six kinds. The zero-shot map's classes are the kind names; `informative` says which
    signal knows the kind: the embedding ("embedding") or the logits ("zero_shot"); the other is noise."""
    rng = np.random.default_rng(seed)
    class_text = np.stack([unit(word_vec(k)) for k in KINDS])
    kinds = [KINDS[i % len(KINDS)] for i in range(n)]
    noise = rng.standard_normal((n, DIM)).astype(np.float32)
    true = np.stack([unit(word_vec(k)) for k in kinds]) + 0.3 * noise
    emb = true if informative == "embedding" else rng.standard_normal((n, DIM)).astype(np.float32)
    logits = np.zeros((n, len(KINDS)), np.float32)
    if informative == "zero_shot":
        logits[np.arange(n), [KINDS.index(k) for k in kinds]] = 8.0
    titles = true  # a title names the kind (and, through the noise, the product)
    return ZeroShotMap(class_text), emb, logits, titles, kinds


def encode_names(names: Sequence[str]) -> np.ndarray:
    return np.stack([unit(word_vec(n)) for n in names])


@pytest.mark.parametrize("informative, expected", [("embedding", 1.0), ("zero_shot", 0.0)])
def test_choice_follows_the_signal_that_knows_the_catalog(informative, expected) -> None:
    zs, emb, logits, titles, kinds = _catalog(120, informative)
    choice = choose_beta(zs, emb, logits, titles, kinds, encode_names)
    assert choice.beta == expected
    assert set(choice.scores) == set(BETAS) and "category_mAP" in choice.scores[1.0]
    chosen = per_measure(choice.scores[choice.beta])
    assert all(per_measure(s) < chosen + MARGIN for s in choice.scores.values())  # nothing beats it by the margin


def test_the_category_term_is_average_precision_over_the_whole_sample() -> None:
    """Each leaf name ranks every photo of the sample: its AP reads a 5-photo category's photos wherever they
    land (P@10, the term until stop 32, would cap it at 50 and ignore ranks 11 and below)."""
    zs, emb, logits, titles, kinds = _catalog(120, "embedding")
    choice = choose_beta(zs, emb, logits, titles, kinds, encode_names)
    names = sorted(set(kinds))
    relevant = np.asarray(kinds)[None, :] == np.asarray(names)[:, None]
    for beta in (1.0, 0.5, 0.0):
        s = encode_names(names) @ zs.blend(emb, logits, beta).T
        order = np.argsort(-s, axis=1, kind="stable")
        hits = np.take_along_axis(relevant, order, axis=1)
        ranks = [np.flatnonzero(h) + 1 for h in hits]  # 1-based ranks of each name's photos
        ap = np.mean([np.mean(np.arange(1, len(r) + 1) / r) for r in ranks]) * 100
        assert np.isclose(choice.scores[beta]["category_mAP"], ap)
    assert choice.scores[1.0]["category_mAP"] > 90 > choice.scores[0.0]["category_mAP"]


def test_photo_neighbours_of_the_same_category_are_measured_when_there_are_categories() -> None:
    zs, emb, logits, titles, kinds = _catalog(120, "embedding")
    choice = choose_beta(zs, emb, logits, titles, kinds, encode_names)
    v = zs.blend(emb, logits, 1.0)
    sims = v @ v.T
    np.fill_diagonal(sims, -np.inf)
    top = np.argsort(-sims, axis=1)[:, :10]
    labels = np.asarray(kinds)
    assert np.isclose(choice.scores[1.0]["photo_P@10"], (labels[top] == labels[:, None]).mean() * 100)
    # the embedding knows the kinds; the logits carry nothing (every zero-shot vector alike)
    assert choice.scores[1.0]["photo_P@10"] > 60 > 40 > choice.scores[0.0]["photo_P@10"]
    titles_only = choose_beta(zs, emb, logits, titles, [""] * 120, encode_names)
    assert set(titles_only.scores[1.0]) == {"title_R@10"}  # no categories: nothing to call a neighbour's


def test_a_gain_below_the_margin_keeps_the_exported_vector(monkeypatch) -> None:
    from kuamo.engine import zero_shot_blend

    zs, emb, logits, titles, kinds = _catalog(120, "zero_shot")
    choice = choose_beta(zs, emb, logits, titles, kinds, encode_names)
    totals = {b: per_measure(s) for b, s in choice.scores.items()}
    gain = totals[0.0] - totals[1.0]  # per measure: both measures' mean (their sum gains twice as much)
    assert choice.beta == 0.0 and gain >= zero_shot_blend.MARGIN and len(choice.scores[0.0]) == 3
    monkeypatch.setattr(zero_shot_blend, "MARGIN", gain + 1)  # the same gain, now under the margin
    assert choose_beta(zs, emb, logits, titles, kinds, encode_names).beta == 1.0


def test_too_small_a_sample_keeps_the_exported_vector_provisionally() -> None:
    zs, emb, logits, titles, kinds = _catalog(MIN_SAMPLE - 1, "zero_shot")
    choice = choose_beta(zs, emb, logits, titles, kinds, encode_names)
    assert choice.beta == 1.0 and not choice.scores and str(MIN_SAMPLE) in choice.reason and choice.provisional


def _features(n: int, near: bool, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Training centroids and a catalog's pooled features: `near` = each photo a small step from one
    centroid (the training goods again); far = directions the centroids do not cover."""
    rng = np.random.default_rng(seed)
    centroids = np.abs(rng.standard_normal((16, 64))).astype(np.float32)  # pooled features are >= 0
    if near:
        return centroids, centroids[rng.integers(0, 16, n)] + 0.1 * np.abs(rng.standard_normal((n, 64)))
    far = np.zeros((n, 64), np.float32)
    far[np.arange(n), rng.integers(0, 64, n)] = 1.0  # one-hot: cosine to any dense centroid is low
    return centroids, far + 0.05 * np.abs(rng.standard_normal((n, 64)))


def _max_cosines(feats: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    f, c = feats / np.linalg.norm(feats, axis=1, keepdims=True), centroids / np.linalg.norm(centroids, axis=1,
                                                                                            keepdims=True)
    return (f @ c.T).max(axis=1)


@pytest.mark.parametrize("near", [True, False])
def test_a_catalog_without_labels_is_judged_by_its_distance_from_the_training_photos(near) -> None:
    """Photos near the training centroids keep the tuned vector; far-off ones get FAR_BETA."""
    zs, emb, logits, titles, _ = _catalog(120, "embedding")
    centroids, feats = _features(120, near)
    no_labels = [""] * 120
    choice = choose_beta(zs, emb, logits, titles, no_labels, encode_names, has_title=[False] * 120,
                         titles=[""] * 120, features=feats, centroids=centroids, near_cosine=0.8)
    expected = 1.0 if near else FAR_BETA
    assert choice.beta == expected and choice.scores[expected]["near_share"] == (1.0 if near else 0.0)
    assert "calibrated with the head" in choice.reason


def test_a_mixed_photo_collection_gets_the_share_of_near_photos() -> None:
    """A quarter of the photos like the training goods, the rest far off: beta = 0.25 + 0.75 x far_beta."""
    zs, emb, logits, titles, _ = _catalog(120, "embedding")
    centroids, near = _features(30, near=True)
    _, far = _features(90, near=False)
    feats = np.concatenate([near, far])
    assert near_share(feats, centroids, 0.8) == 0.25
    choice = choose_beta(zs, emb, logits, titles, [""] * 120, encode_names, has_title=[False] * 120,
                         titles=[""] * 120, features=feats, centroids=centroids, near_cosine=0.8, far_beta=0.2)
    assert choice.beta == 0.4


def test_near_is_the_calibrated_cosine_not_a_constant() -> None:
    """The same photos judged against a stricter calibration count as far: near_cosine decides."""
    zs, emb, logits, titles, _ = _catalog(120, "embedding")
    centroids, feats = _features(120, near=True)
    above = float(_max_cosines(feats, centroids).max()) + 1e-3
    choice = choose_beta(zs, emb, logits, titles, [""] * 120, encode_names, has_title=[False] * 120,
                         titles=[""] * 120, features=feats, centroids=centroids, near_cosine=above)
    assert choice.beta == FAR_BETA


def test_a_model_set_without_calibration_uses_the_fallback_cosine() -> None:
    zs, emb, logits, titles, _ = _catalog(120, "embedding")
    centroids, feats = _features(120, near=True)
    assert _max_cosines(feats, centroids).min() >= NEAR_COSINE_FALLBACK
    choice = choose_beta(zs, emb, logits, titles, [""] * 120, encode_names, has_title=[False] * 120,
                         titles=[""] * 120, features=feats, centroids=centroids)
    assert choice.beta == 1.0 and choice.scores[1.0]["near_cosine"] == NEAR_COSINE_FALLBACK
    assert "carry none" in choice.reason


def test_labels_that_measure_a_difference_win_over_the_distance() -> None:
    """Far-off photos (label-free verdict 0.25 on the grid) whose zero-shot map is confidently wrong: the labels
    measure beta 1 ahead by more than MARGIN, so the tuned vector is kept."""
    zs, emb, logits, titles, kinds = _catalog(120, "embedding")
    wrong = np.zeros_like(logits)
    wrong[np.arange(120), [(KINDS.index(k) + 1) % len(KINDS) for k in kinds]] = 8.0
    centroids, far = _features(120, near=False)
    choice = choose_beta(zs, emb, wrong, titles, kinds, encode_names, features=far, centroids=centroids)
    totals = {b: per_measure(t) for b, t in choice.scores.items()}
    assert choice.beta == 1.0 and totals[1.0] >= totals[0.25] + MARGIN


def test_labels_that_cannot_tell_the_blends_apart_leave_the_photos_verdict() -> None:
    """The zero-shot side carries nothing (uniform logits), so every beta ranks alike on the labels: far-off
    photos get the label-free beta (snapped to the measured grid), near ones keep the tuned vector; before,
    beta 1 won every such tie and a far-off captioned collection kept the fashion vector."""
    zs, emb, logits, titles, _ = _catalog(120, "embedding")
    snapped = min(BETAS, key=lambda b: abs(b - FAR_BETA))  # the label-free beta on the measured grid
    for near, expected in ((False, snapped), (True, 1.0)):
        centroids, feats = _features(120, near=near)
        choice = choose_beta(zs, emb, logits, titles, [""] * 120, encode_names, features=feats,
                             centroids=centroids, near_cosine=0.8)
        totals = {b: per_measure(t) for b, t in choice.scores.items()}
        assert "title_R@10" in choice.scores[1.0] and max(totals.values()) < totals[expected] + MARGIN
        assert choice.beta == expected
        assert ("near the training goods" in choice.reason) == (not near)


def test_one_repeated_title_is_no_label() -> None:
    zs, emb, logits, titles, _ = _catalog(120, "embedding")
    centroids, far = _features(120, near=False)
    choice = choose_beta(zs, emb, logits, titles, [""] * 120, encode_names, titles=["IMG"] * 120,
                         features=far, centroids=centroids, near_cosine=0.8, far_beta=0.0)
    assert choice.beta == 0.0 and "near_share" in choice.scores[0.0]


def test_without_centroids_a_label_free_catalog_keeps_the_tuned_vector() -> None:
    zs, emb, logits, titles, _ = _catalog(120, "zero_shot")
    choice = choose_beta(zs, emb, logits, titles, [""] * 120, encode_names, has_title=[False] * 120)
    assert choice.beta == 1.0 and "image_centroids" in choice.reason


def test_label_free_beta_rounds_to_its_grid() -> None:
    assert [label_free_beta(x, 0.3) for x in (1.0, 0.5, 0.0, 0.03)] == [1.0, 0.65, 0.3, 0.3]
    assert label_free_beta(0.49, 0.0) == 0.5


class BlendableImageEncoder(FakeImageEncoder):
    """The fake image encoder plus what a blend needs: logits that name the photo's colour, a zero-shot map
    over the colour names, and the beta the engine sets."""

    fingerprint = None  # the engine derives one that includes beta
    embedding_output = "embedding"
    COLOURS = ("red", "green", "blue", "black", "white")

    def __init__(self) -> None:
        super().__init__()
        self.zero_shot = ZeroShotMap(np.stack([unit(word_vec(c)) for c in self.COLOURS]))
        self.beta = 1.0
        self.tower = None

    def set_blend(self, beta: float) -> None:
        self.beta = float(beta)

    def encode_outputs(self, items: Sequence[bytes], outputs: Sequence[str]) -> dict[str, np.ndarray]:
        emb = FakeImageEncoder.encode(self, items)
        logits = 8.0 * (emb @ self.zero_shot.class_text.T)
        return {"embedding": emb, "logits": logits}

    def encode(self, items: Sequence[bytes]) -> np.ndarray:
        outs = self.encode_outputs(items, ["embedding", "logits"])
        return self.zero_shot.blend(outs["embedding"], outs["logits"], self.beta)


def _products(n: int) -> tuple[list[Product], list[bytes]]:
    colours = BlendableImageEncoder.COLOURS
    return ([Product(id=i + 1, title=f"{colours[i % 5]} thing", category=f"Home/{colours[i % 5]}") for i in range(n)],
            [png(colours[i % 5]) for i in range(n)])


def test_engine_fixes_the_blend_once_and_reopens_with_it(tmp_path) -> None:
    cfg = EngineConfig(data_dir=tmp_path / "d")
    enc = BlendableImageEncoder()
    eng = Engine(cfg, text_encoder=FakeTextEncoder(), image_encoder=enc)
    before = eng.fingerprint
    assert eng.image_blend_pending
    products, images = _products(60)
    images[3] = b"not a photo"  # left out of the sample, not a crash
    choice = eng.calibrate_image_blend(products, images)
    assert choice.photos == 59 and enc.beta == choice.beta
    assert json.loads(eng.store.get_meta(BLEND_META))["beta"] == choice.beta
    assert eng.image_blend_pending  # nothing stored yet: the choice binds only a catalog that holds products
    asyncio.run(eng.upsert(products[:5], images[:5]))
    assert not eng.image_blend_pending and not choice.provisional
    assert eng.fingerprint == before  # colours: the embedding already knows them, so beta stays 1
    with pytest.raises(InvalidInput) as e:
        eng.calibrate_image_blend(products, images)
    assert e.value.field == "image_blend"
    asyncio.run(eng.close(snapshot=False))
    # a fresh engine on the same catalog uses the stored blend
    enc2 = BlendableImageEncoder()
    eng2 = Engine(cfg, text_encoder=FakeTextEncoder(), image_encoder=enc2)
    assert enc2.beta == choice.beta and eng2.fingerprint == eng.fingerprint
    enc2.set_blend(0.5)
    eng2.encoder.refresh_fingerprint()
    assert eng2.fingerprint != before  # vectors made with another blend re-embed
    asyncio.run(eng2.close(snapshot=False))


def test_first_upsert_without_a_choice_records_the_exported_vector_provisionally(tmp_path) -> None:
    eng = Engine(EngineConfig(data_dir=tmp_path / "d"), text_encoder=FakeTextEncoder(),
                 image_encoder=BlendableImageEncoder())
    products, images = _products(3)
    asyncio.run(eng.upsert(products, images))
    meta = json.loads(eng.store.get_meta(BLEND_META))
    assert meta["beta"] == 1.0 and meta["provisional"] and meta["source"] == "default"
    assert eng.image_blend_pending and eng.image_blend_due(MIN_SAMPLE) and not eng.image_blend_due(MIN_SAMPLE - 1)
    asyncio.run(eng.close(snapshot=False))


def test_switched_off_or_unable_to_blend(tmp_path) -> None:
    off = Engine(EngineConfig(data_dir=tmp_path / "a", calibrate_image_blend=False), text_encoder=FakeTextEncoder(),
                 image_encoder=BlendableImageEncoder())
    plain = Engine(EngineConfig(data_dir=tmp_path / "b"), text_encoder=FakeTextEncoder(),
                   image_encoder=FakeImageEncoder())
    assert not off.image_blend_pending and not plain.image_blend_pending
    with pytest.raises(InvalidInput):
        plain.calibrate_image_blend(*_products(60))
    for e in (off, plain):
        asyncio.run(e.close(snapshot=False))


@pytest.mark.parametrize("bad", ["0.7", float("nan"), 0.0, -0.2, 1.5, True, [0.7]])
def test_a_broken_near_cosine_in_the_manifest_is_refused_with_its_field(bad) -> None:
    with pytest.raises(ArtifactError, match="near_cosine must be a cosine in"):
        parse_near_cosine(bad)


def test_near_cosine_absent_or_valid_loads() -> None:
    assert parse_near_cosine(None) is None and parse_near_cosine(0.7372) == pytest.approx(0.7372)
    assert parse_near_cosine(1) == 1.0
