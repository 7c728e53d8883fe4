"""Real samples for parity checks and the INT8 gate: fashion titles and photos, plus Chinese texts."""

from __future__ import annotations

import csv
import os
import random
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

DEFAULT_FASHION_DIR = Path(os.environ.get("KUAMO_FASHION_DIR", "../shared/data/fashion"))


@dataclass(frozen=True)
class FashionItem:
    id: int
    title: str
    image_path: Path
    attrs: dict


def load_fashion(root: Path | str = DEFAULT_FASHION_DIR) -> list[FashionItem]:
    """Products of the fashion catalog whose photo exists, in file order."""
    root = Path(root)
    items = []
    with open(root / "products.csv", newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            path = root / "images" / f"{row['id']}.jpg"
            if path.is_file() and row.get("productDisplayName"):
                items.append(FashionItem(int(row["id"]), row["productDisplayName"], path, dict(row)))
    return items


def sample_fashion(n: int, seed: int = 0, root: Path | str = DEFAULT_FASHION_DIR) -> list[FashionItem]:
    items = load_fashion(root)
    return random.Random(seed).sample(items, min(n, len(items)))


def packaged_lines(name: str) -> list[str]:
    """Non-empty, non-comment lines of a text file shipped in kuamo.export/data (kept verbatim)."""
    text = resources.files("kuamo.export").joinpath("data", name).read_text(encoding="utf-8")
    return [line for line in text.split("\n") if line and not line.startswith("#")]
