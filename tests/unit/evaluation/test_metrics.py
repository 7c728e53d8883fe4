"""mean_average_precision: the category term of benchmarks/blend_choice.py."""

import math

import numpy as np

from kuamo.evaluation.metrics import average_precision, mean_average_precision


def test_average_precision_reads_every_relevant_rank() -> None:
    # relevant at ranks 1 and 3 -> (1/1 + 2/3) / 2; relevant at rank 2 only -> 1/2
    scores = np.array([[0.9, 0.8, 0.7, 0.1], [0.9, 0.8, 0.7, 0.1]])
    relevant = np.array([[True, False, True, False], [False, True, False, False]])
    assert math.isclose(mean_average_precision(scores, relevant), ((1 + 2 / 3) / 2 + 0.5) / 2 * 100)


def test_a_category_smaller_than_ten_can_score_100() -> None:
    # P@10 would cap a 6-item category at 60; AP is 100 when all six lead the ranking
    scores = -np.arange(40, dtype=float)[None, :]
    relevant = np.zeros((1, 40), bool)
    relevant[0, :6] = True
    assert mean_average_precision(scores, relevant) == 100.0
    relevant = np.roll(relevant, 30, axis=1)  # the same six at the bottom: far below 100
    assert mean_average_precision(scores, relevant) < 30


def test_queries_without_relevant_items_are_left_out() -> None:
    scores = np.array([[0.5, 0.4], [0.5, 0.4]])
    relevant = np.array([[False, True], [False, False]])
    assert mean_average_precision(scores, relevant) == 50.0
    per_query = average_precision(scores, relevant)
    assert per_query[0] == 50.0 and math.isnan(per_query[1])
    assert math.isnan(mean_average_precision(scores, np.zeros((2, 2), bool)))
