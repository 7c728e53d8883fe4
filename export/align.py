"""`kuamo align`: train the head that maps image features into the frozen multilingual-e5 space.

Data: (photo, title) pairs of a catalog, split 90/10 by a stable hash of the product id (the 10% is never
trained on). Features are extracted once through the exported ONNX towers with the runtime preprocessing
and cached on disk. Training: symmetric InfoNCE with a learnable temperature, AdamW, one-cycle; the
targets are e5("query: " + title) or, for a share of the samples, an attribute template
("a photo of <colour> <leaf category> for <gender>", or its Chinese form where export/data/zh_vocab.json names
the catalog's own values); samples with the same target text are all positives.

Any catalog `kuamo index` accepts can be read (export/catalog_items.py, same mapping options). Adapting to a
catalog (AdaptRecipe, `kuamo align --catalog`) starts from the shipped head, distils towards its outputs,
ranks each title query above its text competitors by the engine's fused score, keeps a second 10% out to
early-stop on (evaluation/split.py is_validation), and reports held-out vs trained-on products for the adapted
and the shipped head on the whole catalog as one pool.
"""

from __future__ import annotations

import copy
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
from kuamo.engine.catalog_map import CatalogConfig
from kuamo.engine.config import EncoderConfig
from kuamo.engine.encoders import ImageEncoder, TextEncoder
from kuamo.engine.errors import InvalidInput
from kuamo.engine.trained_products import product_keys
from kuamo.engine.vectors import l2_normalize
from kuamo.evaluation.catalog_tasks import (
    FUSED_WEIGHTS,
    category_task,
    fused_hits,
    headline,
    paired_change,
    subset_tasks,
)
from kuamo.evaluation.split import SPLIT_RULE, VALIDATION_RULE, is_held_out, is_validation
from kuamo.export.align_head import TRAINED_KEYS, AlignHead, HeadShape
from kuamo.export.catalog_items import CatalogItem, LoadedCatalog, load_catalog
from kuamo.export.centroids import near_cosine, training_centroids
from kuamo.export.contrastive import fused_ranking_loss, multi_positive_infonce, text_competitors
from kuamo.export.samples import FashionItem, packaged_lines

Progress = Callable[[str], None]
# (vectors per sample, target id per sample, share of the samples, optional mask of the samples having one)
Alternative = tuple[np.ndarray, np.ndarray, float] | tuple[np.ndarray, np.ndarray, float, np.ndarray]
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
    alpha: float | None = 0.8  # None: keep the alpha of the head adapting starts from
    seed: int = 0
    # adapting (AdaptRecipe): start from the shipped head, distil towards its outputs, early-stop
    from_base: bool = False
    distill: float = 0.0  # weight of 1 - cos(output, shipped head's output) in the loss
    patience: int | None = None  # None: no validation split, train every epoch (the shipped recipe)
    # an epoch replaces the best state only when it beats it by this much (points of the validation headline):
    # one validation query is worth about 0.5 point, so smaller gains are noise and the start state stays
    min_gain: float = 0.0
    fused_guard: float = 0.0  # validation penalty per point of fused title R@1 lost against the shipped head
    # weight of the fused-ranking term (contrastive.fused_ranking_loss): each title query against its
    # `hard_negatives` text competitors, scored as the engine fuses text and image. Without it a head that aligns
    # photos with titles better widens the image scores' spread and fused title search falls; with it the image
    # block learns to settle what the text cannot (benchmarks/results/adapt_catalog.md, adapt_folds.md)
    fused_rank: float = 0.0
    hard_negatives: int = 20
    fused_scale: float = 100.0  # fused cosines differ by hundredths between competitors: a sharp softmax


@dataclass(frozen=True, kw_only=True)
class AdaptRecipe(Recipe):
    """`kuamo align --catalog`: adapt the shipped head to a catalog without making it learn the catalog's
    photos by heart (see run_align's report: held-out vs trained-on products, adapted vs shipped)."""

    epochs: int = 30
    lr: float = 3e-4
    alpha: float | None = None
    from_base: bool = True
    distill: float = 1.0
    patience: int | None = 5
    min_gain: float = 0.5
    fused_guard: float = 3.0
    fused_rank: float = 1.0


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


def image_outputs(img: ImageEncoder, paths: Sequence[Path], names: list[str],
                  batch: int = 64) -> dict[str, np.ndarray]:
    """The image tower's named outputs for photo files, `batch` photos at a time."""
    from tqdm import tqdm

    parts: dict[str, list[np.ndarray]] = {n: [] for n in names}
    for start in tqdm(range(0, len(paths), batch), desc="image features", unit="batch"):
        out = img.encode_outputs([p.read_bytes() for p in paths[start: start + batch]], names)
        for n in names:
            parts[n].append(out[n])
    return {n: np.concatenate(parts[n]) for n in names}


def extract_features(items: Sequence[Any], model_dir: Path, cache_dir: Path,
                     progress: Progress = print, batch: int = 64) -> dict[str, np.ndarray]:
    """features (n,1280), logits (n,1000), embedding (n,384): the image tower's served output, i.e. the
    shipped head's; title (n,384) = e5("query: " + text), doc (n,384) = e5("passage: " + document text) as
    the engine stores it; cached as .npz. `items` are CatalogItems or FashionItems (text = title)."""
    from tqdm import tqdm

    art = ModelArtifacts(model_dir)
    path = Path(cache_dir) / f"features2-{cache_key(art, items)}.npz"
    if path.is_file():
        progress(f"align: features from cache {path}")
        with np.load(path) as data:
            return {k: data[k] for k in data.files}
    img = ImageEncoder(art, EncoderConfig(precision="fp32"))
    txt = TextEncoder(art, EncoderConfig(precision="fp32"))
    image = image_outputs(img, [it.image_path for it in items], ["features", "logits", img.embedding_output], batch)

    def encode(texts: list[str], kind: str, desc: str) -> np.ndarray:
        vecs = [txt.encode(texts[s: s + 256], kind=kind) for s in tqdm(range(0, len(texts), 256), desc=desc)]
        return np.concatenate(vecs) if vecs else np.zeros((0, art.towers["text"]["dim"]), np.float32)

    texts = [getattr(it, "text", it.title) for it in items]
    data = {"ids": np.asarray([str(it.id) for it in items]), "features": image["features"],
            "logits": image["logits"], "embedding": l2_normalize(image[img.embedding_output]),
            "title": encode(texts, "query", "title targets"),
            "doc": encode([getattr(it, "document", t) for it, t in zip(items, texts, strict=True)], "document",
                          "document vectors")}
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
               alternatives: Sequence[Alternative] = (), *, init: AlignHead | None = None,
               teacher: np.ndarray | None = None, validate: Callable[[AlignHead], float] | None = None,
               history: list[dict] | None = None,
               fused_pairs: tuple[np.ndarray, np.ndarray] | None = None) -> AlignHead:
    """Symmetric InfoNCE. A sample's target is its title, or with probability `share` one of the
    alternatives (vectors per sample, target ids per sample, share, optional mask of the samples that have
    one) such as attribute templates; every sample in the batch with the same target id counts as a positive.

    Adapting a shipped head (`init`): training starts from its weights and standardisation, `teacher` holds
    its outputs on the same samples and `recipe.distill` weighs 1 - cos(output, teacher) in the loss (what
    keeps products added later ranking as the trained-on ones do), and `validate` scores the head on products
    it never trains on after every epoch (and before the first): the best state is kept, and training stops
    after `recipe.patience` epochs without a better score.

    `fused_pairs` (title query vectors, document vectors of the same samples) with `recipe.fused_rank` > 0 add
    the fused-ranking term: each title query against its own product and its text competitors among the samples."""
    torch.manual_seed(recipe.seed)
    rng = np.random.default_rng(recipe.seed)
    x = np.concatenate([features, logits], axis=1)
    if init is not None:
        head = copy.deepcopy(init)
        if recipe.alpha is not None:
            head.alpha.fill_(recipe.alpha)
    else:
        head = AlignHead(HeadShape(hidden=recipe.hidden), alpha=0.8 if recipe.alpha is None else recipe.alpha)
        head.mean.copy_(torch.from_numpy(x.mean(0)))
        head.std.copy_(torch.from_numpy(x.std(0) + 1e-6))
        head.class_text.copy_(torch.from_numpy(class_text))
    feats_t, logits_t = torch.from_numpy(features), torch.from_numpy(logits)
    teacher_t = None if teacher is None or recipe.distill <= 0 else torch.from_numpy(teacher.astype(np.float32))
    logit_scale = nn.Parameter(torch.tensor(float(np.log(1 / recipe.temperature))))
    opt = torch.optim.AdamW([*head.mlp.parameters(), logit_scale], lr=recipe.lr, weight_decay=recipe.weight_decay)
    steps_per_epoch = max(1, len(x) // recipe.batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=recipe.lr, total_steps=recipe.epochs * steps_per_epoch)
    vec_sets = [targets, *(alt[0] for alt in alternatives)]
    id_sets = [target_ids, *(alt[1] + (k + 1) * 10_000_000 for k, alt in enumerate(alternatives))]
    has = [np.ones(len(x), bool), *(alt[3] if len(alt) > 3 else np.ones(len(x), bool) for alt in alternatives)]
    bounds = np.cumsum([alt[2] for alt in alternatives])
    if bounds.size and bounds[-1] >= 1:
        raise ValueError("alternative target shares must sum to less than 1")
    fused = None
    if fused_pairs is not None and recipe.fused_rank > 0 and len(x) > 1:
        q_np, doc_np = fused_pairs
        cand = np.concatenate([np.arange(len(x))[:, None], text_competitors(q_np, doc_np, recipe.hard_negatives)], 1)
        fused = (torch.from_numpy(q_np.astype(np.float32)), torch.from_numpy(doc_np.astype(np.float32)), cand)
    best = (validate(head.eval()), 0, copy.deepcopy(head.state_dict())) if validate else None
    if history is not None and best:
        history.append({"epoch": 0, "validation": round(best[0], 3)})
    for epoch in range(recipe.epochs):
        head.train()
        order = rng.permutation(len(x))
        # 0 = title, k = alternative k; a sample without alternative k keeps its title
        choice = np.searchsorted(bounds, rng.random(len(x)), side="right") + 1 if bounds.size else np.zeros(len(x))
        choice = np.where(choice > len(alternatives), 0, choice).astype(int)
        choice = np.where([has[c][i] for i, c in enumerate(choice)], choice, 0)
        total = 0.0
        for s in range(steps_per_epoch):
            idx = order[s * recipe.batch: (s + 1) * recipe.batch]
            c = choice[idx]
            tgt = np.stack([vec_sets[c[j]][i] for j, i in enumerate(idx)])
            tid = np.asarray([id_sets[c[j]][i] for j, i in enumerate(idx)])
            img = head.trained(feats_t[idx], logits_t[idx])
            loss = multi_positive_infonce(img, torch.from_numpy(tgt.astype(np.float32)), tid, logit_scale)
            if teacher_t is not None:
                out = head(feats_t[idx], logits_t[idx])
                loss = loss + recipe.distill * (1 - (out * teacher_t[idx]).sum(1)).mean()
            if fused is not None:
                q_t, doc_t, cand = fused
                c = cand[idx]
                img_c = head(feats_t[c.reshape(-1)], logits_t[c.reshape(-1)]).reshape(*c.shape, -1)
                same = torch.from_numpy(target_ids[c] == target_ids[idx][:, None]).float()
                loss = loss + recipe.fused_rank * fused_ranking_loss(q_t[idx], doc_t[c], img_c, same, FUSED_WEIGHTS,
                                                                     recipe.fused_scale)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach())
        line = f"align: epoch {epoch + 1}/{recipe.epochs} loss {total / steps_per_epoch:.3f}"
        if best is not None and validate is not None:
            score = validate(head.eval())
            if history is not None:
                history.append({"epoch": epoch + 1, "loss": round(total / steps_per_epoch, 4),
                                "validation": round(score, 3)})
            if score > best[0] + recipe.min_gain:
                best = (score, epoch + 1, copy.deepcopy(head.state_dict()))
            progress(f"{line} validation {score:.2f} (best {best[0]:.2f} at epoch {best[1]})")
            if recipe.patience is not None and epoch + 1 - best[1] >= recipe.patience:
                progress(f"align: stopping early, no better validation score for {recipe.patience} epochs")
                break
        elif epoch % 10 == 9 or epoch == recipe.epochs - 1:
            progress(f"{line} temperature {1 / float(logit_scale.detach().exp()):.4f}")
    if best is not None:
        head.load_state_dict(best[2])
        head.best_epoch = best[1]  # type: ignore[assignment]  # read by the report
    return head.eval()


def head_embeddings(head: AlignHead, features: np.ndarray, logits: np.ndarray,
                    alpha: float | None = None) -> np.ndarray:
    with torch.no_grad():
        if alpha is not None:
            head.alpha.fill_(alpha)
        return head(torch.from_numpy(features), torch.from_numpy(logits)).numpy()


MIN_PRODUCTS = 250  # below it the held-out and validation tenths hold too few products to judge a head by
MIN_SPLIT = 20
TRAINED_ON_QUERIES = 2000  # trained-on products sampled as queries for the memorisation check


def card(recipe: Recipe, *, catalog: Path, n_train: int, n_test: int, metrics: dict, extra: dict) -> dict:
    return {"data": {"catalog": str(catalog), "train": n_train, "held_out": n_test,
                     "split": f"{SPLIT_RULE} -> held out, never trained on"},
            "recipe": asdict(recipe), "targets": "e5('query: ' + title), or an attribute template",
            "metrics_held_out": metrics, **extra, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def check_adaptable(loaded: LoadedCatalog, min_products: int = MIN_PRODUCTS) -> None:
    """One line saying why a catalog is too small to adapt to (InvalidInput: exit 2 from the CLI)."""
    n = len(loaded.items)
    if n < min_products:
        why = ", ".join(f"{k}: {v}" for k, v in sorted(loaded.skipped.items()))
        raise InvalidInput(f"{loaded.file} has {n} products with a photo and a title or category "
                           f"({loaded.rows} rows read{'; left out ' + why if why else ''}); adapting needs at least "
                           f"{min_products} (a tenth is held out to check the result and a tenth to stop on): "
                           "index it with the shipped models instead", field="catalog")


def leaf_templates(items: Sequence[CatalogItem], vocab: dict) -> tuple[list[str], list[str]]:
    """English and Chinese attribute templates from the catalog's own values (its category leaf, and colour
    and gender when it has such columns); "" where there is nothing to say (no leaf; no Chinese name)."""
    en, zh = [], []
    for it in items:
        colour = next((str(it.attrs[k]) for k in ("baseColour", "colour", "color") if it.attrs.get(k)), "")
        attrs = {"articleType": it.leaf, "baseColour": colour, "gender": str(it.attrs.get("gender") or "")}
        en.append(template(attrs) if it.leaf else "")
        zh.append(zh_template(attrs, vocab) if it.leaf in vocab["articleType"] else "")
    return en, zh


def shipped_head(model_dir: Path, data: dict[str, np.ndarray]) -> AlignHead:
    """The head fused into the model directory's image tower: the shipped file (fashion-tuned or generic) or
    the file the tower was exported from, whichever reproduces the tower's own output on these photos."""
    from kuamo.export.align_head import default_head_path, generic_head_path

    exported_from = ModelArtifacts(model_dir).towers["image"].get("alignment", {}).get("head_path")
    n = min(256, len(data["features"]))
    for path in dict.fromkeys(filter(None, (default_head_path(), generic_head_path(), exported_from))):
        if not Path(path).is_file():
            continue
        head = AlignHead.load(path)
        got = head_embeddings(head, data["features"][:n], data["logits"][:n])
        if float((got * data["embedding"][:n]).sum(1).min()) > 0.99:
            return head
    raise InvalidInput(f"the image tower in {model_dir} serves a head found in no alignment file here; "
                       "adapt from scratch with --from-scratch", field="models")


def _head_vectors(head: AlignHead | None, data: dict[str, np.ndarray]) -> np.ndarray:
    return data["embedding"] if head is None else head_embeddings(head, data["features"], data["logits"])


def adaptation_report(heads: dict[str, AlignHead | None], data: dict[str, np.ndarray], items: Sequence[CatalogItem],
                      test: np.ndarray, train: np.ndarray, leaf_vec: dict[str, np.ndarray], seed: int = 0) -> dict:
    """Held-out vs trained-on products, each head (None = the tower's own, shipped, output), on the whole
    catalog as one pool: products never seen must rank as well as the ones adapting trained on."""
    titles, leaves = [it.title for it in items], [it.leaf for it in items]
    trained = np.flatnonzero(train)
    trained = np.sort(np.random.default_rng(seed).choice(trained, min(len(trained), TRAINED_ON_QUERIES),
                                                         replace=False))
    out: dict = {"pool": len(items), "queries": {"held_out": int(test.sum()), "trained_on": len(trained)},
                 "how": "every product of the catalog in one pool; queries from the held-out split (never trained "
                        "on) or a sample of the trained-on products; fused = 0.5 x text block + 0.5 x image "
                        "block, the engine's default weights, image block = the head's vector (blend beta 1)"}
    hits: dict[str, dict[str, np.ndarray]] = {}
    for name, head in heads.items():
        img = _head_vectors(head, data)
        kw = {"image": img, "title_query": data["title"], "doc": data["doc"], "titles": titles, "leaves": leaves}
        held_out = np.flatnonzero(test)
        hits[name] = fused_hits(held_out, **{k: v for k, v in kw.items() if k != "leaves"})
        out[name] = {"held_out": subset_tasks(held_out, **kw, fused=hits[name]),
                     "trained_on": subset_tasks(trained, **kw),
                     "category_all": category_task(img, leaves, leaf_vec)}
    if {"adapted", "shipped"} <= hits.keys():  # query by query: a pooled rate hides what moved
        out["held_out_fused_paired"] = {m: paired_change(hits["adapted"][m], hits["shipped"][m])
                                        for m in ("R@1", "R@10")}
    return out


def run_align(*, catalog: Path, model_dir: Path, out: Path, cache_dir: Path = Path(".cache/align"),
              recipe: Recipe | None = None, limit: int | None = None, progress: Progress = print,
              catalog_config: CatalogConfig | None = None, min_products: int = MIN_PRODUCTS,
              held_out: Callable[[str], bool] = is_held_out,
              validation: Callable[[str], bool] = is_validation) -> dict:
    """Train on the catalog (any `kuamo index` accepts), evaluate on its held-out 10%, write <out> + align.json
    beside it. With a recipe that has `patience` (AdaptRecipe), a second 10% is kept out to early-stop on.
    `held_out` / `validation` replace the stable splits (benchmarks/adapt_folds.py's folds; such a head is for
    measuring, since the engine's blend chooser knows only the stable splits)."""
    from kuamo.evaluation.tasks import evaluate_embeddings

    recipe = recipe or Recipe()
    loaded = load_catalog(catalog, catalog_config, limit)
    check_adaptable(loaded, min_products)
    items = loaded.items
    ids = [str(it.id) for it in items]
    test = np.asarray([held_out(i) for i in ids])
    val = np.asarray([validation(i) for i in ids]) & ~test if recipe.patience is not None else np.zeros(len(ids), bool)
    tr = ~test & ~val
    if min(int(test.sum()), MIN_SPLIT if recipe.patience is None else int(val.sum())) < MIN_SPLIT:
        raise InvalidInput(f"{loaded.file}: only {int(test.sum())} held-out and {int(val.sum())} validation "
                           f"products of {len(items)}; adapting needs {MIN_SPLIT} of each", field="catalog")
    data = extract_features(items, model_dir, cache_dir, progress)
    progress("align: encoding the catalog's own templates and the zero-shot class map")
    vocab = json.loads("\n".join(packaged_lines("zh_vocab.json")))
    en, zh = leaf_templates(items, vocab)
    class_text = class_text_matrix(model_dir)
    title_ids = np.unique(np.asarray([it.text for it in items], dtype=object), return_inverse=True)[1]
    alternatives: list[Alternative] = []
    for texts, share in ((en, recipe.template_share), (zh, recipe.zh_template_share)):
        has = np.asarray([bool(t) for t in texts])
        if share > 0 and (has & tr).any():  # a catalog without leaves (or Chinese names) has no such targets
            vecs, idx = encode_unique([t for t in texts if t], model_dir)
            full_vecs = np.zeros((len(items), vecs.shape[1]), np.float32)
            full_idx = np.full(len(items), -1, np.int64)
            full_vecs[has], full_idx[has] = vecs[idx], idx
            alternatives.append((full_vecs[tr], full_idx[tr], share, has[tr]))
    base = shipped_head(model_dir, data) if recipe.from_base else None
    pool = tr | val

    sub = {k: data[k][pool] for k in ("features", "logits", "title", "doc", "embedding")}
    names = [it for it, p in zip(items, pool, strict=True) if p]

    def val_tasks(img: np.ndarray) -> dict:  # validation products ranked among everything trained on
        return subset_tasks(np.flatnonzero(val[pool]), image=img, title_query=sub["title"], doc=sub["doc"],
                            titles=[it.title for it in names], leaves=[it.leaf for it in names])

    shipped_fused = val_tasks(sub["embedding"])["title_to_product_fused"]["R@1"] if val.any() else 0.0

    def validate(head: AlignHead) -> float:
        t = val_tasks(head_embeddings(head, sub["features"], sub["logits"]))
        # adapting must not cost fused search: every point of fused R@1 lost against the shipped head weighs
        # `fused_guard` points of the headline (one validation query is about 0.5 point)
        return headline(t) - recipe.fused_guard * max(0.0, shipped_fused - t["title_to_product_fused"]["R@1"])

    progress(f"align: training on {int(tr.sum())} products, {int(val.sum())} to stop on, {int(test.sum())} held out")
    history: list[dict] = []
    head = train_head(data["features"][tr], data["logits"][tr], data["title"][tr], title_ids[tr], recipe,
                      class_text, progress, alternatives, init=base, teacher=data["embedding"][tr],
                      validate=validate if recipe.patience is not None else None, history=history,
                      fused_pairs=(data["title"][tr], data["doc"][tr]))
    leaf_names = sorted({it.leaf for it in items if it.leaf})
    leaf_vec = dict(zip(leaf_names, encode_unique(leaf_names, model_dir)[0], strict=True)) if leaf_names else {}
    heads: dict[str, AlignHead | None] = {"adapted": head, "shipped": None}
    report = adaptation_report(heads, data, items, test, tr, leaf_vec, recipe.seed)
    metrics = report["adapted"]["held_out"]
    if loaded.fashion:  # the fashion tasks (Chinese queries, articleType categories) as `kuamo eval` scores them
        test_items = [it for it, t in zip(items, test, strict=True) if t]
        txt = TextEncoder(ModelArtifacts(model_dir), EncoderConfig(precision="fp32"))
        metrics = evaluate_embeddings(test_items, head_embeddings(head, data["features"][test], data["logits"][test]),
                                      data["title"][test], txt, raw_features=data["features"][test])
    backbone = tuned_base(model_dir)  # read before `out` (maybe the shipped file) is overwritten
    extra: dict = {}
    if backbone:
        from kuamo.export.tuned_backbone import delta_digest

        extra = {"kind": "head retrained on the fine-tuned backbone's features; int8 backbone delta (backbone.*)",
                 "backbone": {"delta_sha256": delta_digest(backbone), **_backbone_provenance()}}
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    # the training photos' feature centroids travel with the head (the engine's label-free blend criterion),
    # with the cosine that counts as "near" them, calibrated on products it did not train on
    centroids = training_centroids(data["features"][tr])
    unseen = val if val.any() else test
    # and the keys of the products it trained on, which the blend chooser leaves out of its sample
    extra_arrays = {"centroids": centroids,
                    TRAINED_KEYS: product_keys((it.id, it.title) for it, t in zip(items, tr, strict=True) if t)}
    if unseen.any():
        extra_arrays["near_cosine"] = np.float32(near_cosine(data["features"][unseen], centroids))
    head.save(out, extra={**(backbone or {}), **extra_arrays})
    data_card = {"file": str(loaded.file), "mapping": loaded.mapping, "rows": loaded.rows, "products": len(items),
                 "left_out": loaded.skipped, "validation": int(val.sum()),
                 "validation_split": VALIDATION_RULE if recipe.patience is not None else None,
                 "catalog_config": asdict(catalog_config) if catalog_config else None}
    model_card = card(recipe, catalog=catalog, n_train=int(tr.sum()), n_test=int(test.sum()), metrics=metrics,
                      extra={"weights": out.name, "bytes": out.stat().st_size, **extra, "adaptation": report,
                             "history": history, "best_epoch": getattr(head, "best_epoch", recipe.epochs),
                             "started_from": "the shipped head" if base is not None else "random weights"})
    model_card["data"].update(data_card)
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
