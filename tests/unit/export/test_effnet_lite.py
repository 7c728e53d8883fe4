"""EfficientNet-Lite0 in plain PyTorch matches the shipped weights and TF SAME padding."""

from __future__ import annotations

import pytest
import torch

from kuamo.export.effnet_lite import EfficientNetLite0, SameConv2d, load_pretrained


def test_same_padding_matches_tensorflow_output_size() -> None:
    conv = SameConv2d(3, 4, 3, stride=2, bias=False)
    for size in (224, 225, 31):
        out = conv(torch.zeros(1, 3, size, size))
        assert out.shape[-1] == -(-size // 2)  # ceil(size / stride), as TF SAME


def test_architecture_has_sixteen_blocks_and_296_tensors() -> None:
    model = EfficientNetLite0()
    assert len(model._blocks) == 16
    assert len(model.state_dict()) == 296


def test_pretrained_loads_strictly_and_outputs_both_heads() -> None:
    try:
        model, source = load_pretrained()
    except RuntimeError as exc:
        pytest.skip(str(exc))
    assert source["tensors"] == 296
    with torch.no_grad():
        feats, logits = model(torch.zeros(2, 3, 224, 224))
    assert feats.shape == (2, 1280) and logits.shape == (2, 1000)
    assert (feats >= 0).all() and (feats <= 6).all()  # ReLU6 then mean
