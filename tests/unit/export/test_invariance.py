"""batch_invariance tells a batch-dependent encoder from an invariant one, and puts every item in a batch."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from kuamo.export.invariance import batch_invariance

ITEMS = [np.array([1.0, 2.0, float(i)]) for i in range(50)]


def test_an_encoder_that_scales_by_its_batch_is_caught() -> None:
    def per_batch_rounding(xs: Sequence[np.ndarray]) -> np.ndarray:
        x = np.stack(xs)
        step = np.abs(x).max() / 15  # one quantisation step for the whole batch, like DynamicQuantizeLinear
        return np.round(x / step) * step

    result = batch_invariance(per_batch_rounding, ITEMS)
    assert not result["bit_identical"] and result["max_abs_diff"] > 0 and result["cosine_min"] < 1


def test_a_row_wise_encoder_is_bit_identical_and_every_item_is_batched() -> None:
    sizes: list[int] = []
    seen: list[float] = []

    def row_wise(xs: Sequence[np.ndarray]) -> np.ndarray:
        sizes.append(len(xs))
        seen.extend(float(x[2]) for x in xs)
        return np.stack(xs) * 2.0

    result = batch_invariance(row_wise, ITEMS, batch_sizes=(2, 64), rounds=2)
    assert result["bit_identical"] and result["cosine_min"] >= 1 - 1e-12
    assert sorted(seen) == sorted([float(x[2]) for x in ITEMS] * 3)  # once alone, once per round
    assert {2, 48} <= set(sizes)  # 2 + 48 = 50: the last batch takes what is left
