"""k-means centroids of the training photos' pooled backbone features, shipped beside the head: the engine's
label-free blend criterion (engine/zero_shot_blend.py near_share) counts the catalog's photos that lie near
them, "near" calibrated on the training catalog's products the head never trained on (near_cosine)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from kuamo.engine.vectors import l2_normalize

CENTROIDS_K = 64  # enough to cover fashion's ~140 article types coarsely; 64 x 1280 fp16 = 160 KB
NEAR_QUANTILE = 0.05  # "near" = the max-cosine that 95% of the training catalog's unseen products reach


def training_centroids(features: np.ndarray, k: int = CENTROIDS_K, seed: int = 0) -> np.ndarray:
    """Spherical k-means over L2-normalised pooled features (n, d) -> (k, d) unit rows, float16."""
    import faiss

    x = np.ascontiguousarray(l2_normalize(np.asarray(features, dtype=np.float32)))
    k = min(k, len(x))
    km = faiss.Kmeans(x.shape[1], k, niter=20, seed=seed, spherical=True, verbose=False)
    km.train(x)
    return l2_normalize(km.centroids).astype(np.float16)


def near_cosine(features: np.ndarray, centroids: np.ndarray, quantile: float = NEAR_QUANTILE) -> float:
    """The `quantile` of max-cosine to the centroids over pooled features (n, d) of products of the training
    catalog that the centroids were not fit on (photos they were fit on lie nearer than new ones will)."""
    if not len(features):
        raise ValueError("near_cosine needs features of at least one product the centroids were not fit on")
    f = l2_normalize(np.asarray(features, dtype=np.float32))
    best = (f @ l2_normalize(np.asarray(centroids, dtype=np.float32)).T).max(axis=1)
    return float(np.quantile(best, quantile))


def fit_head_file(head_path: Path, model_dir: Path, catalog: Path) -> tuple[int, float]:
    """Write centroids and near_cosine into a head file trained before they existed (the shipped heads): the
    centroids over the catalog's training split, near_cosine over its held-out split, which the head never
    trained on, both with the pooled features of `model_dir` (a model set exported from this head, so the
    same backbone). Returns (centroids, near_cosine)."""
    from kuamo.engine.artifacts import ModelArtifacts
    from kuamo.engine.config import EncoderConfig
    from kuamo.engine.encoders import ImageEncoder
    from kuamo.evaluation.split import is_held_out
    from kuamo.export.align import image_outputs
    from kuamo.export.align_head import AlignHead
    from kuamo.export.samples import load_fashion

    items = load_fashion(catalog)
    held = np.asarray([is_held_out(it.id) for it in items])
    img = ImageEncoder(ModelArtifacts(model_dir), EncoderConfig(precision="fp32"))
    feats = image_outputs(img, [it.image_path for it in items], ["features"])["features"]
    centroids = training_centroids(feats[~held])
    near = np.float32(near_cosine(feats[held], centroids))
    AlignHead.add_arrays(head_path, {"centroids": centroids, "near_cosine": near})
    return len(centroids), float(near)


def main(argv: list[str] | None = None) -> None:
    import argparse

    from kuamo.export.samples import DEFAULT_FASHION_DIR

    ap = argparse.ArgumentParser(description="fit centroids + near_cosine into a shipped head file")
    ap.add_argument("--head", type=Path, required=True)
    ap.add_argument("--models", type=Path, required=True, help="a model set exported from this head")
    ap.add_argument("--catalog", type=Path, default=Path(DEFAULT_FASHION_DIR))
    a = ap.parse_args(argv)
    if not a.head.is_file():
        ap.error(f"--head {a.head} is not a head file")
    if not (a.models / "manifest.json").is_file():
        ap.error(f"--models {a.models} has no manifest.json (a model set exported from this head)")
    k, near = fit_head_file(a.head, a.models, a.catalog)
    print(f"{a.head}: {k} centroids, near_cosine {near:.4f}")


if __name__ == "__main__":
    main()
