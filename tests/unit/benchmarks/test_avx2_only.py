"""The AVX2-only mode really runs ONNX Runtime's AVX2 kernels: a u8 x s8 product sum that AVX2's int16 pair
sums saturate comes out saturated inside the mode (and exact natively where the CPU has VNNI), and kuamo,
numpy and faiss see no AVX-512."""

from __future__ import annotations

import subprocess
import sys

import pytest

from kuamo.benchmarks.avx2_only import unavailable
from kuamo.engine.cpu_features import cpu_flags

pytestmark = pytest.mark.skipif(unavailable() is not None, reason=str(unavailable()))

# 64 products of 255 x 127: exact 2,072,640; AVX2's vpmaddubsw sums pairs in int16, so 32 x 32,767
PROBE = """
import numpy as np, onnxruntime as ort
from onnx import TensorProto, helper
g = helper.make_graph([helper.make_node("MatMulInteger", ["a", "b"], ["y"])], "g",
                      [helper.make_tensor_value_info("a", TensorProto.UINT8, [None, 64]),
                       helper.make_tensor_value_info("b", TensorProto.INT8, [64, 16])],
                      [helper.make_tensor_value_info("y", TensorProto.INT32, None)])
m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
s = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
print(int(s.run(None, {"a": np.full((4, 64), 255, np.uint8), "b": np.full((64, 16), 127, np.int8)})[0][0, 0]))
"""
EXACT, SATURATED = 64 * 255 * 127, 32 * 32767


def test_inside_the_mode_nothing_sees_avx512(avx2_only_mode) -> None:
    from kuamo.benchmarks.avx2_only import check

    seen = check(avx2_only_mode)
    assert seen["cpu_flags"]["avx2"] and not seen["cpu_flags"]["avx512"] and not seen["cpu_flags"]["vnni"]
    assert seen["onnxruntime"].startswith(str(avx2_only_mode.site))
    assert seen["numpy_dispatch_avx512"] == [] and seen["faiss_simd"] == "AVX2"
    assert avx2_only_mode.patched > 0


def test_u8s8_sums_saturate_inside_the_mode_as_on_an_avx2_cpu(avx2_only_mode) -> None:
    inside = avx2_only_mode.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True)
    assert int(inside.stdout.strip()) == SATURATED
    native = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True)
    assert int(native.stdout.strip()) == (EXACT if cpu_flags()["vnni"] else SATURATED)
