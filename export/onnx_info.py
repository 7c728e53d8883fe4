"""What the manifest records about an ONNX file: opset, IR version, inputs and outputs."""

from __future__ import annotations

from pathlib import Path

import onnx

# ORT 1.31 accepts IR version <= 13; onnx 1.23 writes 14 by default for hand-built graphs.
MAX_IR_VERSION = 13


def _shape(value_info: onnx.ValueInfoProto) -> list[int | str]:
    dims = value_info.type.tensor_type.shape.dim
    return [d.dim_param if d.dim_param else int(d.dim_value) for d in dims]


def describe(path: Path | str) -> dict:
    model = onnx.load(str(path), load_external_data=False)
    initializers = {i.name for i in model.graph.initializer}
    to_name = onnx.helper.tensor_dtype_to_np_dtype

    def io(values):
        return [{"name": v.name, "shape": _shape(v),
                 "dtype": str(to_name(v.type.tensor_type.elem_type))} for v in values
                if v.name not in initializers]

    opsets = {o.domain or "ai.onnx": int(o.version) for o in model.opset_import}
    return {"opset": opsets.get("ai.onnx"), "opsets": opsets, "ir_version": int(model.ir_version),
            "inputs": io(model.graph.input), "outputs": io(model.graph.output),
            "producer": f"{model.producer_name} {model.producer_version}".strip()}


def cap_ir(model: onnx.ModelProto) -> bool:
    """In memory: lower an IR version newer than the runtime accepts. Returns whether it changed."""
    if model.ir_version > MAX_IR_VERSION:
        model.ir_version = MAX_IR_VERSION
        return True
    return False


def cap_ir_version(path: Path | str) -> None:
    """Rewrite a model file whose IR version is newer than the runtime accepts."""
    model = onnx.load(str(path))
    if cap_ir(model):
        onnx.save(model, str(path))
