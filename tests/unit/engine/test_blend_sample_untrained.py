"""The image-blend chooser samples only the products the head never trained on: after `kuamo align --catalog`
its held-out and validation tenths (the split rule), and for a head that carries its training products' keys
(engine/trained_products.py: the shipped heads, trained on the fashion catalog) every product whose id and
title are not among them. On trained-on products a head looks better than it will for the products added
later. Heads that name neither sample the whole catalog."""

from __future__ import annotations

import csv
from pathlib import Path

from kuamo.engine.catalog_io import GENERIC
from kuamo.engine.ingest import blend_sample
from kuamo.engine.split_rule import is_held_out, is_validation, never_trained_on
from kuamo.engine.trained_products import TrainedProducts, product_keys, untrained_only
from kuamo.engine.types import Product


def _catalog(tmp_path: Path, n: int) -> Path:
    path = tmp_path / "feed.csv"
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["id", "title"])
        w.writerows([f"sku-{i:04x}", f"Thing {i}"] for i in range(n))
    return path


def test_adapted_head_samples_only_products_it_never_trained_on(tmp_path: Path) -> None:
    path = _catalog(tmp_path, 1000)
    rule = untrained_only(None, never_trained_on({"data": {"validation_split": "rule"}}))
    assert rule is not None and "held-out or validation" in rule.why
    keep = rule.keep
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


def test_trained_products_are_left_out_by_id_and_title(tmp_path: Path) -> None:
    """The same ids with other titles are another catalog's products: sampled."""
    path = _catalog(tmp_path, 300)
    trained = TrainedProducts(product_keys((f"sku-{i:04x}", f"Thing {i}") for i in range(300) if i % 3))
    rule = untrained_only(trained, None)
    assert rule is not None and "200 products the head trained on" in rule.why
    products, _ = blend_sample(path, GENERIC, tmp_path, None, n=800, keep=rule.keep)
    assert [p.id for p in products] == [f"sku-{i:04x}" for i in range(0, 300, 3)]
    renamed = TrainedProducts(product_keys((f"sku-{i:04x}", f"Other thing {i}") for i in range(300)))
    assert len(blend_sample(path, GENERIC, tmp_path, None, n=800, keep=untrained_only(renamed, None).keep)[0]) == 300
    # whitespace around a title is not part of it (rows are stripped on ingest)
    assert TrainedProducts(product_keys([(7, " Blue Shirt ")])).holds(7, "Blue Shirt")
    assert not TrainedProducts(product_keys([(7, "Blue Shirt")])).holds("7x", "Blue Shirt")


def test_the_product_encoder_reads_the_rule_from_the_image_tower() -> None:
    from types import SimpleNamespace

    from kuamo.engine.product_encoder import ProductEncoder

    def encoder(card: dict, trained: TrainedProducts | None = None) -> ProductEncoder:
        image = SimpleNamespace(dim=384, tower=SimpleNamespace(spec={"alignment": card}), trained=trained)
        return ProductEncoder(SimpleNamespace(dim=384), image)

    rule = encoder({"data": {"validation_split": "rule"}}).blend_sample_keep
    assert rule is not None
    assert rule.keep(Product(id="sku-0001", title="x")) == (is_held_out("sku-0001") or is_validation("sku-0001"))
    assert encoder({"data": {"split": "held out only"}}).blend_sample_keep is None
    trained = TrainedProducts(product_keys([(1, "Blue Shirt")]))
    by_key = encoder({"data": {"split": "held out only"}}, trained).blend_sample_keep
    assert by_key is not None and not by_key.keep(Product(id=1, title="Blue Shirt"))
    assert by_key.keep(Product(id=2, title="Blue Shirt"))
