"""`kuamo export` writes a model directory atomically (beside it, renamed into place; a failure leaves
nothing and keeps the directory it would have replaced), `--base` shares the text tower by hard links that
ModelArtifacts verifies like any listed file, and the image tower's gate photos come from the catalog a head
was adapted to, so exporting needs no fashion catalog."""

from __future__ import annotations

import csv
import json
import os
import shutil
from pathlib import Path

import pytest

from kuamo.engine.artifacts import ModelArtifacts
from kuamo.engine.errors import InvalidInput
from kuamo.export import pipeline


def _leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith("."))


@pytest.mark.models
def test_base_shares_the_text_graph_by_hard_link(model_dir: Path, tmp_path: Path) -> None:
    base = tmp_path / "base"  # the repository's models may sit on another file system than tmp_path
    base.mkdir()
    for name in json.loads((model_dir / "manifest.json").read_text())["files"]:
        try:
            os.link(model_dir / name, base / name)
        except OSError:
            shutil.copy2(model_dir / name, base / name)
    shutil.copy2(model_dir / "manifest.json", base / "manifest.json")
    out = tmp_path / "adapted"
    pipeline.run_export(out, base=base, image=False, progress=lambda _m: None)
    art = ModelArtifacts(out)
    text = art.towers["text"]
    assert text["shared_from"] == str(base.resolve())
    for name in {*text["files"].values(), text["tokenizer"]}:
        assert (out / name).stat().st_ino == (base / name).stat().st_ino  # one copy on disk
        assert art.file(name) == out / name  # size and sha256 verified against the new manifest
    assert _leftovers(tmp_path) == []


def test_a_failed_export_leaves_nothing_and_keeps_the_old_directory(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    old = tmp_path / "models"
    old.mkdir()
    (old / "manifest.json").write_text("{}")

    def half_then_fail(out_dir: Path, **_kw: object) -> None:
        (out_dir / "text.onnx").write_bytes(b"half")
        raise RuntimeError("killed mid-export")

    monkeypatch.setattr(pipeline, "_export_into", half_then_fail)
    with pytest.raises(RuntimeError):
        pipeline.run_export(old, progress=lambda _m: None)
    with pytest.raises(RuntimeError):
        pipeline.run_export(tmp_path / "new", progress=lambda _m: None)
    assert sorted(p.name for p in old.iterdir()) == ["manifest.json"] and not (tmp_path / "new").exists()
    assert _leftovers(tmp_path) == []

    def complete(out_dir: Path, **_kw: object) -> None:
        (out_dir / "manifest.json").write_text('{"new": true}')

    monkeypatch.setattr(pipeline, "_export_into", complete)
    pipeline.run_export(old, progress=lambda _m: None)
    assert json.loads((old / "manifest.json").read_text()) == {"new": True} and _leftovers(tmp_path) == []


def test_export_refuses_to_replace_a_directory_that_is_not_a_model_set(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(InvalidInput, match="not a model directory"):
        pipeline.run_export(tmp_path, progress=lambda _m: None)
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_gate_photos_come_from_the_adapted_catalog_without_the_fashion_one(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import kuamo.export.samples as samples

    monkeypatch.setattr(samples, "DEFAULT_FASHION_DIR", tmp_path / "no-fashion")
    (tmp_path / "img").mkdir()
    with open(tmp_path / "feed.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["sku", "name", "cat", "pic"])
        for i in range(3):
            (tmp_path / "img" / f"{i}.jpg").write_bytes(b"jpeg")
            w.writerow([f"ab{i}", f"Thing {i}", "Home >> Kitchen >> Pans", f"img/{i}.jpg"])
    card = {"data": {"file": str(tmp_path / "feed.csv"),
                     "catalog_config": {"map": {"id": "sku", "title": "name", "category": "cat", "image": "pic"}}}}
    assert pipeline.gate_photos(None, card) == [tmp_path / "img" / f"{i}.jpg" for i in range(3)]
    with pytest.raises(InvalidInput, match="no photos to gate the image tower on"):
        pipeline.gate_photos(None, {"data": {"file": str(tmp_path / "gone.csv")}})
