"""EfficientNet-Lite0 in plain PyTorch matches the shipped weights and TF SAME padding."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from kuamo.export.effnet_lite import EfficientNetLite0, SameConv2d, load_pretrained, weights_path


@pytest.fixture(scope="module")
def pretrained() -> tuple[EfficientNetLite0, dict]:
    try:
        return load_pretrained()
    except RuntimeError as exc:  # the [export] extra is not installed
        pytest.skip(str(exc))


def test_same_padding_matches_tensorflow_output_size() -> None:
    conv = SameConv2d(3, 4, 3, stride=2, bias=False)
    for size in (224, 225, 31, 7):
        out = conv(torch.zeros(1, 3, size, size + 1))
        assert out.shape[-2:] == (-(-size // 2), -(-(size + 1) // 2))  # ceil(size / stride), as TF SAME


@pytest.mark.parametrize(("size", "kernel"), [(224, 3), (224, 5), (31, 3), (31, 5)])
def test_stride2_same_padding_puts_the_extra_pixel_bottom_right(size: int, kernel: int) -> None:
    torch.manual_seed(0)
    conv = SameConv2d(2, 3, kernel, stride=2, bias=False)
    x = torch.randn(1, 2, size, size)
    total = max((-(-size // 2) - 1) * 2 + kernel - size, 0)
    before, after = total // 2, total - total // 2  # TF: the odd pixel goes after (bottom/right)
    ref = F.conv2d(F.pad(x, [before, after, before, after]), conv.weight, stride=2)
    assert torch.allclose(conv(x), ref, atol=1e-6)
    if size % 2 == 0:  # even input with stride 2 is the asymmetric case; PyTorch's symmetric pad differs
        sym = F.conv2d(x, conv.weight, stride=2, padding=(kernel - 1) // 2)
        assert not torch.allclose(conv(x), sym, atol=1e-4)


def test_architecture_has_sixteen_blocks_and_296_tensors() -> None:
    model = EfficientNetLite0()
    assert len(model._blocks) == 16
    assert len(model.state_dict()) == 296
    residual = [b.residual for b in model._blocks]
    assert sum(residual) == 9  # stride-1 blocks whose input and output widths match


def test_pretrained_loads_strictly_and_outputs_both_heads(pretrained: tuple[EfficientNetLite0, dict]) -> None:
    model, source = pretrained
    assert source["tensors"] == 296
    state = torch.load(weights_path(), map_location="cpu", weights_only=True)
    own = model.state_dict()
    assert set(state) == set(own) and all(state[k].shape == own[k].shape for k in state)
    with torch.no_grad():
        feats, logits = model(torch.zeros(2, 3, 224, 224))
    assert feats.shape == (2, 1280) and logits.shape == (2, 1000)
    assert (feats >= 0).all() and (feats <= 6).all()  # ReLU6 then mean


def test_odd_input_size_still_gives_pooled_features(pretrained: tuple[EfficientNetLite0, dict]) -> None:
    model, _ = pretrained
    with torch.no_grad():
        feats, logits = model(torch.zeros(1, 3, 225, 199))
    assert feats.shape == (1, 1280) and logits.shape == (1, 1000) and torch.isfinite(logits).all()


def test_wrong_weights_are_refused() -> None:
    model = EfficientNetLite0(num_classes=10)  # fc shape differs from the 1000-class checkpoint
    try:
        state = torch.load(weights_path(), map_location="cpu", weights_only=True)
    except RuntimeError as exc:
        pytest.skip(str(exc))
    with pytest.raises(RuntimeError, match="size mismatch"):
        model.load_state_dict(state, strict=True)

