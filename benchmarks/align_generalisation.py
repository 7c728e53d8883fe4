"""How the alignment head carries to goods it was not trained on, and how to blend it with the zero-shot
ImageNet-class map (the measurement behind `Recipe.alpha`).

No second catalog of non-fashion goods exists offline here, so the proxy holds out whole non-clothes
groups of the fashion catalog (Personal Care, Free Items, Sporting Goods, Watches, Eyewear, Jewellery) from
training, then scores them ("ood") and the ordinary held-out 10% ("in_domain_test") for several blends.

    python -m kuamo.benchmarks.align_generalisation --models DIR  # DIR from `kuamo export --head generic`
        # (a pretrained backbone: the shipped one was fine-tuned on every group); ~3 min once features are cached
    python -m kuamo.benchmarks.align_generalisation --tuned FILE   # a fine-tuned backbone + head trained
        # without those groups (`python -m kuamo.export.finetune --exclude ...`, a GPU job): ~5 min
    python -m kuamo.benchmarks.align_generalisation --tuned FILE --two-stage   # + stage 2, as shipped: ~12 min
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from kuamo.benchmarks.common import machine_info, markdown_table, read_previous, write_results
from kuamo.evaluation.tasks import evaluate_embeddings

OOD_MASTER = ("Personal Care", "Free Items", "Sporting Goods")
OOD_SUB = ("Watches", "Eyewear", "Jewellery")
ALPHAS = (1.0, 0.8, 0.6, 0.4, 0.0)


def _head_only(quick: bool, model_dir: Path | str, recipe: object | None = None) -> dict:
    """Train the head-only recipe without the OOD groups on `model_dir`'s image features and score it at
    every blend."""
    from kuamo.engine.artifacts import ModelArtifacts
    from kuamo.engine.config import EncoderConfig
    from kuamo.engine.encoders import TextEncoder
    from kuamo.evaluation.split import is_held_out
    from kuamo.export.align import (
        Recipe,
        class_text_matrix,
        encode_unique,
        extract_features,
        head_embeddings,
        template,
        train_head,
        zh_template,
    )
    from kuamo.export.samples import DEFAULT_FASHION_DIR, load_fashion, packaged_lines

    md = Path(model_dir)
    items = load_fashion(DEFAULT_FASHION_DIR)
    d = extract_features(items, md, Path(".cache/align"), progress=lambda _m: None)
    test = np.asarray([is_held_out(i) for i in d["ids"]])
    ood = ood_mask(items)
    tr = ~test & ~ood
    attrs = [it.attrs for it in items]
    recipe = recipe or Recipe(hidden=1024, epochs=10 if quick else 30)  # the generic head's recipe
    tv, ti = encode_unique([template(a) for a in attrs], md)
    vocab = json.loads("\n".join(packaged_lines("zh_vocab.json")))
    zv, zi = encode_unique([zh_template(a, vocab) for a in attrs], md)
    titles = np.unique(np.asarray([it.title for it in items], dtype=object), return_inverse=True)[1]
    head = train_head(d["features"][tr], d["logits"][tr], d["title"][tr], titles[tr], recipe, class_text_matrix(md),
                      progress=lambda _m: None, alternatives=[(tv[ti][tr], ti[tr], recipe.template_share),
                                                              (zv[zi][tr], zi[tr], recipe.zh_template_share)])
    txt = TextEncoder(ModelArtifacts(md), EncoderConfig(precision="fp32"))
    rows, calibrated = [], []
    for name, mask in (("ood", ood), ("in_domain_test", test & ~ood)):
        pool = [it for it, m in zip(items, mask, strict=True) if m]
        for a in ALPHAS:
            m = evaluate_embeddings(pool, head_embeddings(head, d["features"][mask], d["logits"][mask], alpha=a),
                                    d["title"][mask], txt)
            rows.append(_row(name, a, len(pool), m))
        shipped = head_embeddings(head, d["features"][mask], d["logits"][mask], alpha=recipe.alpha)
        calibrated += _calibrated(name, pool, shipped, d["logits"][mask], d["title"][mask], txt,
                                  head.class_text.numpy())
    return {"recipe": recipe.__dict__, "rows": rows, "calibrated": calibrated}


def _calibrated(name: str, pool: list, emb: np.ndarray, logits: np.ndarray, titles: np.ndarray, txt: object,
                class_text: np.ndarray) -> list[dict]:
    """The per-catalog blend (engine/zero_shot_blend.py) as the engine runs it, honestly split: the even-
    numbered photos of the set choose beta, the odd-numbered ones are scored with it, beside the exported
    vector (beta 1) and the zero-shot map (beta 0) on the same odd half."""
    from kuamo.engine.zero_shot_blend import ZeroShotMap, choose_beta

    zs = ZeroShotMap(class_text)
    a = np.arange(len(pool)) % 2 == 0
    b = ~a
    leaves = np.asarray([it.attrs["articleType"] for it in pool], dtype=object)
    choice = choose_beta(zs, emb[a], logits[a], titles[a], list(leaves[a]),
                         lambda names: txt.encode(names, kind="query"))
    scored = [it for it, m in zip(pool, b, strict=True) if m]
    out = []
    for label, beta in (("chosen on the even half", choice.beta), ("exported vector", 1.0), ("zero-shot map", 0.0)):
        m = evaluate_embeddings(scored, zs.blend(emb[b], logits[b], beta), titles[b], txt)
        row = _row(name, beta, len(scored), m)
        out.append({"set": name, "blend": label, "beta": beta, **{k: v for k, v in row.items()
                                                                    if k not in ("set", "alpha")}})
    return out


def _row(name: str, alpha: float, pool: int, m: dict) -> dict:
    """One report row; the definitions the first (head-only) section was measured with."""
    return {"set": name, "alpha": alpha, "pool": pool, "known_item_R@10": m["known_item_strict"]["R@10"],
            "category_P@10": m["category_all"]["P@10"], "en_P@5": m["queries_en"]["P@5"],
            "zh_P@5": m["queries_zh"]["P@5"]}


def ood_mask(items: list) -> np.ndarray:
    return np.asarray([it.attrs["masterCategory"] in OOD_MASTER or it.attrs["subCategory"] in OOD_SUB
                       for it in items])


def _tuned(path: Path, model_dir: Path | str) -> dict:
    """Score a fine-tuned backbone + head (trained without the OOD groups) at every blend."""
    import torch

    from kuamo.engine.artifacts import ModelArtifacts
    from kuamo.engine.config import EncoderConfig
    from kuamo.engine.encoders import TextEncoder
    from kuamo.engine.imaging import ImagePreprocess
    from kuamo.evaluation.split import is_held_out
    from kuamo.export.image_tower import load_photos
    from kuamo.export.samples import DEFAULT_FASHION_DIR, load_fashion
    from kuamo.export.tuned_backbone import load_tuned, tower_outputs

    items = load_fashion(DEFAULT_FASHION_DIR)
    ood = ood_mask(items)
    test = np.asarray([is_held_out(it.id) for it in items])
    backbone, head = load_tuned(path)
    own_alpha = float(head.alpha)
    txt = TextEncoder(ModelArtifacts(model_dir), EncoderConfig(precision="fp32"))
    rows, calibrated = [], []
    for name, mask in (("ood", ood), ("in_domain_test", test & ~ood)):
        pool = [it for it, m in zip(items, mask, strict=True) if m]
        feats, logits = tower_outputs(backbone, load_photos(pool, ImagePreprocess()))
        titles = txt.encode([it.title for it in pool], kind="query")
        for a in ALPHAS:
            head.alpha.fill_(a)
            with torch.no_grad():
                emb = head(torch.from_numpy(feats), torch.from_numpy(logits)).numpy()
            m = evaluate_embeddings(pool, emb, titles, txt)
            rows.append(_row(name, a, len(pool), m))
        head.alpha.fill_(own_alpha)
        with torch.no_grad():
            emb = head(torch.from_numpy(feats), torch.from_numpy(logits)).numpy()
        calibrated += _calibrated(name, pool, emb, logits, titles, txt, head.class_text.numpy())
    return {"file": str(path), "rows": rows, "calibrated": calibrated, "alpha": own_alpha}


def _two_stage(path: Path, model_dir: Path | str, quick: bool) -> dict:
    """The shipped recipe's two stages without the OOD groups: `path` is stage 1 (backbone + head fine-tuned
    without them, a GPU job); stage 2 retrains the head (`Recipe()`) on that backbone's features."""
    import tempfile

    from kuamo.export.align import Recipe
    from kuamo.export.pipeline import run_export

    with tempfile.TemporaryDirectory(prefix="kuamo-ood-") as tmp:
        run_export(tmp, head=path, progress=lambda _m: None)
        res = _head_only(quick, tmp, recipe=Recipe(epochs=10) if quick else Recipe())
    return {"file": str(path), **res}


def run(quick: bool = False, model_dir: Path | str = "models/default", tuned: Path | None = None,
        two_stage: bool = False) -> dict:
    """Head-only recipe by default; with `tuned`, score that file and keep the last head-only section."""
    old = read_previous("align_generalisation") or {}
    if "rows" in old:  # results written before the fine-tuned section existed
        old = {"head_only": {"recipe": old["recipe"], "rows": old["rows"], "machine": old["machine"]}}
    res = {"suite": "align_generalisation", "machine": machine_info(),
           "ood_groups": {"masterCategory": OOD_MASTER, "subCategory": OOD_SUB}}
    if tuned is None:
        _require_pretrained_backbone(Path(model_dir))
        res["head_only"] = {**_head_only(quick, model_dir), "machine": res["machine"], "models": str(model_dir)}
    else:
        key = "two_stage" if two_stage else "finetuned"
        section = _two_stage(Path(tuned), model_dir, quick) if two_stage else _tuned(Path(tuned), model_dir)
        res[key] = {**section, "machine": res["machine"]}
    for key in ("head_only", "finetuned", "two_stage"):
        if key not in res and key in old:
            res[key] = old[key]
    write_results("align_generalisation", res, "Alignment vs zero-shot map on held-out non-clothes goods",
                  lambda: _body(res), res["machine"])
    return res


def _body(res: dict) -> str:
    parts = ["alpha = weight of the trained head (1 = head only, 0 = zero-shot class map only). "
             "category_P@10 over every articleType with >= 5 photos in the set (quality.py's `category_all`)."]
    for key, title in (("head_only", "Head-only recipe (frozen ImageNet backbone; `kuamo align`)"),
                       ("finetuned", "Fine-tuned backbone + head (`kuamo.export.finetune`, GPU)"),
                       ("two_stage", "Shipped recipe: fine-tuned backbone, head retrained on its features "
                                     "(`--tuned FILE --two-stage`)")):
        if key in res:
            m = res[key]["machine"]
            parts.append(f"## {title}\n\nMachine: {m['cpu']['model']}, {m['time']}."
                         + (f" File: `{res[key]['file']}`." if "file" in res[key] else "")
                         + "\n\n" + markdown_table(res[key]["rows"], floatfmt=".1f")
                         + (_calibrated_markdown(res[key]["calibrated"]) if "calibrated" in res[key] else ""))
    return "\n\n".join(parts)


def _require_pretrained_backbone(model_dir: Path) -> None:
    """The head-only proxy trains on `model_dir`'s image features: a backbone fine-tuned on the whole catalog
    has seen the held-out groups, and its figures would flatter the head."""
    from kuamo.engine.artifacts import ModelArtifacts

    if "finetuned" in ModelArtifacts(model_dir).towers.get("image", {}).get("source", {}):
        raise ValueError(f"{model_dir} has a fine-tuned backbone that saw the held-out groups; export the "
                         "pretrained one (`kuamo export --head generic --out DIR`) and pass --models DIR")


def _calibrated_markdown(rows: list[dict]) -> str:
    return ("\nBlend chosen per catalog (what `kuamo index` does on a catalog's first indexing; "
            "engine/zero_shot_blend.py): the even-numbered photos of each set choose beta from "
            "(1, 0.75, 0.5, 0.25, 0), the odd-numbered ones are scored. beta = weight of the exported vector "
            "against the zero-shot map.\n\n" + markdown_table(rows, floatfmt=".2f"))


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--tuned", type=Path, default=None)
    ap.add_argument("--two-stage", action="store_true", help="retrain the head on --tuned's backbone (shipped)")
    ap.add_argument("--models", type=Path, default=Path("models/default"),
                    help="export to read the text tower (and, for the head-only section, the image features) from")
    a = ap.parse_args()
    run(quick=a.quick, model_dir=a.models, tuned=a.tuned, two_stage=a.two_stage)
