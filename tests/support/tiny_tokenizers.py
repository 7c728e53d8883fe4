"""A small Unigram tokenizer.json in the e5 shape (Metaspace, template, special tokens), built with HF."""

from __future__ import annotations

from pathlib import Path

from tokenizers import AddedToken, Regex, Tokenizer, models, normalizers, pre_tokenizers, processors

PIECES = [("<s>", 0.0), ("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0), ("▁red", -3.0),
          ("▁dress", -4.0), ("re", -5.0), ("d", -3.0), ("r", -3.0), ("e", -3.0), ("s", -3.0), ("▁d", -6.0),
          ("<mask>", 0.0)]
TEXTS = ["red dress", "red  <mask>dress", "<s>red</s>", "ＲＥＤ dress", "xyz red", "red " * 20, "▁red", "\u200b"]


def unigram_file(tmp_path: Path, lstrip_mask: bool = False, scores: dict[str, float] | None = None) -> Path:
    """tokenizer.json in tmp_path; `scores` overrides some pieces' scores."""
    tok = Tokenizer(models.Unigram([(p, (scores or {}).get(p, s)) for p, s in PIECES], 3, False))
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Replace(Regex(" {2,}"), " ")])
    tok.pre_tokenizer = pre_tokenizers.Metaspace("▁", prepend_scheme="always", split=True)
    tok.post_processor = processors.TemplateProcessing(single="<s> $A </s>", special_tokens=[("<s>", 0), ("</s>", 2)])
    tok.add_special_tokens(["<s>", "<pad>", "</s>", "<unk>", AddedToken("<mask>", lstrip=lstrip_mask)])
    path = tmp_path / "tokenizer.json"
    tok.save(str(path))
    return path
