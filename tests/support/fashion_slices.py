"""Slices of the real fashion catalog written as a catalog file of their own (integration tests)."""

from __future__ import annotations

import csv
from pathlib import Path

from kuamo.engine.split_rule import is_held_out


def fashion_slice(fashion_dir: Path, out: Path, n: int, *, photo_only: bool = False, unseen: bool = True) -> Path:
    """n rows spread over the catalog, photos named relative to `fashion_dir` (index with image_root=it);
    `unseen`: only the held-out products the shipped head never trained on (what any other catalog is to it:
    the blend chooser leaves the trained-on ones out of its sample); `photo_only`: ids and photos alone."""
    with open(fashion_dir / "products.csv", newline="", encoding="utf-8") as f:
        rows = [r for r in csv.DictReader(f) if not unseen or is_held_out(r["id"])]
    rows = rows[:: len(rows) // n][:n]
    if photo_only:  # a photo collection: ids and photos, nothing to measure a blend by
        rows = [{"id": r["id"], "image": f"images/{r['id']}.jpg"} for r in rows]
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return out
