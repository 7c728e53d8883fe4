"""The ranking role: turns a backend's exact candidates into answers. The photo query's category prior,
the caller's modifiers (rating, popularity, brand boosts), the products and the explanations; and the
batching of concurrent searches into one backend call. It reads the catalog only through the backend.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from kuamo.engine.catalog_backend import CatalogBackend
from kuamo.engine.category_prior import CategoryPrior, leaf_names
from kuamo.engine.errors import InvalidInput, shown
from kuamo.engine.lexical import matched, query_terms
from kuamo.engine.product_encoder import ProductEncoder
from kuamo.engine.rules import apply_modifiers
from kuamo.engine.types import Explanation, Hit, Product, Query, SearchResult, Timings
from kuamo.engine.understanding import (
    CANDIDATE_CATEGORY_TOP,
    Facets,
    QueryUnderstanding,
    Understood,
    boosts,
    category_from_candidates,
)

if TYPE_CHECKING:
    from kuamo.engine.engine import EngineConfig

# a collapsed query reads k x this many candidates: a product's variants lie close together and crowd the top
COLLAPSE_CANDIDATES_PER_HIT = 10
COLLAPSE_WIDEN = 4  # too few distinct values among them: searched again with this many times the candidates
RECOMMEND_TAU = 0.05  # how much a weaker interest is discounted in the best-match ranking
# Query.weights["category"]: the weight of a photo query's category agreement (not a fused block)
CATEGORY_WEIGHT = "category"


def block_weights(given: dict[str, float]) -> dict[str, float]:
    """The fused blocks' part of a query's weights: "category" checked (finite, >= 0) and left out."""
    if CATEGORY_WEIGHT in given:
        w = given[CATEGORY_WEIGHT]
        if isinstance(w, bool) or not isinstance(w, int | float) or not math.isfinite(w) or w < 0:
            raise InvalidInput(f"weight 'category' must be a finite number >= 0, got {shown(w)}", field="weights")
    return {k: v for k, v in given.items() if k != CATEGORY_WEIGHT}


@dataclass
class SearchJob:
    query: Query
    qvec: np.ndarray
    encode_ms: float
    t0: float
    profile_vec: np.ndarray | None = None  # the part of qvec that came from the shopper's profile
    exclude: frozenset[int] = frozenset()  # recommendations: never return these
    explain_as: str | None = None  # scores not from qvec alone: explain the base score as this one part
    queue_ms: float = 0.0  # waiting for an encoder batch
    lexical: dict[int, float] | None = None  # row key -> the lexical (BM25) part of its base score
    lexical_terms: tuple[str, ...] = ()
    boosts: dict[int, dict[str, float]] | None = None  # row key -> the query understanding's boosts (named)
    understood: Understood | None = None
    candidates: int | None = None  # a collapsed query searched again with more candidates (Ranker.search_jobs)
    saturated: bool = False  # finish() had as many candidates as it asked for: more may lie below them


def best_per_value(ranked: list[tuple], products: dict[int, Product], name: str) -> list[tuple]:
    """The ranked (final, base, id, applied) rows with only the first (best) row per value of attribute `name`
    ("brand": the product's brand); a product without a value stands alone."""
    seen: set[object] = set()
    out = []
    for row in ranked:
        p = products.get(row[2])
        value = None if p is None else (p.brand if name == "brand" else p.attributes.get(name))
        if value is not None and value != "":
            if value in seen:
                continue
            seen.add(value)
        out.append(row)
    return out


def is_photo_query(q: Query) -> bool:
    return q.image is not None and q.text is None


# Ranking weights a query may give beside its blocks' weights (they weigh score parts, not vector blocks).
RANKING_WEIGHTS = ("lexical", "understanding")
MAX_LEXICAL_WEIGHT = 1.0  # in units of similarity: 1 lets the best BM25 match outweigh any vector score gap


class Ranker:
    def __init__(self, config: EngineConfig, encoder: ProductEncoder, backend: CatalogBackend) -> None:
        self.config = config
        self.encoder = encoder
        self.layout = encoder.layout
        self.backend = backend
        self.category_prior: CategoryPrior | None = None
        self._category_name_vecs: dict[str, np.ndarray] = {}
        self.understanding = QueryUnderstanding()

    # -- the photo queries' category prior --------------------------------------------------------------
    def refresh_category_prior(self, paths: list[str]) -> None:
        """The prior over the catalog's leaf categories; encode only new names."""
        enc = self.encoder
        self._refresh_understanding(paths)
        if not (self.config.photo_category_weight > 0 and enc.image_aligned and enc.image_encoder is not None):
            return
        names = leaf_names(paths)
        current = self.category_prior
        if current is not None and list(current.names) == names:
            return
        if len(names) < 2:  # one category or none: nothing to tell apart
            self.category_prior = None
            return
        new = [n for n in names if n not in self._category_name_vecs]
        if new:
            self._category_name_vecs.update(zip(new, enc.text_encoder.encode(new, "query"), strict=True))
        # one assignment: a search in flight keeps the prior it read
        self.category_prior = CategoryPrior(names, np.stack([self._category_name_vecs[n] for n in names]),
                                            self.config.category_temperature)

    def category_weight(self, q: Query) -> float:
        """weights["category"], else the default image weight x photo_category_weight (the bonus a photo query
        gets with no weights given). A fixed default, not the query's image weight times it: otherwise an image
        weight would scale both parts of a photo-only query's score alike and change no ranking."""
        given = q.weights.get(CATEGORY_WEIGHT)
        if given is not None:
            return float(given)
        return float(self.config.default_weights.get("image", 0.5)) * self.config.photo_category_weight

    def _refresh_understanding(self, paths: list[str]) -> None:
        """Query understanding reads the same leaf names (their vectors: the text tower in query mode)."""
        names = leaf_names(paths)
        if list(self.understanding.names) == names:
            return
        vecs = None
        if self.config.understanding_weight > 0 or self.config.lexical_weight > 0:
            new = [n for n in names if n not in self._category_name_vecs]
            if new:
                self._category_name_vecs.update(zip(new, self.encoder.text_encoder.encode(new, "query"),
                                                    strict=True))
            vecs = np.stack([self._category_name_vecs[n] for n in names]) if names else None
        self.understanding.set_categories(names, vecs)

    def category_bonus(self, job: SearchJob, cand_ids: list[int]) -> np.ndarray | None:
        """Per candidate: the category weight x the agreement of the predicted categories of the query photo
        and the candidate's photo (scaled, as the blocks are, by the query's share beside a shopper profile);
        None when it does not apply."""
        prior = self.category_prior
        if prior is None or not cand_ids or not is_photo_query(job.query):
            return None
        img = self.layout.slices()["image"]
        own = job.qvec if job.profile_vec is None else job.qvec - job.profile_vec
        qimg = own[img]
        norm = float(np.linalg.norm(qimg))
        image_w = float(job.query.weights.get("image", self.config.default_weights.get("image", 0.5)))
        if norm == 0 or image_w <= 0:  # the caller weighted the image block to zero
            return None
        # norm = image_w without a profile, (1 - user_weight) x image_w with one: that share scales the bonus too
        w = self.category_weight(job.query) * norm / image_w
        if w == 0:
            return None
        present, vecs = self.backend.vectors(cand_ids)
        bonus = np.zeros(len(cand_ids), dtype=np.float32)
        if len(present):
            got = dict(zip(present.tolist(), prior.agreement(qimg, vecs[:, img]), strict=True))
            bonus[:] = [got.get(i, 0.0) for i in cand_ids]
        return w * bonus

    # -- how many candidates ----------------------------------------------------------------------------
    def n_candidates(self, q: Query, *, category: bool = True) -> int:
        # Modifiers re-order the candidates: fetch k x factor of them so a boosted product can climb in.
        n = q.k
        max_k = self.config.index.max_k
        if not q.modifiers.is_empty():
            n = min(q.k * max(int(self._query_rf(q)), 1), max_k)
        if category and is_photo_query(q) and self.category_prior is not None:
            n = max(n, min(self.config.photo_candidates, max_k))
        if q.collapse is not None:  # variants crowd each other: enough candidates for k distinct values
            n = max(n, min(q.k * COLLAPSE_CANDIDATES_PER_HIT, max_k))
        return n

    def _query_rf(self, q: Query) -> int:
        return q.rerank_factor if q.rerank_factor is not None else self.config.index.rerank_factor

    def rerank_factor(self, q: Query, n_cand: int) -> int | None:
        """The index's exact re-rank factor for `n_cand` results. A photo query widened to its category
        candidates keeps the approximate-candidate budget of the plain query (k x factor, at least the
        widened count) instead of multiplying it: the widened list is re-scored exactly anyway."""
        plain = self.n_candidates(q, category=False)
        if n_cand <= plain:
            return q.rerank_factor
        return max(1, -(-plain * int(self._query_rf(q)) // n_cand))

    # -- searching ----------------------------------------------------------------------------------------
    def search_jobs(self, jobs: list[SearchJob]) -> list[SearchResult | BaseException]:
        """Batcher fn: queries that arrived together and share index settings (no filter, same nprobe and
        re-rank factor) go through the backend as ONE matrix, so 32 concurrent queries read the vectors once
        instead of 32 times; filtered queries are searched one by one. One bad query fails only itself."""
        out: list[SearchResult | BaseException] = [None] * len(jobs)  # type: ignore[list-item]
        groups: dict[tuple, list[int]] = {}
        for i, job in enumerate(jobs):
            q = job.query
            widened = self.n_candidates(q) > self.n_candidates(q, category=False)
            key = (("all", q.nprobe, q.rerank_factor, widened, q.collapse is not None, job.candidates)
                   if q.filters.is_empty() else ("filtered", i))
            groups.setdefault(key, []).append(i)
        for members in groups.values():
            t_s = time.perf_counter()
            n_cand = max(self.job_candidates(jobs[i]) for i in members)
            q0 = jobs[members[0]].query
            try:
                found = self.backend.search(np.stack([jobs[i].qvec for i in members]), n_cand,
                                            filters=q0.filters, nprobe=q0.nprobe,
                                            rerank_factor=self.rerank_factor(q0, n_cand))
            except Exception as exc:
                for i in members:
                    out[i] = exc
                continue
            search_ms = (time.perf_counter() - t_s) * 1000 - found.filter_ms
            for row, i in enumerate(members):
                try:
                    t_l = time.perf_counter()
                    scores, keys = self.fuse_lexical(jobs[i], found.scores[row], found.keys[row])
                    out[i] = self.finish(jobs[i], scores, keys, found.allowed,
                                         search_ms + (time.perf_counter() - t_l) * 1000, filter_ms=found.filter_ms)
                except Exception as exc:
                    out[i] = exc
        return self._fill_collapsed(jobs, out)

    def job_candidates(self, job: SearchJob) -> int:
        return job.candidates or self.n_candidates(job.query)

    def _fill_collapsed(self, jobs: list[SearchJob], out: list[SearchResult | BaseException]
                        ) -> list[SearchResult | BaseException]:
        """A collapsed query that found fewer than k distinct values while its candidates ran out (a product with
        more variants than COLLAPSE_CANDIDATES_PER_HIT crowds the list) is searched again with COLLAPSE_WIDEN
        times the candidates, up to the index's max_k, so k products come back whenever the catalog has them."""
        for i, job in enumerate(jobs):
            res, q = out[i], job.query
            n = self.job_candidates(job)
            max_k = self.config.index.max_k
            if (q.collapse is None or isinstance(res, BaseException) or len(res.hits) >= q.k or not job.saturated
                    or n >= max_k):
                continue
            again = dataclasses.replace(job, candidates=min(n * COLLAPSE_WIDEN, max_k), saturated=False)
            more = self.search_jobs([again])[0]
            if not isinstance(more, BaseException):
                t = more.timings  # both searches' time
                out[i] = dataclasses.replace(more, timings=dataclasses.replace(
                    t, search_ms=t.search_ms + res.timings.search_ms, rerank_ms=t.rerank_ms + res.timings.rerank_ms))
        return out

    # -- lexical (BM25) fusion ------------------------------------------------------------------------------
    def lexical_weight(self, q: Query) -> float:
        """The query's weights.lexical, else the engine default; 0 without text or where the backend has no
        lexical index (an explicit weight there was refused by the engine's validation)."""
        if q.text is None or not getattr(self.backend, "supports_lexical", False):
            return 0.0
        return float(q.weights.get("lexical", self.config.lexical_weight))

    def understanding_weight(self, q: Query) -> float:
        if q.text is None:
            return 0.0
        return float(q.weights.get("understanding", self.config.understanding_weight))

    def fuse_lexical(self, job: SearchJob, scores: np.ndarray, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Calibrated score fusion: base = exact vector score + lexical weight x BM25 / the best BM25 of the
        query + the query understanding's boosts, over the vector candidates and the BM25 top
        `lexical_candidates` (those get their exact vector score from their stored vectors). It stays in the
        similarity's scale, so modifiers and the category prior keep their meaning and `explain` shows each part
        beside the blocks'. The BM25 query is the text plus the catalog's spelling of what was recognised in it
        (a Chinese colour or category finds the English catalog's words)."""
        q = job.query
        w_lex, w_und = self.lexical_weight(q), self.understanding_weight(q)
        if (w_lex <= 0 and w_und <= 0) or q.text is None:
            return scores, keys
        u = None
        valid = keys >= 0
        ids, base = keys[valid].astype(np.int64), scores[valid].astype(np.float64)
        fetched: dict[int, Facets] = {}
        if w_und > 0:
            text_vec = job.qvec[self.layout.slices()["text"]] if "text" in self.layout.slices() else None
            self.understanding.set_colours(self.backend.facet_colours())
            u = self.understanding.parse(q.text, text_vec)
            if u.category is None and len(ids):
                top = ids[:CANDIDATE_CATEGORY_TOP].tolist()
                fetched = self.backend.facets(top)
                category_from_candidates(u, [f.leaf if (f := fetched.get(i)) else None for i in top],
                                         min_share=self.config.understanding_category_share)
            job.understood = u
        lex_text = q.text if u is None or u.empty() else f"{q.text} {u.expansion()}"
        terms = query_terms(lex_text)
        # candidates as arrays (vectorised: this runs for every text query while hybrid is on by default):
        # the vector candidates in their order, then the BM25 top ones they lack, scored on their stored vectors
        n_vector = len(ids)
        bonus = np.zeros(0)
        if w_lex > 0 or (u is not None and not u.empty()):
            job.lexical_terms = tuple(query_terms(q.text))
            lex = self.backend.lexical(lex_text, self.config.lexical_candidates, filters=q.filters) \
                if terms and getattr(self.backend, "supports_lexical", False) else None
            if lex is not None and len(lex.keys[0]) and float(lex.scores[0][0]) > 0:
                lk, ls = lex.keys[0].astype(np.int64), lex.scores[0].astype(np.float64)
                missing = lk[~np.isin(lk, ids)]
                if len(missing):
                    got, vecs = self.backend.vectors(missing.tolist())  # one deleted meanwhile is not there
                    if len(got):
                        ids = np.concatenate([ids, got.astype(np.int64)])
                        base = np.concatenate([base, (vecs @ job.qvec).astype(np.float64)])
                if w_lex > 0:
                    position = {k: i for i, k in enumerate(ids.tolist())}
                    at = [(position[k], w_lex * s / float(ls[0])) for k, s in zip(lk.tolist(), ls.tolist(), strict=True)
                          if k in position]
                    bonus = np.zeros(len(ids))
                    for i, b in at:
                        bonus[i] = b
                    job.lexical = {int(ids[i]): b for i, b in at}
        extra: dict[int, dict[str, float]] = {}
        if u is not None and not u.empty():
            rest = [i for i in ids.tolist() if i not in fetched]
            extra = boosts(u, {**fetched, **(self.backend.facets(rest) if rest else {})}, w_und,
                           photo_colours=self.config.photo_colours)
            job.boosts = extra
        if not bonus.any() and not extra and len(ids) == n_vector:
            return scores, keys
        fused = base + (bonus if len(bonus) else 0.0)
        if extra:
            fused = fused + np.asarray([sum(extra.get(i, {}).values()) for i in ids.tolist()])
        fused = fused.astype(np.float32)
        order = np.argsort(-fused, kind="stable")
        return fused[order], ids[order]

    def best_of(self, job: SearchJob, queries: list[np.ndarray], weights: list[float]) -> SearchResult:
        """Search from several query vectors and rank a candidate by its best match: max over queries of
        similarity + TAU * ln(weight / first weight) (recommendations for a shopper with several tastes)."""
        t_s = time.perf_counter()
        n = self.n_candidates(job.query)
        found = self.backend.search(np.stack(queries), n, filters=job.query.filters)
        best: dict[int, float] = {}
        for row, w in enumerate(weights):
            bonus = RECOMMEND_TAU * math.log(w / weights[0]) if w > 0 else -math.inf
            for sc, pid in zip(found.scores[row], found.keys[row], strict=True):
                if pid >= 0 and pid not in job.exclude:
                    best[int(pid)] = max(best.get(int(pid), -math.inf), float(sc) + bonus)
        ranked = sorted(best.items(), key=lambda kv: -kv[1])[:n]
        job.explain_as = "profile"
        return self.finish(job, np.asarray([s for _, s in ranked], dtype=np.float32),
                           np.asarray([p for p, _ in ranked], dtype=np.int64), found.allowed,
                           (time.perf_counter() - t_s) * 1000)

    def finish(self, job: SearchJob, scores: np.ndarray, ids: np.ndarray, allowed: int | None,
               search_ms: float, *, filter_ms: float = 0.0) -> SearchResult:
        """Modifiers, products and explanations for one query's candidates."""
        q, qvec = job.query, job.qvec
        n = self.job_candidates(job)
        t_r = time.perf_counter()
        keep = ids[:n] >= 0
        cand_ids = [int(i) for i in ids[:n][keep]]
        job.saturated = len(cand_ids) >= n
        cand_scores = [float(s) for s in scores[:n][keep]]
        bonus = self.category_bonus(job, cand_ids)
        if bonus is not None:
            cand_scores = [s + float(b) for s, b in zip(cand_scores, bonus, strict=True)]
        category = dict(zip(cand_ids, bonus.tolist(), strict=True)) if bonus is not None else {}
        products: dict[int, Product] = {}
        if not q.modifiers.is_empty() or q.collapse is not None:  # these read every candidate's product
            products = self.backend.get_many(cand_ids)
        ranked = []
        for pid, base in zip(cand_ids, cand_scores, strict=True):
            final, applied = apply_modifiers(base, products.get(pid), q.modifiers)
            ranked.append((final, base, pid, applied))
        ranked.sort(key=lambda r: (-r[0], r[2]))
        if q.collapse is not None:
            ranked = best_per_value(ranked, products, q.collapse)
        ranked = ranked[: q.k]
        if q.include_products and not products:  # only the k answers (a photo query re-ranks 100 candidates)
            products = self.backend.get_many([r[2] for r in ranked])
        contributions: dict[int, dict[str, float]] = {}
        if q.explain and ranked:
            got_ids, vecs = self.backend.vectors([r[2] for r in ranked])
            for pid, vec in zip(got_ids.tolist(), vecs, strict=True):
                if job.explain_as is not None:
                    contributions[pid] = {job.explain_as: next(b for _, b, p, _ in ranked if p == pid)}
                elif job.profile_vec is None:
                    contributions[pid] = self.layout.contributions(qvec, vec)
                else:  # the query's own blocks, and what the shopper's profile added
                    contributions[pid] = {**self.layout.contributions(qvec - job.profile_vec, vec),
                                          "profile": float(job.profile_vec @ vec)}
                if pid in category:  # the photo query's category agreement (category_prior)
                    contributions[pid]["category"] = category[pid]
        terms_of: dict[int, tuple[str, ...]] = {}
        if q.explain and ranked and job.boosts:
            for pid in contributions:  # each recognised value the product has ("colour=Red": its boost)
                contributions[pid].update(job.boosts.get(pid, {}))
        if q.explain and ranked and job.lexical is not None:
            for pid in contributions:  # the vector blocks above, and the BM25 part
                contributions[pid]["lexical"] = job.lexical.get(pid, 0.0)
            shown = products or self.backend.get_many([r[2] for r in ranked])
            terms_of = {pid: tuple(matched(job.lexical_terms, p)) for pid, p in shown.items()}
        hits = [Hit(id=pid, score=final, product=products.get(pid) if q.include_products else None,
                    explanation=Explanation(contributions=contributions.get(pid, {}), base_score=base,
                                            modifiers=applied, matched_terms=terms_of.get(pid, ()))
                    if q.explain else None)
                for final, base, pid, applied in ranked]
        rerank_ms = (time.perf_counter() - t_r) * 1000
        return SearchResult(hits=hits, allowed=allowed,
                            timings=Timings(queue_ms=job.queue_ms, encode_ms=job.encode_ms, filter_ms=filter_ms,
                                            search_ms=search_ms,
                                            rerank_ms=rerank_ms, total_ms=(time.perf_counter() - job.t0) * 1000))
