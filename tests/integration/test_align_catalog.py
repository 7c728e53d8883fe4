"""`kuamo align --catalog` on a merchant feed built from the fashion groups kept out of the generic head's
training (hex string ids, "<master> >> <sub> >> <articleType> >> <name>" category paths, photo paths in a
column; benchmarks/adapt_catalog.py): it maps the columns as `kuamo index` does, needs no fashion column or
vocabulary, keeps a held-out and a validation tenth out of training, and refuses a catalog too small to adapt
with one line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")

from kuamo.benchmarks.adapt_catalog import FEED_MAP, build_unlike_catalog
from kuamo.cli import main
from kuamo.evaluation.split import is_held_out, is_validation

pytestmark = pytest.mark.models


def _align(feed: Path, out: Path, model_dir: Path, *extra: str) -> int:
    return main(["align", "--catalog", str(feed), "--map", FEED_MAP, "--category-path", ">>",
                 "--category-depth", "3", "--models", str(model_dir), "--out", str(out / "align_head.npz"),
                 "--cache-dir", str(out / "cache"), *extra])


def test_align_adapts_to_a_general_goods_feed(model_dir: Path, fashion_dir: Path, tmp_path: Path) -> None:
    feed = build_unlike_catalog(fashion_dir, tmp_path / "feed", limit=300)
    assert _align(feed, tmp_path / "head", model_dir, "--epochs", "2", "--patience", "1") == 0
    card = json.loads((tmp_path / "head" / "align.json").read_text())
    data = card["data"]
    assert data["products"] == 300 and data["mapping"] == "generic+map"
    ids = [line.split(",")[0] for line in feed.read_text().splitlines()[1:]]
    assert data["held_out"] == sum(map(is_held_out, ids)) and data["validation"] == sum(map(is_validation, ids))
    assert data["train"] == 300 - data["held_out"] - data["validation"]
    assert card["started_from"] == "the shipped head" and card["best_epoch"] in (0, 1, 2)
    assert card["history"][0]["epoch"] == 0  # the shipped head scored before the first epoch
    rep = card["adaptation"]
    assert rep["pool"] == 300 and rep["queries"]["held_out"] == data["held_out"]
    for name in ("adapted", "shipped"):
        for split in ("held_out", "trained_on"):
            t = rep[name][split]
            assert 0 <= t["title_to_product_fused"]["R@1"] <= 100 and 0 <= t["photo_to_photo"]["P@10"] <= 100
    assert card["metrics_held_out"] == rep["adapted"]["held_out"]  # no fashion tasks: not the fashion layout
    for m, c in rep["held_out_fused_paired"].items():  # query by query, the same change as the pooled rates
        moved = (rep["adapted"]["held_out"]["title_to_product_fused"][m]
                 - rep["shipped"]["held_out"]["title_to_product_fused"][m])
        assert c["better"] - c["worse"] == pytest.approx(moved * data["held_out"] / 100, abs=0.02)
    with np.load(tmp_path / "head" / "align_head.npz") as head:  # the label-free blend criterion travels
        assert head["centroids"].shape[1] == 1280 and 0 < float(head["near_cosine"]) < 1
        assert len(head["trained_keys"]) == data["train"]  # left out of the blend chooser's sample


def test_align_refuses_a_catalog_too_small(model_dir: Path, fashion_dir: Path, tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    feed = build_unlike_catalog(fashion_dir, tmp_path / "feed", limit=40)
    assert _align(feed, tmp_path / "head", model_dir) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("kuamo: error")]
    assert len(err) == 1 and "has 40 products with a photo" in err[0] and "at least 250" in err[0]
    assert not (tmp_path / "head" / "align_head.npz").exists()


@pytest.mark.parametrize("option", ["--fused-rank", "--fused-guard", "--distill"])
@pytest.mark.parametrize(("value", "says"), [("abc", "needs a number"), ("-1", ">= 0"), ("nan", "finite"),
                                             ("inf", "finite")])
def test_align_weights_refuse_garbage_in_one_line(option: str, value: str, says: str, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stop:  # argparse: before any model or catalog is read
        _align(tmp_path / "feed.csv", tmp_path / "head", tmp_path / "models", option, value)
    assert stop.value.code == 2
    err = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert len(err) == 1 and option in err[0] and says in err[0], err
    assert not (tmp_path / "head").exists()
