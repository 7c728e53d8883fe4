"""Length-sorted text batches are cut so padding stays bounded, and every item lands in one chunk."""

from __future__ import annotations

import random

from kuamo.engine.encoders import padding_bounded_chunks


def test_chunks_cover_everything_once_and_bound_padding() -> None:
    rng = random.Random(0)
    for _ in range(200):
        lengths = sorted(rng.choice([rng.randint(3, 20), rng.randint(100, 512)]) for _ in range(rng.randint(0, 90)))
        chunks = padding_bounded_chunks(lengths, 32)
        covered = [i for c in chunks for i in range(c.start, c.stop)]
        assert covered == list(range(len(lengths)))
        for c in chunks:
            part = lengths[c]
            assert 1 <= len(part) <= 32
            if len(part) > 1:  # a chunk grows only while padding wastes <= 25% of its tokens
                assert len(part) * part[-1] <= 1.25 * sum(part) + 1e-9


def test_one_long_text_does_not_join_the_short_ones() -> None:
    chunks = padding_bounded_chunks([12] * 31 + [200], 32)
    assert chunks == [slice(0, 31), slice(31, 32)]
