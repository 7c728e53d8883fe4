"""Which tokenizer the text tower gets, and the compact pipeline's special tokens and truncation, on small
tokenizer.json files built with HF tokenizers (the real e5 file: test_compact_tokenizer_parity.py)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from tiny_tokenizers import TEXTS, unigram_file
from tokenizers import Tokenizer, models, pre_tokenizers

from kuamo.engine.text_tokenizer import CompactUnigramTokenizer, HFTextTokenizer, load_text_tokenizer


@pytest.fixture(autouse=True)
def _cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUAMO_TOKENIZER_CACHE", str(tmp_path / "cache"))

@pytest.mark.parametrize("max_length", [512, 6, 3])
def test_compact_matches_hf_with_specials_and_truncation(tmp_path: Path, max_length: int) -> None:
    path = unigram_file(tmp_path)
    compact, hf = CompactUnigramTokenizer.from_file(path, max_length), HFTextTokenizer(path, max_length)
    ours = compact.encode_batch_ids(TEXTS)
    assert ours == hf.encode_batch_ids(TEXTS)
    assert all(ids[0] == 0 and ids[-1] == 2 and len(ids) <= max_length for ids in ours)
    assert max_length < 512 or 13 in ours[1]  # <mask> in the text is its added token, not pieces


def test_unigram_file_gets_the_compact_tokenizer(tmp_path: Path) -> None:
    assert isinstance(load_text_tokenizer(unigram_file(tmp_path), 512), CompactUnigramTokenizer)


def test_other_files_fall_back_to_hf_and_say_so(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    wordpiece = Tokenizer(models.WordPiece({"[UNK]": 0, "red": 1, "dress": 2}, unk_token="[UNK]"))
    wordpiece.pre_tokenizer = pre_tokenizers.Whitespace()
    wordpiece.save(str(tmp_path / "wp.json"))
    with caplog.at_level(logging.INFO, logger="kuamo.engine.text_tokenizer"):
        tok = load_text_tokenizer(tmp_path / "wp.json", 512)
    assert isinstance(tok, HFTextTokenizer) and tok.encode_ids("red dress") == [1, 2]
    assert "WordPiece" in caplog.text
    # an added token that strips spaces is matched differently: not replicated, so HF's serves it
    assert isinstance(load_text_tokenizer(unigram_file(tmp_path, lstrip_mask=True), 512), HFTextTokenizer)


def test_a_template_without_room_for_text_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="max_length"):
        CompactUnigramTokenizer.from_file(unigram_file(tmp_path), 2)
