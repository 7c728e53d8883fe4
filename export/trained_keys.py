"""Write the keys of the products a shipped head trained on into its file (heads trained before the keys
existed): the training split of the catalog it was trained on (evaluation/split.py), keyed as
engine/trained_products.py keys them, so an engine indexing that catalog leaves them out of the image-blend
chooser's sample. Heads trained by `kuamo align` from now on carry the keys already (export/align.py).

    python -m kuamo.export.trained_keys --head export/heads/align_head.npz
"""

from __future__ import annotations

import json
from pathlib import Path

from kuamo.engine.trained_products import product_keys
from kuamo.export.align_head import DEFAULT_CARD_FILE, TRAINED_KEYS, AlignHead


def fit_head_file(head_path: Path, catalog: Path) -> int:
    """Keys of the catalog's products outside the held-out split (what the shipped heads trained on) into
    `head_path`; the card beside it (align.json) gets the file's new size. Returns how many."""
    from kuamo.evaluation.split import is_held_out
    from kuamo.export.samples import load_fashion

    keys = product_keys((it.id, it.title) for it in load_fashion(catalog) if not is_held_out(it.id))
    AlignHead.add_arrays(head_path, {TRAINED_KEYS: keys})
    card_path = head_path.with_name(DEFAULT_CARD_FILE)
    if card_path.is_file():
        card = json.loads(card_path.read_text(encoding="utf-8"))
        card["bytes"] = head_path.stat().st_size
        card_path.write_text(json.dumps(card, indent=2, ensure_ascii=False), encoding="utf-8")
    return len(keys)


def main(argv: list[str] | None = None) -> None:
    import argparse

    from kuamo.export.samples import DEFAULT_FASHION_DIR

    ap = argparse.ArgumentParser(description="write the training products' keys into a shipped head file")
    ap.add_argument("--head", type=Path, required=True)
    ap.add_argument("--catalog", type=Path, default=Path(DEFAULT_FASHION_DIR))
    a = ap.parse_args(argv)
    if not a.head.is_file():
        ap.error(f"--head {a.head} is not a head file")
    print(f"{a.head}: {fit_head_file(a.head, a.catalog)} training products' keys")


if __name__ == "__main__":
    main()
