"""The personalisation role: shopper events and profiles (engine/personal.py, pseudonymised on arrival),
the profile's pull on a search, and recommendations. Profiles and events live in the embedded catalog's
SQLite file, so this role exists only on the embedded backend (docs/scale.md says why and what is planned
for Milvus).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from kuamo.engine.embedded_backend import EmbeddedBackend
from kuamo.engine.errors import InvalidInput, NotFound
from kuamo.engine.ids import ProductId
from kuamo.engine.personal import Event, PersonalStore, Pseudonymiser, validate_event
from kuamo.engine.ranking import Ranker, SearchJob
from kuamo.engine.types import Explanation, Hit, Query, RecommendQuery, Rejection, SearchResult, Timings

if TYPE_CHECKING:
    from kuamo.engine.engine import EngineConfig


class Personaliser:
    def __init__(self, config: EngineConfig, backend: EmbeddedBackend, ranker: Ranker) -> None:
        self.config = config
        self.backend = backend
        self.ranker = ranker
        self.layout = ranker.layout
        data_dir = Path(config.data_dir)
        self.pseudonym = Pseudonymiser.from_config(config.personal, data_dir)
        self.store = PersonalStore(data_dir / "catalog.sqlite", config.personal, self.layout.dim)

    def close(self) -> None:
        self.store.close()

    def taste_of(self, vec: np.ndarray) -> np.ndarray | None:
        """A query vector from a product or profile vector: its image and text blocks, each re-normalised
        (a mean of unit vectors is shorter than one) and weighted by the default weights."""
        blocks = {}
        for name, sl in self.layout.slices().items():
            if name in ("image", "text") and float(np.linalg.norm(vec[sl])) > 1e-6:
                blocks[name] = vec[sl]
        if not blocks:
            return None
        d = self.config.default_weights
        return self.layout.query_vector(blocks, {n: d.get(n, 0.5) for n in blocks}).astype(np.float32)

    def taste(self, pseudonym: str) -> np.ndarray | None:
        prof = self.store.profile(pseudonym)
        return None if prof is None else self.taste_of(prof)

    def vectors_of(self, ids: list[int]) -> dict[int, np.ndarray]:
        got, vecs = self.backend.vectors(ids)
        return {int(i): v for i, v in zip(got.tolist(), vecs, strict=True)}

    def record(self, events: Sequence[Event]) -> tuple[int, list[Rejection]]:
        """Store valid events (pseudonymised) and update the profiles; returns (recorded, rejections)."""
        now = time.time()
        rows, at, rejected = [], [], []  # at: each valid event's position in `events`
        for i, e in enumerate(events):
            try:
                rows.append(validate_event(e, self.config.personal, now, i))
                at.append(i)
            except InvalidInput as exc:
                rejected.append(Rejection(row=i, id=None, field=(exc.field or "").split(".")[-1], reason=exc.message))
        recorded = 0
        if rows:
            vecs = self.vectors_of(sorted({p for _, p, _, _ in rows}))
            keep = []
            for i, (u, p, k, ts) in zip(at, rows, strict=True):
                if p in vecs:
                    keep.append((self.pseudonym(u), p, k, ts))
                else:
                    pid = events[i].product_id
                    rejected.append(Rejection(row=i, id=pid, field="product_id", reason=f"no product with id {pid!r}"))
            self.store.purge(now, self.vectors_of)
            recorded = self.store.add(keep, vecs) if keep else 0
        return recorded, sorted(rejected, key=lambda r: r.row)

    def forget(self, pseudonym: str) -> int:
        return self.store.forget(pseudonym)

    def recommend(self, rq: RecommendQuery, pseudo: str | None, t0: float,
                  shown: dict[int, ProductId] | None = None) -> SearchResult:
        """`rq` names its examples by row key; `shown` maps them back to the ids the caller wrote."""
        examples = self.vectors_of(sorted({*rq.positives, *rq.negatives}))
        missing = sorted((set(rq.positives) | set(rq.negatives)) - set(examples))
        if missing:
            raise NotFound(f"no product with id {(shown or {}).get(missing[0], missing[0])!r}",
                           field="positives" if missing[0] in rq.positives else "negatives")
        qvec = np.zeros(self.layout.dim, dtype=np.float32)
        taste = self.taste(pseudo) if pseudo is not None else None
        if taste is not None:
            qvec += taste
        for ex, sign in ((rq.positives, 1.0), (rq.negatives, -1.0)):
            for pid, w in ex.items():
                t = self.taste_of(examples[pid])
                if t is not None:
                    qvec += sign * float(w) * t
        exclude = set(rq.positives) | set(rq.negatives)
        if pseudo is not None and not rq.include_purchased:
            exclude |= set(self.store.purchased(pseudo))
        if taste is None and not rq.positives:  # cold start: what is popular within the filters
            allowed = self.backend.allowed_keys(rq.filters)
            ranked = [(p, s) for p, s in self.store.popular(time.time(), rq.k + len(exclude), allowed)
                      if p not in exclude][: rq.k]
            products = self.backend.get_many([p for p, _ in ranked]) if rq.include_products else {}
            hits = [Hit(id=p, score=s, product=products.get(p),
                        explanation=Explanation(contributions={"popularity": s}, base_score=s) if rq.explain else None)
                    for p, s in ranked]
            return SearchResult(hits=hits, allowed=None if allowed is None else len(allowed),
                                timings=Timings(total_ms=(time.perf_counter() - t0) * 1000))
        k = min(rq.k + len(exclude), self.config.max_k)
        q = Query(text="", k=k, filters=rq.filters, modifiers=rq.modifiers, explain=rq.explain,
                  include_products=rq.include_products)
        job = SearchJob(q, qvec, 0.0, t0, profile_vec=taste if taste is not None and rq.explain else None,
                        exclude=frozenset(exclude))
        if taste is not None:
            res = self._multi_interest(job, pseudo)  # type: ignore[arg-type]
        else:
            out = self.ranker.search_jobs([job])[0]
            if isinstance(out, BaseException):
                raise out
            res = out
        hits = [h for h in res.hits if h.id not in exclude][: rq.k]
        return SearchResult(hits=hits, allowed=res.allowed, timings=res.timings)

    def _multi_interest(self, job: SearchJob, pseudo: str) -> SearchResult:
        """A shopper with two tastes (say black shoes and red dresses) has a mean profile between them,
        near neither. So Recommend also searches from each of the products they engaged with most and
        ranks a candidate by its best match (Ranker.best_of)."""
        interests = self.store.interests(pseudo, time.time(), self.config.recommend_interests)
        vecs = self.vectors_of([p for p, _ in interests])
        queries, weights = [job.qvec], [max((w for _, w in interests), default=1.0)]
        for pid, w in interests:
            t = self.taste_of(vecs[pid]) if pid in vecs else None
            if t is not None:
                queries.append(t)
                weights.append(w)
        return self.ranker.best_of(job, queries, weights)
