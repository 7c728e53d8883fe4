"""UnigramVocab against HF's own Unigram model on small vocabularies built to make the hard cases common:
score ties, unknown characters next to each other, and pieces that span a character with no piece of its
own (the only place the unknown penalty can change a segmentation)."""

from __future__ import annotations

import random

import pytest
from tokenizers import Tokenizer, models

from kuamo.engine.unigram import UnigramVocab

ALPHABET = "abcé漢z"  # z appears only inside longer pieces; x and y appear in no piece at all


def _random_vocab(rng: random.Random) -> list[tuple[str, float]]:
    pieces = {"<unk>": 0.0}
    for ch in ALPHABET.replace("z", ""):
        pieces[ch] = float(rng.choice([-2, -3, -4]))
    while len(pieces) < 40:
        word = "".join(rng.choice(ALPHABET) for _ in range(rng.randint(2, 5)))
        pieces.setdefault(word, float(rng.choice([-1, -3, -4, -5, -6, -8, -12, -16])))  # few values: ties
    return list(pieces.items())


def _ours(vocab: list[tuple[str, float]], unk_id: int, cache_size: int = 100) -> UnigramVocab:
    return UnigramVocab([p for p, _ in vocab], [s for _, s in vocab], unk_id=unk_id, cache_size=cache_size)


def _hf_ids(vocab: list[tuple[str, float]], texts: list[str]) -> list[list[int]]:
    tok = Tokenizer(models.Unigram(vocab, 0, False))
    return [enc.ids for enc in tok.encode_batch(texts)]


def _random_texts(rng: random.Random, n: int = 400) -> list[str]:
    return ["".join(rng.choice(ALPHABET + "xy") for _ in range(rng.randint(1, 14))) for _ in range(n)]


def test_hf_docstring_example() -> None:
    vocab = [("<unk>", 0.0), ("a", 0.0), ("b", 0.0), ("c", 0.0), ("d", 0.0), ("cd", 1.0), ("ab", 2.0),
             ("abc", 5.0), ("abcd", 10.0)]
    # HF: ["abcd", "a", "cd", "xx"], the two unknown x fused into one <unk>
    assert _ours(vocab, unk_id=0).segment("abcdacdxx") == (8, 1, 5, 0)


@pytest.mark.parametrize("seed", range(8))
def test_same_ids_as_hf_on_tie_heavy_vocabularies(seed: int) -> None:
    rng = random.Random(seed)
    vocab = _random_vocab(rng)
    texts = _random_texts(rng)
    ours = _ours(vocab, unk_id=0)
    assert [list(ours.encode_word(t)) for t in texts] == _hf_ids(vocab, texts)


def test_unknown_penalty_decides_against_a_piece_spanning_the_unknown_character() -> None:
    """z has no piece of its own: "zab" is za+b (-2) or <unk>+ab, which scores -11+7 = -4 with HF's penalty
    of 10 and would win (+1) with a penalty of 5. Fail-first for the parity tests: a wrong penalty shows."""
    vocab = [("<unk>", 0.0), ("a", -1.0), ("b", -1.0), ("za", -1.0), ("ab", 7.0)]
    ours = _ours(vocab, unk_id=0, cache_size=0)
    assert list(ours.segment("zab")) == _hf_ids(vocab, ["zab"])[0] == [3, 2]
    ours.unk_score += 5.0
    assert ours.segment("zab") == (0, 4)


def test_duplicate_piece_keeps_its_last_id_like_hf() -> None:
    vocab = [("<unk>", 0.0), ("a", -1.0), ("b", -1.0), ("ab", -5.0), ("ab", -0.5)]
    assert list(_ours(vocab, unk_id=0).segment("ab")) == _hf_ids(vocab, ["ab"])[0] == [4]


def test_unk_id_outside_the_vocabulary_is_refused() -> None:
    with pytest.raises(ValueError, match="unk_id"):
        UnigramVocab(["a"], [-1.0], unk_id=3)
