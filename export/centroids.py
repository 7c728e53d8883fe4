"""k-means centroids of the training photos' pooled backbone features, shipped beside the head: the engine's
label-free blend criterion (engine/zero_shot_blend.py label_free_score) measures how near a catalog's photos
lie to them."""

from __future__ import annotations

import numpy as np

from kuamo.engine.vectors import l2_normalize

CENTROIDS_K = 64  # enough to cover fashion's ~140 article types coarsely; 64 x 1280 fp16 = 160 KB


def training_centroids(features: np.ndarray, k: int = CENTROIDS_K, seed: int = 0) -> np.ndarray:
    """Spherical k-means over L2-normalised pooled features (n, d) -> (k, d) unit rows, float16."""
    import faiss

    x = np.ascontiguousarray(l2_normalize(np.asarray(features, dtype=np.float32)))
    k = min(k, len(x))
    km = faiss.Kmeans(x.shape[1], k, niter=20, seed=seed, spherical=True, verbose=False)
    km.train(x)
    return l2_normalize(km.centroids).astype(np.float16)
