"""The tail's float matrix products as 8-bit blockwise weights (export/weight_only.py): same function, a
quarter of the bytes, and a row embeds the same alone or in a batch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from kuamo.export.gate import cosine_rows
from kuamo.export.weight_only import gemms_to_matmuls, quantise_float_matmuls


def tail_model(seed: int = 0) -> onnx.ModelProto:
    """x (n, 256) -> Gemm (transB, bias) -> Relu -> Gemm (no transB) -> MatMul: a head's shape in small."""
    rng = np.random.default_rng(seed)
    inits = [numpy_helper.from_array(rng.standard_normal((128, 256)).astype(np.float32) / 16, "w1"),
             numpy_helper.from_array(rng.standard_normal(128).astype(np.float32), "b1"),
             numpy_helper.from_array(rng.standard_normal((128, 128)).astype(np.float32) / 11, "w2"),
             numpy_helper.from_array(rng.standard_normal(128).astype(np.float32), "b2"),
             numpy_helper.from_array(rng.standard_normal((128, 64)).astype(np.float32), "w3")]
    nodes = [helper.make_node("Gemm", ["x", "w1", "b1"], ["h1"], transB=1),
             helper.make_node("Relu", ["h1"], ["r1"]),
             helper.make_node("Gemm", ["r1", "w2", "b2"], ["h2"]),
             helper.make_node("MatMul", ["h2", "w3"], ["y"])]
    graph = helper.make_graph(nodes, "tail", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 256])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 64])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)


def run(path: Path, x: np.ndarray) -> np.ndarray:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(["y"], {"x": x})[0]


def test_gemms_become_matmul_plus_add_with_the_same_outputs(tmp_path: Path) -> None:
    model = tail_model()
    onnx.save(model, tmp_path / "fp32.onnx")
    assert gemms_to_matmuls(model) == 2
    assert [n.op_type for n in model.graph.node] == ["MatMul", "Add", "Relu", "MatMul", "Add", "MatMul"]
    onnx.save(model, tmp_path / "mm.onnx")
    x = np.random.default_rng(1).standard_normal((5, 256)).astype(np.float32)
    assert np.allclose(run(tmp_path / "fp32.onnx", x), run(tmp_path / "mm.onnx", x), atol=1e-4)


def test_blockwise_weights_keep_the_function_and_batches_invariant(tmp_path: Path) -> None:
    onnx.save(tail_model(), tmp_path / "fp32.onnx")
    onnx.save(tail_model(), tmp_path / "w8.onnx")
    assert quantise_float_matmuls(tmp_path / "w8.onnx") == 3
    assert (tmp_path / "w8.onnx").stat().st_size < 0.4 * (tmp_path / "fp32.onnx").stat().st_size
    x = np.random.default_rng(2).standard_normal((16, 256)).astype(np.float32)
    ref, got = run(tmp_path / "fp32.onnx", x), run(tmp_path / "w8.onnx", x)
    assert cosine_rows(ref, got).min() > 0.999
    alone = np.concatenate([run(tmp_path / "w8.onnx", x[i: i + 1]) for i in range(len(x))])
    # activations quantised per row and block of 64: a batch-mate moves no row, bit for bit (blocks of 128 did
    # not: ORT runs another kernel for a single row)
    assert np.array_equal(alone, got)
