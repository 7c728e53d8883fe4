"""One portable file with everything backbone fine-tuning needs, so it can run where the catalog and the
text tower are not (a GPU box): the photos' JPEG bytes, the frozen e5 targets (titles, English and Chinese
attribute templates), the zero-shot class map, the split and the articleType of every product.

Title vectors are stored as int8 with one scale per vector (export/int8_rows.py; cosine to fp32 > 0.9999).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kuamo.export.int8_rows import dequantise_rows, quantise_rows
from kuamo.export.samples import FashionItem

Progress = Callable[[str], None]


def build_pack(items: list[FashionItem], model_dir: Path, out: Path, progress: Progress = print) -> Path:
    # imported here: the loader below runs on boxes without the text tower's runtime
    from kuamo.evaluation.split import is_held_out
    from kuamo.export.align import class_text_matrix, encode_unique, template, zh_template
    from kuamo.export.samples import packaged_lines

    progress(f"pack: {len(items)} products; encoding titles, templates and the class map")
    titles, title_idx = encode_unique([it.title for it in items], model_dir)
    tq, ts = quantise_rows(titles)
    attrs = [it.attrs for it in items]
    tmpl, tmpl_idx = encode_unique([template(a) for a in attrs], model_dir)
    vocab = json.loads("\n".join(packaged_lines("zh_vocab.json")))
    zh, zh_idx = encode_unique([zh_template(a, vocab) for a in attrs], model_dir)
    blobs = [it.image_path.read_bytes() for it in items]
    offsets = np.cumsum([0] + [len(b) for b in blobs]).astype(np.int64)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out, ids=np.asarray([it.id for it in items], dtype=np.int64),
             held_out=np.asarray([is_held_out(it.id) for it in items]),
             jpeg=np.frombuffer(b"".join(blobs), dtype=np.uint8), offsets=offsets,
             title_q=tq, title_scale=ts, title_idx=title_idx.astype(np.int32),
             tmpl=tmpl.astype(np.float16), tmpl_idx=tmpl_idx.astype(np.int32),
             zh=zh.astype(np.float16), zh_idx=zh_idx.astype(np.int32),
             class_text=class_text_matrix(model_dir).astype(np.float16),
             **{k: np.asarray([a.get(k, "") for a in attrs]) for k in
                ("articleType", "masterCategory", "subCategory", "baseColour")})
    progress(f"pack: wrote {out} ({out.stat().st_size / 1e6:.1f} MB)")
    return out


@dataclass
class Pack:
    data: dict[str, np.ndarray]

    @classmethod
    def load(cls, path: Path | str) -> Pack:
        with np.load(path) as d:
            return cls({k: d[k] for k in d.files})

    def __len__(self) -> int:
        return len(self.data["ids"])

    def jpeg(self, i: int) -> bytes:
        o = self.data["offsets"]
        return self.data["jpeg"][o[i]: o[i + 1]].tobytes()

    def titles(self) -> np.ndarray:
        """(n, 384) float32 title targets, one row per product."""
        d = self.data
        v = dequantise_rows(d["title_q"], d["title_scale"])
        v /= np.linalg.norm(v, axis=1, keepdims=True)
        return v[d["title_idx"]]
