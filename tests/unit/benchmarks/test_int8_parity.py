"""The statistics of benchmarks/int8_parity.py: catalog cosines against the gate, the odds of a gate-sized
sample failing, and search parity between two sets of image vectors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from kuamo.benchmarks.baselines_data import overlap_at_k as overlap
from kuamo.benchmarks.int8_parity import cosine_summary, gate_sample_odds, main, search_parity, top_k
from kuamo.export.gate import GateThresholds

GATE = GateThresholds()


def test_cosine_summary_counts_the_photos_below_the_gate() -> None:
    cos = np.full(1000, 0.995)
    cos[[3, 500]] = (0.96, 0.90)
    s = cosine_summary(cos, GATE)
    assert s["photos"] == 1000 and s["below_gate_min"] == 2 and s["min"] == pytest.approx(0.90)
    assert s["below_gate_mean_share"] == pytest.approx(0.002)
    assert s["p0.1"] < s["p1"] <= s["p5"]


def test_a_sample_as_large_as_the_catalog_always_sees_its_worst_photo() -> None:
    cos = np.full(256, 0.995)
    cos[7] = 0.95
    assert gate_sample_odds(cos, GATE, size=256, draws=50)["fail_share"] == 1.0
    cos[7] = 0.98
    assert gate_sample_odds(cos, GATE, size=256, draws=50)["fail_share"] == 0.0


def test_the_odds_of_missing_rare_bad_photos_follow_the_sample_size() -> None:
    cos = np.full(10_000, 0.995)
    cos[:50] = 0.95  # 0.5% of photos: a 256-photo sample misses all of them with probability ~0.28
    odds = gate_sample_odds(cos, GATE, 256, draws=2000)
    assert 0.65 < odds["fail_share"] < 0.79
    assert odds["min_p5"] == pytest.approx(0.95) and odds["mean_p5"] > 0.99
    assert gate_sample_odds(cos, GATE, 1024, draws=500)["fail_share"] > 0.98


def test_top_k_never_returns_the_excluded_item_and_overlap_counts_shared_ids() -> None:
    rng = np.random.default_rng(1)
    v = rng.normal(size=(50, 8)).astype(np.float32)
    q = np.arange(10)
    top = top_k(v[q], v, k=5, exclude=q, chunk=3)
    assert top.shape == (10, 5) and not (top == q[:, None]).any()
    assert overlap(top, top) == 1.0
    assert overlap(np.array([[1, 2, 3, 4]]), np.array([[4, 3, 9, 8]])) == 0.5


def test_search_parity_of_identical_vectors_is_complete_and_noise_lowers_it() -> None:
    rng = np.random.default_rng(2)
    v = rng.normal(size=(300, 16)).astype(np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    articles = np.asarray(["a", "b", "c"])[np.arange(300) % 3]
    q = np.arange(0, 300, 7)
    titles = v[q] + 0.01
    same = search_parity(v, v, titles, articles, q)
    assert same["photo_top10_overlap"] == 1.0 and same["title_top10_overlap"] == 1.0
    assert same["title_R@10_int8"] == same["title_R@10_fp32"] == 100.0
    noisy = v + rng.normal(scale=0.3, size=v.shape).astype(np.float32)
    noisy /= np.linalg.norm(noisy, axis=1, keepdims=True)
    moved = search_parity(noisy, v, titles, articles, q)
    assert moved["photo_top10_overlap"] < 0.9 and moved["title_R@10_fp32"] == 100.0


def test_a_limit_too_small_to_measure_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        main(["--limit", "5", "--no-avx2"])
    assert e.value.code == 2 and "--limit must be at least 20 photos, got 5" in capsys.readouterr().err


@pytest.mark.parametrize("flag", ["--models", "--avx2-models", "--fashion"])
def test_a_directory_that_is_not_what_the_flag_needs_is_refused(flag: str, tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    fashion = tmp_path / "fashion"
    fashion.mkdir()
    (fashion / "products.csv").write_text("id,productDisplayName\n", encoding="utf-8")
    models = tmp_path / "models"
    models.mkdir()
    (models / "manifest.json").write_text("{}", encoding="utf-8")
    args = {"--models": str(models), "--avx2-models": str(models), "--fashion": str(fashion)}
    args[flag] = str(tmp_path / "empty")
    with pytest.raises(SystemExit) as e:
        main(["--no-avx2", *[x for kv in args.items() for x in kv]])
    err = capsys.readouterr().err
    assert e.value.code == 2 and f"{flag} {tmp_path / 'empty'} has no " in err
