"""Adapting to a catalog, judged on every product once: 10 folds, each product held out in one of them.

`python -m kuamo.benchmarks.adapt_folds [--folds 10] [--models DIR]`: the unlike-goods catalog of
benchmarks/adapt_catalog.py (the fashion groups kept out of the generic head's training), with its article-type
leaves and with gendered leaves. In fold f the held-out products are those whose id bucket (sha1, 0..99) lies in
[f x 100/folds, (f + 1) x 100/folds); adapting never trains on them and never chooses on them (it early-stops on
the stable validation tenth of the rest). One held-out tenth is ~212 products, where one query is half a point
and the difference of two heads swings by 2 points from split to split; pooled over the folds every product is
an unseen query once (2,179), which is what the adapted-vs-shipped comparison needs.

Variants: the shipped (generic) head; adapting without the fused-ranking term (fused_rank 0, the recipe before
it); the default AdaptRecipe. Scores as `kuamo align` reports them (evaluation/catalog_tasks.py, whole catalog
as one pool). Since stop 36 the fused title search is also compared query by query: the held-out queries the
adapted head finds and the shipped one misses, the reverse, and a two-sided sign test on that split (a pooled
rate 0.04 lower is one query in 2,179). Results: benchmarks/results/adapt_folds.json + .md.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kuamo.benchmarks.common import machine_info, markdown_table, write_results
from kuamo.evaluation.catalog_tasks import sign_test_p

DEFAULT_VARIANT = "adapted (default AdaptRecipe)"
MEASURES = (("title_to_product_fused", "R@1"), ("title_to_product_fused", "R@10"), ("title_to_product_image", "R@1"),
            ("title_to_product_image", "R@10"), ("photo_to_photo", "P@10"))
SIGNIFICANT = 0.05  # a net loss of fused queries counts as a loss below this sign-test p


def fold_split(fold: int, folds: int) -> Callable[[str], bool]:
    from kuamo.engine.split_rule import id_bucket

    lo, hi = fold * 100 // folds, (fold + 1) * 100 // folds  # 3 folds: 0-32, 33-65, 66-99
    return lambda pid: lo <= id_bucket(pid) < hi


def pooled(reports: list[dict], head: str) -> dict[str, Any]:
    """Held-out measures weighted by each fold's held-out count (= over every product once); trained-on and
    category as the mean over folds."""
    n = [r["queries"]["held_out"] for r in reports]
    out: dict[str, Any] = {"held_out_queries": sum(n)}
    for task, metric in MEASURES:
        key = f"{task} {metric}"
        out[f"held_out {key}"] = round(sum(r[head]["held_out"][task][metric] * k for r, k in zip(reports, n,
                                                                                                  strict=True))
                                       / sum(n), 2)
        out[f"trained_on {key}"] = round(sum(r[head]["trained_on"][task][metric] for r in reports) / len(reports), 2)
    out["category P@10"] = round(sum(r[head]["category_all"]["P@10"] for r in reports) / len(reports), 2)
    return out


def run_variant(feed: Path, models: Path, cache: Path, recipe: Any, folds: int) -> dict[str, Any]:
    from kuamo.benchmarks.adapt_catalog import FEED_MAP
    from kuamo.export.align import run_align
    from kuamo.server.config import load_catalog_config

    cfg = load_catalog_config(None, overrides={"mapping": "auto", "map": FEED_MAP, "category_path": ">>",
                                               "category_depth": 3})
    reports, epochs = [], []
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="kuamo-folds-") as tmp:
        for f in range(folds):
            card = run_align(catalog=feed, model_dir=models, out=Path(tmp) / f"head{f}.npz", recipe=recipe,
                             progress=lambda _m: None, catalog_config=cfg, cache_dir=cache,
                             held_out=fold_split(f, folds))
            reports.append(card["adaptation"])
            epochs.append(card["best_epoch"])
            print(f"adapt_folds: fold {f + 1}/{folds} best epoch {card['best_epoch']}", file=sys.stderr, flush=True)
    paired = {m: {side: sum(r["held_out_fused_paired"][m][side] for r in reports) for side in ("better", "worse")}
              for m in ("R@1", "R@10")}
    return {"adapted": pooled(reports, "adapted"), "shipped": pooled(reports, "shipped"), "best_epochs": epochs,
            "held_out_fused_paired": paired, "seconds": round(time.perf_counter() - t0, 1)}


def run(models: Path, fashion: Path, out: Path, folds: int) -> dict[str, Any]:
    from kuamo.benchmarks.adapt_catalog import build_unlike_catalog
    from kuamo.export.align import AdaptRecipe

    variants = {"adapted, no fused-ranking term": dataclasses.replace(AdaptRecipe(), fused_rank=0.0),
                DEFAULT_VARIANT: AdaptRecipe()}
    res: dict[str, Any] = {"suite": "adapt_folds", "machine": machine_info(), "models": str(models), "folds": folds,
                           "recipe": dataclasses.asdict(AdaptRecipe()), "catalogs": {}}
    for name, gendered in (("article-type leaves", False), ("gendered leaves", True)):
        feed = build_unlike_catalog(fashion, out / ("gendered" if gendered else "leaves"), gendered=gendered)
        rows = {}
        for label, recipe in variants.items():
            print(f"adapt_folds: {name}, {label}", file=sys.stderr, flush=True)
            rows[label] = run_variant(feed, models, out / "cache", recipe, folds)
        res["catalogs"][name] = rows
    res["done_when"] = {name: _verdict(rows[DEFAULT_VARIANT]) for name, rows in res["catalogs"].items()}
    write_results("adapt_folds", res, "Adapting to a catalog: every product held out once (10 folds)",
                  lambda: _markdown(res), res["machine"])
    return res


def _verdict(row: dict) -> dict[str, Any]:
    a, s = row["adapted"], row["shipped"]
    d = {f"{t} {m}": round(a[f"held_out {t} {m}"] - s[f"held_out {t} {m}"], 2) for t, m in MEASURES}
    photo_only = d["title_to_product_image R@10"] > 0 and d["photo_to_photo P@10"] >= 0
    fused = d["title_to_product_fused R@1"] >= 0 and d["title_to_product_fused R@10"] >= 0
    # query by query: held-out queries the adapted head finds and the shipped one misses (better) and the
    # reverse (worse); a sign test says whether a net loss is more than chance
    paired = {m: {**c, "sign_test_p": float(f"{sign_test_p(c['better'], c['worse']):.3g}")}
              for m, c in row["held_out_fused_paired"].items()}
    lower = any(c["worse"] > c["better"] and c["sign_test_p"] < SIGNIFICANT for c in paired.values())
    return {"held_out_change": d, "photo_only_improves": photo_only, "fused_not_lower": fused,
            "fused_paired": paired, "fused_lower_beyond_chance": lower, "met": photo_only and fused}


def _markdown(res: dict) -> str:
    parts = [__doc__.split("\n\n", 1)[1].strip(), ""]
    for name, rows in res["catalogs"].items():
        table = []
        any_row = next(iter(rows.values()))
        for label, row in [("shipped (generic) head", {"adapted": any_row["shipped"]}), *rows.items()]:
            h = row["adapted"]
            table.append({"head": label, "best epochs": " ".join(map(str, row.get("best_epochs", []))) or "-",
                          **{f"held-out {t.replace('title_to_product_', 'title ')} {m}": h[f"held_out {t} {m}"]
                             for t, m in MEASURES},
                          "trained-on fused R@1": h["trained_on title_to_product_fused R@1"],
                          "trained-on image R@10": h["trained_on title_to_product_image R@10"],
                          "category P@10": h["category P@10"]})
        v = res["done_when"][name]
        parts += [f"## {name} ({any_row['shipped']['held_out_queries']} held-out queries over {res['folds']} folds)",
                  "", markdown_table(table, floatfmt=".2f"), "",
                  f"Default vs shipped on held-out products: {v['held_out_change']}; photo-only search improves: "
                  f"{v['photo_only_improves']}, fused search not lower: {v['fused_not_lower']}. Fused, query by "
                  "query (held-out queries the adapted head finds and the shipped one misses / the reverse, two-sided "
                  "sign test): " + "; ".join(f"{m} {c['better']} better / {c['worse']} worse, p = {c['sign_test_p']:g}"
                                             for m, c in v["fused_paired"].items())
                  + f"; lower beyond chance (p < {SIGNIFICANT:g}): {v['fused_lower_beyond_chance']}.", ""]
    parts.append("Reproduce: `python -m kuamo.benchmarks.adapt_folds --models <generic model set>` (see "
                 "adapt_catalog.md for making it with `kuamo export --head generic`).")
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> None:
    from kuamo.export.samples import DEFAULT_FASHION_DIR

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", type=Path, default=Path("models/default"), help="exported model directory")
    p.add_argument("--fashion", type=Path, default=DEFAULT_FASHION_DIR, help="fashion catalog directory")
    p.add_argument("--out", type=Path, default=Path("/tmp/adapt-folds"), help="where the feeds and caches go")
    p.add_argument("--folds", type=int, default=10, help="number of folds, 2..100 (each product held out in one)")
    args = p.parse_args(argv)
    if not 2 <= args.folds <= 100:
        p.error(f"--folds must be within 2..100 (the id buckets are 0..99), got {args.folds}")
    run(args.models, args.fashion, args.out, args.folds)


if __name__ == "__main__":
    main()
