"""export/trained_keys.py writes the keys of the products a shipped head trained on (the catalog's training
split) into its file, keeping every other array, and the card beside it gets the file's new size."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from kuamo.engine.trained_products import TrainedProducts
from kuamo.evaluation.split import is_held_out
from kuamo.export.align_head import TRAINED_KEYS
from kuamo.export.trained_keys import fit_head_file


def test_keys_of_the_training_split_go_into_the_head_file(tmp_path: Path) -> None:
    catalog = tmp_path / "fashion"
    (catalog / "images").mkdir(parents=True)
    lines = ["id,productDisplayName,articleType"]
    for i in range(1, 61):
        lines.append(f"{i},Shirt number {i},Shirts")
        if i != 5:  # a row without its photo is not a product the head could train on
            (catalog / "images" / f"{i}.jpg").write_bytes(b"x")
    (catalog / "products.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    head = tmp_path / "heads" / "align_head.npz"
    head.parent.mkdir()
    weights = np.arange(6, dtype=np.float16).reshape(2, 3)
    np.savez_compressed(head, **{"mlp.0.weight": weights, "shape": np.asarray([1, 2, 3, 4])})
    (head.parent / "align.json").write_text(json.dumps({"bytes": 1, "weights": head.name}), encoding="utf-8")

    trained = [i for i in range(1, 61) if i != 5 and not is_held_out(i)]
    assert 0 < len(trained) < 59  # some ids held out
    assert fit_head_file(head, catalog) == len(trained)
    with np.load(head) as data:
        assert np.array_equal(data["mlp.0.weight"], weights) and list(data["shape"]) == [1, 2, 3, 4]
        keys = TrainedProducts(data[TRAINED_KEYS])
    assert all(keys.holds(i, f"Shirt number {i}") for i in trained)
    assert not any(keys.holds(i, f"Shirt number {i}") for i in range(1, 61) if i not in trained)
    assert json.loads((head.parent / "align.json").read_text())["bytes"] == head.stat().st_size
