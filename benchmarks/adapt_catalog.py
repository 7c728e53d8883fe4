"""Adapting to a catalog kuamo has not seen, measured on products the adaptation never saw.

The catalog: the fashion groups kept out of the generic head's training (Watches, Eyewear, Jewellery, Personal
Care, Free Items, Sporting Goods; benchmarks/align_generalisation.py), written as a merchant feed: hex string
ids, a JSON-list category tree "<master> >> <sub> >> <articleType> >> <product name>", photo paths in a column.
`kuamo align --catalog` adapts the shipped head to it (held-out tenth never trained on, validation tenth to stop
on) and reports held-out vs trained-on products for the adapted and the shipped head.

    python -m kuamo.benchmarks.adapt_catalog --out /tmp/adapt     # builds the feed, runs kuamo align
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import shutil
from pathlib import Path

OOD_MASTER = ("Personal Care", "Free Items", "Sporting Goods")
OOD_SUB = ("Watches", "Eyewear", "Jewellery")
FEED_MAP = "id=uniq_id,title=product_name,category=product_category_tree,image=image"
HEADER = ["uniq_id", "product_name", "product_category_tree", "retail_price", "image"]


def hex_id(fashion_id: str) -> str:
    return hashlib.sha1(f"feed:{fashion_id}".encode()).hexdigest()[:24]


def build_unlike_catalog(fashion_dir: Path, out_dir: Path, limit: int | None = None, *,
                         gendered: bool = False) -> Path:
    """Write out_dir/feed.csv + out_dir/img/ (hard links where the file system allows, else copies).
    `gendered`: the leaf names the gender too ("Men's Watches", as marketplaces file them), a finer taxonomy."""
    img = out_dir / "img"
    img.mkdir(parents=True, exist_ok=True)
    rows = []
    with open(fashion_dir / "products.csv", newline="", encoding="utf-8") as f:
        for r in csv.DictReader(f):
            if r["masterCategory"] not in OOD_MASTER and r["subCategory"] not in OOD_SUB:
                continue
            src = fashion_dir / "images" / f"{r['id']}.jpg"
            if not src.is_file() or not r["productDisplayName"]:
                continue
            dst = img / f"{r['id']}.jpg"
            if not dst.exists():
                try:
                    os.link(src, dst)
                except OSError:
                    shutil.copyfile(src, dst)
            leaf = f"{r['gender']}'s {r['articleType']}" if gendered and r["gender"] else r["articleType"]
            tree = " >> ".join([r["masterCategory"], r["subCategory"], leaf, r["productDisplayName"]])
            rows.append({"uniq_id": hex_id(r["id"]), "product_name": r["productDisplayName"],
                         "product_category_tree": json.dumps([tree]), "retail_price": "499",
                         "image": f"img/{r['id']}.jpg"})
            if limit is not None and len(rows) >= limit:
                break
    path = out_dir / "feed.csv"
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=HEADER)
        w.writeheader()
        w.writerows(rows)
    return path


def main() -> None:
    import subprocess
    import sys

    from kuamo.export.samples import DEFAULT_FASHION_DIR

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("/tmp/adapt"), help="where the feed and the head go")
    p.add_argument("--fashion", type=Path, default=DEFAULT_FASHION_DIR, help="fashion catalog directory")
    p.add_argument("--models", type=Path, default=Path("models/default"), help="exported model directory")
    p.add_argument("--gendered", action="store_true", help="leaves that name the gender (\"Men's Watches\")")
    p.add_argument("align_args", nargs="*", help="more `kuamo align` options (after --)")
    args = p.parse_args()
    feed = build_unlike_catalog(args.fashion, args.out / "feed", gendered=args.gendered)
    cmd = ["align", "--catalog", str(feed), "--map", FEED_MAP, "--category-path", ">>", "--category-depth", "3",
           "--models", str(args.models), "--out", str(args.out / "head" / "align_head.npz"),
           "--cache-dir", str(args.out / "cache"), *args.align_args]
    raise SystemExit(subprocess.call([sys.executable, "-m", "kuamo", *cmd]))

if __name__ == "__main__":
    main()
