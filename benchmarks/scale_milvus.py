"""kuamo bench scale, Milvus part: the same catalog and queries on the embedded backend and on the Milvus backend
(Milvus Lite, FLAT index: correctness only, never speed; Lite is a pure-Python re-implementation).

The embedded catalog's rows (products, fused vectors, content hashes) are copied into a Milvus collection as
they are, so both backends hold the same vectors; the same encoders make every query vector. Figures:
- top-10 agreement of the Milvus engine with the embedded EXACT search (brute force over the stored vectors)
  and with the embedded served search (its IVF-PQ + exact re-rank), per query, averaged;
- filter exactness: every hit of every filtered query passes the filter (checked against the embedded store's
  SQL), and its top 10 agrees with the exact top 10 within the allowed products.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from kuamo.engine.engine import Engine, EngineConfig
from kuamo.engine.errors import InvalidInput
from kuamo.engine.store import StoredRow
from kuamo.engine.types import Filters, Query
from kuamo.engine.vector_provenance import BLEND_META, ENCODERS_META, LAYOUT_META

K = 10
COPY_CHUNK = 1000


def copy_catalog(src: Engine, dst: Any) -> dict[str, Any]:
    """Every row of the embedded engine `src` into the backend `dst`, with the metadata that says which models
    made the vectors (so an engine on `dst` accepts them)."""
    t0 = time.perf_counter()
    keys = src.backend.keys()
    for s in range(0, len(keys), COPY_CHUNK):
        part = [int(k) for k in keys[s:s + COPY_CHUNK]]
        products, hashes = src.backend.get_many(part), src.backend.hashes(part)
        got, vecs = src.backend.vectors(part)
        dst.write([StoredRow(products[k], v, hashes[k]) for k, v in zip(got.tolist(), vecs, strict=True)])
    for key in (LAYOUT_META, ENCODERS_META, BLEND_META):
        value = src.backend.get_meta(key)
        if value is not None:
            dst.set_meta(key, value)
    return {"rows": len(keys), "seconds": time.perf_counter() - t0}


def exact_top(vectors: np.ndarray, keys: np.ndarray, q: np.ndarray, allowed: np.ndarray | None, k: int = K
              ) -> list[int]:
    scores = vectors @ q
    if allowed is not None:
        scores = np.where(np.isin(keys, allowed), scores, -np.inf)
    order = np.argsort(-scores, kind="stable")[:k]
    return [int(keys[i]) for i in order if np.isfinite(scores[i])]


def _overlap(a: Sequence[int], b: Sequence[int]) -> float:
    if not a and not b:
        return 1.0
    return len(set(a) & set(b)) / max(len(a), len(b))


def filtered_queries(texts: Sequence[str], categories: Sequence[str], n: int) -> list[tuple[str, Filters]]:
    """Filters of every kind the fashion catalog can answer (category prefix, attribute equality of strings and
    integers, ids, a price bound no product passes: it has no prices), plus two with injection attempts."""
    cats = sorted({c.split("/")[0] for c in categories if c} | {"/".join(c.split("/")[:2]) for c in categories if c})
    kinds = [lambda i: Filters(category_prefix=cats[i % len(cats)]),
             lambda i: Filters(attributes={"gender": ["Men", "Women", "Boys", "Girls", "Unisex"][i % 5]}),
             lambda i: Filters(attributes={"baseColour": ["Black", "Blue", "Red", "White", "Green"][i % 5],
                                           "season": ["Summer", "Winter", "Fall"][i % 3]}),
             lambda i: Filters(attributes={"year": 2011 + i % 6}, category_prefix=cats[(3 * i) % len(cats)]),
             lambda i: Filters(price_min=1.0),
             lambda i: Filters(brands=('" or key >= 0 or brand == "',)),
             lambda i: Filters(category_prefix='Apparel" or category like "%')]
    return [(texts[i % len(texts)], kinds[i % len(kinds)](i)) for i in range(n)]


async def _compare(emb: Engine, mil: Engine, texts: Sequence[str], filtered: Sequence[tuple[str, Filters]]
                   ) -> dict[str, Any]:
    keys = emb.backend.keys()
    _, vectors = emb.backend.vectors(keys.tolist())
    agree_exact, agree_served, per_query = [], [], []
    for text in texts:
        q = Query(text=text, k=K)
        qvec = await emb.query_vector(q)
        exact = exact_top(vectors, keys, qvec, None)
        served = [h.id for h in (await emb.search(q)).hits]
        got = [h.id for h in (await mil.search(q)).hits]
        agree_exact.append(_overlap(got, exact))
        agree_served.append(_overlap(got, served))
        per_query.append({"query": text, "agreement_exact": agree_exact[-1]})
    violations, f_agree, n_hits, empty, refused = 0, [], 0, 0, 0
    for text, filters in filtered:
        q = Query(text=text, k=K, filters=filters)
        allowed = emb.backend.allowed_keys(filters)
        try:
            got = [h.id for h in (await mil.search(q)).hits]
        except InvalidInput:  # a category the catalog never had is refused (engine/vocabulary.py), as embedded
            refused += 1
            continue
        n_hits += len(got)
        empty += not got
        violations += sum(1 for g in got if allowed is not None and g not in set(allowed.tolist()))
        f_agree.append(_overlap(got, exact_top(vectors, keys, await emb.query_vector(q), allowed)))
    worst = sorted(per_query, key=lambda r: r["agreement_exact"])[:5]
    return {"queries": len(texts), "agreement_vs_exact": float(np.mean(agree_exact)),
            "agreement_vs_embedded_served": float(np.mean(agree_served)),
            "queries_fully_agreeing": int(sum(a == 1.0 for a in agree_exact)), "worst": worst,
            "filtered": {"queries": len(filtered), "hits": n_hits, "empty_results": empty,
                         "hits_failing_their_filter": violations,
                         "refused_as_unknown_category": refused,
                         "agreement_vs_exact_within_filter": float(np.mean(f_agree)) if f_agree else None}}


def milvus_agreement(models: Path, data: Path, work: Path, texts: Sequence[str], filtered_n: int) -> dict[str, Any]:
    from kuamo.engine.artifacts import ModelArtifacts
    from kuamo.engine.config import EncoderConfig
    from kuamo.engine.encoders import ImageEncoder, TextEncoder
    from kuamo.engine.milvus_backend import MilvusBackend

    enc_cfg = EncoderConfig(model_dir=models)
    art = ModelArtifacts(models, verify=False)
    text, image = TextEncoder(art, enc_cfg), ImageEncoder(art, enc_cfg) if "image" in art.towers else None
    emb = Engine(EngineConfig(model_dir=models, data_dir=data), text_encoder=text, image_encoder=image)
    work.mkdir(parents=True, exist_ok=True)
    def open_backend() -> MilvusBackend:
        return MilvusBackend(str(work / "milvus.db"), collection="bench_scale", dim=emb.layout.dim,
                             index_type="FLAT", timeout_s=120.0)

    try:
        writer = open_backend()
        copied = copy_catalog(emb, writer)
        # Reopened: Milvus Lite seals and indexes what it holds on close; searching the unsealed rows of a
        # just-written 20k catalog took over 10 s per query in Lite's pure-Python path (a Lite artefact)
        writer.close()
        backend = open_backend()
        mil = Engine(EngineConfig(model_dir=models, data_dir=work / "replica"), text_encoder=text,
                     image_encoder=image, backend=backend)
        filtered = filtered_queries(texts, emb.backend.categories(), filtered_n)
        res = asyncio.run(_compare(emb, mil, texts, filtered))
        asyncio.run(mil.close(snapshot=False))
    finally:
        asyncio.run(emb.close(snapshot=False))
    return {"copied": copied, "index": "FLAT on Milvus Lite 3.2.2 (file)", **res}
