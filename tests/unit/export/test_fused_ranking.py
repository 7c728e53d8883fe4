"""The fused-ranking term of adapting: text competitors are the right rows, the loss rewards the image block
for settling what the text cannot, and a head trained with it ranks fused title queries better."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from kuamo.evaluation.catalog_tasks import FUSED_WEIGHTS  # noqa: E402
from kuamo.export.align import AdaptRecipe, head_embeddings, train_head  # noqa: E402
from kuamo.export.align_head import AlignHead, HeadShape  # noqa: E402
from kuamo.export.contrastive import fused_ranking_loss, text_competitors  # noqa: E402


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def test_text_competitors_are_the_best_other_documents_in_order() -> None:
    rng = np.random.default_rng(0)
    q, doc = _unit(rng.standard_normal((50, 16))), _unit(rng.standard_normal((50, 16)))
    got = text_competitors(q, doc, 5)
    sim = q @ doc.T
    np.fill_diagonal(sim, -np.inf)
    assert np.array_equal(got, np.argsort(-sim, axis=1)[:, :5])
    assert not (got == np.arange(50)[:, None]).any()  # never the query's own product
    assert text_competitors(q[:3], doc[:3], 20).shape == (3, 2)  # k capped by the rows there are


def test_loss_rewards_the_image_that_separates_a_text_tie() -> None:
    """Two products with the same document text: only the image block can put the right one first."""
    query = torch.tensor([[1.0, 0.0, 0.0]])
    doc = torch.tensor([[[0.6, 0.8, 0.0], [0.6, 0.8, 0.0]]])  # a tie on text
    same = torch.tensor([[1.0, 0.0]])
    right = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]])  # own photo matches the query, the other not
    wrong = right.flip(1)
    args = (FUSED_WEIGHTS, 100.0)
    assert fused_ranking_loss(query, doc, right, same, *args) < 0.01
    assert fused_ranking_loss(query, doc, wrong, same, *args) > 10
    # two products with the query's title: both are right answers, and the loss asks for an even split (as
    # multi_positive_infonce does), so it is at its least, log 2, when neither photo is preferred
    both, even = torch.tensor([[1.0, 1.0]]), torch.tensor([[[1.0, 0.0, 0.0], [1.0, 0.0, 0.0]]])
    assert fused_ranking_loss(query, doc, even, both, *args) == pytest.approx(np.log(2), rel=1e-3)
    assert fused_ranking_loss(query, doc, right, both, *args) > 10


def _fused_r1(img: np.ndarray, q: np.ndarray, doc: np.ndarray) -> float:
    s = FUSED_WEIGHTS[0] * q @ doc.T + FUSED_WEIGHTS[1] * q @ img.T
    return float((s.argmax(1) == np.arange(len(q))).mean())


def test_adapting_with_the_fused_term_ranks_fused_title_queries_better() -> None:
    """Products come in pairs sharing a document text; the title query names which of the pair by a detail
    that only the photo shows. The fused term teaches the head that detail; without it (fused_rank 0) the same
    training ranks fewer queries first."""
    rng = np.random.default_rng(3)
    n, d = 240, 384
    base = _unit(rng.standard_normal((n // 2, d)))
    doc = np.repeat(base, 2, axis=0)
    detail = _unit(rng.standard_normal((n, d)))
    q = _unit(doc + 0.1 * detail)
    feats = np.maximum(np.concatenate([doc, detail], 1) @ rng.standard_normal((2 * d, 1280)), 0).astype(np.float32)
    logits = rng.standard_normal((n, 1000)).astype(np.float32)
    start = AlignHead(HeadShape(hidden=64), alpha=1.0)
    x = np.concatenate([feats, logits], 1)
    start.mean.copy_(torch.from_numpy(x.mean(0)))
    start.std.copy_(torch.from_numpy(x.std(0) + 1e-6))
    start.eval()
    teacher = head_embeddings(start, feats, logits)
    recipe = dataclasses.replace(AdaptRecipe(), epochs=10, batch=60, lr=3e-3, patience=None, distill=0.0,
                                 hard_negatives=5)
    r1 = {}
    for w in (0.0, 1.0):
        head = train_head(feats, logits, q, np.arange(n), dataclasses.replace(recipe, fused_rank=w),
                          np.zeros((1000, d), np.float32), progress=lambda _m: None, init=start, teacher=teacher,
                          fused_pairs=(q, doc))
        r1[w] = _fused_r1(head_embeddings(head, feats, logits), q, doc)
    assert r1[1.0] > r1[0.0] + 0.05, r1
