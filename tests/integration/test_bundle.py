"""`kuamo bundle`: only the served files, a manifest that lists exactly them, an engine that starts from the
bundle alone and embeds as the full model directory does, and nothing half-written on failure."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from kuamo.cli import main
from kuamo.engine.artifacts import ModelArtifacts
from kuamo.engine.engine import Engine, EngineConfig
from kuamo.engine.errors import ArtifactError, InvalidInput
from kuamo.engine.types import Product, Query
from kuamo.engine.zero_shot_blend import SIDE_FILES
from kuamo.export.bundle import write_bundle

pytestmark = pytest.mark.models


@pytest.fixture(scope="module")
def bundle(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("bundle") / "served"
    assert main(["bundle", str(out), "--models", str(model_dir)]) == 0
    return out


def test_bundle_holds_only_what_serve_reads(bundle: Path, model_dir: Path) -> None:
    full = ModelArtifacts(model_dir).manifest
    served = {spec["files"][spec["serve"]] for spec in full["towers"].values()}
    manifest = json.loads((bundle / "manifest.json").read_text())
    beside = {s[key]["file"] for s in full["towers"].values() for key in SIDE_FILES if s.get(key)}
    # the shipped head carries all three (trained_on: the products it trained on, engine/trained_products.py)
    assert {"image_zero_shot.npy", "image_centroids.npy", "image_trained_on.npy"} <= beside
    expected = served | {"tokenizer.json"} | beside
    assert set(manifest["files"]) == expected
    assert {p.name for p in bundle.iterdir()} == expected | {"manifest.json"}
    assert sum(p.stat().st_size for p in bundle.iterdir()) <= 200 * 10**6  # issue 21: bundle <= 200 MB
    for name, entry in manifest["files"].items():
        assert entry == full["files"][name]  # same bytes, same sha256: catalogs indexed with the export open


def test_engine_starts_from_the_bundle_and_embeds_like_the_export(bundle: Path, model_dir: Path,
                                                                   tmp_path: Path, fashion_dir: Path) -> None:
    photo = next((fashion_dir / "images").glob("*.jpg")).read_bytes()

    async def vectors(models: Path, data: Path) -> tuple[np.ndarray, np.ndarray, list[int]]:
        eng = await Engine.open(EngineConfig(model_dir=models, data_dir=data))
        try:
            await eng.upsert([Product(id=7, title="red running shoes for men")], [photo])
            hits = (await eng.search(Query(text="running shoes", k=1))).hits
            return (await eng.embed_text(["红色连衣裙"]))[0], (await eng.embed_image([photo]))[0], [h.id for h in hits]
        finally:
            await eng.close()

    t_full, i_full, _ = asyncio.run(vectors(model_dir, tmp_path / "a"))
    t_b, i_b, hits = asyncio.run(vectors(bundle, tmp_path / "b"))
    assert hits == [7]
    assert float(t_full @ t_b) > 0.99999 and float(i_full @ i_b) > 0.99999


def test_bundle_refuses_a_used_directory_and_a_corrupt_source(model_dir: Path, tmp_path: Path) -> None:
    used = tmp_path / "used"
    used.mkdir()
    (used / "keep.txt").write_text("mine")
    with pytest.raises(InvalidInput, match="not an empty directory"):
        write_bundle(model_dir, used)
    assert (used / "keep.txt").read_text() == "mine"

    src = tmp_path / "src"
    shutil.copytree(model_dir, src, ignore=shutil.ignore_patterns("text.onnx", "image.onnx"))
    with open(src / "tokenizer.json", "r+b") as f:  # same size, other bytes
        f.seek(100)
        f.write(b"#")
    with pytest.raises(ArtifactError, match="sha256"):
        write_bundle(src, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out-")]  # no half-written directory


def test_cli_bundle_error_is_one_line(model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "x").write_text("a file")
    assert main(["bundle", str(tmp_path / "x"), "--models", str(model_dir)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not an empty directory" in err
