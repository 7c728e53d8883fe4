"""The fine-tuned backbone ships as an int8 delta: it must rebuild the tuned weights closely, touch only the
trained tensors, and travel in the head file without disturbing the head."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from kuamo.export.align_head import AlignHead, HeadShape  # noqa: E402
from kuamo.export.effnet_lite import EfficientNetLite0  # noqa: E402
from kuamo.export.tuned_backbone import (  # noqa: E402
    PREFIX,
    apply_delta,
    backbone_arrays,
    delta_arrays,
    delta_digest,
    tuned_parameter_names,
)


def _tuned_pair(seed: int = 0) -> tuple[EfficientNetLite0, EfficientNetLite0]:
    torch.manual_seed(seed)
    base = EfficientNetLite0().eval()
    tuned = EfficientNetLite0().eval()
    tuned.load_state_dict(base.state_dict())
    with torch.no_grad():
        for name, p in tuned.named_parameters():
            if name in tuned_parameter_names(tuned):
                p.add_(0.01 * p.abs().mean() * torch.randn_like(p))
    return base, tuned


def test_classifier_is_not_a_tuned_parameter() -> None:
    names = tuned_parameter_names(EfficientNetLite0())
    assert names and not any(n.startswith("_fc.") for n in names)
    assert "_conv_stem.weight" in names and "_bn1.weight" in names


def test_delta_rebuilds_the_tuned_weights() -> None:
    base, tuned = _tuned_pair()
    names = tuned_parameter_names(tuned)
    arrays = delta_arrays(tuned.state_dict(), base.state_dict(), names)
    assert all(v.dtype == np.int8 for k, v in arrays.items() if k.endswith(".q"))
    assert not any(k.startswith(PREFIX + "_fc.") or "running" in k for k in arrays)
    rebuilt = EfficientNetLite0().eval()
    rebuilt.load_state_dict(base.state_dict())
    assert apply_delta(rebuilt, arrays) == len(names)
    want, got = tuned.state_dict(), rebuilt.state_dict()
    for name in names:
        delta = (want[name] - base.state_dict()[name]).abs().max()
        assert (got[name] - want[name]).abs().max() <= delta / 254 + 1e-7, name
    x = torch.rand(2, 3, 224, 224) * 2 - 1
    with torch.no_grad():
        a, b = tuned.features(x), rebuilt.features(x)
    assert torch.nn.functional.cosine_similarity(a, b).min() > 0.9999


def test_unknown_tensor_names_are_refused() -> None:
    arrays = {f"{PREFIX}nope.weight.q": np.zeros((2, 2), np.int8), f"{PREFIX}nope.weight.scale": np.ones(2, np.float32)}
    with pytest.raises(ValueError, match=r"nope\.weight"):
        apply_delta(EfficientNetLite0(), arrays)


def test_delta_travels_in_the_head_file(tmp_path: Path) -> None:
    base, tuned = _tuned_pair()
    arrays = delta_arrays(tuned.state_dict(), base.state_dict(), tuned_parameter_names(tuned))
    head = AlignHead(HeadShape(hidden=16)).eval()
    path = tmp_path / "h.npz"
    head.save(path, extra=arrays)
    again = AlignHead.load(path)  # the backbone arrays do not confuse the head's strict load
    f, lg = torch.rand(3, 1280), torch.randn(3, 1000)
    assert torch.nn.functional.cosine_similarity(head(f, lg), again(f, lg)).min() > 0.999
    stored = backbone_arrays(path)
    assert delta_digest(stored) == delta_digest(arrays)
    head.save(tmp_path / "plain.npz")
    assert backbone_arrays(tmp_path / "plain.npz") == {}
    _, other = _tuned_pair(seed=1)
    assert delta_digest(delta_arrays(other.state_dict(), base.state_dict(), tuned_parameter_names(other))) != \
        delta_digest(arrays)
