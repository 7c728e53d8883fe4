"""The vector index against exact search: IVF-PQ + re-rank agreement, filters, deletes, persistence."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from kuamo.engine.errors import ArtifactError, InvalidInput
from kuamo.engine.index import IndexConfig, VectorIndex


def clustered(n: int, d: int = 32, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((50, d))
    x = centres[rng.integers(0, 50, n)] + 0.3 * rng.standard_normal((n, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def data():
    xb = clustered(6000)
    xq = clustered(50, seed=1)
    ids = np.arange(10_000, 16_000, dtype=np.int64)
    gt = ids[np.argsort(-(xq @ xb.T), axis=1)[:, :10]]
    return xb, xq, ids, gt


def recall(found: np.ndarray, gt: np.ndarray) -> float:
    return float(np.mean([len(set(f) & set(g)) / len(g) for f, g in zip(found, gt, strict=True)]))


def test_small_catalog_is_exact(data) -> None:
    xb, xq, ids, gt = data
    idx = VectorIndex(32, IndexConfig(flat_threshold=10_000))
    idx.build(ids, xb)
    assert idx.stats()["kind"] == "flat"
    assert recall(idx.search(xq, 10)[1], gt) == 1.0


def test_ivfpq_with_rerank_agrees_with_exact(data) -> None:
    xb, xq, ids, gt = data
    idx = VectorIndex(32, IndexConfig(flat_threshold=1000, nlist=32, nprobe=8, rerank_factor=10))
    idx.build(ids, xb)
    st = idx.stats()
    assert st["kind"] == "ivfpq" and st["bytes_codes"] * 8 <= len(xb) * 32 * 4
    _, found = idx.search(xq, 10)
    assert recall(found, gt) >= 0.9
    _, no_rerank = idx.search(xq, 10, rerank_factor=1)
    assert recall(found, gt) >= recall(no_rerank, gt)


def test_training_sample_is_capped(data) -> None:
    # 256 per list would be 8,192 of the 6,000 (all); max_train keeps the k-means cost bounded at scale
    xb, xq, ids, gt = data
    idx = VectorIndex(32, IndexConfig(flat_threshold=0, nlist=32, max_train=2000))
    idx.build(ids, xb)
    assert idx.stats()["params"]["trained_on"] == 2000
    assert recall(idx.search(xq, 10)[1], gt) >= 0.9
    uncapped = VectorIndex(32, IndexConfig(flat_threshold=0, nlist=32))
    uncapped.build(ids, xb)
    assert uncapped.stats()["params"]["trained_on"] == 6000


@pytest.mark.parametrize("flat_threshold", [100_000, 1000])
def test_selective_filter_returns_k_and_only_allowed(data, flat_threshold: int) -> None:
    xb, xq, ids, _ = data
    idx = VectorIndex(32, IndexConfig(flat_threshold=flat_threshold, nlist=32, nprobe=1, exact_filter_below=0))
    idx.build(ids, xb)
    allowed = ids[::100]  # 1% of the catalog
    _, found = idx.search(xq, 10, allowed_ids=allowed)
    assert (found >= 0).all()  # k results whenever k exist, even with nprobe=1
    assert set(found.ravel()) <= set(allowed.tolist())
    exact = allowed[np.argsort(-(xq @ xb[::100].T), axis=1)[:, :10]]
    assert recall(found, exact) >= 0.9
    _, few = idx.search(xq[:1], 10, allowed_ids=allowed[:3])
    assert sorted(few[0][:3]) == sorted(allowed[:3]) and (few[0][3:] == -1).all()


def test_delete_and_upsert(data) -> None:
    xb, xq, ids, _ = data
    idx = VectorIndex(32, IndexConfig(flat_threshold=1000, nlist=32))
    idx.build(ids, xb)
    _, top = idx.search(xq[:1], 5)
    gone = top[0][:2]
    assert idx.remove(gone) == 2 and idx.remove(gone) == 0
    _, after = idx.search(xq[:1], 5)
    assert not set(gone) & set(after[0]) and len(idx) == len(ids) - 2
    idx.upsert(np.asarray([ids[10]]), xq[:1])  # move product ids[10] onto the query itself
    s, best = idx.search(xq[:1], 1)
    assert best[0][0] == ids[10] and s[0][0] == pytest.approx(1.0, abs=1e-5)
    assert np.allclose(idx.vectors([ids[10]])[0], xq[0])


def test_persistence_roundtrip_and_stray_temp_file(data, tmp_path: Path) -> None:
    xb, xq, ids, _ = data
    idx = VectorIndex(32, IndexConfig(flat_threshold=1000, nlist=32))
    idx.build(ids, xb)
    idx.save(tmp_path / "snap", seq=42)
    (tmp_path / "snap" / "faiss.index.tmp").write_bytes(b"half written")
    again = VectorIndex.load(tmp_path / "snap", mmap=True)
    assert again.seq == 42 and len(again) == len(ids)
    assert np.array_equal(again.search(xq, 10)[1], idx.search(xq, 10)[1])
    again.upsert(np.asarray([1]), xq[:1])  # writable after an mmap load
    assert 1 in again
    with pytest.raises(ArtifactError):
        VectorIndex.load(tmp_path / "nothing-here")


@pytest.mark.parametrize(("kw", "field"), [({"k": 0}, "k"), ({"k": 10**6}, "k"), ({"nprobe": 0}, "nprobe"),
                                           ({"rerank_factor": 10**4}, "rerank_factor")])
def test_invalid_parameters(data, kw, field) -> None:
    xb, xq, ids, _ = data
    idx = VectorIndex(32)
    idx.build(ids[:100], xb[:100])
    args = {"k": 5, **kw}
    with pytest.raises(InvalidInput) as e:
        idx.search(xq[:1], args.pop("k"), **args)
    assert e.value.field == field
    with pytest.raises(InvalidInput):
        idx.upsert(np.asarray([1, 1]), xb[:2])


@pytest.mark.parametrize("flat_threshold", [100_000, 1000])
def test_many_small_upserts_and_removes_match_a_fresh_build(flat_threshold: int, tmp_path: Path) -> None:
    # every candidate re-ranked exactly (nprobe = nlist, k * rerank_factor >= n): results must equal exact search
    cfg = IndexConfig(flat_threshold=flat_threshold, nlist=16, nprobe=16, rerank_factor=1000, max_rerank_factor=1000)
    rng = np.random.default_rng(7)
    pool = clustered(6000, seed=3)  # every upsert takes unused rows: no two live products tie
    xq = clustered(20, seed=4)
    live = {int(i): pool[i] for i in range(1500)}
    idx = VectorIndex(32, cfg)
    idx.build(np.fromiter(live, dtype=np.int64), np.stack(list(live.values())))
    idx.upsert(np.asarray([5000]), pool[5999:])
    live[5000] = pool[5999]
    buf = idx._vecs_buf
    idx.upsert(np.asarray([5001]), pool[5998:5999])  # capacity was doubled: no copy for the next append
    live[5001] = pool[5998]
    assert idx._vecs_buf is buf and len(buf) >= 2 * 1500
    fresh_rows = iter(range(2000, 5000))
    for _ in range(300):
        ids = rng.choice(4000, int(rng.integers(1, 8)), replace=False)  # mix of new ids and replacements
        vecs = pool[[next(fresh_rows) for _ in ids]]
        idx.upsert(ids, vecs)
        live.update({int(i): v for i, v in zip(ids, vecs, strict=True)})
        gone = rng.choice(list(live), int(rng.integers(0, 4)), replace=False)
        assert idx.remove(np.concatenate([gone, [-1]]).astype(np.int64)) == len(gone)
        for i in gone.tolist():
            del live[i]
    ids = np.fromiter(live, dtype=np.int64)
    vecs = np.stack(list(live.values()))
    assert len(idx) == len(live) == len(idx._ids) == len(idx._vecs)
    assert sorted(idx._ids.tolist()) == sorted(live) and np.array_equal(idx.vectors(ids), vecs)
    assert idx.stats()["bytes_rerank_store"] == len(live) * 32 * 4
    fresh = VectorIndex(32, cfg)
    fresh.build(ids, vecs)
    s_got, i_got = idx.search(xq, 10)
    s_ref, i_ref = fresh.search(xq, 10)
    exact = ids[np.argsort(-(xq @ vecs.T), axis=1)[:, :10]]
    assert np.array_equal(i_got, i_ref) and np.array_equal(i_got, exact)
    assert np.allclose(s_got, s_ref, atol=1e-5)
    allowed = ids[::50]
    assert np.array_equal(idx.search(xq, 10, allowed_ids=allowed)[1], fresh.search(xq, 10, allowed_ids=allowed)[1])
    idx.save(tmp_path / "snap", seq=1)  # only the live rows are written, not the spare capacity
    again = VectorIndex.load(tmp_path / "snap", mmap=True)
    assert len(again._ids) == len(again._vecs_buf) == len(live)
    assert np.array_equal(again.search(xq, 10)[1], i_ref)
    again.remove(ids[:3])
    again.upsert(np.asarray([9999]), xq[:1])  # copy on first write, then grows
    assert len(again) == len(live) - 2 and again.search(xq[:1], 1)[1][0, 0] == 9999
    assert len(VectorIndex.load(tmp_path / "snap", mmap=True)) == len(live)  # the snapshot was not written through
