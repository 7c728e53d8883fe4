"""An INT8 image tower gated on a VNNI CPU is not served where its 8-bit weights saturate (no VNNI)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

import kuamo.engine.artifacts as artifacts
from kuamo.engine.artifacts import ModelArtifacts
from kuamo.engine.cpu_features import cpu_flags, int8_drift, int8_mismatch
from kuamo.engine.errors import ArtifactError
from kuamo.export.pipeline import write_manifest

VNNI = {"model": "Xeon", "avx2": True, "avx512": True, "vnni": True}
AVX2 = {"model": "EPYC 7B12", "avx2": True, "avx512": False, "vnni": False}


def _quant(reduce_range: bool = False, cpu: dict | None = None, float_convs_fed_by_dq: int | None = 0) -> dict:
    trunk = {"scheme": "trunk", "settings": {"reduce_range": reduce_range}}
    if float_convs_fed_by_dq is not None:
        trunk["float_convs_fed_by_dq"] = float_convs_fed_by_dq
    return {"chosen": "trunk", "cpu": VNNI if cpu is None else cpu,
            "tried": [{"scheme": "other", "settings": {"reduce_range": True}, "float_convs_fed_by_dq": 0}, trunk]}


def test_only_8_bit_weights_from_a_vnni_cpu_on_a_cpu_without_are_refused() -> None:
    assert "saturate" in int8_mismatch(_quant(), AVX2)
    assert int8_mismatch(_quant(), VNNI) is None  # same kind of CPU
    assert int8_mismatch(_quant(reduce_range=True), AVX2) is None  # 7-bit weights cannot saturate
    # ... unless ORT quantises an "FP32" conv to 8 bits at load time, or the export did not count them
    assert "saturate" in int8_mismatch(_quant(reduce_range=True, float_convs_fed_by_dq=1), AVX2)
    assert "saturate" in int8_mismatch(_quant(reduce_range=True, float_convs_fed_by_dq=None), AVX2)
    assert int8_mismatch(_quant(cpu=AVX2), AVX2) is None  # chosen on a CPU like this one
    assert int8_mismatch({}, AVX2) is None  # dynamic quantisation (the text tower) records no scheme


def test_cpu_flags_from_a_cpuinfo_file(tmp_path: Path) -> None:
    info = tmp_path / "cpuinfo"
    info.write_text("model name\t: AMD EPYC 7B12\nflags\t\t: fpu sse avx avx2 fma\n")
    assert cpu_flags(str(info)) == {"model": "AMD EPYC 7B12", "avx2": True, "avx512": False, "vnni": False,
                                    "amx_int8": False}
    assert cpu_flags(str(tmp_path / "none"))["model"] == "unknown"


def _image_dir(tmp_path: Path, with_fp32: bool) -> Path:
    (tmp_path / "image.int8.onnx").write_bytes(b"int8 bytes")
    files = {"int8": "image.int8.onnx"}
    if with_fp32:
        (tmp_path / "image.onnx").write_bytes(b"fp32 bytes")
        files["fp32"] = "image.onnx"
    write_manifest(tmp_path, {"image": {"files": files, "serve": "int8", "dim": 4, "quantization": _quant()}})
    return tmp_path


def test_auto_serves_fp32_with_a_logged_reason_on_a_cpu_without_vnni(tmp_path: Path, monkeypatch, caplog) -> None:
    monkeypatch.setattr(artifacts, "cpu_flags", lambda: AVX2)
    with caplog.at_level(logging.WARNING, logger="kuamo.engine.artifacts"):
        tower = ModelArtifacts(_image_dir(tmp_path, with_fp32=True)).tower("image")
    assert tower.precision == "fp32" and tower.model_path.name == "image.onnx"
    assert "VNNI" in caplog.text and "serving FP32" in caplog.text
    assert ModelArtifacts(tmp_path).tower("image", "int8").precision == "int8"  # asked for explicitly: obeyed
    monkeypatch.setattr(artifacts, "cpu_flags", lambda: VNNI)
    assert ModelArtifacts(tmp_path).tower("image").precision == "int8"


def test_a_bundle_without_fp32_is_refused_rather_than_served_wrong(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(artifacts, "cpu_flags", lambda: AVX2)
    with pytest.raises(ArtifactError, match="no FP32 graph"):
        ModelArtifacts(_image_dir(tmp_path, with_fp32=False)).tower("image")


TEXT_8_BIT = {"weight_type": "QInt8", "per_channel": True, "reduce_range": False, "cpu": VNNI}


def test_8_bit_text_weights_on_a_cpu_without_vnni_are_served_with_a_warning(tmp_path: Path, monkeypatch,
                                                                            caplog) -> None:
    assert "saturate" in int8_drift(TEXT_8_BIT, AVX2)
    assert int8_drift(TEXT_8_BIT, VNNI) is None
    assert int8_drift({**TEXT_8_BIT, "reduce_range": True}, AVX2) is None  # 7-bit: the same on both
    assert int8_drift(_quant(), AVX2) is None  # the image record: int8_mismatch's business
    (tmp_path / "text.int8.onnx").write_bytes(b"int8 bytes")
    write_manifest(tmp_path, {"text": {"files": {"int8": "text.int8.onnx"}, "serve": "int8", "dim": 4,
                                       "quantization": TEXT_8_BIT}})
    monkeypatch.setattr(artifacts, "cpu_flags", lambda: AVX2)
    with caplog.at_level(logging.WARNING, logger="kuamo.engine.artifacts"):
        assert ModelArtifacts(tmp_path).tower("text").precision == "int8"
    assert "--portable-int8" in caplog.text
    caplog.clear()
    monkeypatch.setattr(artifacts, "cpu_flags", lambda: VNNI)
    with caplog.at_level(logging.WARNING, logger="kuamo.engine.artifacts"):
        assert ModelArtifacts(tmp_path).tower("text").precision == "int8"
    assert caplog.text == ""
