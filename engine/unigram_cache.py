"""A derived compact copy of a Unigram tokenizer.json: its settings, pieces and scores in one binary file.

json.load of XLM-R's 17 MB tokenizer.json (250,002 [piece, score] lists) takes ~1 s and peaks ~55 MiB above
what the vocabulary keeps; this copy loads in a fraction of that. It is named by the sha256 of the source
file's bytes and records that digest, so it can never be stale: a changed tokenizer.json has another name,
and a copy that fails any check is ignored and rewritten.

Location: $KUAMO_TOKENIZER_CACHE, else $XDG_CACHE_HOME/kuamo/tokenizers (~/.cache/...); "off" disables it.
"""

from __future__ import annotations

import array
import hashlib
import json
import logging
import os
import struct
import sys
import tempfile
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

MAGIC = b"KUAMO-UNIGRAM-1\n"
_SIZES = struct.Struct("<QQQ")  # header bytes, pieces bytes, number of pieces
_SEP = "\n"


def cache_dir() -> Path | None:
    env = os.environ.get("KUAMO_TOKENIZER_CACHE")
    if env == "off":
        return None
    if env:
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "kuamo" / "tokenizers"


def source_digest(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()


def _path(digest: str) -> Path | None:
    root = cache_dir()
    return None if root is None else root / f"{digest}.unigram"


def load(digest: str) -> tuple[dict[str, Any], list[str], list[float]] | None:
    """(config without the vocabulary, pieces, scores) of the source with this digest, or None."""
    path = _path(digest)
    if path is None or not path.is_file():
        return None
    try:
        data = path.read_bytes()
        if not data.startswith(MAGIC):
            raise ValueError("bad magic")
        at = len(MAGIC)
        header_len, pieces_len, n = _SIZES.unpack_from(data, at)
        at += _SIZES.size
        if len(data) != at + header_len + pieces_len + 8 * n:
            raise ValueError("truncated or padded")
        header = json.loads(data[at:at + header_len])
        at += header_len
        pieces = data[at:at + pieces_len].decode("utf-8").split(_SEP)
        at += pieces_len
        scores = array.array("d")
        scores.frombytes(data[at:])
        if sys.byteorder != "little":
            scores.byteswap()
        if header.get("source_sha256") != digest or len(pieces) != n or len(scores) != n:
            raise ValueError("does not describe this source")
        return header["config"], pieces, scores.tolist()
    except (OSError, ValueError, KeyError, struct.error) as exc:
        log.warning("ignoring tokenizer cache %s (%s); rebuilding it", path, exc)
        return None


def save(digest: str, config: dict[str, Any], pieces: list[str], scores: list[float]) -> None:
    """Write the copy atomically; a cache that cannot be written only costs the next start its speed."""
    path = _path(digest)
    if path is None or any(_SEP in p for p in pieces):
        return
    header = json.dumps({"source_sha256": digest, "config": config}).encode("utf-8")
    blob = _SEP.join(pieces).encode("utf-8")
    values = array.array("d", scores)
    if sys.byteorder != "little":
        values.byteswap()
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, prefix=".tmp-", delete=False) as f:
            tmp = f.name
            f.write(MAGIC + _SIZES.pack(len(header), len(blob), len(pieces)) + header + blob + values.tobytes())
        os.replace(tmp, path)  # readers see the old state or the whole new file, never a partial one
    except OSError as exc:
        log.info("tokenizer cache not written (%s): the next start parses tokenizer.json again", exc)
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
