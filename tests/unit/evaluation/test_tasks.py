"""The quality harness scores what it says: shared titles count as one known item, category P@10 is over
articleTypes that can fill a top 10, and the Chinese-vs-English gap is computed from the same queries."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from kuamo.evaluation.tasks import evaluate_embeddings, load_zh_queries
from kuamo.export.samples import FashionItem


class WordEncoder:
    """Text -> one-hot-ish vector of its articleType word, so the expected rankings are known."""

    def __init__(self, vocab: list[str]) -> None:
        self.vocab = vocab

    def encode(self, texts: list[str], kind: str = "query") -> np.ndarray:
        out = np.zeros((len(texts), len(self.vocab) + 1), np.float32)
        for i, t in enumerate(texts):
            hit = [j for j, w in enumerate(self.vocab) if w.lower() in t.lower()]
            out[i, hit[0] if hit else -1] = 1.0
        return out


def test_shared_titles_and_category_sizes() -> None:
    # 12 Tshirts (two share a title), 6 Jeans: Jeans is too small for the P@10 category score
    items = [FashionItem(i, f"Tshirts {i}" if i not in (1, 2) else "Tshirts twin", Path("x"),
                         {"articleType": "Tshirts", "baseColour": "Red"}) for i in range(12)]
    items += [FashionItem(100 + i, f"Jeans {i}", Path("x"), {"articleType": "Jeans", "baseColour": "Blue"})
              for i in range(6)]
    enc = WordEncoder(["Tshirts", "Jeans"])
    n = len(items)
    # each photo: its kind plus a private direction; each title points at its own photo's private direction
    img = np.zeros((n, 3 + n), np.float32)
    txt = np.zeros((n, 3 + n), np.float32)
    for i, it in enumerate(items):
        img[i, 0 if it.attrs["articleType"] == "Tshirts" else 1] = 1.0
        img[i, 3 + i] = 0.1
        txt[i, 3 + i] = 1.0
    txt[2] = txt[1]  # the two "Tshirts twin" queries are the same text, so the same vector
    m = evaluate_embeddings(items, img, txt, _Padded(enc, img.shape[1]))
    assert m["known_item_strict"]["R@1"] < 100.0  # one twin query cannot rank its own photo first
    assert m["known_item"]["R@1"] == 100.0  # either twin's photo answers the shared title
    assert m["category"]["queries"] == 1 and m["category_all"]["queries"] == 2
    assert m["category"]["P@10"] == 100.0
    assert m["category_all"]["P@10"] == (100.0 + 60.0) / 2  # Jeans: 6 relevant photos fill 6 of 10
    assert m["zh_vs_en_P@5_gap"] == m["queries_en"]["P@5"] - m["queries_zh"]["P@5"]


class _Padded:
    """The word encoder's vectors padded to the image vectors' width."""

    def __init__(self, enc: WordEncoder, width: int) -> None:
        self.enc, self.width = enc, width

    def encode(self, texts: list[str], kind: str = "query") -> np.ndarray:
        v = self.enc.encode(texts, kind)
        return np.pad(v, ((0, 0), (0, self.width - v.shape[1])))


def test_chinese_query_file_has_enough_queries() -> None:
    qs = load_zh_queries()
    assert len(qs) >= 40 and all(q["zh"] and q["en"] and q["articleType"] for q in qs)


def test_no_relevant_items_gives_nan_not_a_warning() -> None:
    import warnings

    from kuamo.evaluation.metrics import retrieval_metrics

    scores = np.random.default_rng(0).random((3, 12))
    full = retrieval_metrics(scores, np.eye(3, 12, dtype=bool))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        empty = retrieval_metrics(scores, np.zeros((3, 12), dtype=bool))
        none = retrieval_metrics(scores[:0], np.zeros((0, 12), dtype=bool))
    assert set(empty) == set(full) == set(none)
    assert empty["queries"] == none["queries"] == 0 and np.isnan(empty["R@10"]) and np.isnan(none["P@10"])


def test_photo_query_scores_rerank_only_the_top_candidates() -> None:
    from kuamo.engine.category_prior import CategoryPrior
    from kuamo.evaluation.tasks import photo_query_scores

    # two kinds along axes 0 / 1; photo 1 is visually closest to photo 0 but reads as the other kind
    v = np.array([[1, 0, 0], [0.6, 0.8, 0], [0.55, 0, 0.835], [0, 1, 0]], np.float32)
    plain = photo_query_scores(v, None)
    assert np.isneginf(np.diag(plain)).all() and plain[0].argmax() == 1
    prior = CategoryPrior(["a", "b"], np.eye(2, 3, dtype=np.float32), temperature=0.03)
    served = photo_query_scores(v, prior, candidates=2)
    assert served[0].argmax() == 2  # the same-kind photo overtakes with the agreement bonus
    assert np.isfinite(served).sum(axis=1).tolist() == [2, 2, 2, 2]  # only the top 2 are re-scored
