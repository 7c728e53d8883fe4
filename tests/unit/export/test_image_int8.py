"""INT8 scheme machinery on a tiny MBConv-like network: real ORT calibration and QDQ quantisation."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from kuamo.engine.cpu_features import saturation_free
from kuamo.export.gate import cosine_rows
from kuamo.export.image_int8 import (
    EXPORT_SCHEMES,
    Scheme,
    calibrate,
    conv_groups,
    cpu_flags,
    float_convs_fed_by_dq,
    for_cpu,
    pads_feeding,
    preprocess_for_quantization,
    quantize,
    run_outputs,
)


class Tiny(nn.Module):
    """stem conv -> depthwise -> pointwise -> pooled `features` -> fc `logits`, ReLU6 like Lite0."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.pw = nn.Conv2d(8, 16, 1)
        self.fc = nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = nn.functional.relu6(self.stem(x))
        x = nn.functional.relu6(self.dw(x))
        feats = nn.functional.relu6(self.pw(x)).mean(dim=(2, 3))
        return feats, self.fc(feats)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, np.ndarray]:
    torch.manual_seed(0)
    tmp = tmp_path_factory.mktemp("tiny")
    fp32 = tmp / "tiny.onnx"
    torch.onnx.export(Tiny().eval(), (torch.zeros(1, 3, 32, 32),), str(fp32), input_names=["pixel_values"],
                      output_names=["features", "logits"], opset_version=17, dynamo=False,
                      dynamic_axes={"pixel_values": {0: "batch"}})
    x = np.random.default_rng(0).uniform(-1, 1, (32, 3, 32, 32)).astype(np.float32)
    pre = preprocess_for_quantization(fp32, tmp / "pre.onnx")
    return fp32, pre, x


def test_conv_groups_name_stem_depthwise_pointwise_and_fc(tiny: tuple[Path, Path, np.ndarray]) -> None:
    _, pre, _ = tiny
    groups = conv_groups(pre)
    assert len(groups["stem"]) == 1 and groups["first_depthwise"] == groups["depthwise"]
    assert len(groups["depthwise"]) == 1 and len(groups["fc"]) == 1
    assert not set(groups["depthwise"]) & set(groups["pointwise"]) and groups["stem"] != groups["depthwise"]


def test_quantised_model_tracks_fp32_and_exclusions_are_reported(tiny: tuple[Path, Path, np.ndarray],
                                                                 tmp_path: Path) -> None:
    fp32, pre, x = tiny
    cache = calibrate(pre, x[:16], "minmax", tmp_path / "minmax.json")
    groups = conv_groups(pre)
    ref = run_outputs(fp32, x[16:], ["features"])["features"]

    full = quantize(pre, tmp_path / "all.onnx", Scheme("all_ops"), cache, groups)
    got = run_outputs(full, x[16:], ["features"])["features"]
    cos = (ref * got).sum(1) / np.linalg.norm(ref, axis=1) / np.linalg.norm(got, axis=1)
    assert cos.mean() > 0.95  # 8-bit on a tiny net: close but not identical
    assert not np.allclose(ref, got)
    assert float_convs_fed_by_dq(full) == []

    # the first layer kept in FP32 is fed by the float graph input: safe from ORT's WeightBiasQuantization
    head_safe = quantize(pre, tmp_path / "stem.onnx", Scheme("keep_stem", keep_fp32=("stem",)), cache, groups)
    assert float_convs_fed_by_dq(head_safe) == []
    # a middle conv kept in FP32 sits behind a DequantizeLinear: the hazard the search reports
    risky = quantize(pre, tmp_path / "dw.onnx", Scheme("keep_dw", keep_fp32=("depthwise",)), cache, groups)
    assert float_convs_fed_by_dq(risky) == groups["depthwise"]


def _export(cls: type[nn.Module], path: Path, output: str) -> Path:
    """The module built under a fixed seed, as a tower-shaped ONNX file: `pixel_values` (batch, 3, 32, 32)
    -> `output`."""
    torch.manual_seed(0)
    torch.onnx.export(cls().eval(), (torch.zeros(1, 3, 32, 32),), str(path), input_names=["pixel_values"],
                      output_names=[output], opset_version=17, dynamo=False,
                      dynamic_axes={"pixel_values": {0: "batch"}})
    return path


class PaddedStem(nn.Module):
    """TF SAME padding as Lite0 exports it: an explicit Pad node in front of the stem conv."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, stride=2)
        self.pw = nn.Conv2d(8, 16, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = nn.functional.relu6(self.stem(nn.functional.pad(x, (0, 1, 0, 1))))
        return nn.functional.relu6(self.pw(x)).mean(dim=(2, 3))


def test_a_conv_kept_in_fp32_keeps_its_pad_in_fp32(tmp_path: Path) -> None:
    """A quantised Pad would put a DequantizeLinear in front of the "FP32" stem, whose weights ORT then
    quantises to 8 bits at load time: not FP32, and not saturation-free without VNNI."""
    pre = preprocess_for_quantization(_export(PaddedStem, tmp_path / "padded.onnx", "features"),
                                      tmp_path / "pre.onnx")
    groups = conv_groups(pre)
    pads = pads_feeding(pre, groups["stem"])
    assert len(pads) == 1
    x = np.random.default_rng(0).uniform(-1, 1, (16, 3, 32, 32)).astype(np.float32)
    cache = calibrate(pre, x, "minmax", tmp_path / "minmax.json")
    scheme = Scheme("keep_stem", reduce_range=True, keep_fp32=("stem",))
    model = quantize(pre, tmp_path / "int8.onnx", scheme, cache, groups)
    assert float_convs_fed_by_dq(model) == []
    assert saturation_free({"settings": scheme.settings(), "float_convs_fed_by_dq": 0})


def test_saturation_free_needs_7_bit_or_u8_weights_and_no_dq_fed_float_conv() -> None:
    def entry(scheme: Scheme, fed: int = 0) -> dict:
        return {"settings": scheme.settings(), "float_convs_fed_by_dq": fed}

    assert not saturation_free(entry(Scheme("s8")))  # 8-bit s8 weights: int16 pair sums saturate on AVX2
    assert saturation_free(entry(Scheme("u8", weight_type="u8")))  # u8u8 kernels widen to 16 bits first
    assert not saturation_free(entry(Scheme("r", reduce_range=True), fed=1))
    assert not saturation_free({"settings": {"reduce_range": True}})  # an export from before the count


def test_export_prefers_a_scheme_that_is_the_same_with_or_without_vnni() -> None:
    first = EXPORT_SCHEMES[0]
    assert first.reduce_range and first.per_channel
    assert for_cpu(first, {"vnni": False}) == first == for_cpu(first, {"vnni": True})
    # the 8-bit fallback, narrowed for a CPU without VNNI, is named so that a duplicate would run once
    eight_bit = next(s for s in EXPORT_SCHEMES if not s.reduce_range)
    narrowed = for_cpu(eight_bit, {"vnni": False})
    assert narrowed.reduce_range and narrowed.name == eight_bit.name + "_reduce_range"


def test_cpu_without_vnni_gets_reduce_range() -> None:
    scheme = Scheme("s")
    assert for_cpu(scheme, {"vnni": True}) == scheme
    narrowed = for_cpu(scheme, {"vnni": False})
    assert narrowed.reduce_range and narrowed.name.endswith("_reduce_range")
    assert for_cpu(replace(scheme, reduce_range=True), {"vnni": False}).name == "s"


def test_cpu_flags_are_booleans() -> None:
    flags = cpu_flags()
    assert {"vnni", "avx2", "avx512", "model"} <= set(flags)
    assert all(isinstance(flags[k], bool) for k in ("vnni", "avx2", "avx512"))


def test_scheme_settings_are_json_ready() -> None:
    s = Scheme("x", op_types=("Conv",), keep_nodes=("a", "b"), calibrate="percentile")
    d = s.settings()
    assert d["op_types"] == ["Conv"] and d["keep_nodes"] == ["a", "b"] and d["percentile"] == 99.999
    assert "percentile" not in Scheme("y").settings()


def test_export_order_puts_8_bit_first_only_where_it_cannot_saturate() -> None:
    from kuamo.export.image_int8 import export_order

    portable, eight_bit = EXPORT_SCHEMES[0], next(s for s in EXPORT_SCHEMES if not s.reduce_range)
    assert portable.reduce_range
    vnni = export_order(EXPORT_SCHEMES, {"vnni": True})
    assert vnni[0] == eight_bit and portable in vnni  # the more accurate scheme first on VNNI
    assert export_order(EXPORT_SCHEMES, {"vnni": True}, portable=True)[0] == portable  # --portable-int8
    avx2 = export_order(EXPORT_SCHEMES, {"vnni": False})
    assert avx2[0] == portable and all(s.reduce_range for s in avx2[: len(EXPORT_SCHEMES)])  # 7-bit first
    assert len(avx2) == len(set(avx2))


class ConvThenHead(nn.Module):
    """A conv trunk, global pooling and a two-layer head: the shape of the image tower's tail."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 32, 3, stride=2)
        self.head = nn.Sequential(nn.Linear(32, 256), nn.GELU(), nn.Linear(256, 128))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(nn.functional.relu6(self.conv(x)).mean(dim=(2, 3)))


def test_tail_weights_make_the_float_head_blockwise_int8(tmp_path: Path) -> None:
    """With tail_weights, the Gemms the QDQ pass kept in FP32 become MatMulNBits; the convs stay QDQ and the
    output stays within quantisation error of the FP32-tail scheme."""
    import onnx
    import onnxruntime as ort

    pre = preprocess_for_quantization(_export(ConvThenHead, tmp_path / "tail.onnx", "embedding"),
                                      tmp_path / "pre.onnx")
    gemms = [n.name for n in onnx.load(str(pre)).graph.node if n.op_type == "Gemm"]
    x = np.random.default_rng(0).uniform(-1, 1, (16, 3, 32, 32)).astype(np.float32)
    cache = calibrate(pre, x, "minmax", tmp_path / "minmax.json")
    plain = Scheme("keep_head", keep_nodes=tuple(gemms))
    blockwise = replace(plain, tail_weights="int8_blockwise")
    outs = {}
    for scheme in (plain, blockwise):
        path = quantize(pre, tmp_path / f"{scheme.tail_weights}.onnx", scheme, cache, conv_groups(pre))
        ops = [n.op_type for n in onnx.load(str(path)).graph.node]
        assert ("MatMulNBits" in ops) == (scheme is blockwise) and ("Gemm" in ops) == (scheme is plain)
        assert "QuantizeLinear" in ops  # the conv is INT8 either way
        outs[scheme.tail_weights] = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(
            ["embedding"], {"pixel_values": x})[0]
    a, b = outs["fp32"], outs["int8_blockwise"]
    assert ((a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)).min() > 0.999
    assert blockwise.settings()["tail_weights"] == "int8_blockwise"  # the manifest records it


def _weights(model: Path) -> dict[str, np.ndarray]:
    import onnx
    from onnx import numpy_helper

    return {i.name: numpy_helper.to_array(i) for i in onnx.load(str(model)).graph.initializer}


def test_full_range_depthwise_and_u8_projection_weights(tiny: tuple[Path, Path, np.ndarray], tmp_path: Path) -> None:
    """The portable export scheme's parts: 1x1 convs 7-bit s8, depthwise 8-bit s8, a projection 8-bit u8, all
    per channel; and only the depthwise part counts as saturation-free."""
    fp32, pre, x = tiny
    groups = conv_groups(pre)
    assert groups["project"] == ["/pw/Conv"] and groups["second_project"] == []  # one block: dw -> pw
    cache = calibrate(pre, x, "minmax", tmp_path / "cal.json")
    seven = quantize(pre, tmp_path / "seven.onnx", Scheme("r", reduce_range=True), cache, groups)
    mixed_scheme = Scheme("m", reduce_range=True, full_range=("depthwise",), u8_weights=("project",))
    mixed = quantize(pre, tmp_path / "mixed.onnx", mixed_scheme, cache, groups)

    def conv_weight(model: Path, part: str) -> np.ndarray:
        w = {k: v for k, v in _weights(model).items() if part in k and v.ndim == 4}
        (arr,) = w.values()
        return arr

    dw7, dw8 = conv_weight(seven, "dw"), conv_weight(mixed, "dw")
    assert dw7.dtype == dw8.dtype == np.int8
    assert np.abs(dw7.astype(int)).max() <= 64 < np.abs(dw8.astype(int)).max()  # 7 vs 8 bits
    assert conv_weight(seven, "pw").dtype == np.int8 and conv_weight(mixed, "pw").dtype == np.uint8
    per_channel = {k: v for k, v in _weights(mixed).items() if "dw" in k and "scale" in k}
    assert any(v.size == 8 for v in per_channel.values())  # one scale per output channel, not per tensor
    got = run_outputs(mixed, x, ["features"])["features"]
    ref = run_outputs(fp32, x, ["features"])["features"]
    assert cosine_rows(got, ref).min() > 0.99

    def entry(scheme: Scheme) -> dict:
        return {"settings": scheme.settings(), "float_convs_fed_by_dq": 0}

    assert saturation_free(entry(mixed_scheme))
    assert not saturation_free(entry(Scheme("p", reduce_range=True, full_range=("pointwise",))))
    assert all(saturation_free(entry(s)) for s in EXPORT_SCHEMES if s.reduce_range)
