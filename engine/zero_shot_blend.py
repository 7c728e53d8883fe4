"""Per-catalog blend of the aligned image vector with the zero-shot ImageNet-class map.

The shipped image tower is tuned on fashion: on goods unlike it (watches, eyewear, personal care held out
in benchmarks/results/align_generalisation.md) its `embedding` finds the right category less often than the
plain zero-shot map (normalise(softmax(logits) @ class_text), class_text centred: ZeroShotMap). No single
fixed blend serves both, so the blend is chosen per catalog, by measurement on the catalog itself, when its
first products are indexed:

    image vector = normalise(beta * embedding + (1 - beta) * zero_shot),  beta in BETAS

scored on a sample of the catalog's own products (covering: every category with photos enough, the rest spread
over the file): each leaf category name as a query (average precision over the
sample's photos of that category, categories with >= MIN_CATEGORY_PHOTOS photos; P@10 until stop 32, which caps a
category of 5-9 photos below 100 and reads only the top 10), each of those categories' photos as a query (P@10 of
same-category photos: category names alone favour the zero-shot map, whose vectors are mixes of class names;
measured since stop 35) and each product's title as a query (recall@10 of its own photo). The sample leaves out the
products the head trained on, where it names them (engine/trained_products.py): on those it looks better than it is
for new products (the shipped head trained on nine tenths of the fashion catalog, and on its trained-on products the
photo measure moved that catalog's choice from 1 to 0.75, which its held-out products score worse: known-item R@1
43.1 -> 40.6). The best beta wins only when it beats the photos' own verdict by MARGIN points per measure (on the
mean of the measures the catalog has: until stop 34 2 points on their sum, so a catalog with titles only needed
twice the gain of one with categories too): the label-free beta below, snapped to BETAS (1 for a catalog of the
training kind, and 1 when the models carry no centroids). On the fashion catalog the betas near 1 differ by under a
point, and that is noise (the served and FP32 towers chose differently on the same sample before the margin), while
on goods unlike fashion the zero-shot side wins by 20 points. Labels that cannot tell the blends apart are no
evidence: titles that repeat one product kind ("Fastrack Men Sunglasses") find their own photo at chance with every
beta, and when beta 1 won those ties a far-off captioned catalog kept the fashion vector (6.4 points lost on the
validation half of benchmarks/results/blend_choice.md, 0.0 with the photos' verdict as the default). The choice is
stored with the catalog; every vector in one index shares one beta, so a changed beta re-embeds the catalog (its
encoder fingerprint names beta).

When the choice is made again (engine.Engine.image_blend_due): a choice made on fewer than MIN_SAMPLE photos is
provisional and is made again once a run offers REGROW times as many photos (and at least MIN_SAMPLE); a
catalog that stored nothing has no choice that binds; `kuamo index --image-blend auto|BETA` re-chooses or
sets it. A catalog with no labels to measure (no category with MIN_CATEGORY_PHOTOS photos, fewer than
MIN_SAMPLE distinct titles: a photo collection) is judged label-free (label_free_beta): the share of its photos
whose pooled backbone features lie near k-means centroids of the training photos' features (CENTROIDS_FILE,
shipped beside the head) keeps the tuned vector, the rest get FAR_BETA:

    beta = share + (1 - share) * FAR_BETA,  share = photos with max-cosine to a centroid >= near_cosine

near_cosine is calibrated where the head is trained (export/centroids.py near_cosine): the cosine that 95% of
the training catalog's products it never trained on reach. A share, not the mean cosine, because a mixed
catalog (some goods like the training catalog's, some not) and a catalog of one unlike kind can have the same
mean cosine and need different blends (benchmarks/results/blend_choice.md).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from kuamo.engine.average_precision import mean_average_precision
from kuamo.engine.errors import ArtifactError, InvalidInput, KuamoError
from kuamo.engine.vectors import l2_normalize, softmax_rows

ZERO_SHOT_FILE = "image_zero_shot.npy"
CENTROIDS_FILE = "image_centroids.npy"  # k-means centroids of the training photos' pooled features
# image tower spec keys whose {"file": ...} ships beside the graph (trained_on: engine/trained_products.py)
SIDE_FILES = ("zero_shot", "centroids", "trained_on")
# 0.1 since stop 33, when the uncentred zero-shot map made the curves steep near 0 (ZeroShotMap)
BETAS = (1.0, 0.75, 0.5, 0.25, 0.1, 0.0)
AUTO = "auto"
MIN_SAMPLE = 50  # fewer photos than this: too few to choose by; keep beta = 1, provisionally
REGROW = 4  # a provisional choice is made again once a run offers this many times the photos it was made on
# label-free: the beta of photos unlike the training goods. Chosen by benchmarks/blend_choice.py on its
# validation half (head-only export, pretrained backbone): the worst validation regret is least at 0.5 (0.5
# points) since the zero-shot map is centred (stop 34; 0.1 before, with the uncentred map's steep curves; 0.2
# with the grid before stop 33; 0.3 until the score's category term became mAP, stop 31). Measured for that
# backbone only.
FAR_BETA = 0.5
# near_cosine for a model set exported before it was calibrated with the head: the value calibrated for the
# pretrained backbone's generic head (benchmarks/blend_choice.py, 0.708)
NEAR_COSINE_FALLBACK = 0.71
LABEL_FREE_STEP = 0.05  # the label-free beta is rounded to this: a re-choice on a grown sample rarely re-embeds
MIN_CATEGORY_PHOTOS = 5
MARGIN = 1.0  # points of the mean of (category mAP, photo P@10, title R@10), those the catalog has, a blend must gain
SAMPLE = 800  # photos read for the choice (about 12 s of image encoding on 2 cores)
COVER = 2 * MIN_CATEGORY_PHOTOS  # photos of each category the sample holds at least, where it has them (covering)


class ZeroShotMap:
    """The class-text matrix (classes, d) exported beside the image graph, centred: its mean row is taken off
    before the photo's class probabilities mix it (softmax rows sum to 1, so that takes the same vector off
    every photo). The 1,000 class names' text vectors share one large component; uncentred, it made most of
    every zero-shot vector, so a blend's weight on the tuned vector counted far more than beta says (a quarter
    already outweighed the map's useful spread) and the best beta of goods unlike fashion lay crowded between
    0.25 and 0, differently for each catalog. Centred, the unlike catalogs' curves peak near beta 0.5 and are
    flat there, and their best scores rose 0.4-1.4 points (stop 34, benchmarks/results/blend_choice.md). The
    head's own zero-shot term inside the graph (export/align_head.py) is unchanged. centred=False is the map
    before stop 34 (benchmarks/blend_choice.py reports both)."""

    def __init__(self, class_text: np.ndarray, *, centred: bool = True) -> None:
        self.class_text = np.asarray(class_text, dtype=np.float32)
        # in the encoder fingerprint of a blended catalog: the two forms make different vectors
        self.form = "centred" if centred else "raw"
        self.mixed = self.class_text - self.class_text.mean(axis=0, keepdims=True) if centred else self.class_text

    def vectors(self, logits: np.ndarray) -> np.ndarray:
        return l2_normalize(softmax_rows(logits) @ self.mixed)

    def blend(self, embedding: np.ndarray, logits: np.ndarray, beta: float) -> np.ndarray:
        emb = l2_normalize(np.asarray(embedding, dtype=np.float32))
        return emb if beta >= 1.0 else l2_normalize(beta * emb + (1 - beta) * self.vectors(logits))


def parse_image_blend(value: object) -> float | str | None:
    """--image-blend / [catalog] image_blend: None (choose when due), "auto" (choose now) or a beta in 0..1."""
    if value is None or (isinstance(value, str) and value.strip().lower() == AUTO):
        return None if value is None else AUTO
    beta: float | None = None
    if isinstance(value, int | float) and not isinstance(value, bool):
        beta = float(value)
    elif isinstance(value, str):
        try:
            beta = float(value)
        except ValueError:
            beta = None
    if beta is None or not math.isfinite(beta) or not 0 <= beta <= 1:
        raise InvalidInput(f"image_blend must be 'auto' or a number within 0..1 (1 = the tuned vector, 0 = the "
                           f"zero-shot map), got {value!r}", field="image_blend")
    return beta


@dataclass
class BlendChoice:
    beta: float
    photos: int
    scores: dict[float, dict[str, float]] = field(default_factory=dict)  # beta -> task -> score
    reason: str = ""
    source: str = "auto"  # auto: measured here; set: given by the operator; default: products came first

    @property
    def provisional(self) -> bool:
        """Made on too few photos to bind the catalog: made again when enough arrive (see is_provisional)."""
        return is_provisional(self.to_dict())

    def to_dict(self) -> dict:
        return {"beta": self.beta, "photos": self.photos, "reason": self.reason, "source": self.source,
                "provisional": self.source != "set" and self.photos < MIN_SAMPLE,
                "scores": {str(b): s for b, s in self.scores.items()}}


def is_provisional(stored: dict) -> bool:
    """A stored choice binds once made on >= MIN_SAMPLE photos or set by the operator. Choices stored before
    this rule carry no source and are judged by their photo count (a blend fixed on a 30-photo trial is not)."""
    return stored.get("source") != "set" and int(stored.get("photos", 0)) < MIN_SAMPLE


def grown_enough(stored: dict, photos: int) -> bool:
    """A provisional choice is made again on a run that offers `photos` photos to measure."""
    return photos >= max(MIN_SAMPLE, REGROW * int(stored.get("photos", 0)))


def parse_near_cosine(value: object) -> float | None:
    """The manifest's towers.image.centroids.near_cosine: None (not calibrated) or a cosine in (0, 1]; anything
    else is a broken manifest, refused at load rather than failing the first photo-only ingest."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) \
            or not 0 < value <= 1:
        raise ArtifactError(f"manifest towers.image.centroids.near_cosine must be a cosine in (0, 1], got {value!r}")
    return float(value)


def near_share(features: np.ndarray, centroids: np.ndarray, near_cosine: float) -> float:
    """Share of photos whose pooled features lie within near_cosine of a training centroid: the training
    catalog's kind of goods."""
    f, c = l2_normalize(np.asarray(features, np.float32)), l2_normalize(np.asarray(centroids, np.float32))
    return float(((f @ c.T).max(axis=1) >= near_cosine).mean()) if len(f) else 0.0


def label_free_beta(share: float, far_beta: float = FAR_BETA) -> float:
    """The tuned vector for the near share, far_beta for the rest, rounded to LABEL_FREE_STEP."""
    beta = share + (1 - share) * far_beta
    return float(min(1.0, max(0.0, round(round(beta / LABEL_FREE_STEP) * LABEL_FREE_STEP, 4))))


def _recall_at_10_own(scores: np.ndarray, own: np.ndarray) -> float:
    """scores (queries, gallery); own[q] = the gallery index of query q's own photo."""
    mine = scores[np.arange(len(own)), own][:, None]
    return float(((scores > mine).sum(axis=1) < 10).mean() * 100)


def choose_beta(zero_shot: ZeroShotMap, embedding: np.ndarray, logits: np.ndarray, title_vecs: np.ndarray,
                leaves: Sequence[str], encode_names: Callable[[list[str]], np.ndarray],
                betas: Sequence[float] = BETAS, *, has_title: Sequence[bool] | None = None,
                titles: Sequence[str] | None = None, features: np.ndarray | None = None,
                centroids: np.ndarray | None = None, near_cosine: float | None = None,
                far_beta: float = FAR_BETA) -> BlendChoice:
    """Pick beta for one catalog sample. `title_vecs` = the products' titles as queries (n, d; rows where
    `has_title` is False are ignored); `leaves` = each product's leaf category ("" when it has none);
    `encode_names(list[str])` = text tower, query mode. With no labels to measure, `features` (pooled backbone
    features), `centroids` and `near_cosine` (default NEAR_COSINE_FALLBACK) decide label-free (label_free_beta)."""
    n = len(embedding)
    if n < MIN_SAMPLE:
        return BlendChoice(1.0, n, reason=f"{n} photos < {MIN_SAMPLE}: kept the tuned vector for now")
    with_title = np.ones(n, bool) if has_title is None else np.asarray(has_title, bool)
    labels = np.asarray(list(leaves), dtype=object)
    names, counts = np.unique(labels[labels != ""], return_counts=True)
    names = [str(x) for x, c in zip(names, counts, strict=True) if c >= MIN_CATEGORY_PHOTOS]
    distinct = (len({t.strip() for t, h in zip(titles, with_title, strict=True) if h and t.strip()})
                if titles is not None else int(with_title.sum()))
    label_free = _label_free(n, features, centroids, near_cosine, far_beta)
    if len(names) < 2 and distinct < MIN_SAMPLE:
        if label_free.scores:
            label_free.reason = f"no labels to measure: {label_free.reason}"
        return label_free
    # what the labels must beat by MARGIN: the photos' own verdict, snapped to the measured grid (a catalog of
    # the training kind keeps 1), or 1 where the models carry no centroids
    grid = sorted({1.0, *betas}, reverse=True)
    default = min(grid, key=lambda b: (abs(b - label_free.beta), -b))
    name_vecs = encode_names(names) if len(names) >= 2 else None
    queries = l2_normalize(np.asarray(title_vecs, dtype=np.float32)[with_title])
    own = np.flatnonzero(with_title)
    choice = BlendChoice(default, n, reason=f"category mAP, photo P@10 and title R@10 on the catalog's own products "
                                            "(those its labels allow); another "
                                            f"beta than {default:g} only when {MARGIN:g} point per measure better"
                                            + (f" ({default:g}: the photos' own verdict, {label_free.reason})"
                                               if default < 1 else ""))
    totals = {}
    for beta in grid:
        v = zero_shot.blend(embedding, logits, beta)
        task = {}
        if distinct >= MIN_SAMPLE:
            task["title_R@10"] = _recall_at_10_own(queries @ v.T, own)
        if name_vecs is not None:
            relevant = labels[None, :] == np.asarray(names, dtype=object)[:, None]
            task["category_mAP"] = mean_average_precision(l2_normalize(name_vecs) @ v.T, relevant)
            task["photo_P@10"] = _photo_precision_at_10(v, labels, names)
        choice.scores[beta] = task
        totals[beta] = sum(task.values()) / len(task)  # per measure: one measure must clear the margin alone
    best = max(totals, key=lambda b: (totals[b], b))  # ties keep the larger beta
    if totals[best] >= totals[default] + MARGIN:
        choice.beta = float(best)
    return choice


def _photo_precision_at_10(v: np.ndarray, labels: np.ndarray, names: Sequence[str]) -> float:
    """Photo -> photo: for each photo of a measured category, the share of its 10 nearest other photos in the
    sample that share its category (a shopper's "more like this"; category names alone favour the zero-shot map,
    whose vectors are mixes of class names: stop 34's apparel and topwear folds missed by 3.7 and 9.8 points
    with catalogs that had categories and no titles)."""
    queries = np.flatnonzero(np.isin(labels, np.asarray(names, dtype=object)))
    sims = v[queries] @ v.T
    sims[np.arange(len(queries)), queries] = -np.inf  # not itself
    top = np.argpartition(-sims, 10, axis=1)[:, :10] if sims.shape[1] > 10 else np.argsort(-sims, axis=1)[:, :10]
    return float((labels[top] == labels[queries][:, None]).mean() * 100)


def _label_free(n: int, features: np.ndarray | None, centroids: np.ndarray | None, near_cosine: float | None,
                far_beta: float) -> BlendChoice:
    """The photos' own verdict: beta from how many lie near the training goods (1 without centroids)."""
    if features is None or centroids is None:
        return BlendChoice(1.0, n, reason="no category names or distinct titles to measure, and the models carry "
                                          f"no {CENTROIDS_FILE} to judge the photos by: kept the tuned vector")
    calibrated = near_cosine is not None
    cosine = float(near_cosine) if calibrated else NEAR_COSINE_FALLBACK
    share = near_share(features, centroids, cosine)
    beta = label_free_beta(share, far_beta)
    source = "calibrated with the head" if calibrated else "the pretrained backbone's; the models carry none"
    return BlendChoice(beta, n, scores={beta: {"near_share": round(share, 4), "near_cosine": round(cosine, 4)}},
                       reason=f"{share:.0%} of the photos lie near the training goods (max-cosine >= {cosine:.3f} "
                              f"to a training centroid, {source}); beta = share + (1 - share) x {far_beta:g}")


def spread(total: int, n: int = SAMPLE) -> list[int]:
    """Indices of up to `n` of `total` rows spread evenly over all of them (catalog files are often sorted by
    category, so the first rows would be one kind of product). i * total // n, not a step of total // n: that
    step is 1 for 800-1,599 rows and took the first 800."""
    if total <= n:
        return list(range(total))
    return [i * total // n for i in range(n)]


def covering(leaves: Sequence[str], n: int = SAMPLE) -> list[int]:
    """Indices of up to `n` rows (each row's leaf category, "" for none) for the blend sample: first every
    category with >= MIN_CATEGORY_PHOTOS rows that an even spread would give fewer than COVER gets min(its
    rows, COVER) of them (spread over its rows), the largest first while that takes at most half the sample;
    then the rest are spread evenly over the rows not yet taken. The category measure weights each category
    alike, but an even spread alone measures only the big ones: in a mixed catalog of 35 categories
    (benchmarks/results/blend_choice.md, topwear fold) 800 spread photos of 9,357 measured 10 of them (the
    rest under MIN_CATEGORY_PHOTOS), and the choice followed the big topwear ones (regret 2.3; 0.0 covered).
    Rows without a category only join the spread; without categories this is spread(len(leaves), n)."""
    total = len(leaves)
    if total <= n:
        return list(range(total))
    rows: dict[str, list[int]] = {}
    for i, leaf in enumerate(leaves):
        if leaf:
            rows.setdefault(leaf, []).append(i)
    taken: set[int] = set()
    for members in sorted(rows.values(), key=len, reverse=True):
        want = min(len(members), COVER)
        if len(members) < MIN_CATEGORY_PHOTOS or len(members) * n >= COVER * total or len(taken) + want > n // 2:
            continue
        taken.update(members[k] for k in spread(len(members), want))
    rest = [i for i in range(total) if i not in taken]
    return sorted(taken | {rest[k] for k in spread(len(rest), n - len(taken))})


def choose_for_photos(image_encoder: Any, encode_query: Callable[[list[str]], np.ndarray],
                      photos: Sequence[bytes], titles: Sequence[str], leaves: Sequence[str]) -> BlendChoice:
    """choose_beta for a catalog sample straight from its photos (an ImageEncoder with a zero-shot map);
    photos that do not decode are left out of the sample; empty titles never reach the text tower."""
    if not photos:
        return BlendChoice(1.0, 0, reason="no photos to choose by: kept the tuned vector for now")
    centroids = getattr(image_encoder, "centroids", None)
    names = [image_encoder.embedding_output, "logits"] + (["features"] if centroids is not None else [])
    try:
        outs, keep = image_encoder.encode_outputs(list(photos), names), list(range(len(photos)))
    except KuamoError:  # one bad photo fails the batch: encode one by one and leave the bad ones out
        parts, keep = [], []
        for i, photo in enumerate(photos):
            try:
                parts.append(image_encoder.encode_outputs([photo], names))
            except KuamoError:
                continue
            keep.append(i)
        outs = {n: np.concatenate([x[n] for x in parts]) if parts else np.zeros((0, 1), np.float32) for n in names}
    kept_titles = [titles[i].strip() for i in keep]
    has_title = np.asarray([bool(t) for t in kept_titles], bool)
    title_vecs = np.zeros((len(keep), 1), np.float32)
    if has_title.any():
        enc = encode_query([t for t in kept_titles if t])
        title_vecs = np.zeros((len(keep), enc.shape[1]), np.float32)
        title_vecs[has_title] = enc
    return choose_beta(image_encoder.zero_shot, outs[names[0]], outs["logits"], title_vecs,
                       [leaves[i] for i in keep], encode_query, has_title=has_title, titles=kept_titles,
                       features=outs.get("features"), centroids=centroids,
                       near_cosine=getattr(image_encoder, "near_cosine", None))
