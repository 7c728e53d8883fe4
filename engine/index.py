"""The vector index: exact inner product below a size threshold, FAISS IVF-PQ above it, and in both cases
an exact re-rank from the float32 vectors the index keeps beside the codes.

- ids are the products' int64 ids; upsert replaces, remove is O(1) per id on IVF (DirectMap hashtable).
- filters: `allowed_ids` runs inside FAISS through an IDSelector; when the allowed set is small the
  search is exact over just those vectors, so a selective filter still returns k hits whenever k exist.
- snapshots: each file written to a temp name, fsynced, renamed; meta.json (with the caller's `seq`) is
  renamed last, so a snapshot either loads whole or is ignored.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import faiss
import numpy as np

from kuamo.engine.errors import ArtifactError, InvalidInput

META = "meta.json"
EXACT_BLOCK = 1 << 24  # scores per exact-search block (64 MiB of float32): bounds memory for big query batches


@dataclass(frozen=True, kw_only=True)
class IndexConfig:
    # Below this many vectors: exact search, no training. The exact scan reads every vector per query: on the
    # 20,873-product fashion catalog (772-d fused) it took 1.3-3 ms against 0.48 ms for IVF-PQ at recall@10
    # 0.997 (nprobe 16, rf 10), for a one-off ~70 s of training on 2 cores.
    flat_threshold: int = 15_000
    nlist: int | None = None  # IVF lists; None = 4 * sqrt(n), clipped to [16, 65536]
    m: int | None = None  # PQ sub-quantisers; None = largest divisor of dim giving >= 4 dims each, <= dim/4
    nbits: int = 8
    # Cap on the IVF-PQ training sample (otherwise 256 per list, faiss's upper bound). k-means costs
    # sample x nlist: at 5M products (8,944 lists) the uncapped 2.3M-vector sample would take about an hour
    # on 2 cores; 1M is still 112 per list, inside faiss's recommended 30-256. No catalog <= 1M is affected.
    max_train: int = 1_000_000
    # Lists probed per query. Real text queries on the fashion catalog (577 lists) vs exact: recall@10 0.970 at
    # 16, 0.991 at 32, 0.999 at 64 (0.14 / 0.16 / 0.22 ms per query); cross-modal queries sit farther from
    # the product vectors than product-like queries do, so they need more lists.
    nprobe: int = 64
    rerank_factor: int = 10
    max_nprobe: int = 1024
    max_rerank_factor: int = 100
    max_k: int = 1000
    exact_filter_below: int = 20_000  # allowed sets this small are searched exactly


def _auto_m(dim: int) -> int:
    for m in range(max(1, dim // 4), 0, -1):
        if dim % m == 0 and dim // m >= 4:
            return m
    return 1


def _fsync_write(path: Path, write) -> None:
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)


class VectorIndex:
    def __init__(self, dim: int, cfg: IndexConfig | None = None) -> None:
        self.dim = int(dim)
        self.cfg = cfg or IndexConfig()
        self.seq = 0
        # The exact store: capacity-doubling buffers of which the first `_n` rows are live; `_ids` / `_vecs`
        # are views of just those rows. After an mmap load the buffers are the read-only maps themselves
        # (exactly n rows), copied on first write.
        self._n = 0
        self._ids_buf = np.zeros(0, dtype=np.int64)
        self._vecs_buf = np.zeros((0, self.dim), dtype=np.float32)
        self._row: dict[int, int] = {}
        self.kind = "flat"
        self.params: dict = {}
        self._faiss = self._new_flat()

    # -- the exact store --------------------------------------------------------------------------
    @property
    def _ids(self) -> np.ndarray:
        return self._ids_buf[: self._n]

    @property
    def _vecs(self) -> np.ndarray:
        return self._vecs_buf[: self._n]

    def _set_store(self, ids: np.ndarray, vecs: np.ndarray) -> None:
        self._ids_buf, self._vecs_buf, self._n = ids, vecs, len(ids)

    def _reserve(self, rows: int) -> None:
        """Room for `rows` live rows; grows by doubling, so appends cost amortised O(1) per row."""
        if rows <= len(self._ids_buf):
            return
        cap = max(rows, 2 * len(self._ids_buf), 64)
        ids = np.empty(cap, dtype=np.int64)
        vecs = np.empty((cap, self.dim), dtype=np.float32)
        ids[: self._n], vecs[: self._n] = self._ids, self._vecs
        self._ids_buf, self._vecs_buf = ids, vecs

    # -- construction -----------------------------------------------------------------------------
    def _new_flat(self) -> faiss.Index:
        return faiss.IndexIDMap2(faiss.IndexFlatIP(self.dim))

    def _check(self, ids: np.ndarray, vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        ids = np.ascontiguousarray(ids, dtype=np.int64).reshape(-1)
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape != (len(ids), self.dim):
            raise InvalidInput(f"expected ({len(ids)}, {self.dim}) vectors, got {vectors.shape}", field="vectors")
        if len(np.unique(ids)) != len(ids):
            raise InvalidInput("duplicate ids in one batch", field="ids")
        if not np.isfinite(vectors).all():
            raise InvalidInput("vectors contain NaN or inf", field="vectors")
        return ids, vectors

    def build(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """(Re)build from scratch; IVF-PQ parameters are chosen from the catalog size and recorded."""
        ids, vectors = self._check(ids, vectors)
        self._set_store(ids.copy(), vectors.copy())
        self._row = {int(i): r for r, i in enumerate(ids)}
        n = len(ids)
        if n < self.cfg.flat_threshold:
            self.kind, self.params = "flat", {}
            self._faiss = self._new_flat()
        else:
            nlist = self.cfg.nlist or int(min(65536, max(16, 4 * math.sqrt(n))))
            m = self.cfg.m or _auto_m(self.dim)
            quantizer = faiss.IndexFlatIP(self.dim)
            ivf = faiss.IndexIVFPQ(quantizer, self.dim, nlist, m, self.cfg.nbits, faiss.METRIC_INNER_PRODUCT)
            n_train = min(256 * nlist, self.cfg.max_train)
            train = vectors if n <= n_train else vectors[np.sort(np.random.default_rng(0).choice(n, n_train, False))]
            ivf.train(train)
            ivf.set_direct_map_type(faiss.DirectMap.Hashtable)  # O(1) remove_ids / reconstruct by id
            self.kind, self.params = "ivfpq", {"nlist": nlist, "m": m, "nbits": self.cfg.nbits,
                                               "trained_on": len(train)}
            self._faiss = ivf
        if n:
            self._faiss.add_with_ids(vectors, ids)

    def upsert(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        ids, vectors = self._check(ids, vectors)
        if not len(ids):
            return
        self._ensure_writable()
        rows = np.fromiter((self._row.get(i, -1) for i in ids.tolist()), dtype=np.int64, count=len(ids))
        old = rows >= 0
        if old.any():
            self._remove_from_faiss(ids[old])
            self._vecs[rows[old]] = vectors[old]
        new = ~old
        n_new = int(new.sum())
        if n_new:
            start = self._n
            self._reserve(start + n_new)
            self._ids_buf[start: start + n_new] = ids[new]
            self._vecs_buf[start: start + n_new] = vectors[new]
            self._n = start + n_new
            self._row.update(zip(ids[new].tolist(), range(start, start + n_new), strict=True))
        self._faiss.add_with_ids(vectors, ids)

    def remove(self, ids: np.ndarray) -> int:
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        present = [i for i in ids.tolist() if i in self._row]
        if not present:
            return 0
        self._ensure_writable()
        self._remove_from_faiss(np.asarray(present, dtype=np.int64))
        for i in present:  # swap-remove from the exact store
            r = self._row.pop(i)
            last = self._n - 1
            if r != last:
                moved = int(self._ids_buf[last])
                self._ids_buf[r], self._vecs_buf[r] = moved, self._vecs_buf[last]
                self._row[moved] = r
            self._n = last
        return len(present)

    def _remove_from_faiss(self, ids: np.ndarray) -> None:
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        # IVF with a hashtable direct map removes by direct lookup, which needs an IDSelectorArray
        sel = faiss.IDSelectorArray(len(ids), faiss.swig_ptr(ids)) if self.kind == "ivfpq" \
            else faiss.IDSelectorBatch(ids)
        self._faiss.remove_ids(sel)

    def _ensure_writable(self) -> None:
        if not self._vecs_buf.flags.writeable:  # loaded with mmap: copy on first write
            self._set_store(np.array(self._ids), np.array(self._vecs))

    # -- queries ----------------------------------------------------------------------------------
    def __len__(self) -> int:
        return self._n

    def __contains__(self, product_id: object) -> bool:
        return int(product_id) in self._row  # type: ignore[arg-type]

    def vectors(self, ids: np.ndarray) -> np.ndarray:
        rows = [self._row[int(i)] for i in np.asarray(ids).reshape(-1)]
        return self._vecs[rows]

    def _validate(self, k: int, nprobe: int | None, rerank_factor: int | None) -> tuple[int, int]:
        if not isinstance(k, int | np.integer) or not 1 <= int(k) <= self.cfg.max_k:
            raise InvalidInput(f"k must be an integer in 1..{self.cfg.max_k}, got {k!r}", field="k")
        nprobe = self.cfg.nprobe if nprobe is None else nprobe
        if not isinstance(nprobe, int | np.integer) or not 1 <= int(nprobe) <= self.cfg.max_nprobe:
            raise InvalidInput(f"nprobe must be in 1..{self.cfg.max_nprobe}, got {nprobe!r}", field="nprobe")
        rf = self.cfg.rerank_factor if rerank_factor is None else rerank_factor
        if not isinstance(rf, int | np.integer) or not 1 <= int(rf) <= self.cfg.max_rerank_factor:
            raise InvalidInput(f"rerank_factor must be in 1..{self.cfg.max_rerank_factor}, got {rf!r}",
                               field="rerank_factor")
        return int(nprobe), int(rf)

    def _exact(self, xq: np.ndarray, k: int, rows: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        vecs = self._vecs if rows is None else self._vecs[rows]
        ids = self._ids if rows is None else self._ids[rows]
        kk = min(k, len(ids))
        if not kk:
            return np.zeros((len(xq), 0), dtype=np.float32), np.zeros((len(xq), 0), dtype=np.int64)
        out_s, out_i = [], []
        step = max(1, EXACT_BLOCK // len(ids))  # queries per block: scores never exceed EXACT_BLOCK floats
        for q0 in range(0, len(xq), step):
            scores = xq[q0: q0 + step] @ vecs.T
            top = np.argpartition(-scores, kk - 1, axis=1)[:, :kk]
            order = np.take_along_axis(scores, top, 1).argsort(axis=1)[:, ::-1]
            top = np.take_along_axis(top, order, 1)
            out_s.append(np.take_along_axis(scores, top, 1))
            out_i.append(ids[top])
        if len(out_s) == 1:
            return out_s[0], out_i[0]
        return np.concatenate(out_s), np.concatenate(out_i)

    def search(self, xq: np.ndarray, k: int, *, nprobe: int | None = None, rerank_factor: int | None = None,
               allowed_ids: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(scores, ids), each (nq, k), best first, padded with -inf / -1 when fewer than k exist."""
        nprobe, rf = self._validate(k, nprobe, rerank_factor)
        xq = np.ascontiguousarray(xq, dtype=np.float32)
        if xq.ndim != 2 or xq.shape[1] != self.dim:
            raise InvalidInput(f"query vectors must be (nq, {self.dim}), got {xq.shape}", field="query")
        out_s = np.full((len(xq), k), -np.inf, dtype=np.float32)
        out_i = np.full((len(xq), k), -1, dtype=np.int64)
        if not len(self._ids):
            return out_s, out_i
        if allowed_ids is not None:
            rows = np.asarray([self._row[i] for i in np.asarray(allowed_ids).reshape(-1).tolist() if i in self._row],
                              dtype=np.int64)
            if len(rows) == 0:
                return out_s, out_i
            if len(rows) <= self.cfg.exact_filter_below or (self.kind == "flat" and len(rows) < len(self._ids)):
                s, i = self._exact(xq, k, rows)
                out_s[:, : s.shape[1]], out_i[:, : i.shape[1]] = s, i
                return out_s, out_i
        if self.kind == "flat":
            s, i = self._exact(xq, k, None)
            out_s[:, : s.shape[1]], out_i[:, : i.shape[1]] = s, i
            return out_s, out_i
        params = faiss.SearchParametersIVF(nprobe=nprobe)
        if allowed_ids is not None:
            params.sel = faiss.IDSelectorBatch(np.asarray(allowed_ids, dtype=np.int64).reshape(-1))
        n_cand = min(k * rf, len(self._ids))
        _, cand = self._faiss.search(xq, n_cand, params=params)
        for qi in range(len(xq)):  # exact re-rank of the candidates from the stored float32 vectors
            c = cand[qi][cand[qi] >= 0]
            if allowed_ids is not None and len(c) < min(k, len(rows)):
                # the probed lists held too few allowed products: answer this query exactly instead
                s_ex, i_ex = self._exact(xq[qi: qi + 1], k, rows)
                out_s[qi, : s_ex.shape[1]], out_i[qi, : i_ex.shape[1]] = s_ex[0], i_ex[0]
                continue
            if not len(c):
                continue
            crow = np.asarray([self._row[x] for x in c.tolist()], dtype=np.int64)
            s = self._vecs[crow] @ xq[qi]
            top = np.argsort(-s)[:k]
            out_s[qi, : len(top)], out_i[qi, : len(top)] = s[top], c[top]
        return out_s, out_i

    def stats(self) -> dict:
        codes = 0
        if self.kind == "ivfpq":
            codes = len(self._ids) * self._faiss.code_size
        elif len(self._ids):
            codes = len(self._ids) * self.dim * 4
        return {"kind": self.kind, "params": self.params, "ntotal": len(self._ids), "dim": self.dim,
                "bytes_codes": int(codes), "bytes_rerank_store": int(self._vecs.nbytes), "seq": self.seq,
                "config": asdict(self.cfg)}

    # -- persistence ------------------------------------------------------------------------------
    def save(self, directory: Path | str, *, seq: int = 0) -> None:
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        self.seq = int(seq)
        _fsync_write(d / "faiss.index", lambda p: faiss.write_index(self._faiss, str(p)))
        _fsync_write(d / "ids.npy", lambda p: np.save(open(p, "wb"), self._ids))
        _fsync_write(d / "vectors.npy", lambda p: np.save(open(p, "wb"), self._vecs))
        meta = {"seq": self.seq, "dim": self.dim, "kind": self.kind, "params": self.params, "n": len(self._ids),
                "config": asdict(self.cfg)}
        _fsync_write(d / META, lambda p: p.write_text(json.dumps(meta)))

    @classmethod
    def load(cls, directory: Path | str, *, mmap: bool = True) -> VectorIndex:
        d = Path(directory)
        try:
            meta = json.loads((d / META).read_text())
            cfg = IndexConfig(**meta["config"])
            idx = cls(int(meta["dim"]), cfg)
            idx._set_store(np.load(d / "ids.npy", mmap_mode="r" if mmap else None),
                           np.load(d / "vectors.npy", mmap_mode="r" if mmap else None))
            # The float32 re-rank store is memory-mapped (copied on first write); the FAISS structure is
            # read whole because mmapped inverted lists are read-only and upserts must keep working.
            idx._faiss = faiss.read_index(str(d / "faiss.index"))
        except (OSError, KeyError, ValueError, RuntimeError) as exc:
            raise ArtifactError(f"index snapshot in {d} is missing or unreadable: {exc}") from exc
        if len(idx._ids) != int(meta["n"]) or idx._vecs.shape != (int(meta["n"]), idx.dim):
            raise ArtifactError(f"index snapshot in {d} is inconsistent with its meta.json")
        idx.seq, idx.kind, idx.params = int(meta["seq"]), meta["kind"], meta["params"]
        idx._row = {int(i): r for r, i in enumerate(np.asarray(idx._ids).tolist())}
        return idx
