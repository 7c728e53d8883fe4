"""Two heads compared query by query (evaluation/catalog_tasks.py): which held-out fused title queries each
finds that the other misses, and a sign test on that split (benchmarks/adapt_folds.py reports both)."""

from __future__ import annotations

import numpy as np
import pytest

from kuamo.benchmarks.adapt_folds import _verdict
from kuamo.evaluation.catalog_tasks import fused_hits, paired_change, sign_test_p, subset_tasks
from kuamo.evaluation.metrics import retrieval_metrics


def _pool(seed: int, n: int = 60, d: int = 16) -> dict:
    rng = np.random.default_rng(seed)

    def unit(x: np.ndarray) -> np.ndarray:
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    base = unit(rng.standard_normal((n, d)))
    return {
        "image": unit(base + 0.9 * rng.standard_normal((n, d))),
        "title_query": unit(base + 0.9 * rng.standard_normal((n, d))),
        "doc": unit(base + 0.9 * rng.standard_normal((n, d))),
        "titles": [f"thing {i % 50}" for i in range(n)],
    }


def test_fused_hits_agree_with_the_pooled_rates() -> None:
    pool, rows = _pool(0), np.arange(0, 60, 2)
    hits = fused_hits(rows, **pool)
    rates = subset_tasks(rows, **pool, leaves=[""] * 60)["title_to_product_fused"]
    assert 0 < hits["R@10"].sum() < len(rows)  # the case can fail either way
    assert rates["R@1"] == pytest.approx(hits["R@1"].mean() * 100, abs=0.01)
    assert rates["R@10"] == pytest.approx(hits["R@10"].mean() * 100, abs=0.01)
    assert not (hits["R@1"] & ~hits["R@10"]).any()
    # and with retrieval_metrics on the fused scores, which subset_tasks ranked with before it reused the hits
    q = pool["title_query"][rows]
    titles = np.asarray(pool["titles"], dtype=object)
    same = titles[rows][:, None] == titles[None, :]
    ref = retrieval_metrics(0.5 * q @ pool["doc"].T + 0.5 * q @ pool["image"].T, same)
    assert rates["R@1"] == pytest.approx(ref["R@1"], abs=0.01)
    assert rates["R@10"] == pytest.approx(ref["R@10"], abs=0.01)


def test_paired_change_counts_each_side() -> None:
    new = np.array([1, 1, 0, 0, 1], bool)
    old = np.array([1, 0, 1, 0, 0], bool)
    assert paired_change(new, old) == {"better": 2, "worse": 1}
    assert paired_change(old, old) == {"better": 0, "worse": 0}


def test_sign_test() -> None:
    assert sign_test_p(0, 0) == 1.0 and sign_test_p(3, 3) == 1.0
    assert sign_test_p(1, 2) == 1.0  # one query net in three: nothing
    assert sign_test_p(0, 10) == pytest.approx(2 / 1024)
    assert sign_test_p(2, 8) == pytest.approx(2 * (1 + 10 + 45) / 1024)
    assert sign_test_p(8, 2) == sign_test_p(2, 8)


def _row(d_r10: float, better: int, worse: int) -> dict:
    keys = (
        "title_to_product_fused R@1",
        "title_to_product_fused R@10",
        "title_to_product_image R@1",
        "title_to_product_image R@10",
        "photo_to_photo P@10",
    )
    shipped = {f"held_out {k}": 50.0 for k in keys}
    adapted = {**{f"held_out {k}": 52.0 for k in keys}, "held_out title_to_product_fused R@10": 50.0 + d_r10}
    paired = {"R@1": {"better": 10, "worse": 2}, "R@10": {"better": better, "worse": worse}}
    return {"adapted": adapted, "shipped": shipped, "held_out_fused_paired": paired}


def test_verdict_tells_a_net_query_from_a_loss_beyond_chance() -> None:
    one = _verdict(_row(-0.04, 3, 4))
    assert not one["fused_not_lower"] and not one["fused_lower_beyond_chance"]
    assert one["fused_paired"]["R@10"] == {"better": 3, "worse": 4, "sign_test_p": 1.0}
    many = _verdict(_row(-1.0, 2, 24))
    assert many["fused_lower_beyond_chance"] and not many["met"]
