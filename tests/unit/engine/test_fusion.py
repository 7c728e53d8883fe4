"""Fusion maths: the fused inner product is exactly the weighted sum of per-block similarities."""

from __future__ import annotations

import numpy as np
import pytest

from kuamo.engine.errors import InvalidInput
from kuamo.engine.fusion import FusionLayout


@pytest.fixture
def layout() -> FusionLayout:
    return FusionLayout.default(text_dim=8, image_dim=6, numeric_attributes=("year:1990:2030",))


def _unit(rng, d):
    v = rng.standard_normal(d).astype(np.float32)
    return v / np.linalg.norm(v)


def test_weighted_sum_is_exact(layout: FusionLayout) -> None:
    rng = np.random.default_rng(0)
    q = {"text": rng.standard_normal(8), "image": rng.standard_normal(6), "rating": 4.5, "price": 300.0}
    p = {"text": rng.standard_normal(8), "image": rng.standard_normal(6), "rating": 3.0, "price": 250.0,
         "year": 2001}
    w = {"text": 0.7, "image": 0.2, "rating": 0.05, "price": 0.05}
    qv, pv = layout.query_vector(q, w), layout.product_vector(p)
    sl = layout.slices()
    expected = 0.0
    for name in w:
        a, b = qv[sl[name]] / w[name], pv[sl[name]]
        expected += w[name] * float(a @ b) / float(np.linalg.norm(a) * np.linalg.norm(b))
    assert float(qv @ pv) == pytest.approx(expected, abs=1e-5)
    contrib = layout.contributions(qv, pv)
    assert sum(contrib.values()) == pytest.approx(float(qv @ pv), abs=1e-5)
    assert set(contrib) == set(w)


def test_scalar_similarity_peaks_at_equal_values(layout: FusionLayout) -> None:
    q = layout.query_vector({"rating": 4.5}, {"rating": 1.0})
    sims = [float(q @ layout.product_vector({"rating": r})) for r in (1.0, 3.0, 4.0, 4.5, 5.0)]
    assert sims.index(max(sims)) == 3 and sims[3] == pytest.approx(1.0, abs=1e-6)
    qp = layout.query_vector({"price": 300.0}, {"price": 1.0})
    prices = [30.0, 200.0, 300.0, 450.0, 3000.0]
    sp = [float(qp @ layout.product_vector({"price": x})) for x in prices]
    assert max(range(5), key=sp.__getitem__) == 2 and sp[1] > sp[0] and sp[3] > sp[4]
    qy = layout.query_vector({"year": 2003}, {"year": 1.0})
    years = [float(qy @ layout.product_vector({"year": y})) for y in range(2000, 2010)]
    assert int(np.argmax(years)) == 3


def test_missing_product_blocks_are_zero(layout: FusionLayout) -> None:
    pv = layout.product_vector({"text": np.ones(8)})
    sl = layout.slices()
    assert not pv[sl["image"]].any() and np.linalg.norm(pv[sl["text"]]) == pytest.approx(1.0)


@pytest.mark.parametrize("weights", [{"text": -1.0}, {"text": float("nan")}, {"text": float("inf")},
                                     {"text": 0.0}, {"colour": 1.0}, {"text": "high"}])
def test_bad_weights_are_rejected(layout: FusionLayout, weights) -> None:
    with pytest.raises(InvalidInput) as e:
        layout.query_vector({"text": np.ones(8)}, weights)
    assert e.value.field == "weights"


def test_bad_blocks_are_rejected(layout: FusionLayout) -> None:
    with pytest.raises(InvalidInput, match="dims"):
        layout.product_vector({"text": np.ones(5)})
    with pytest.raises(InvalidInput, match="finite"):
        layout.product_vector({"price": float("nan")})
    with pytest.raises(InvalidInput, match="log scale"):
        layout.product_vector({"price": -3.0})
    free = layout.product_vector({"price": 0.0})  # free items are the cheapest, not an error
    assert np.allclose(free, layout.product_vector({"price": 1.0}))
    with pytest.raises(InvalidInput, match="nothing to search"):
        layout.query_vector({}, {"text": 1.0})
    with pytest.raises(InvalidInput, match="needs a range"):
        FusionLayout.default(numeric_attributes=("year",))


def test_roundtrip(layout: FusionLayout) -> None:
    assert FusionLayout.from_dict(layout.to_dict()) == layout
    assert layout.dim == 6 + 8 + 2 + 2 + 2
