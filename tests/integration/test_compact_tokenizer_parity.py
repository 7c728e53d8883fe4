"""The compact tokenizer gives HF's ids, to the last token, on every real text we have and on 5,000 seeded
adversarial strings; and the comparison is sharp enough to catch a wrong unknown-character penalty."""

from __future__ import annotations

from pathlib import Path

import pytest
from tokenizer_texts import E5_PREFIXES, adversarial_texts, export_texts, fashion_titles, zh_query_texts

from kuamo.engine.text_tokenizer import CompactUnigramTokenizer, HFTextTokenizer, TextTokenizer

pytestmark = pytest.mark.models


@pytest.fixture(scope="module")
def tokenizer_path(model_dir: Path) -> Path:
    return model_dir / "tokenizer.json"


@pytest.fixture(scope="module")
def hf(tokenizer_path: Path) -> HFTextTokenizer:
    return HFTextTokenizer(tokenizer_path, 512)


@pytest.fixture(scope="module")
def loads(tokenizer_path: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, CompactUnigramTokenizer]:
    """Two loads into an empty cache: from tokenizer.json (writing the derived copy), then from the copy."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("KUAMO_TOKENIZER_CACHE", str(tmp_path_factory.mktemp("tokenizer_cache")))
        return {source: CompactUnigramTokenizer.from_file(tokenizer_path, 512) for source in ("json", "copy")}


@pytest.fixture(scope="module")
def compact(loads: dict[str, CompactUnigramTokenizer]) -> CompactUnigramTokenizer:
    return loads["copy"]  # what a server start after the first one serves


def test_the_derived_copy_holds_the_json_vocabulary(loads, tokenizer_path: Path) -> None:
    a, b = loads["json"].vocab, loads["copy"].vocab
    assert len(a) == len(b) == 250_002
    assert a.ids == b.ids and a.scores == b.scores and a.unk_score == b.unk_score
    assert (a.unk_id, loads["json"].head, loads["json"].tail) == (b.unk_id, loads["copy"].head, loads["copy"].tail)


@pytest.fixture(scope="module")
def adversarial() -> list[str]:
    return adversarial_texts()


def mismatches(ours: TextTokenizer, hf: HFTextTokenizer, texts: list[str], prefixes=E5_PREFIXES) -> list[str]:
    full = [p + t for t in texts for p in prefixes]
    return [t for t, a, b in zip(full, ours.encode_batch_ids(full), hf.encode_batch_ids(full), strict=True)
            if a != b]


def test_every_fashion_title_with_both_prefixes(compact, hf, fashion_dir: Path) -> None:
    titles = fashion_titles(fashion_dir)
    assert len(titles) > 20_000
    bad = mismatches(compact, hf, titles)
    assert not bad, (len(bad), bad[:5])


@pytest.mark.parametrize("name", ["parity_texts", "gate_texts_zh"])
def test_export_text_sets_with_both_prefixes(compact, hf, name: str) -> None:
    texts = export_texts()[name]
    assert len(texts) >= 50
    bad = mismatches(compact, hf, texts)
    assert not bad, (len(bad), bad[:5])


def test_zh_evaluation_queries(compact, hf) -> None:
    bad = mismatches(compact, hf, zh_query_texts(), prefixes=("query: ", ""))
    assert not bad, bad[:5]


def test_adversarial_strings_bare_and_with_both_prefixes(compact, hf, adversarial) -> None:
    assert any(len(hf.encode_ids(t)) == 512 for t in adversarial)  # the set does reach truncation
    assert any(3 in hf.encode_ids(t) for t in adversarial)  # ... and unknown characters
    bad = mismatches(compact, hf, adversarial, prefixes=("", *E5_PREFIXES))
    assert not bad, (len(bad), [repr(t[:40]) for t in bad[:5]])


@pytest.mark.parametrize("sabotage", ["tie_break", "shorter_pieces"])
def test_the_comparison_catches_a_broken_segmentation(tokenizer_path, hf, adversarial, sabotage) -> None:
    """Fail-first: equal-score paths resolved differently, or the longest pieces never tried, show up as
    mismatches. (A wrong unknown penalty cannot change ids with this vocabulary, where every character of
    every piece is a piece itself; tests/unit/engine/test_unigram.py covers it on a vocabulary where it can.)"""
    broken = CompactUnigramTokenizer.from_file(tokenizer_path, 512)
    vocab = broken.vocab
    if sabotage == "tie_break":  # a nudge far below any real score gap: only exact ties change
        vocab.scores = [s + 1e-9 * i for i, s in enumerate(vocab.scores)]
    else:
        vocab.longest_from = {c: max(1, n - 1) for c, n in vocab.longest_from.items()}
    vocab.encode_word = vocab.segment  # no cache
    assert mismatches(broken, hf, adversarial[:2_000], prefixes=("",))
