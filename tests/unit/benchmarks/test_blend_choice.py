"""The label-free thresholds of benchmarks/blend_choice.py: chosen so that no validation catalog regrets."""

from __future__ import annotations

from kuamo.benchmarks.blend_choice import choose_steps
from kuamo.engine.zero_shot_blend import label_free_beta


def test_steps_separate_near_catalogs_from_far_ones() -> None:
    near = {1.0: 60.0, 0.75: 59.0, 0.5: 55.0, 0.25: 50.0, 0.0: 40.0}
    far = {1.0: 20.0, 0.75: 25.0, 0.5: 30.0, 0.25: 33.0, 0.0: 35.0}
    middle = {1.0: 30.0, 0.75: 33.0, 0.5: 36.0, 0.25: 34.0, 0.0: 31.0}
    points = [(0.9, near), (0.85, near), (0.5, far), (0.55, far), (0.7, middle)]
    steps = choose_steps(points)
    assert [label_free_beta(s, steps) for s, _ in points] == [1.0, 1.0, 0.0, 0.0, 0.5]
    assert 0.7 < steps[0][0] < 0.85 and 0.55 < steps[1][0] < 0.7  # cut-offs between the observed scores
