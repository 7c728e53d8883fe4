"""Text sets for checking the compact tokenizer against HF's: real ones and a seeded adversarial one."""

from __future__ import annotations

import csv
import random
from pathlib import Path

from kuamo.evaluation.tasks import load_zh_queries
from kuamo.export.samples import packaged_lines
from kuamo.export.text_tower import parity_texts

E5_PREFIXES = ("query: ", "passage: ")


def fashion_titles(fashion_dir: Path) -> list[str]:
    with open(fashion_dir / "products.csv", newline="", encoding="utf-8") as f:
        return [row["productDisplayName"] for row in csv.DictReader(f) if row.get("productDisplayName")]


def zh_query_texts() -> list[str]:
    """The Chinese queries and the English queries they translate."""
    return [q[col] for q in load_zh_queries() for col in ("zh", "en") if q[col]]


def export_texts() -> dict[str, list[str]]:
    return {"parity_texts": [it["text"] for it in parity_texts()], "gate_texts_zh": packaged_lines("gate_texts_zh.txt")}


# Character pools that stress each stage: the normalizer (full-width, compatibility, controls, zero-width,
# combining marks), Metaspace (whitespace runs, the ▁ itself), the Viterbi (scripts with few pieces, chars
# outside the vocabulary, emoji sequences) and the added-token split (special tokens, near misses).
_RANGES = [
    (0x20, 0x7E), (0x00, 0x1F), (0x7F, 0x9F), (0xA0, 0x17F), (0x300, 0x36F), (0x370, 0x3FF), (0x400, 0x4FF),
    (0x590, 0x6FF), (0x900, 0x97F), (0xE00, 0xE7F), (0x1100, 0x11FF), (0x2000, 0x206F), (0x2100, 0x22FF),
    (0x2580, 0x259F), (0x3000, 0x303F), (0x3040, 0x30FF), (0x4E00, 0x9FFF), (0xAC00, 0xD7A3), (0xE000, 0xE0FF),
    (0xFE00, 0xFE0F), (0xFF00, 0xFFEF), (0x10300, 0x1034F), (0x1D400, 0x1D7FF), (0x1F300, 0x1FAFF),
    (0x20000, 0x2A6DF), (0xE0000, 0xE007F),
]
_FRAGMENTS = ["<s>", "</s>", "<pad>", "<unk>", "<mask>", "<s", "</s >", "<MASK>", "▁", "▁▁", "  ", "     ", "\t",
              "\n", "\r\n", "\u3000", "\u200b", "\u200d", "\ufeff", "👩🏽‍🚀", "🏳️‍🌈", "e\u0301", "ＲＥＤ", "query: ",
              "Men Navy Blue Shirt", "男士手表", "ﬁ", "㎏", "①", "Ⅻ", "…", "\u00ad"]


def adversarial_texts(n: int = 5_000, seed: int = 20_873) -> list[str]:
    """Random strings mixing the pools above; about 1 in 50 is long enough to pass 512 tokens."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        length = rng.choice([rng.randint(1, 12), rng.randint(1, 80), rng.randint(600, 3000) if rng.random() < 0.02
                             else rng.randint(1, 40)])
        parts = []
        while sum(map(len, parts)) < length:
            r = rng.random()
            if r < 0.15:
                parts.append(rng.choice(_FRAGMENTS))
            else:
                lo, hi = rng.choice(_RANGES)
                parts.append(chr(rng.randint(lo, hi)) * (rng.randint(2, 6) if r > 0.97 else 1))
        out.append("".join(parts))
    return out
