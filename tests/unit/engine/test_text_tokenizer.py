"""Which tokenizer the text tower gets, and the compact pipeline's special tokens and truncation, on small
tokenizer.json files built with HF tokenizers (the real e5 file: test_compact_tokenizer_parity.py)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from tokenizers import AddedToken, Tokenizer, models, normalizers, pre_tokenizers, processors

from kuamo.engine.text_tokenizer import CompactUnigramTokenizer, HFTextTokenizer, load_text_tokenizer

PIECES = [("<s>", 0.0), ("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0), ("▁red", -3.0),
          ("▁dress", -4.0), ("re", -5.0), ("d", -3.0), ("r", -3.0), ("e", -3.0), ("s", -3.0), ("▁d", -6.0),
          ("<mask>", 0.0)]
TEXTS = ["red dress", "red  <mask>dress", "<s>red</s>", "ＲＥＤ dress", "xyz red", "red " * 20, "▁red", "\u200b"]


def _unigram_file(tmp_path: Path, lstrip_mask: bool = False) -> Path:
    tok = Tokenizer(models.Unigram(PIECES, 3, False))
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Replace(" ", " ")])
    tok.pre_tokenizer = pre_tokenizers.Metaspace("▁", prepend_scheme="always", split=True)
    tok.post_processor = processors.TemplateProcessing(single="<s> $A </s>", special_tokens=[("<s>", 0), ("</s>", 2)])
    tok.add_special_tokens(["<s>", "<pad>", "</s>", "<unk>", AddedToken("<mask>", lstrip=lstrip_mask)])
    path = tmp_path / "tokenizer.json"
    tok.save(str(path))
    return path


@pytest.mark.parametrize("max_length", [512, 6, 3])
def test_compact_matches_hf_with_specials_and_truncation(tmp_path: Path, max_length: int) -> None:
    path = _unigram_file(tmp_path)
    compact, hf = CompactUnigramTokenizer.from_file(path, max_length), HFTextTokenizer(path, max_length)
    ours = compact.encode_batch_ids(TEXTS)
    assert ours == hf.encode_batch_ids(TEXTS)
    assert all(ids[0] == 0 and ids[-1] == 2 and len(ids) <= max_length for ids in ours)
    assert max_length < 512 or 13 in ours[1]  # <mask> in the text is its added token, not pieces


def test_unigram_file_gets_the_compact_tokenizer(tmp_path: Path) -> None:
    assert isinstance(load_text_tokenizer(_unigram_file(tmp_path), 512), CompactUnigramTokenizer)


def test_other_files_fall_back_to_hf_and_say_so(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    wordpiece = Tokenizer(models.WordPiece({"[UNK]": 0, "red": 1, "dress": 2}, unk_token="[UNK]"))
    wordpiece.pre_tokenizer = pre_tokenizers.Whitespace()
    wordpiece.save(str(tmp_path / "wp.json"))
    with caplog.at_level(logging.INFO, logger="kuamo.engine.text_tokenizer"):
        tok = load_text_tokenizer(tmp_path / "wp.json", 512)
    assert isinstance(tok, HFTextTokenizer) and tok.encode_ids("red dress") == [1, 2]
    assert "WordPiece" in caplog.text
    # an added token that strips spaces is matched differently: not replicated, so HF's serves it
    assert isinstance(load_text_tokenizer(_unigram_file(tmp_path, lstrip_mask=True), 512), HFTextTokenizer)


def test_a_template_without_room_for_text_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="max_length"):
        CompactUnigramTokenizer.from_file(_unigram_file(tmp_path), 2)
