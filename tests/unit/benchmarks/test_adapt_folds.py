"""The folds of benchmarks/adapt_folds.py hold every product out exactly once, fold 0 is the stable held-out
split, and pooled figures weigh each fold by its held-out queries."""

from __future__ import annotations

import pytest

from kuamo.benchmarks.adapt_folds import MEASURES, fold_split, main, pooled
from kuamo.engine.split_rule import is_held_out


@pytest.mark.parametrize("n", [10, 3, 7])
def test_every_product_is_held_out_in_exactly_one_fold(n: int) -> None:
    """Also when 100 buckets do not split evenly: with 3 folds bucket 99 once fell in none."""
    ids = [f"{i:x}" for i in range(3000)] + list(range(3000))
    folds = [fold_split(f, n) for f in range(n)]
    assert all(sum(f(i) for f in folds) == 1 for i in ids)
    if n == 10:
        assert [folds[0](i) for i in ids] == [is_held_out(i) for i in ids]


@pytest.mark.parametrize("folds", ["0", "1", "101", "-3"])
def test_a_fold_count_outside_the_buckets_is_refused(folds: str, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--folds", folds])
    assert exit_info.value.code == 2 and "--folds must be within 2..100" in capsys.readouterr().err


def _report(held: int, value: float) -> dict:
    tasks = {t: {m: value for tt, m in MEASURES if tt == t} for t, _ in MEASURES}
    head = {"held_out": tasks, "trained_on": tasks, "category_all": {"P@10": value}}
    return {"queries": {"held_out": held}, "adapted": head, "shipped": head}


def test_pooled_weighs_folds_by_their_held_out_queries() -> None:
    p = pooled([_report(300, 90.0), _report(100, 50.0)], "adapted")
    assert p["held_out_queries"] == 400
    assert p["held_out title_to_product_fused R@1"] == 80.0  # (300 x 90 + 100 x 50) / 400
    assert p["trained_on photo_to_photo P@10"] == 70.0  # trained-on and category: the mean over folds
