"""The runtime refuses a model directory whose files do not match their manifest."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kuamo.engine.artifacts import ModelArtifacts
from kuamo.engine.errors import ArtifactError
from kuamo.export.pipeline import write_manifest


def _model_dir(tmp_path: Path) -> Path:
    (tmp_path / "text.onnx").write_bytes(b"pretend onnx bytes" * 10)
    (tmp_path / "tokenizer.json").write_text("{}")
    towers = {"text": {"files": {"fp32": "text.onnx"}, "serve": "fp32", "dim": 4,
                       "tokenizer": "tokenizer.json", "serve_reason": "INT8 gate failed: test"}}
    write_manifest(tmp_path, towers)
    return tmp_path


def test_matching_files_load(tmp_path: Path) -> None:
    art = ModelArtifacts(_model_dir(tmp_path))
    tower = art.tower("text")
    assert tower.precision == "fp32" and tower.model_path.name == "text.onnx"


def test_changed_file_is_refused(tmp_path: Path) -> None:
    d = _model_dir(tmp_path)
    data = bytearray((d / "text.onnx").read_bytes())
    data[3] ^= 0xFF  # same size, different content
    (d / "text.onnx").write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="sha256"):
        ModelArtifacts(d).tower("text")


def test_truncated_file_is_refused(tmp_path: Path) -> None:
    d = _model_dir(tmp_path)
    (d / "text.onnx").write_bytes(b"short")
    with pytest.raises(ArtifactError, match="bytes"):
        ModelArtifacts(d).tower("text")


def test_missing_manifest_and_bad_json(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="kuamo export"):
        ModelArtifacts(tmp_path)
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(ArtifactError, match="not valid JSON"):
        ModelArtifacts(tmp_path)


def test_int8_request_explains_why_it_is_absent(tmp_path: Path) -> None:
    art = ModelArtifacts(_model_dir(tmp_path))
    with pytest.raises(ArtifactError, match="INT8 gate failed"):
        art.tower("text", "int8")


def test_unknown_tower_and_precision(tmp_path: Path) -> None:
    art = ModelArtifacts(_model_dir(tmp_path))
    with pytest.raises(ArtifactError, match="no 'image' tower"):
        art.tower("image")
    with pytest.raises(ArtifactError, match="unknown precision"):
        art.tower("text", "fp16")


def test_manifest_written_atomically(tmp_path: Path) -> None:
    d = _model_dir(tmp_path)
    assert not list(d.glob("*.tmp"))
    assert json.loads((d / "manifest.json").read_text())["format"] == "kuamo-models/1"
