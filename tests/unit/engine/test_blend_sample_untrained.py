"""After `kuamo align --catalog`, the image-blend chooser samples only the products the adapted head never
trained on (its held-out and validation tenths): on trained-on products an adapted head looks better than it
will for the products added later. Other heads sample the whole catalog as before."""

from __future__ import annotations

import csv
from pathlib import Path

from kuamo.engine.catalog_io import GENERIC
from kuamo.engine.ingest import blend_sample
from kuamo.engine.split_rule import is_held_out, is_validation, never_trained_on


def _catalog(tmp_path: Path, n: int) -> Path:
    path = tmp_path / "feed.csv"
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["id", "title"])
        w.writerows([f"sku-{i:04x}", f"Thing {i}"] for i in range(n))
    return path


def test_adapted_head_samples_only_products_it_never_trained_on(tmp_path: Path) -> None:
    path = _catalog(tmp_path, 1000)
    keep = never_trained_on({"data": {"validation_split": "rule"}})
    assert keep is not None
    products, _ = blend_sample(path, GENERIC, tmp_path, None, n=800, keep=keep)
    want = [f"sku-{i:04x}" for i in range(1000) if is_held_out(f"sku-{i:04x}") or is_validation(f"sku-{i:04x}")]
    assert [p.id for p in products] == want and 150 < len(want) < 250  # every one of them: fewer than n
    few, _ = blend_sample(path, GENERIC, tmp_path, None, n=40, keep=keep)
    assert len(few) == 40 and {p.id for p in few} <= set(want)  # spread over them
    limited, _ = blend_sample(path, GENERIC, tmp_path, 500, n=800, keep=keep)
    assert [p.id for p in limited] == [x for x in want if int(x[4:], 16) < 500]


def test_other_heads_sample_the_whole_catalog(tmp_path: Path) -> None:
    path = _catalog(tmp_path, 300)
    assert never_trained_on({}) is None and never_trained_on({"data": {"split": "x"}}) is None
    products, _ = blend_sample(path, GENERIC, tmp_path, None, n=800)
    assert len(products) == 300


def test_the_product_encoder_reads_the_rule_from_the_image_tower_card() -> None:
    from types import SimpleNamespace

    from kuamo.engine.product_encoder import ProductEncoder

    def encoder(card: dict) -> ProductEncoder:
        image = SimpleNamespace(dim=384, tower=SimpleNamespace(spec={"alignment": card}))
        return ProductEncoder(SimpleNamespace(dim=384), image)

    keep = encoder({"data": {"validation_split": "rule"}}).blend_sample_keep
    assert keep is not None and keep("sku-0001") == (is_held_out("sku-0001") or is_validation("sku-0001"))
    assert encoder({"data": {"split": "held out only"}}).blend_sample_keep is None
