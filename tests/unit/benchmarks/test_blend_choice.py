"""far_beta of benchmarks/blend_choice.py: chosen so that the validation catalogs regret least."""

from __future__ import annotations

from kuamo.benchmarks.blend_choice import choose_far_beta
from kuamo.engine.zero_shot_blend import label_free_beta


def _peaked(at: float, height: float) -> tuple:
    """A catalog whose score peaks at beta `at` and falls 20 points per unit of beta away from it."""
    return lambda b: height - 20 * abs(b - at), height


def test_far_beta_serves_every_far_catalog_and_leaves_near_ones_at_one() -> None:
    far_a, best_a = _peaked(0.2, 40.0)
    far_b, best_b = _peaked(0.4, 45.0)
    near, best_near = _peaked(1.0, 70.0)
    points = [(0.0, far_a, best_a), (0.0, far_b, best_b), (1.0, near, best_near)]
    far = choose_far_beta(points)
    assert far == 0.3  # the middle of the two far catalogs' peaks: worst regret 2 points, not 4
    assert label_free_beta(1.0, far) == 1.0 and label_free_beta(0.0, far) == 0.3


def test_a_mixed_catalog_gets_a_blend_between() -> None:
    assert label_free_beta(0.5, 0.3) == 0.65
    assert label_free_beta(0.02, 0.3) == 0.3  # rounded to the 0.05 grid
    assert label_free_beta(0.0, 0.0) == 0.0 and label_free_beta(1.0, 0.0) == 1.0
