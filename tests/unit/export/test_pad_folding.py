"""Zero Pads folded into the Conv they feed: same outputs, no Pad left, and only the safe cases folded."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from kuamo.export.pad_folding import fold_pads_into_convs


def run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {"x": x})[0]


def pad_conv_model(pads: list[int], *, value: float | None = None, second_reader: bool = False,
                   stride: int = 2) -> onnx.ModelProto:
    """x (1, 2, 9, 9) -> Pad(pads) -> Conv 3x3 (+ an Identity reading the Pad when second_reader)."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(np.array(pads, dtype=np.int64), "pads"),
             numpy_helper.from_array(rng.standard_normal((3, 2, 3, 3)).astype(np.float32), "w")]
    pad_inputs = ["x", "pads"]
    if value is not None:
        inits.append(numpy_helper.from_array(np.array(value, dtype=np.float32), "value"))
        pad_inputs.append("value")
    nodes = [helper.make_node("Pad", pad_inputs, ["p"], mode="constant"),
             helper.make_node("Conv", ["p", "w"], ["y"], strides=[stride, stride])]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)]
    if second_reader:
        nodes.append(helper.make_node("Identity", ["p"], ["p2"]))
        outputs.append(helper.make_tensor_value_info("p2", TensorProto.FLOAT, None))
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 9, 9])],
                              outputs, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


X = np.random.default_rng(1).standard_normal((1, 2, 9, 9)).astype(np.float32)


@pytest.mark.parametrize("pads", [[0, 0, 0, 0, 0, 0, 1, 1], [0, 0, 1, 2, 0, 0, 2, 1], [0, 0, 1, 1, 0, 0, 1, 1]])
def test_folded_conv_gives_the_same_output(pads: list[int]) -> None:
    model = pad_conv_model(pads)
    before = run(model, X)
    assert fold_pads_into_convs(model) == 1
    assert [n.op_type for n in model.graph.node] == ["Conv"]
    conv_pads = next(list(a.ints) for a in model.graph.node[0].attribute if a.name == "pads")
    assert conv_pads == [pads[2], pads[3], pads[6], pads[7]]
    assert not any(i.name == "pads" for i in model.graph.initializer)  # the dead pads are pruned
    np.testing.assert_allclose(run(model, X), before, rtol=0, atol=1e-6)


def test_zero_constant_value_is_folded_other_values_are_not() -> None:
    zero = pad_conv_model([0, 0, 0, 0, 0, 0, 1, 1], value=0.0)
    assert fold_pads_into_convs(zero) == 1
    one = pad_conv_model([0, 0, 0, 0, 0, 0, 1, 1], value=1.0)
    before = run(one, X)
    assert fold_pads_into_convs(one) == 0
    np.testing.assert_array_equal(run(one, X), before)


def test_pad_read_by_another_node_or_over_channels_is_left() -> None:
    shared = pad_conv_model([0, 0, 0, 0, 0, 0, 1, 1], second_reader=True)
    assert fold_pads_into_convs(shared) == 0
    channels = pad_conv_model([0, 1, 0, 0, 0, 0, 1, 1])
    assert fold_pads_into_convs(channels) == 0
    assert [n.op_type for n in channels.graph.node] == ["Pad", "Conv"]


def test_pads_computed_by_the_torch_exporters_chain_are_folded(tmp_path: Path) -> None:
    """The real case: SAME padding exported by TorchScript, pads behind a Slice(step -1)/Concat/Cast chain."""
    torch = pytest.importorskip("torch")
    from kuamo.export.effnet_lite import SameConv2d

    torch.manual_seed(0)
    conv = SameConv2d(2, 3, 5, stride=2, bias=True).eval()
    x = torch.randn(2, 2, 16, 16)
    path = tmp_path / "same.onnx"
    with torch.no_grad():
        torch.onnx.export(conv, (x,), str(path), input_names=["x"], output_names=["y"], opset_version=17,
                          dynamo=False)
    model = onnx.load(str(path))
    assert "Pad" in [n.op_type for n in model.graph.node]
    assert fold_pads_into_convs(model) == 1
    assert [n.op_type for n in model.graph.node] == ["Conv"]
    np.testing.assert_allclose(run(model, x.numpy()), conv(x).detach().numpy(), rtol=0, atol=1e-5)
