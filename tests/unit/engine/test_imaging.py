"""Bad and unusual images: every one gets a clear InvalidInput or decodes to a sane RGB tensor."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from kuamo.engine.errors import InvalidInput
from kuamo.engine.imaging import ImagePreprocess, decode_image, preprocess


def _encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def _png_header_only(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims a huge size: the classic decompression bomb shape."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + \
        chunk(b"IEND", b"")


@pytest.mark.parametrize(("data", "needle"), [
    (b"", "empty"),
    (b"this is not an image at all", "not a decodable image"),
    (bytes(range(256)) * 4, "not a decodable image"),
])
def test_garbage_bytes_are_rejected_with_a_reason(data: bytes, needle: str) -> None:
    with pytest.raises(InvalidInput) as exc:
        decode_image(data)
    assert needle in str(exc.value)
    assert exc.value.field == "image"


def test_truncated_jpeg_is_rejected() -> None:
    jpeg = _encode(Image.new("RGB", (64, 64), (10, 200, 30)), "JPEG")
    with pytest.raises(InvalidInput, match=r"corrupt or truncated|not a decodable"):
        decode_image(jpeg[: len(jpeg) // 2])


def test_pixel_bomb_is_rejected_before_decoding() -> None:
    with pytest.raises(InvalidInput, match="pixel"):
        decode_image(_png_header_only(100_000, 100_000), max_pixels=40_000_000)


def test_byte_limit() -> None:
    jpeg = _encode(Image.new("RGB", (32, 32)), "JPEG")
    with pytest.raises(InvalidInput, match="above the limit"):
        decode_image(jpeg, max_bytes=10)


def test_non_bytes_is_rejected() -> None:
    with pytest.raises(InvalidInput, match="must be bytes"):
        decode_image("photo.jpg")  # type: ignore[arg-type]


@pytest.mark.parametrize("make", [
    lambda: Image.new("CMYK", (40, 30), (0, 255, 255, 0)),
    lambda: Image.new("L", (40, 30), 128),
    lambda: Image.new("P", (40, 30), 3),
    lambda: Image.new("RGBA", (40, 30), (255, 0, 0, 0)),
])
def test_unusual_modes_become_rgb(make) -> None:
    img = make()
    fmt = "JPEG" if img.mode in ("CMYK", "L") else "PNG"
    out = decode_image(_encode(img, fmt))
    assert out.mode == "RGB" and out.size == (40, 30)


def test_fully_transparent_pixels_become_white() -> None:
    out = decode_image(_encode(Image.new("RGBA", (8, 8), (255, 0, 0, 0)), "PNG"))
    assert out.getpixel((4, 4)) == (255, 255, 255)


def test_16_bit_image_keeps_its_contrast() -> None:
    arr = np.tile(np.linspace(0, 65535, 64, dtype=np.uint16), (16, 1))
    out = decode_image(_encode(Image.fromarray(arr), "PNG"))
    row = np.asarray(out)[0, :, 0]
    assert row[0] < 10 and row[-1] > 245


def test_animated_gif_uses_first_frame() -> None:
    frames = [Image.new("RGB", (20, 20), c) for c in ((255, 0, 0), (0, 0, 255))]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:])
    out = decode_image(buf.getvalue())
    r, _, b = out.getpixel((10, 10))
    assert r > 200 and b < 50


def test_exif_orientation_is_applied() -> None:
    img = Image.new("RGB", (60, 20), (0, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise when displayed
    out = decode_image(_encode(img, "JPEG", exif=exif.tobytes()))
    assert out.size == (20, 60)


@pytest.mark.parametrize("fit", ["pad", "crop"])
def test_preprocess_shape_and_range(fit: str) -> None:
    p = ImagePreprocess(fit=fit)
    x = preprocess(Image.new("RGB", (60, 80), (255, 255, 255)), p)
    assert x.shape == (3, 224, 224) and x.dtype == np.float32
    assert np.allclose(x, 1.0, atol=1e-6)  # white maps to +1 with mean = std = 0.5


def test_pad_keeps_whole_product_visible() -> None:
    img = Image.new("RGB", (60, 80), (0, 0, 0))  # a dark product filling a portrait photo
    x = preprocess(img, ImagePreprocess(fit="pad"))
    assert x[:, 112, 5].max() > 0.9  # white padding at the left edge
    assert x[:, 112, 112].max() < -0.9  # product in the middle


def _flat_jpeg(w: int, h: int) -> bytes:
    return _encode(Image.new("L", (w, h), 180), "JPEG", quality=80)  # a flat colour: megapixels, few bytes


def test_big_photo_above_the_limit_gets_kuamos_message_not_pillows() -> None:
    data = _flat_jpeg(11_880, 7_920)  # 94.1 megapixels: above Pillow's own warning limit (89.5)
    with pytest.raises(InvalidInput) as exc:
        decode_image(data, max_pixels=40_000_000)
    assert exc.value.message == ("photo has 94.1 megapixels, above the limit of 40000000; raise "
                                 "--max-image-pixels (max_image_pixels) to accept it")
    assert exc.value.field == "image"
    with pytest.raises(InvalidInput) as exc:  # past twice Pillow's limit, where Pillow raises instead of warning
        decode_image(_png_header_only(20_000, 10_000), max_pixels=40_000_000)
    assert exc.value.message.startswith("photo has 200.0 megapixels") and "bomb" not in exc.value.message


def test_big_jpeg_below_the_limit_is_decoded_small() -> None:
    img = decode_image(_flat_jpeg(11_880, 7_920), max_pixels=100_000_000)
    assert img.mode == "RGB" and img.size == (5_940, 3_960)  # DCT-scaled 1/2: longest side >= MAX_SIDE (4096)
    assert img.getpixel((10, 10)) == (180, 180, 180)
    small = decode_image(_flat_jpeg(640, 480))
    assert small.size == (640, 480)  # ordinary photos are untouched


def test_big_png_is_reduced_after_decoding() -> None:
    img = decode_image(_encode(Image.new("RGB", (9_000, 300), (10, 200, 30)), "PNG"))
    assert img.size == (4_500, 150) and img.getpixel((0, 0)) == (10, 200, 30)
