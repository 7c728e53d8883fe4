"""Photo queries re-rank by predicted-category agreement (category_prior), in isolation and in the engine."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import numpy as np
import pytest
from fake_encoders import DIM, FakeTextEncoder, png, word_vec

from kuamo.engine.category_prior import CategoryPrior, leaf_names, rerank_scores
from kuamo.engine.engine import Engine, EngineConfig
from kuamo.engine.errors import InvalidInput
from kuamo.engine.imaging import decode_image
from kuamo.engine.types import Product, Query


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x)).astype(np.float32)


ALPHA, BETA, OTHER = unit(word_vec("alpha")), unit(word_vec("beta")), unit(word_vec("zzz other"))
# Query photo = "alpha"; photo A is the closer one but reads as "beta"; photo B is a little further but "alpha".
PHOTOS = {"red": ALPHA, "green": unit(0.6 * ALPHA + 0.8 * BETA), "blue": unit(0.55 * ALPHA + 0.83 * OTHER)}


class DesignedImageEncoder:
    """Photo colour -> one of the designed vectors above (in the fake text space)."""

    fingerprint = "designed-image-v1"
    dim = DIM

    def encode(self, items: Sequence[bytes]) -> np.ndarray:
        means = [np.asarray(decode_image(b), dtype=np.float32).reshape(-1, 3).mean(0) for b in items]
        names = ["red" if m[0] > 128 else "green" if m[1] > 128 else "blue" for m in means]
        return np.stack([PHOTOS[n] for n in names])


def test_leaf_names_distinct_sorted_and_skip_empty() -> None:
    assert leaf_names(["Apparel/Topwear/Tshirts", "Footwear/Heels", "Apparel/Topwear/Tshirts", "", "/", "Bags"]) \
        == ["Bags", "Heels", "Tshirts"]


def test_distribution_is_unit_and_peaks_at_the_nearest_name() -> None:
    prior = CategoryPrior(["alpha", "beta"], np.stack([ALPHA, BETA]), temperature=0.03)
    p = prior.distribution(np.stack([ALPHA, BETA, np.zeros(DIM, np.float32)]))
    assert np.allclose(np.linalg.norm(p[:2], axis=1), 1, atol=1e-5)
    assert p[0].argmax() == 0 and p[1].argmax() == 1
    assert not p[2].any()  # a product without a photo earns no agreement
    agree = prior.agreement(ALPHA, np.stack([ALPHA, BETA]))
    assert agree[0] > 0.99 and agree[1] < 0.05
    # a softer temperature spreads the distribution: less agreement with the same name
    soft = CategoryPrior(["alpha", "beta"], np.stack([ALPHA, BETA]), temperature=10)
    assert soft.agreement(ALPHA, ALPHA[None])[0] < agree[0]


def test_rerank_scores_adds_weighted_agreement() -> None:
    prior = CategoryPrior(["alpha", "beta"], np.stack([ALPHA, BETA]))
    base = np.array([0.9, 0.8], np.float32)
    out = rerank_scores(prior, ALPHA, np.stack([BETA, ALPHA]), base, weight=1.0)
    assert out[1] > out[0]  # the "alpha" candidate overtakes
    assert np.allclose(rerank_scores(prior, ALPHA, np.stack([BETA, ALPHA]), base, weight=0.0), base)


def test_bad_prior_arguments() -> None:
    with pytest.raises(ValueError, match="names"):
        CategoryPrior(["a"], np.zeros((2, DIM)))
    with pytest.raises(ValueError, match="temperature"):
        CategoryPrior(["a"], np.ones((1, DIM)), temperature=0)


def _engine(tmp_path, weight: float) -> Engine:
    cfg = EngineConfig(data_dir=tmp_path / f"w{weight}", photo_category_weight=weight)
    eng = Engine(cfg, text_encoder=FakeTextEncoder(), image_encoder=DesignedImageEncoder())
    # A reads as beta and is filed under alpha (labels are not used); B reads as alpha
    products = [Product(id=1, title="a thing", category="Shop/alpha"), Product(id=2, title="b thing",
                                                                                category="Shop/beta")]
    res = asyncio.run(eng.upsert(products, [png("green"), png("blue")]))
    assert len(res.accepted) == 2
    return eng


def test_photo_query_reranks_by_predicted_category(tmp_path) -> None:
    off = _engine(tmp_path, 0.0)
    on = _engine(tmp_path, 1.0)
    try:
        q = Query(image=png("red"), k=2, explain=True)
        plain = asyncio.run(off.search(q))
        assert [h.id for h in plain.hits] == [1, 2]  # visual score alone: A is closer
        assert all("category" not in h.explanation.contributions for h in plain.hits)
        got = asyncio.run(on.search(q))
        assert [h.id for h in got.hits] == [2, 1]
        prior = on.ranker.category_prior
        assert prior is not None and prior.names == ("alpha", "beta")
        w = 0.5  # default image weight of a photo-only query (renormalised over its one block: 0.5 stays)
        expect = prior.agreement(ALPHA, np.stack([PHOTOS["blue"], PHOTOS["green"]]))
        for hit, agree in zip(got.hits, expect, strict=True):
            contrib = hit.explanation.contributions
            assert contrib["category"] == pytest.approx(w * agree, abs=1e-5)
            assert sum(contrib.values()) == pytest.approx(hit.explanation.base_score, abs=1e-5)
        # a text query is not re-ranked
        text = asyncio.run(on.search(Query(text="alpha", k=2, explain=True)))
        assert all("category" not in h.explanation.contributions for h in text.hits)
    finally:
        asyncio.run(off.close(snapshot=False))
        asyncio.run(on.close(snapshot=False))


def test_vocabulary_follows_the_catalog(tmp_path) -> None:
    eng = _engine(tmp_path, 1.0)
    try:
        asyncio.run(eng.upsert([Product(id=3, title="c", category="Shop/gamma")], [png("blue")]))
        assert eng.ranker.category_prior.names == ("alpha", "beta", "gamma")
        asyncio.run(eng.delete([2, 3]))
        assert eng.ranker.category_prior is None  # one category left: nothing to tell apart
        got = asyncio.run(eng.search(Query(image=png("red"), k=1, explain=True)))
        assert got.hits[0].id == 1 and "category" not in got.hits[0].explanation.contributions
    finally:
        asyncio.run(eng.close(snapshot=False))


def test_weights_category_scales_the_bonus_and_image_weight_now_counts(tmp_path) -> None:
    """weights.category scales the category agreement (0 turns it off); the image weight of a photo-only query
    changes the ranking, because the category bonus no longer scales with it."""
    eng = _engine(tmp_path, 1.0)
    try:
        def ranked(**weights: float) -> list[int]:
            return [h.id for h in asyncio.run(eng.search(Query(image=png("red"), k=2, weights=weights))).hits]

        assert ranked() == ranked(category=0.5) == [2, 1]  # the default: 0.5 (image) x photo_category_weight 1
        assert ranked(category=0.0) == [1, 2]  # visual score alone
        assert ranked(image=20.0) == [1, 2]  # the visual difference now outweighs the category agreement
        assert ranked(image=20.0, category=20.0) == [2, 1]  # scaled together: the default's balance again
        got = asyncio.run(eng.search(Query(image=png("red"), k=2, explain=True, weights={"category": 2.0})))
        prior = eng.ranker.category_prior
        expect = prior.agreement(ALPHA, np.stack([PHOTOS["blue"], PHOTOS["green"]]))
        for hit, agree in zip(got.hits, expect, strict=True):
            assert hit.explanation.contributions["category"] == pytest.approx(2.0 * agree, abs=1e-5)
        for bad in (-1.0, float("nan")):
            with pytest.raises(InvalidInput) as e:
                asyncio.run(eng.search(Query(image=png("red"), weights={"category": bad})))
            assert e.value.field == "weights" and "category" in e.value.message
    finally:
        asyncio.run(eng.close(snapshot=False))


def test_image_weight_beside_a_rating_target_shifts_the_balance(tmp_path) -> None:
    """Named block weights replace the defaults (blocks not named count 0, the v1 contract), and their ratio
    moves the order: a photo + rating query with both weights named."""
    eng = Engine(EngineConfig(data_dir=tmp_path / "r", photo_category_weight=0.0), text_encoder=FakeTextEncoder(),
                 image_encoder=DesignedImageEncoder())
    try:
        # A looks closer (0.6 vs 0.55) but is rated 1; B is rated 5
        asyncio.run(eng.upsert([Product(id=1, title="a", category="Shop/x", rating=1.0),
                                Product(id=2, title="b", category="Shop/x", rating=5.0)], [png("green"), png("blue")]))

        def ranked(**weights: float) -> list[int]:
            q = Query(image=png("red"), rating=5.0, k=2, weights=weights, explain=True)
            return [h.id for h in asyncio.run(eng.search(q)).hits]

        assert ranked() == ranked(image=0.5, rating=0.25) == [2, 1]  # the defaults: the rating target counts
        assert ranked(image=1.0) == [1, 2]  # naming only the image: the rating counts 0, the look wins
        assert ranked(image=10.0, rating=0.25) == [1, 2]  # a heavy image weight beside the rating: the look wins
    finally:
        asyncio.run(eng.close(snapshot=False))
