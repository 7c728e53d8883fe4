"""`kuamo export`: build every tower into one model directory and write its manifest last.

The manifest is written only after every file is complete, through a temp file and rename, so a
half-finished export never looks like a valid model directory.
"""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path

from kuamo.engine.artifacts import MANIFEST_FORMAT, MANIFEST_NAME, sha256_file

Progress = Callable[[str], None]


def _referenced_files(towers: dict) -> list[str]:
    names: set[str] = set()
    for spec in towers.values():
        names.update(spec.get("files", {}).values())
        for key in ("tokenizer",):
            if spec.get(key):
                names.add(spec[key])
        for key in ("zero_shot", "centroids"):  # files beside the image graph (engine/zero_shot_blend.py)
            if spec.get(key):
                names.add(spec[key]["file"])
    return sorted(names)


def write_manifest(out_dir: Path, towers: dict, *, extra: dict | None = None) -> Path:
    """Checksum every file the towers reference and write manifest.json atomically."""
    files = {}
    for name in _referenced_files(towers):
        path = out_dir / name
        files[name] = {"sha256": sha256_file(path), "bytes": path.stat().st_size}
    manifest = {
        "format": MANIFEST_FORMAT,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "exported_on": {"machine": platform.machine(), "python": platform.python_version()},
        "towers": towers,
        "files": files,
        **(extra or {}),
    }
    tmp = out_dir / (MANIFEST_NAME + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(manifest, f, indent=2, ensure_ascii=False)
        f.flush()
        os.fsync(f.fileno())
    final = out_dir / MANIFEST_NAME
    os.replace(tmp, final)
    return final


def _alignment_head(head_path: Path | None) -> tuple[object | None, dict | None, dict | None]:
    """The head to fuse into the image tower (an explicit file, else the one shipped with kuamo), its card,
    and the fine-tuned backbone delta the file carries (None for a head-only file)."""
    from kuamo.export.align_head import AlignHead, default_head_path, generic_head_path
    from kuamo.export.tuned_backbone import backbone_arrays

    if head_path is not None and str(head_path) == "generic":
        head_path = generic_head_path()
    path = Path(head_path) if head_path else default_head_path()
    if not path.is_file():
        if head_path:
            raise FileNotFoundError(f"alignment head {path} not found; train one with `kuamo align`")
        return None, None, None
    card_path = path.with_name("align.json")
    card = json.loads(card_path.read_text(encoding="utf-8")) if card_path.is_file() else {}
    return (AlignHead.load(path), {"head_file": path.name, "head_path": str(path.resolve()), **card},
            backbone_arrays(path) or None)


def run_export(out_dir: Path | str, *, text: str = "e5", image: bool = True, clip: Path | None = None,
               head: Path | None = None, progress: Progress = print, portable_int8: bool = False) -> Path:
    """Export the default towers (or a local CLIP/SigLIP checkpoint) into `out_dir`; `portable_int8` serves the
    image tower's 7-bit scheme even on a VNNI CPU, so the export serves INT8 on CPUs without VNNI too."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stale = out_dir / MANIFEST_NAME
    if stale.exists():
        stale.unlink()  # the directory is invalid until the new manifest is written
    towers: dict = {}
    if clip is not None:
        from kuamo.export.clip_tower import export_clip_towers

        towers.update(export_clip_towers(Path(clip), out_dir, progress=progress))
    else:
        from kuamo.export.text_tower import export_text_tower

        towers["text"] = export_text_tower(out_dir, variant=text, progress=progress)
        if image:
            from kuamo.export.image_tower import export_image_tower

            # the default text space is e5's: a head only makes sense with the e5 text tower
            align, card, delta = _alignment_head(head) if text == "e5" else (None, None, None)
            towers["image"] = export_image_tower(out_dir, progress=progress, head=align, head_card=card,
                                                 backbone_delta=delta, portable_int8=portable_int8)
    progress("writing manifest.json (sha256 of every file)")
    return write_manifest(out_dir, towers)
