"""Backbone fine-tuning on a tiny synthetic pack: runtime-exact pixels, white padding under augmentation,
frozen BN statistics and classifier, and per-epoch held-out proxies."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from PIL import Image  # noqa: E402

from kuamo.engine.imaging import ImagePreprocess, decode_image, preprocess  # noqa: E402
from kuamo.export.effnet_lite import EfficientNetLite0  # noqa: E402
from kuamo.export.finetune import FinetuneRecipe, Normaliser, decode_pixels, finetune  # noqa: E402
from kuamo.export.finetune_pack import Pack  # noqa: E402
from kuamo.export.int8_rows import quantise_rows  # noqa: E402


def _jpeg(colour: tuple[int, int, int], size: tuple[int, int] = (60, 80)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, format="JPEG")
    return buf.getvalue()


def _unit(rng: np.random.Generator, n: int) -> np.ndarray:
    v = rng.standard_normal((n, 384)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def fake_pack(n: int = 24) -> Pack:
    rng = np.random.default_rng(0)
    colours = [(255, 0, 0), (0, 0, 255), (0, 160, 0)]
    blobs = [_jpeg(colours[i % 3]) for i in range(n)]
    tq, ts = quantise_rows(_unit(rng, n))
    return Pack({"ids": np.arange(n, dtype=np.int64), "held_out": np.arange(n) % 4 == 0,
                 "jpeg": np.frombuffer(b"".join(blobs), np.uint8),
                 "offsets": np.cumsum([0] + [len(b) for b in blobs]).astype(np.int64),
                 "title_q": tq, "title_scale": ts, "title_idx": np.arange(n, dtype=np.int32),
                 "tmpl": _unit(rng, 3).astype(np.float16), "tmpl_idx": (np.arange(n) % 3).astype(np.int32),
                 "zh": _unit(rng, 3).astype(np.float16), "zh_idx": (np.arange(n) % 3).astype(np.int32),
                 "class_text": _unit(rng, 1000).astype(np.float16),
                 "articleType": np.asarray(["Tshirts", "Jeans", "Watches"] * (n // 3))})


def test_pixels_are_the_runtime_preprocessing() -> None:
    pack, pre = fake_pack(6), ImagePreprocess()
    u8 = decode_pixels(pack, np.arange(6), pre)
    assert u8.dtype == np.uint8 and u8.shape == (6, 3, 224, 224)
    want = np.stack([preprocess(decode_image(pack.jpeg(i)), pre) for i in range(6)])
    got = Normaliser(pre, torch.device("cpu"))(torch.from_numpy(u8)).numpy()
    assert np.abs(got - want).max() < 1e-6


def test_augmentation_pads_with_the_pad_colour() -> None:
    pre = ImagePreprocess()
    norm = Normaliser(pre, torch.device("cpu"))
    white = norm(torch.full((4, 3, 224, 224), 255, dtype=torch.uint8))
    out = norm.augment(white, torch.Generator().manual_seed(0))
    assert out.shape == white.shape and torch.allclose(out, white, atol=1e-5)


def test_finetune_moves_only_the_trained_tensors(tmp_path: Path) -> None:
    torch.manual_seed(0)
    base = {k: v.clone() for k, v in EfficientNetLite0().state_dict().items()}
    pack = fake_pack()
    held = pack.data["held_out"]
    recipe = FinetuneRecipe(epochs=2, batch=8, hidden=32, distill=1.0)
    state, head, history = finetune(pack, base, recipe, train=~held, evaluate=held, progress=lambda _m: None)
    assert set(state) == set(base)
    assert torch.equal(state["_fc.weight"], base["_fc.weight"])  # classifier frozen: the zero-shot map holds
    assert torch.equal(state["_bn1.running_var"], base["_bn1.running_var"])  # BN statistics frozen
    assert not torch.equal(state["_conv_stem.weight"], base["_conv_stem.weight"])
    assert [h["epoch"] for h in history] == [1, 2]
    assert all(np.isfinite(h["loss"]) and h["distill"] >= 0 for h in history)
    proxies = history[-1]["held_out"]
    assert set(proxies) == {"R@1", "R@10", "i2i_P@10"} and all(0 <= v <= 100 for v in proxies.values())
    assert proxies["R@10"] == 100.0  # 6 held-out photos: every title is within the top 10
    assert head.mlp[0].out_features == 32


@pytest.mark.parametrize("name", ["gpu0", "cuda:x", ""])
def test_a_wrong_device_name_is_a_clear_error(name: str) -> None:
    from kuamo.engine.errors import InvalidInput
    from kuamo.export.finetune import resolve_device

    with pytest.raises(InvalidInput, match="not a torch device"):
        resolve_device(name)


def test_cuda_without_a_gpu_is_a_clear_error() -> None:
    from kuamo.engine.errors import InvalidInput
    from kuamo.export.finetune import resolve_device

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(InvalidInput, match="sees no CUDA GPU"):
        resolve_device("cuda")
    assert resolve_device("cpu").type == "cpu"


def test_cli_rejects_garbage_recipe_and_unknown_exclude(tmp_path: Path, monkeypatch, capsys) -> None:
    import sys

    from kuamo.export import finetune as ft

    pack = fake_pack(6)
    pack.data["masterCategory"] = np.asarray(["Apparel"] * 6)
    pack.data["subCategory"] = np.asarray(["Topwear"] * 6)
    path = tmp_path / "pack.npz"
    np.savez(path, **pack.data)
    np.savez(tmp_path / "w.npz", **{k: v.numpy() for k, v in EfficientNetLite0().state_dict().items()})
    base = ["finetune", "--pack", str(path), "--weights", str(tmp_path / "w.npz"), "--out", str(tmp_path / "o")]
    for extra, message in ((["--recipe", "{not json"], "--recipe must be a JSON object"),
                           (["--recipe", '{"epochz": 3}'], "--recipe must be a JSON object"),
                           (["--exclude", "Spaceships"], "no product has that")):
        monkeypatch.setattr(sys, "argv", base + extra)
        with pytest.raises(SystemExit) as exit_info:
            ft.main()
        assert exit_info.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "o.npz").exists()
