"""`kuamo align`: train the head that maps image features into the frozen multilingual-e5 space.

Data: (photo, title) pairs of a catalog, split 90/10 by a stable hash of the product id (the 10% is never
trained on). Features are extracted once through the exported ONNX towers with the runtime preprocessing
and cached on disk. Training: symmetric InfoNCE with a learnable temperature, AdamW, one-cycle; the
targets are e5("query: " + title) or, for a share of the samples, an attribute template
("a photo of <colour> <articleType> for <gender>"); samples with the same target text are all positives.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from kuamo.engine.artifacts import ModelArtifacts
from kuamo.engine.config import EncoderConfig
from kuamo.engine.encoders import ImageEncoder, TextEncoder
from kuamo.evaluation.split import SPLIT_RULE, is_held_out
from kuamo.export.align_head import AlignHead, HeadShape
from kuamo.export.centroids import training_centroids
from kuamo.export.contrastive import multi_positive_infonce
from kuamo.export.samples import FashionItem, load_fashion, packaged_lines

Progress = Callable[[str], None]
CLASS_PROMPT = "a photo of a {}"


def zh_template(attrs: dict, vocab: dict) -> str:
    """e.g. "女士红色连衣裙": gender, colour, articleType in Chinese."""
    return "".join(vocab[k].get(attrs.get(k, ""), "") for k in ("gender", "baseColour", "articleType"))


def template(attrs: dict) -> str:
    colour = attrs.get("baseColour", "").strip().lower()
    article = attrs.get("articleType", "").strip()
    gender = attrs.get("gender", "").strip().lower()
    text = f"a photo of {colour + ' ' if colour else ''}{article}"
    return text + (f" for {gender}" if gender else "")


@dataclass(frozen=True, kw_only=True)
class Recipe:
    # On the fine-tuned backbone's features (held-out, fp32): 1024 x 30 epochs R@1 36.4 / R@10 80.2,
    # 1024 x 60: 39.3 / 81.3, 2048 x 60: 40.4 / 81.9, 2048 x 100: 40.4 / 82.3 (4.4 min on 2 cores).
    hidden: int = 2048
    epochs: int = 100
    batch: int = 512
    lr: float = 1e-3
    weight_decay: float = 0.05
    temperature: float = 0.07
    template_share: float = 0.3  # English attribute templates
    zh_template_share: float = 0.25  # Chinese attribute templates (export/data/zh_vocab.json)
    # Weight of the trained head vs the zero-shot class map, chosen on non-clothes categories held out of
    # training (benchmarks/results/align_generalisation.json). Head-only recipe: 0.6 doubled their category
    # P@10 (12 -> 27) for -2 points in-domain. Shipped two-stage recipe: 0.8 is as good as 0.6 on them
    # (13.3 vs 12.2) and +1 point of in-domain R@10 (80.8 vs 79.9), so 0.8.
    alpha: float = 0.8
    seed: int = 0


def cache_key(art: ModelArtifacts, items: Sequence[FashionItem], *, image: bool = True) -> str:
    """Names what was computed from these products with these towers (the text tower always; the image
    tower's weights and preprocessing unless `image` is False), so a cache never outlives its inputs."""
    parts = [art.manifest["files"]["text.onnx"]["sha256"]]
    if image:
        parts = [art.towers["image"]["source"], art.towers["image"]["preprocess"], *parts]
    h = hashlib.sha256()
    h.update(json.dumps(parts, sort_keys=True).encode())
    h.update(",".join(str(it.id) for it in items).encode())
    return h.hexdigest()[:16]


def extract_features(items: Sequence[FashionItem], model_dir: Path, cache_dir: Path,
                     progress: Progress = print, batch: int = 64) -> dict[str, np.ndarray]:
    """features (n,1280), logits (n,1000), title (n,384) = e5("query: "+title); cached as .npz."""
    from tqdm import tqdm

    art = ModelArtifacts(model_dir)
    path = Path(cache_dir) / f"features-{cache_key(art, items)}.npz"
    if path.is_file():
        progress(f"align: features from cache {path}")
        with np.load(path) as data:
            return {k: data[k] for k in data.files}
    img = ImageEncoder(art, EncoderConfig(precision="fp32"))
    txt = TextEncoder(art, EncoderConfig(precision="fp32"))
    feats, logits = [], []
    for start in tqdm(range(0, len(items), batch), desc="image features", unit="batch"):
        chunk = items[start: start + batch]
        out = img.encode_outputs([it.image_path.read_bytes() for it in chunk], ["features", "logits"])
        feats.append(out["features"])
        logits.append(out["logits"])
    titles = []
    for start in tqdm(range(0, len(items), 256), desc="title targets", unit="batch"):
        titles.append(txt.encode([it.title for it in items[start: start + 256]], kind="query"))
    data = {"ids": np.asarray([it.id for it in items], dtype=np.int64), "features": np.concatenate(feats),
            "logits": np.concatenate(logits), "title": np.concatenate(titles)}
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **data)
    return data


def encode_unique(texts: Sequence[str], model_dir: Path, kind: str = "query") -> tuple[np.ndarray, np.ndarray]:
    """(vectors of the unique texts, index of each input text into them)."""
    uniq, inverse = np.unique(np.asarray(texts, dtype=object), return_inverse=True)
    enc = TextEncoder(ModelArtifacts(model_dir), EncoderConfig(precision="fp32"))
    return enc.encode(list(uniq), kind=kind), inverse


def class_text_matrix(model_dir: Path) -> np.ndarray:
    """e5("query: a photo of a <class>") for the 1000 ImageNet classes: the zero-shot map."""
    names = packaged_lines("imagenet_classes.txt")
    enc = TextEncoder(ModelArtifacts(model_dir), EncoderConfig(precision="fp32"))
    return enc.encode([CLASS_PROMPT.format(n) for n in names], kind="query")


def train_head(features: np.ndarray, logits: np.ndarray, targets: np.ndarray, target_ids: np.ndarray,
               recipe: Recipe, class_text: np.ndarray, progress: Progress = print,
               alternatives: Sequence[tuple[np.ndarray, np.ndarray, float]] = ()) -> AlignHead:
    """Symmetric InfoNCE. A sample's target is its title, or with probability `share` one of the
    alternatives (vectors per sample, target ids per sample, share) such as attribute templates; every
    sample in the batch with the same target id counts as a positive."""
    torch.manual_seed(recipe.seed)
    rng = np.random.default_rng(recipe.seed)
    head = AlignHead(HeadShape(hidden=recipe.hidden), alpha=recipe.alpha)
    x = np.concatenate([features, logits], axis=1)
    head.mean.copy_(torch.from_numpy(x.mean(0)))
    head.std.copy_(torch.from_numpy(x.std(0) + 1e-6))
    head.class_text.copy_(torch.from_numpy(class_text))
    feats_t, logits_t = torch.from_numpy(features), torch.from_numpy(logits)
    logit_scale = nn.Parameter(torch.tensor(float(np.log(1 / recipe.temperature))))
    opt = torch.optim.AdamW([*head.mlp.parameters(), logit_scale], lr=recipe.lr, weight_decay=recipe.weight_decay)
    steps_per_epoch = max(1, len(x) // recipe.batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=recipe.lr, total_steps=recipe.epochs * steps_per_epoch)
    vec_sets = [targets, *(alt[0] for alt in alternatives)]
    id_sets = [target_ids, *(alt[1] + (k + 1) * 10_000_000 for k, alt in enumerate(alternatives))]
    bounds = np.cumsum([alt[2] for alt in alternatives])
    if bounds.size and bounds[-1] >= 1:
        raise ValueError("alternative target shares must sum to less than 1")
    head.train()
    for epoch in range(recipe.epochs):
        order = rng.permutation(len(x))
        # 0 = title, k = alternative k
        choice = np.searchsorted(bounds, rng.random(len(x)), side="right") + 1 if bounds.size else np.zeros(len(x))
        choice = np.where(choice > len(alternatives), 0, choice).astype(int)
        total = 0.0
        for s in range(steps_per_epoch):
            idx = order[s * recipe.batch: (s + 1) * recipe.batch]
            c = choice[idx]
            tgt = np.stack([vec_sets[c[j]][i] for j, i in enumerate(idx)])
            tid = np.asarray([id_sets[c[j]][i] for j, i in enumerate(idx)])
            img = head.trained(feats_t[idx], logits_t[idx])
            loss = multi_positive_infonce(img, torch.from_numpy(tgt.astype(np.float32)), tid, logit_scale)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach())
        if epoch % 10 == 9 or epoch == recipe.epochs - 1:
            progress(f"align: epoch {epoch + 1}/{recipe.epochs} loss {total / steps_per_epoch:.3f} "
                     f"temperature {1 / float(logit_scale.detach().exp()):.4f}")
    return head.eval()


def head_embeddings(head: AlignHead, features: np.ndarray, logits: np.ndarray,
                    alpha: float | None = None) -> np.ndarray:
    with torch.no_grad():
        if alpha is not None:
            head.alpha.fill_(alpha)
        return head(torch.from_numpy(features), torch.from_numpy(logits)).numpy()


def card(recipe: Recipe, *, catalog: Path, n_train: int, n_test: int, metrics: dict, extra: dict) -> dict:
    return {"data": {"catalog": str(catalog), "train": n_train, "held_out": n_test,
                     "split": f"{SPLIT_RULE} -> held out, never trained on"},
            "recipe": asdict(recipe), "targets": "e5('query: ' + title), or an attribute template",
            "metrics_held_out": metrics, **extra, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def run_align(*, catalog: Path, model_dir: Path, out: Path, cache_dir: Path = Path(".cache/align"),
              recipe: Recipe | None = None, limit: int | None = None, progress: Progress = print) -> dict:
    """Train on the catalog's 90% split, evaluate on its 10%, write <out>.npz + align.json beside it."""
    from kuamo.evaluation.tasks import evaluate_embeddings

    recipe = recipe or Recipe()
    items = load_fashion(catalog)[:limit] if limit else load_fashion(catalog)
    data = extract_features(items, model_dir, cache_dir, progress)
    test = np.asarray([is_held_out(i) for i in data["ids"]])
    attrs = [it.attrs for it in items]
    progress("align: encoding attribute templates and the zero-shot class map")
    tmpl_vecs, tmpl_idx = encode_unique([template(a) for a in attrs], model_dir)
    class_text = class_text_matrix(model_dir)
    title_ids = np.unique(np.asarray([it.title for it in items], dtype=object), return_inverse=True)[1]
    tr = ~test
    progress(f"align: training on {int(tr.sum())} pairs, {int(test.sum())} held out")
    alternatives = [(tmpl_vecs[tmpl_idx][tr], tmpl_idx[tr], recipe.template_share)]
    if recipe.zh_template_share > 0:
        vocab = json.loads("\n".join(packaged_lines("zh_vocab.json")))
        zh_vecs, zh_idx = encode_unique([zh_template(a, vocab) for a in attrs], model_dir)
        alternatives.append((zh_vecs[zh_idx][tr], zh_idx[tr], recipe.zh_template_share))
    head = train_head(data["features"][tr], data["logits"][tr], data["title"][tr], title_ids[tr], recipe,
                      class_text, progress, alternatives)
    emb = head_embeddings(head, data["features"][test], data["logits"][test])
    test_items = [it for it, t in zip(items, test, strict=True) if t]
    txt = TextEncoder(ModelArtifacts(model_dir), EncoderConfig(precision="fp32"))
    metrics = evaluate_embeddings(test_items, emb, data["title"][test], txt, raw_features=data["features"][test])
    base = tuned_base(model_dir)  # read before `out` (maybe the shipped file) is overwritten
    extra: dict = {}
    if base:
        from kuamo.export.tuned_backbone import delta_digest

        extra = {"kind": "head retrained on the fine-tuned backbone's features; int8 backbone delta (backbone.*)",
                 "backbone": {"delta_sha256": delta_digest(base), **_backbone_provenance()}}
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    # the training photos' feature centroids travel with the head: the engine's label-free blend criterion
    head.save(out, extra={**(base or {}), "centroids": training_centroids(data["features"][tr])})
    model_card = card(recipe, catalog=catalog, n_train=int(tr.sum()), n_test=int(test.sum()), metrics=metrics,
                      extra={"weights": out.name, "bytes": out.stat().st_size, **extra})
    out.with_name("align.json").write_text(json.dumps(model_card, indent=2, ensure_ascii=False), encoding="utf-8")
    return model_card


def tuned_base(model_dir: Path) -> dict[str, np.ndarray]:
    """The backbone delta the model directory's image tower was exported with ({} for the pretrained one).

    A head trained on a fine-tuned tower's features is only right on that tower, so its file must carry the
    same delta, found again by its digest in the manifest: in the file the tower was exported from, or in
    the shipped one."""
    from kuamo.export.align_head import default_head_path
    from kuamo.export.tuned_backbone import backbone_arrays, delta_digest

    image = ModelArtifacts(model_dir).towers["image"]
    tuned = image.get("source", {}).get("finetuned")
    if not tuned:
        return {}
    exported_from = image.get("alignment", {}).get("head_path")
    for candidate in filter(None, (exported_from, default_head_path())):
        if Path(candidate).is_file():
            base = backbone_arrays(candidate)
            if base and delta_digest(base) == tuned["delta_sha256"]:
                return base
    raise ValueError(f"the image tower in {model_dir} was exported with a fine-tuned backbone "
                     f"(delta {tuned['delta_sha256']}) found neither in the file it was exported from "
                     f"({exported_from}) nor in the shipped {default_head_path()}; export the models again "
                     "with that file (`kuamo export --head FILE`) first")


def _backbone_provenance() -> dict:
    """How the shipped backbone delta was made, from the shipped card (stage 1: `kuamo align --finetune`)."""
    from kuamo.export.align_head import default_head_path

    path = default_head_path().with_name("align.json")
    old = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    if "backbone" in old:
        return {k: v for k, v in old["backbone"].items() if k != "delta_sha256"}
    keep = ("recipe", "trained_on", "history", "metrics_held_out", "created")
    return {"stage1": {k: old[k] for k in keep if k in old}} if old.get("kind", "").startswith("finetuned") else {}


def with_overrides(recipe: Any, **kw: object) -> Any:
    """A copy of a recipe dataclass with the given fields replaced (None = keep)."""
    return replace(recipe, **{k: v for k, v in kw.items() if v is not None})
