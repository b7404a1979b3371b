"""Binary encodings used by the component catalogue.

The web client expects compact binary buffers for large geometry and images:

* point/mesh vertices and UVs: little-endian float16, flattened C order;
* mesh faces: little-endian uint32;
* colors: uint8 RGB (alpha dropped; float input in [0, 1] scaled by 255);
* images: PNG or JPEG bytes, or a ``data:image/...;base64,`` URL string.

All functions are pure and never modify their input.
"""

from __future__ import annotations

import base64
from io import BytesIO
from pathlib import PurePath
from typing import Any, Optional, Tuple, Union

import numpy as np
from PIL import Image as _PILImage

__all__ = [
    "IMAGE_FORMATS",
    "float16_bytes",
    "uint32_bytes",
    "rgb_bytes",
    "to_uint8",
    "encode_image",
]

#: accepted ``format=`` values of the image components -> (PIL format, base64?)
IMAGE_FORMATS = {
    "png": ("PNG", False),
    "jpeg": ("JPEG", False),
    "jpg": ("JPEG", False),
    "b64png": ("PNG", True),
    "b64jpeg": ("JPEG", True),
    "b64jpg": ("JPEG", True),
}
_JPEG_DEFAULT_QUALITY = 90  # for arrays, as vuer's serdes.jpeg; PIL input keeps PIL's 75
_URL_PREFIXES = ("http://", "https://", "data:", "blob:")
_BINARY = (bytes, bytearray, memoryview, str)


def float16_bytes(a: Any) -> Any:
    """``a`` as flattened little-endian float16 bytes (bytes/str pass through)."""
    if isinstance(a, _BINARY):
        return a
    return np.asarray(a).astype("<f2").tobytes()


def uint32_bytes(a: Any) -> Any:
    """``a`` as flattened little-endian uint32 bytes (bytes/str pass through)."""
    if isinstance(a, _BINARY):
        return a
    return np.asarray(a).astype("<u4").tobytes()


def to_uint8(a: np.ndarray) -> np.ndarray:
    """Map an array to uint8 without touching the input.

    uint8 is kept; floats are taken as [0, 1] and scaled by 255 (truncated, as
    vuer does), clipped to [0, 255]; bools map to 0/255; other integer types are
    taken as already in [0, 255] and clipped (vuer multiplies them by 255 too,
    which wraps around: a deliberate fix).
    """
    a = np.asarray(a)
    kind = a.dtype.kind
    if a.dtype == np.uint8:
        return a
    if kind == "b":
        return a.astype(np.uint8) * np.uint8(255)
    if kind in "iu":
        return np.clip(a, 0, 255).astype(np.uint8)
    return np.clip(a * 255, 0, 255).astype(np.uint8)


def rgb_bytes(colors: Any) -> Any:
    """Per-vertex colors as flattened uint8 RGB bytes (RGBA -> RGB)."""
    if isinstance(colors, _BINARY):
        return colors
    c = np.asarray(colors)
    if c.ndim and c.shape[-1] == 4:
        c = c[..., :3]
    return to_uint8(c).tobytes()


ImageData = Union[str, PurePath, np.ndarray, "_PILImage.Image", bytes]


def _save(img: _PILImage.Image, pil_format: str, quality: Optional[int]) -> bytes:
    if pil_format == "JPEG" and img.mode not in ("RGB", "L", "CMYK"):
        img = img.convert("L" if img.mode in ("LA", "I", "I;16", "F") else "RGB")
    kw = {} if quality is None else {"quality": quality}
    with BytesIO() as buf:
        img.save(buf, format=pil_format, **kw)
        return buf.getvalue()


def encode_image(
    data: Any, format: str = "png", quality: Optional[int] = None
) -> Tuple[Union[bytes, str], Optional[int], Optional[int]]:
    """Encode image ``data`` -> ``(src, width, height)``.

    ``data`` may be an ``(H, W)``, ``(H, W, 1|3|4)`` array (uint8, or floats in
    [0, 1]), a PIL image, or a file path (str/Path; re-encoded in ``format``).
    ``format`` is ``png`` (default), ``jpeg``, ``b64png`` or ``b64jpeg``; the b64
    forms return a data-URL string instead of bytes. Already-encoded ``bytes`` and
    URL strings (``http(s)://``, ``data:``, ``blob:``) are returned unchanged with
    unknown size.
    """
    try:
        pil_format, as_b64 = IMAGE_FORMATS[format.lower()]
    except (KeyError, AttributeError):
        raise ValueError(
            f"unknown image format {format!r}; use one of {sorted(IMAGE_FORMATS)}"
        ) from None
    if isinstance(data, (bytes, bytearray, memoryview)):
        return bytes(data), None, None
    if isinstance(data, str) and data.startswith(_URL_PREFIXES):
        return data, None, None

    if isinstance(data, _PILImage.Image):
        width, height = data.size
        raw = _save(data, pil_format, quality)
    elif isinstance(data, (str, PurePath)):
        with _PILImage.open(data) as img:
            img.load()
            width, height = img.size
            raw = _save(img, pil_format, quality)
    elif isinstance(data, (np.ndarray, list, tuple)):
        arr = to_uint8(np.asarray(data))
        if arr.ndim == 3 and arr.shape[2] == 1:
            arr = arr[:, :, 0]
        if arr.ndim not in (2, 3):
            raise ValueError(f"image arrays must be (H, W) or (H, W, C), got {arr.shape}")
        if pil_format == "JPEG" and arr.ndim == 3 and arr.shape[2] == 4:
            arr = arr[:, :, :3]  # JPEG has no alpha
        height, width = arr.shape[:2]
        img = _PILImage.fromarray(arr)
        if pil_format == "JPEG":
            raw = _save(img, pil_format, _JPEG_DEFAULT_QUALITY if quality is None else quality)
        else:
            raw = _save(img, pil_format, None)
    else:
        raise TypeError(
            f"cannot make an image from {type(data).__name__}; pass an array, a PIL "
            "image, a file path, encoded bytes, or src=<url>"
        )
    if as_b64:
        mime = "png" if pil_format == "PNG" else "jpeg"
        return f"data:image/{mime};base64,{base64.b64encode(raw).decode('ascii')}", width, height
    return raw, width, height
