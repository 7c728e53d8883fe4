"""`kuamo bundle`: a deployable model directory with only what `kuamo serve` reads: each tower's served
precision, the tokenizer, the zero-shot map and centroids, and a manifest listing exactly those files with their sha256.
An export keeps the FP32 graphs beside the INT8 ones (the text FP32 graph alone is 449 MB of the 650 MB);
a CPU or edge box needs neither. torch-free: it only copies and re-lists files."""

from __future__ import annotations

import copy
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from kuamo.engine.artifacts import MANIFEST_NAME, ModelArtifacts
from kuamo.engine.errors import InvalidInput
from kuamo.engine.zero_shot_blend import SIDE_FILES


def served_manifest(manifest: dict[str, Any]) -> dict[str, Any]:
    """The manifest cut to the served files: each tower keeps only its `serve` precision."""
    out = copy.deepcopy(manifest)
    keep: set[str] = set()
    for spec in out.get("towers", {}).values():
        served = spec.get("serve", "fp32")
        files = spec.get("files", {})
        dropped = sorted(p for p in files if p != served)
        spec["files"] = {served: files[served]}
        keep.add(files[served])
        if dropped:
            spec["serve_reason"] = f"{spec.get('serve_reason', '')} (bundle: only {served} kept, "\
                                   f"{', '.join(dropped)} left out)".strip()
        if spec.get("tokenizer"):
            keep.add(spec["tokenizer"])
        keep.update(spec[key]["file"] for key in SIDE_FILES if spec.get(key, {}).get("file"))
    out["files"] = {name: entry for name, entry in manifest.get("files", {}).items() if name in keep}
    missing = keep - set(out["files"])
    if missing:
        raise InvalidInput(f"the manifest lists no checksum for {sorted(missing)}", field="models")
    out["bundle"] = {"served_only": True, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    return out


def write_bundle(model_dir: Path | str, out: Path | str) -> dict[str, Any]:
    """Copy the served files of `model_dir` (verified against its manifest first) into `out`, which must not
    exist yet or be empty; it is built beside and renamed into place, so it is whole or absent."""
    src, out = Path(model_dir), Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise InvalidInput(f"{out} exists and is not an empty directory; choose a new path", field="out")
    art = ModelArtifacts(src)
    manifest = served_manifest(art.manifest)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    umask = os.umask(0)
    os.umask(umask)
    tmp.chmod(0o777 & ~umask)  # mkdtemp makes it private; a deployed directory is read by the server's user
    try:
        for name in manifest["files"]:
            shutil.copyfile(art.file(name), tmp / name)  # art.file checks size and sha256 of the source
        (tmp / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2, ensure_ascii=False), encoding="utf-8")
        ModelArtifacts(tmp).tower("text")  # the copy reads back as a valid model directory
        if out.exists():
            out.rmdir()
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    sizes = {name: (out / name).stat().st_size for name in manifest["files"]}
    return {"out": str(out), "files": sizes, "bytes": sum(sizes.values()),
            "served": {t: s.get("serve", "fp32") for t, s in manifest.get("towers", {}).items()}}
