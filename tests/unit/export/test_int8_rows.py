"""One int8 scheme for head weights, backbone deltas and title targets: bounded error, zero rows survive."""

from __future__ import annotations

import numpy as np

from kuamo.export.int8_rows import dequantise_rows, quantise_rows


def test_round_trip_error_is_half_a_step_per_row() -> None:
    x = np.random.default_rng(0).standard_normal((6, 4, 3, 3)).astype(np.float32)  # a conv weight
    x[2] *= 100  # rows have their own scale
    q, scale = quantise_rows(x)
    assert q.dtype == np.int8 and q.shape == x.shape and scale.shape == (6,)
    err = np.abs(dequantise_rows(q, scale) - x).reshape(6, -1).max(1)
    assert np.all(err <= np.abs(x).reshape(6, -1).max(1) / 254 + 1e-6)


def test_all_zero_row_stays_zero() -> None:
    x = np.zeros((3, 5), np.float32)
    x[1] = [1, -2, 3, 0, 0]
    q, scale = quantise_rows(x)
    assert np.isfinite(scale).all() and scale[0] == 1.0
    back = dequantise_rows(q, scale)
    assert np.array_equal(back[0], np.zeros(5)) and np.array_equal(back[2], np.zeros(5))
    assert np.allclose(back[1], x[1], atol=3 / 254)
