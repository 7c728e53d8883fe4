"""The INT8 gate on the real text tower: the served INT8 passes; a deliberately broken one is rejected."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from kuamo.engine.artifacts import ModelArtifacts, TowerArtifact
from kuamo.engine.config import EncoderConfig
from kuamo.engine.encoders import TextEncoder
from kuamo.export.gate import int8_gate
from kuamo.export.text_tower import gate_texts

pytestmark = pytest.mark.models


def _break_int8(src: Path, dst: Path) -> int:
    """Flip the sign of every third weight scale: a plausible-looking but wrong quantised model."""
    model = onnx.load(str(src))
    changed = 0
    scales = [i for i in model.graph.initializer if i.name.endswith("_scale") and "MatMul" in i.name]
    for n, init in enumerate(scales):
        if n % 3 == 0:
            arr = numpy_helper.to_array(init)
            init.CopyFrom(numpy_helper.from_array((-arr).astype(arr.dtype), init.name))
            changed += 1
    onnx.save(model, str(dst))
    return changed


def test_gate_rejects_broken_int8_text_tower(model_dir: Path, tmp_path: Path) -> None:
    art = ModelArtifacts(model_dir)
    fp32_tower = art.tower("text", "fp32")
    tok = art.file(fp32_tower.spec["tokenizer"])
    spec = fp32_tower.spec
    if "int8" not in spec["files"]:
        pytest.skip("this export has no INT8 text model")
    broken = tmp_path / "broken.int8.onnx"
    assert _break_int8(art.file(spec["files"]["int8"]), broken) > 0
    texts = gate_texts(160)
    cfg = EncoderConfig()
    ref = TextEncoder.from_tower(fp32_tower, tok, cfg).encode(texts, kind="document")
    good = TextEncoder(art, EncoderConfig(precision="int8")).encode(texts, kind="document")
    bad = TextEncoder.from_tower(TowerArtifact("text", broken, "int8", spec), tok, cfg).encode(texts, kind="document")
    assert len(texts) >= 200
    assert int8_gate(ref, good).passed
    result = int8_gate(ref, bad)
    assert not result.passed and np.isfinite(result.stats["cosine_mean"])


def test_manifest_records_the_gate_and_serve_decision(model_dir: Path) -> None:
    towers = ModelArtifacts(model_dir).towers
    for name in ("text", "image"):
        spec = towers[name]
        assert spec["serve"] in ("fp32", "int8") and spec["serve_reason"]
        gate = spec["parity"]["int8_vs_fp32"]
        if spec["serve"] == "int8":  # never serve INT8 that failed; passing alone is not enough (speed)
            assert gate["passed"]
        elif not gate["passed"]:
            assert "gate" in spec["serve_reason"]
    assert towers["text"]["parity"]["fp32_vs_reference"]["cosine_mean"] >= 0.999
    assert towers["image"]["parity"]["fp32_vs_torch"]["cosine_min"] >= 0.9999


def test_export_scheme_is_portable_and_passes_the_gate_on_real_photos(model_dir: Path, tmp_path: Path) -> None:
    """The image scheme an export tries first has portable weights (7-bit s8 1x1 convs; 8 bits only on the
    depthwise convs and a u8 projection, whose kernels widen to 16 bits) and no FP32 conv behind a
    DequantizeLinear, so its INT8 sums cannot saturate without VNNI: the gate passed here holds on AVX2-only
    CPUs too (benchmarks/int8_parity.py runs it with AVX2 kernels). Calibration photos are disjoint from the
    gate photos."""
    from kuamo.engine.imaging import ImagePreprocess
    from kuamo.export.image_int8 import (
        EXPORT_SCHEMES,
        calibrate,
        conv_groups,
        float_convs_fed_by_dq,
        for_cpu,
        preprocess_for_quantization,
        quantize,
        run_outputs,
    )
    from kuamo.export.image_tower import gate_and_calibration_photos

    spec = ModelArtifacts(model_dir).towers.get("image")
    if spec is None:
        pytest.skip(f"{model_dir} has no image tower")
    scheme = EXPORT_SCHEMES[0]
    assert for_cpu(scheme, {"vnni": False}) == scheme
    gate_x, calib_x = gate_and_calibration_photos(200, 96, ImagePreprocess.from_dict(spec["preprocess"]))
    fp32 = model_dir / spec["files"]["fp32"]
    pre = preprocess_for_quantization(fp32, tmp_path / "pre.onnx")
    groups = conv_groups(pre)
    cache = calibrate(pre, calib_x, scheme.calibrate, tmp_path / "calibration.json")
    int8 = quantize(pre, tmp_path / "image.int8.onnx", scheme, cache, groups)
    assert float_convs_fed_by_dq(int8) == []
    names = [spec["embedding_output"], "features"]  # the export gates the embedding; features for the record
    ref, got = run_outputs(fp32, gate_x, names), run_outputs(int8, gate_x, names)
    for name in names:
        result = int8_gate(ref[name], got[name])
        assert result.passed, f"{name}: {result.reason}"
