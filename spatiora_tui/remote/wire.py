"""The contract's dataclasses (engine/api.py, TaskSettings) as JSON and back.

Encoding walks dataclass fields; decoding follows the field's type hints, so a new field of the
contract crosses the wire without code here. A Notice keeps its kind. Images never go into the
JSON: the protocol sends them as the frame's binary part: a finished image as PNG (lossless),
a step preview in the format the client asked for (JPEG by default: a tenth of PNG's encoding
time on the server, which shares the machine with the denoising).
"""

from __future__ import annotations

import dataclasses
import io
import types
import typing
from enum import Enum
from functools import cache
from typing import Any

from spatiora_tui.notices import Notice, NoticeKind

T = typing.TypeVar("T")


class WireError(ValueError):
    """A message's fields do not fit the type they should decode to."""


def encode(obj: Any) -> Any:
    if isinstance(obj, Notice):
        return {"notice": obj.kind.value, "text": str(obj)}
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: encode(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (tuple, list)):
        return [encode(item) for item in obj]
    if isinstance(obj, dict):
        return {str(key): encode(value) for key, value in obj.items()}
    if isinstance(obj, Enum):
        return obj.value
    if obj is None or isinstance(obj, (str, int, float, bool)):
        return obj
    raise WireError(f"{type(obj).__name__} does not cross the wire")


@cache
def _hints(cls: type) -> dict[str, Any]:
    from PIL.Image import Image

    from spatiora_tui.config import Settings, TaskSettings

    names = {"Image": Image, "Settings": Settings, "TaskSettings": TaskSettings, "Notice": Notice}
    return typing.get_type_hints(cls, localns=names)


def decode(kind: Any, data: Any) -> Any:
    """`data` (decoded JSON) as a value of type `kind`."""
    origin = typing.get_origin(kind)
    if kind is Any:
        return data
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(kind)
        if data is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return decode(option, data)
            except (WireError, TypeError, ValueError) as exc:
                errors.append(str(exc))
        raise WireError(f"{data!r} is none of {kind}: {'; '.join(errors)}")
    if origin is typing.Literal:
        if data not in typing.get_args(kind):
            raise WireError(f"{data!r} is not one of {typing.get_args(kind)}")
        return data
    if origin is tuple:
        args = typing.get_args(kind)
        if not isinstance(data, list):
            raise WireError(f"expected a list, got {type(data).__name__}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(decode(args[0], item) for item in data)
        if len(args) != len(data):
            raise WireError(f"expected {len(args)} items, got {len(data)}")
        return tuple(decode(a, item) for a, item in zip(args, data))
    if origin is dict:
        key_type, value_type = typing.get_args(kind)
        if not isinstance(data, dict):
            raise WireError(f"expected an object, got {type(data).__name__}")
        return {decode(key_type, k): decode(value_type, v) for k, v in data.items()}
    if isinstance(kind, type) and dataclasses.is_dataclass(kind):
        if not isinstance(data, dict):
            raise WireError(f"{kind.__name__}: expected an object, got {type(data).__name__}")
        hints = _hints(kind)
        known = {f.name for f in dataclasses.fields(kind) if f.init}
        unknown = set(data) - known
        if unknown:
            raise WireError(f"{kind.__name__}: unknown fields {sorted(unknown)}")
        try:
            return kind(**{name: decode(hints[name], value) for name, value in data.items()})
        except TypeError as exc:
            raise WireError(f"{kind.__name__}: {exc}") from None
    if kind is str:
        if isinstance(data, dict) and set(data) == {"notice", "text"}:
            return Notice(NoticeKind(data["notice"]), str(data["text"]))
        if not isinstance(data, str):
            raise WireError(f"expected text, got {type(data).__name__}")
        return data
    if kind is Notice:
        if not isinstance(data, dict) or set(data) != {"notice", "text"}:
            raise WireError("expected a notice")
        return Notice(NoticeKind(data["notice"]), str(data["text"]))
    if kind is float:
        if isinstance(data, bool) or not isinstance(data, (int, float)):
            raise WireError(f"expected a number, got {type(data).__name__}")
        return float(data)
    if kind is int or kind is bool:
        if not isinstance(data, kind) or (kind is int and isinstance(data, bool)):
            raise WireError(f"expected {kind.__name__}, got {type(data).__name__}")
        return data
    if isinstance(kind, type) and issubclass(kind, Enum):
        return kind(data)
    if data is None:
        return None
    raise WireError(f"cannot decode {kind}")


def decode_as(kind: type[T], data: Any) -> T:
    """decode() for a dataclass type, typed as that type."""
    return typing.cast(T, decode(kind, data))


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
