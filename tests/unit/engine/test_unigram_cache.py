"""The derived compact copy of tokenizer.json: used when present, never stale, ignored when damaged, optional."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
from tiny_tokenizers import TEXTS, unigram_file

from kuamo.engine import text_tokenizer
from kuamo.engine.text_tokenizer import CompactUnigramTokenizer, HFTextTokenizer


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("KUAMO_TOKENIZER_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _ids(path: Path) -> list[list[int]]:
    return CompactUnigramTokenizer.from_file(path, 512).encode_batch_ids(TEXTS)


def test_second_load_reads_the_copy_not_the_json(tmp_path, cache, monkeypatch) -> None:
    path = unigram_file(tmp_path)
    first = _ids(path)
    assert len(list(cache.glob("*.unigram"))) == 1

    def no_json(*_a, **_k):
        raise AssertionError("tokenizer.json parsed although its copy exists")

    monkeypatch.setattr(text_tokenizer, "json", SimpleNamespace(loads=no_json, dumps=json.dumps))
    assert _ids(path) == first == HFTextTokenizer(path, 512).encode_batch_ids(TEXTS)


def test_a_changed_tokenizer_json_is_not_served_from_the_old_copy(tmp_path, cache) -> None:
    path = unigram_file(tmp_path)
    before = _ids(path)
    unigram_file(tmp_path, scores={"▁red": -30.0})  # same path, other content: "red" no longer one piece
    after = _ids(path)
    assert after != before and after == HFTextTokenizer(path, 512).encode_batch_ids(TEXTS)
    assert len(list(cache.glob("*.unigram"))) == 2


@pytest.mark.parametrize("damage", ["truncate", "other_source", "garbage"])
def test_a_damaged_copy_is_ignored_and_rewritten(tmp_path, cache, damage) -> None:
    path = unigram_file(tmp_path)
    expected = _ids(path)
    (copy,) = cache.glob("*.unigram")
    data = copy.read_bytes()
    if damage == "truncate":
        copy.write_bytes(data[:-5])
    elif damage == "other_source":  # same length, digest of another file in the header
        digest = copy.stem
        copy.write_bytes(data.replace(digest.encode(), ("0" * len(digest)).encode()))
    else:
        copy.write_bytes(b"not a cache")
    assert _ids(path) == expected
    assert copy.read_bytes() == data  # rewritten whole


def test_no_cache_when_off_or_unwritable(tmp_path, monkeypatch) -> None:
    path = unigram_file(tmp_path)
    expected = HFTextTokenizer(path, 512).encode_batch_ids(TEXTS)
    monkeypatch.setenv("KUAMO_TOKENIZER_CACHE", "off")
    assert _ids(path) == expected
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    monkeypatch.setenv("KUAMO_TOKENIZER_CACHE", str(blocker / "cache"))  # cannot be created
    assert _ids(path) == expected
    assert json.loads(path.read_text())["model"]["type"] == "Unigram"  # the source is never touched
