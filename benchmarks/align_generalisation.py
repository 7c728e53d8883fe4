"""How the alignment head carries to goods it was not trained on, and how to blend it with the zero-shot
ImageNet-class map (the measurement behind `Recipe.alpha`).

No second catalog of non-fashion goods exists offline here, so the proxy holds out whole non-clothes
groups of the fashion catalog (Personal Care, Free Items, Sporting Goods, Watches, Eyewear, Jewellery) from
training, then scores them ("ood") and the ordinary held-out 10% ("in_domain_test") for several blends.

    python -m kuamo.benchmarks.align_generalisation   # ~3 min on 2 cores once features are cached
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from kuamo.benchmarks.common import machine_info, markdown_table, write_json, write_markdown
from kuamo.benchmarks.quality import evaluate_embeddings

OOD_MASTER = ("Personal Care", "Free Items", "Sporting Goods")
OOD_SUB = ("Watches", "Eyewear", "Jewellery")
ALPHAS = (1.0, 0.8, 0.6, 0.4, 0.0)


def run(quick: bool = False, model_dir: Path | str = "models/default") -> dict:
    from kuamo.engine.artifacts import ModelArtifacts
    from kuamo.engine.config import EncoderConfig
    from kuamo.engine.encoders import TextEncoder
    from kuamo.export.align import (
        Recipe,
        class_text_matrix,
        encode_unique,
        extract_features,
        head_embeddings,
        is_held_out,
        template,
        train_head,
        zh_template,
    )
    from kuamo.export.samples import DEFAULT_FASHION_DIR, load_fashion, packaged_lines

    md = Path(model_dir)
    items = load_fashion(DEFAULT_FASHION_DIR)
    d = extract_features(items, md, Path(".cache/align"), progress=lambda _m: None)
    test = np.asarray([is_held_out(i) for i in d["ids"]])
    ood = np.asarray([it.attrs["masterCategory"] in OOD_MASTER or it.attrs["subCategory"] in OOD_SUB for it in items])
    tr = ~test & ~ood
    attrs = [it.attrs for it in items]
    recipe = Recipe(epochs=10 if quick else 30)
    tv, ti = encode_unique([template(a) for a in attrs], md)
    vocab = json.loads("\n".join(packaged_lines("zh_vocab.json")))
    zv, zi = encode_unique([zh_template(a, vocab) for a in attrs], md)
    titles = np.unique(np.asarray([it.title for it in items], dtype=object), return_inverse=True)[1]
    head = train_head(d["features"][tr], d["logits"][tr], d["title"][tr], titles[tr], recipe, class_text_matrix(md),
                      progress=lambda _m: None, alternatives=[(tv[ti][tr], ti[tr], recipe.template_share),
                                                              (zv[zi][tr], zi[tr], recipe.zh_template_share)])
    txt = TextEncoder(ModelArtifacts(md), EncoderConfig(precision="fp32"))
    rows = []
    for name, mask in (("ood", ood), ("in_domain_test", test & ~ood)):
        pool = [it for it, m in zip(items, mask, strict=True) if m]
        for a in ALPHAS:
            m = evaluate_embeddings(pool, head_embeddings(head, d["features"][mask], d["logits"][mask], alpha=a),
                                    d["title"][mask], txt)
            rows.append({"set": name, "alpha": a, "pool": len(pool), "known_item_R@10": m["known_item"]["R@10"],
                         "category_P@10": m["category"]["P@10"], "en_P@5": m["queries_en"]["P@5"],
                         "zh_P@5": m["queries_zh"]["P@5"]})
    res = {"suite": "align_generalisation", "machine": machine_info(), "recipe": recipe.__dict__,
           "ood_groups": {"masterCategory": OOD_MASTER, "subCategory": OOD_SUB}, "rows": rows}
    write_json("align_generalisation", res)
    write_markdown("align_generalisation", "Alignment head vs zero-shot map on held-out non-clothes goods",
                   "alpha = weight of the trained head (1 = head only, 0 = zero-shot class map only).\n\n"
                   + markdown_table(rows, floatfmt=".1f"), res["machine"])
    return res


if __name__ == "__main__":
    run()
