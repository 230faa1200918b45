"""How the contract crosses the engine's link: its dataclasses as JSON by engine/codec.py (the
one codec), images as the frame's binary part: a finished image as PNG (lossless) or raw pixels,
a step preview in the format the client asked for (JPEG by default: a tenth of PNG's encoding
time on the server, which shares the machine with the denoising).
"""

from __future__ import annotations

import io
from typing import Any

from spatiora_tui.engine.codec import CodecError, decode, decode_as, encode

#: The codec's error, by the name the protocol's modules use.
WireError = CodecError
__all__ = ["PREVIEW_FORMATS", "RAW_MODES", "WireError", "decode", "decode_as", "encode", "image_bytes", "image_from"]


#: Formats a step preview may cross the link in: Pillow's name and its fastest settings that keep
#: a preview readable (docs/scaling.md has the encoding times and sizes).
PREVIEW_FORMATS: dict[str, tuple[str, dict[str, Any]]] = {
    "jpeg": ("JPEG", {"quality": 90}),
    "webp": ("WEBP", {"quality": 80, "method": 0}),
    "png": ("PNG", {"compress_level": 1}),
}


def image_bytes(image: Any, fmt: str = "png") -> bytes:
    """`image` in one of PREVIEW_FORMATS (PNG, lossless, for finished images)."""
    name, options = PREVIEW_FORMATS[fmt]
    if name != "PNG" and image.mode not in ("RGB", "L"):
        image = image.convert("RGB")
    buffer = io.BytesIO()
    image.save(buffer, format=name, **options)
    return buffer.getvalue()


#: Modes a finished image may cross in as raw pixels, with their bytes per pixel.
RAW_MODES = {"RGB": 3, "RGBA": 4, "L": 1}


def image_from(blob: bytes, raw: Any = None) -> Any:
    """The image in `blob`: an encoded file, or with `raw` ({"mode", "size"}) its pixels."""
    from PIL import Image

    if not blob:
        return None
    if raw is not None:
        mode, size = (
            raw.get("mode") if isinstance(raw, dict) else None,
            raw.get("size") if isinstance(raw, dict) else None,
        )
        if (
            mode not in RAW_MODES
            or not isinstance(size, list)
            or len(size) != 2
            or not all(isinstance(side, int) and side > 0 for side in size)
            or size[0] * size[1] * RAW_MODES[mode] != len(blob)
        ):
            raise WireError(f"raw pixels of {len(blob)} bytes do not fit {raw!r}")
        return Image.frombytes(mode, tuple(size), blob)
    with Image.open(io.BytesIO(blob)) as opened:
        opened.load()
        return opened.copy()
