"""`kuamo export`: build every tower into one model directory and write its manifest last.

The whole directory is written beside its destination (.<name>.tmp-<pid>) and renamed into place when every
file and the manifest are complete, so an export that fails or is killed never leaves a half-written model
directory (nor destroys the one it would replace). `base` takes the text tower from an existing model
directory instead of exporting it again: its files are hard links (copies across file systems), listed with
their checksums in the new manifest like any other file, so an adapted model set shares the unchanged text graph.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path

from kuamo.engine.artifacts import MANIFEST_FORMAT, MANIFEST_NAME, sha256_file
from kuamo.engine.zero_shot_blend import SIDE_FILES

Progress = Callable[[str], None]


def _referenced_files(towers: dict) -> list[str]:
    names: set[str] = set()
    for spec in towers.values():
        names.update(spec.get("files", {}).values())
        for key in ("tokenizer",):
            if spec.get(key):
                names.add(spec[key])
        for key in SIDE_FILES:  # files beside the image graph (engine/zero_shot_blend.py)
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
        print(f"kuamo export: no alignment head at {path} (the shipped heads come with a source checkout, not "
              "with the wheel): the image tower is exported unaligned, so photos find photos but text does not "
              "find photos; export from a clone or pass --head FILE", file=sys.stderr)
        return None, None, None
    card_path = path.with_name("align.json")
    card = json.loads(card_path.read_text(encoding="utf-8")) if card_path.is_file() else {}
    return (AlignHead.load(path), {"head_file": path.name, "head_path": str(path.resolve()), **card},
            backbone_arrays(path) or None)


def _share(src: Path, dst: Path) -> str:
    """dst becomes src's hard link (no second copy of a 470 MB graph), or a copy across file systems."""
    try:
        os.link(src, dst)
        return "hard link"
    except OSError:
        shutil.copy2(src, dst)
        return "copy"


def base_text_tower(base: Path, out_dir: Path, progress: Progress = print) -> dict:
    """The text tower of an existing model directory (its checksums verified first), shared into out_dir."""
    from kuamo.engine.artifacts import ModelArtifacts
    from kuamo.engine.errors import ArtifactError

    art = ModelArtifacts(base)
    spec = art.towers.get("text")
    if spec is None:
        raise ArtifactError(f"--base {base} has no text tower to share")
    names = sorted({*spec.get("files", {}).values(), *([spec["tokenizer"]] if spec.get("tokenizer") else [])})
    how = {_share(art.file(name), out_dir / name) for name in names}  # art.file verifies size and sha256
    progress(f"text: shared from {base} ({', '.join(sorted(how))}: {', '.join(names)})")
    return {**spec, "shared_from": str(Path(base).resolve())}


def gate_photos(head: Path | None, card: dict | None) -> list[Path] | None:
    """Photos to gate and calibrate the image tower on: the catalog the head was adapted to (named in its card)
    when it is there, else None (the fashion catalog); a one-line error when neither is on disk."""
    from kuamo.engine.catalog_map import CatalogConfig
    from kuamo.engine.errors import InvalidInput
    from kuamo.export.catalog_items import load_catalog
    from kuamo.export.samples import DEFAULT_FASHION_DIR

    data = (card or {}).get("data", {})
    file = data.get("file")
    if file and Path(file).is_file():
        cfg = CatalogConfig(**(data.get("catalog_config") or {}))
        return [it.image_path for it in load_catalog(Path(file), cfg).items]
    if (Path(DEFAULT_FASHION_DIR) / "products.csv").is_file():
        return None
    raise InvalidInput(f"no photos to gate the image tower on: the head's catalog ({file or 'not named in its card'}) "
                       f"and the fashion catalog ({DEFAULT_FASHION_DIR}, or KUAMO_FASHION_DIR) are not on disk",
                       field="head")


def _swap_in(tmp: Path, out_dir: Path) -> None:
    """Rename the finished tmp directory to out_dir; an earlier model directory there is replaced whole."""
    if not out_dir.exists():
        os.replace(tmp, out_dir)
        return
    old = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}")
    os.replace(out_dir, old)
    os.replace(tmp, out_dir)
    shutil.rmtree(old, ignore_errors=True)


def _check_destination(out_dir: Path) -> None:
    """Only an empty folder or an earlier model directory may be replaced, never an unrelated one."""
    from kuamo.engine.errors import InvalidInput

    if out_dir.exists() and (not out_dir.is_dir() or (any(out_dir.iterdir())
                                                      and not (out_dir / MANIFEST_NAME).is_file())):
        raise InvalidInput(f"{out_dir} exists and is not a model directory (no {MANIFEST_NAME}); "
                           "export into a new or empty directory", field="out")


def run_export(out_dir: Path | str, *, text: str = "e5", image: bool = True, clip: Path | None = None,
               head: Path | None = None, progress: Progress = print, portable_int8: bool = False,
               base: Path | None = None) -> Path:
    """Export the default towers (or a local CLIP/SigLIP checkpoint) into `out_dir`; `portable_int8` serves the
    image tower's 7-bit scheme even on a VNNI CPU, so the export serves INT8 on CPUs without VNNI too; `base`
    shares the text tower of an existing model directory instead of exporting it."""
    out_dir = Path(out_dir)
    _check_destination(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.with_name(f".{out_dir.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        _export_into(tmp, text=text, image=image, clip=clip, head=head, progress=progress,
                     portable_int8=portable_int8, base=base)
        _swap_in(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir / MANIFEST_NAME


def _export_into(out_dir: Path, *, text: str, image: bool, clip: Path | None, head: Path | None,
                 progress: Progress, portable_int8: bool, base: Path | None) -> None:
    towers: dict = {}
    if clip is not None:
        from kuamo.export.clip_tower import export_clip_towers

        towers.update(export_clip_towers(Path(clip), out_dir, progress=progress))
    else:
        if base is not None:
            towers["text"] = base_text_tower(Path(base), out_dir, progress)
            text = "e5" if str(towers["text"].get("source", {}).get("model", "")).endswith("e5-small") else "minilm"
        else:
            from kuamo.export.text_tower import export_text_tower

            towers["text"] = export_text_tower(out_dir, variant=text, progress=progress, portable_int8=portable_int8)
        if image:
            from kuamo.export.image_tower import export_image_tower

            # the default text space is e5's: a head only makes sense with the e5 text tower
            align, card, delta = _alignment_head(head) if text == "e5" else (None, None, None)
            photos = gate_photos(head, card)
            towers["image"] = export_image_tower(out_dir, progress=progress, head=align, head_card=card,
                                                 backbone_delta=delta, portable_int8=portable_int8, photos=photos)
    progress("writing manifest.json (sha256 of every file)")
    write_manifest(out_dir, towers)
