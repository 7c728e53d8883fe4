"""The text tower's tokenizer: a compact Unigram pipeline where tokenizer.json allows it, HF's otherwise.

`tokenizers.Tokenizer.from_file` on XLM-R's tokenizer.json (250,002 Unigram pieces) costs ~280 MiB RSS and
~2 s; `CompactUnigramTokenizer` gives the same ids (tests/integration/test_compact_tokenizer_parity.py)
from HF's own normalizer and pre-tokenizer objects plus `UnigramVocab` for the model. Any tokenizer.json
outside the shape it replicates (e.g. WordPiece) is served by HF's `Tokenizer`, with a log line.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from tokenizers import Tokenizer

from kuamo.engine import unigram_cache
from kuamo.engine.unigram import UnigramVocab

log = logging.getLogger(__name__)

# an empty Unigram lets HF build the normalizer and pre-tokenizer exactly as it would from the full file
_EMPTY_MODEL = {"type": "Unigram", "unk_id": 0, "vocab": [["<unk>", 0.0]]}


class TextTokenizer(Protocol):
    def encode_ids(self, text: str) -> list[int]: ...

    def encode_batch_ids(self, texts: Sequence[str]) -> list[list[int]]: ...


class Unsupported(ValueError):
    """tokenizer.json is outside what CompactUnigramTokenizer replicates."""


class HFTextTokenizer:
    """HF `tokenizers`, truncating at max_length, no padding."""

    def __init__(self, path: Path, max_length: int) -> None:
        self.hf = Tokenizer.from_file(str(path))
        self.hf.enable_truncation(max_length)
        self.hf.no_padding()

    def encode_ids(self, text: str) -> list[int]:
        return self.hf.encode(text, add_special_tokens=True).ids

    def encode_batch_ids(self, texts: Sequence[str]) -> list[list[int]]:
        return [enc.ids for enc in self.hf.encode_batch(list(texts), add_special_tokens=True)]


class CompactUnigramTokenizer:
    """Added tokens -> normalizer -> pre-tokenizer (HF's objects) -> UnigramVocab -> truncation -> template."""

    def __init__(self, config: dict[str, Any], pieces: Sequence[str], scores: Sequence[float], max_length: int) -> None:
        """`config`: tokenizer.json's settings (its model's vocabulary is not read: `pieces`, `scores`)."""
        model = _check_supported(config)
        head, tail = _template(config.get("post_processor"))
        if max_length <= len(head) + len(tail):
            raise Unsupported(f"max_length {max_length} leaves no room beside the template's special tokens")
        added = {t["content"]: int(t["id"]) for t in config.get("added_tokens") or []}
        self.vocab = UnigramVocab(pieces, scores, unk_id=int(model["unk_id"]))
        pipeline = Tokenizer.from_str(json.dumps({**config, "model": _EMPTY_MODEL, "added_tokens": [],
                                                  "post_processor": None, "truncation": None,
                                                  "padding": None}))
        self.normalizer = pipeline.normalizer
        self.pre_tokenizer = pipeline.pre_tokenizer
        self.added = added
        # longest first, so the alternation matches leftmost-longest as HF's Aho-Corasick does
        alternatives = "|".join(re.escape(t) for t in sorted(added, key=len, reverse=True))
        self._added_re = re.compile(f"({alternatives})") if added else None
        self.head, self.tail = head, tail
        self.max_length = max_length
        self._budget = max_length - len(head) - len(tail)

    @classmethod
    def from_file(cls, path: Path, max_length: int) -> CompactUnigramTokenizer:
        """From tokenizer.json, through its derived compact copy when one exists (engine/unigram_cache.py)."""
        raw = Path(path).read_bytes()
        digest = unigram_cache.source_digest(raw)
        cached = unigram_cache.load(digest)
        if cached is None:
            config = json.loads(raw)
            del raw
            model = _check_supported(config)
            pieces = [p for p, _ in model["vocab"]]
            scores = [float(s) for _, s in model["vocab"]]
            config["model"] = {k: v for k, v in model.items() if k != "vocab"}
            unigram_cache.save(digest, config, pieces, scores)
            cached = config, pieces, scores
        return cls(*cached, max_length)

    def encode_ids(self, text: str) -> list[int]:
        ids: list[int] = []
        segments = self._added_re.split(text) if self._added_re else [text]
        # split() alternates text, added token, text, ...; odd positions are the added tokens
        for k, segment in enumerate(segments):
            if len(ids) >= self._budget:
                break  # truncation keeps the head: later words cannot change earlier ids
            if k % 2:
                ids.append(self.added[segment])
            elif segment:
                ids.extend(self._encode_segment(segment))
        del ids[self._budget:]
        return [*self.head, *ids, *self.tail]

    def encode_batch_ids(self, texts: Sequence[str]) -> list[list[int]]:
        return [self.encode_ids(t) for t in texts]

    def _encode_segment(self, segment: str) -> list[int]:
        normalized = self.normalizer.normalize_str(segment) if self.normalizer is not None else segment
        if not normalized:
            return []
        encode_word = self.vocab.encode_word
        out: list[int] = []
        for word, _ in self.pre_tokenizer.pre_tokenize_str(normalized):
            out.extend(encode_word(word))
        return out


def _check_supported(config: dict[str, Any]) -> dict[str, Any]:
    model = config.get("model") or {}
    if model.get("type") != "Unigram":
        raise Unsupported(f"model is {model.get('type')}, not Unigram")
    if model.get("byte_fallback"):
        raise Unsupported("Unigram byte_fallback is not replicated")
    if model.get("alpha") or model.get("nbest_size"):
        raise Unsupported("Unigram sampling (alpha / nbest_size) is not replicated")
    if model.get("unk_id") is None:
        raise Unsupported("Unigram without unk_id")
    pre = config.get("pre_tokenizer") or {}
    if pre.get("type") != "Metaspace":
        raise Unsupported(f"pre-tokenizer is {pre.get('type')}, not Metaspace")
    for tok in config.get("added_tokens") or []:
        if tok.get("normalized") or tok.get("lstrip") or tok.get("rstrip") or tok.get("single_word"):
            raise Unsupported(f"added token {tok.get('content')!r} needs normalized/lstrip/rstrip/single_word")
    return model


def _template(post: dict[str, Any] | None) -> tuple[list[int], list[int]]:
    """Ids the single-sequence template puts before and after the text."""
    if post is None:
        return [], []
    if post.get("type") != "TemplateProcessing":
        raise Unsupported(f"post-processor is {post.get('type')}, not TemplateProcessing")
    head: list[int] = []
    tail: list[int] = []
    seen_sequence = False
    for piece in post["single"]:
        if "Sequence" in piece:
            if seen_sequence or piece["Sequence"]["id"] != "A":
                raise Unsupported("template is not [specials] A [specials]")
            seen_sequence = True
        else:
            ids = post["special_tokens"][piece["SpecialToken"]["id"]]["ids"]
            (tail if seen_sequence else head).extend(int(i) for i in ids)
    if not seen_sequence:
        raise Unsupported("template has no sequence")
    return head, tail


def load_text_tokenizer(path: Path, max_length: int) -> TextTokenizer:
    """The compact tokenizer when tokenizer.json fits its shape, else HF's (said in the log)."""
    try:
        return CompactUnigramTokenizer.from_file(path, max_length)
    except Unsupported as exc:
        log.info("tokenizer %s: using HF tokenizers (%s)", path.name, exc)
        return HFTextTokenizer(path, max_length)
