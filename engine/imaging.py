"""Safe image decoding and the one preprocessing function the runtime and the exporter share."""

from __future__ import annotations

import io
import math
import re
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from kuamo.engine.errors import InvalidInput

_RESAMPLE = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR}
# Longest side preprocess works on; larger photos are first scaled down to it (ordinary photos are untouched).
MAX_SIDE = 4096


@dataclass(frozen=True, kw_only=True)
class ImagePreprocess:
    """How a photo becomes a tensor. Stored in the manifest so runtime and export agree."""

    size: int = 224
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    interpolation: str = "bicubic"
    # Product photos are framed to show the whole item: pad to a square instead of cropping it away.
    fit: str = "pad"  # pad | crop
    pad_colour: tuple[int, int, int] = (255, 255, 255)

    def to_dict(self) -> dict:
        return {"size": self.size, "mean": list(self.mean), "std": list(self.std),
                "interpolation": self.interpolation, "fit": self.fit, "pad_colour": list(self.pad_colour),
                "layout": "NCHW", "colour": "RGB", "exif_transpose": True}

    @classmethod
    def from_dict(cls, d: dict) -> ImagePreprocess:
        return cls(size=int(d["size"]), mean=tuple(d["mean"]), std=tuple(d["std"]),
                   interpolation=d.get("interpolation", "bicubic"), fit=d.get("fit", "pad"),
                   pad_colour=tuple(d.get("pad_colour", (255, 255, 255))))


def _plain(exc: BaseException) -> str:
    """A decoder's complaint without Python object reprs ("<_io.BytesIO object at 0x...>")."""
    text = re.sub(r"\s*<[^<>]* at 0x[0-9a-fA-F]+>", "", str(exc)).strip()
    return text.lower() if text else "the decoder gave no reason"


def _too_big(pixels: int, max_pixels: int) -> InvalidInput:
    return InvalidInput(f"photo has {pixels / 1e6:.1f} megapixels, above the limit of {max_pixels}; raise "
                        "--max-image-pixels (max_image_pixels) to accept it", field="image")


def _open(data: bytes, max_pixels: int) -> Image.Image:
    """Image.open with kuamo's pixel limit instead of Pillow's global one (whose warning and error would
    otherwise speak first, in Pillow's words, at 89 and 179 megapixels)."""
    if Image.MAX_IMAGE_PIXELS is not None and Image.MAX_IMAGE_PIXELS < max_pixels:
        Image.MAX_IMAGE_PIXELS = max_pixels  # process-wide, only ever raised to a limit kuamo was given
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # kuamo checks the size itself
        try:
            return Image.open(io.BytesIO(data))
        except Image.DecompressionBombError as exc:  # more than twice Pillow's limit: far above ours too
            found = re.search(r"\((\d+) pixels\)", str(exc))
            raise _too_big(int(found.group(1)) if found else 2 * max_pixels + 1, max_pixels) from None


def is_image(data: bytes) -> bool:
    """Whether Pillow recognises the bytes as a photo format (the header only; a photo above the pixel limit
    counts: decode_image refuses it later with its own reason)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            with Image.open(io.BytesIO(data)) as img:
                return bool(img.format)
        except Image.DecompressionBombError:
            return True
        except (UnidentifiedImageError, OSError, ValueError):
            return False


def _shrink_on_decode(img: Image.Image, max_side: int) -> Image.Image:
    """Decode a big photo at a reduced size: JPEG through its DCT scaling (draft: 1/2, 1/4, 1/8, never
    below max_side), others by an integer reduce after decoding. Photos within max_side are untouched."""
    w, h = img.size
    if max(w, h) <= max_side:
        return img
    if img.format == "JPEG":
        scale = max_side / max(w, h)
        img.draft("RGB", (max(1, math.ceil(w * scale)), max(1, math.ceil(h * scale))))
        img.load()
        return img
    img.load()
    factor = max(w, h) // max_side
    return img.reduce(factor) if factor >= 2 and img.mode in ("RGB", "RGBA", "L", "LA", "CMYK") else img


def decode_image(data: bytes, *, max_bytes: int = 20 * 1024 * 1024, max_pixels: int = 40_000_000,
                 max_side: int = MAX_SIDE) -> Image.Image:
    """Bytes -> upright RGB PIL image, or InvalidInput saying what is wrong with the bytes. Photos up to
    `max_pixels` are accepted, big ones decoded straight to about `max_side` (what preprocess works on)."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise InvalidInput(f"image must be bytes, got {type(data).__name__}", field="image")
    if len(data) == 0:
        raise InvalidInput("image is empty (0 bytes)", field="image")
    if len(data) > max_bytes:
        raise InvalidInput(f"image is {len(data)} bytes, above the limit of {max_bytes}", field="image")
    try:
        img = _open(bytes(data), max_pixels)
        w, h = img.size
        if w <= 0 or h <= 0:
            raise InvalidInput(f"image has no pixels ({w}x{h})", field="image")
        if w * h > max_pixels:
            raise _too_big(w * h, max_pixels)
        img.seek(0)  # animated images: first frame
        img = _shrink_on_decode(img, max_side)
        img.load()
        img = ImageOps.exif_transpose(img)
        return to_rgb(img)
    except InvalidInput:
        raise
    except UnidentifiedImageError as exc:  # Pillow's message names its BytesIO object: say it in words
        raise InvalidInput("not a decodable image (kuamo reads JPEG, PNG, WebP, GIF, BMP and TIFF)",
                           field="image") from exc
    except Image.DecompressionBombError as exc:
        raise InvalidInput(f"not a decodable image: {exc}", field="image") from exc
    except Exception as exc:  # Pillow's plugins raise many types on hostile bytes (TypeError from a bad TIFF...)
        raise InvalidInput(f"the image is corrupt or truncated ({_plain(exc)})", field="image") from exc


def to_rgb(img: Image.Image) -> Image.Image:
    """Any mode (palette, CMYK, 16-bit, LA, RGBA) -> RGB; transparency composited onto white."""
    if img.mode == "RGB":
        return img
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img, dtype=np.float64)
        top = float(arr.max()) or 1.0
        img = Image.fromarray((arr * (255.0 / top)).clip(0, 255).astype(np.uint8), mode="L")
    if img.mode == "P" or img.mode in ("LA", "RGBA", "PA") or "transparency" in img.info:
        img = img.convert("RGBA")
        background = Image.new("RGBA", img.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, img)
    return img.convert("RGB")


def preprocess(img: Image.Image, p: ImagePreprocess) -> np.ndarray:
    """RGB image -> float32 CHW tensor normalised as the tower expects."""
    resample = _RESAMPLE[p.interpolation]
    w, h = img.size
    if max(w, h) > MAX_SIDE:  # a long thin photo (1 x 100000 passes the pixel limit): shrink it first,
        scale = MAX_SIDE / max(w, h)  # or the padded square / the short-side resize needs gigabytes
        img = img.resize((max(1, round(w * scale)), max(1, round(h * scale))), resample)
        w, h = img.size
    if p.fit == "pad":
        side = max(w, h)
        if (w, h) != (side, side):
            canvas = Image.new("RGB", (side, side), tuple(p.pad_colour))
            canvas.paste(img, ((side - w) // 2, (side - h) // 2))
            img = canvas
        img = img.resize((p.size, p.size), resample)
    else:
        if max(w, h) > 16 * min(w, h):  # only the centre square survives: drop the far ends of a long strip first
            cw, ch = min(w, 16 * h), min(h, 16 * w)
            img = img.crop(((w - cw) // 2, (h - ch) // 2, (w - cw) // 2 + cw, (h - ch) // 2 + ch))
            w, h = img.size
        scale = p.size / min(w, h)
        img = img.resize((max(p.size, round(w * scale)), max(p.size, round(h * scale))), resample)
        left, top = (img.width - p.size) // 2, (img.height - p.size) // 2
        img = img.crop((left, top, left + p.size, top + p.size))
    x = np.asarray(img, dtype=np.float32) / 255.0
    x = (x - np.asarray(p.mean, dtype=np.float32)) / np.asarray(p.std, dtype=np.float32)
    return np.ascontiguousarray(x.transpose(2, 0, 1))
