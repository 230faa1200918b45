"""The contract's dataclasses (engine/api.py, TaskSettings) as JSON and back: one codec for every
place a request or a result is written down (the engine's wire, the queue file, an image's
settings read back).

Encoding walks dataclass fields; decoding follows the field's type hints, so a new field of the
contract is carried without code here, and a value of the wrong type is refused naming its field
(a queue file with "steps": "20" is refused when it is read, not when the job runs). A Notice
keeps its kind. Importable without torch.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from enum import Enum
from functools import cache
from typing import Any

from spatiora_tui.notices import Notice, NoticeKind

T = typing.TypeVar("T")


class CodecError(ValueError):
    """A value does not fit the type it should decode to; the message names the field."""


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
    raise CodecError(f"{type(obj).__name__} does not cross the wire")


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
        given = [option for option in options if option is not type(None)]
        if len(given) == 1:  # X | None: said as X's own error
            return decode(given[0], data)
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return decode(option, data)
            except (CodecError, TypeError, ValueError) as exc:
                errors.append(str(exc))
        raise CodecError(f"{data!r} is none of {kind}: {'; '.join(errors)}")
    if origin is typing.Literal:
        if data not in typing.get_args(kind):
            raise CodecError(f"{data!r} is not one of {typing.get_args(kind)}")
        return data
    if origin is tuple:
        args = typing.get_args(kind)
        if not isinstance(data, list):
            raise CodecError(f"expected a list, got {type(data).__name__}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(decode(args[0], item) for item in data)
        if len(args) != len(data):
            raise CodecError(f"expected {len(args)} items, got {len(data)}")
        return tuple(decode(a, item) for a, item in zip(args, data))
    if origin is dict:
        key_type, value_type = typing.get_args(kind)
        if not isinstance(data, dict):
            raise CodecError(f"expected an object, got {type(data).__name__}")
        return {decode(key_type, k): decode(value_type, v) for k, v in data.items()}
    if isinstance(kind, type) and dataclasses.is_dataclass(kind):
        if not isinstance(data, dict):
            raise CodecError(f"{kind.__name__}: expected an object, got {type(data).__name__}")
        hints = _hints(kind)
        known = {f.name for f in dataclasses.fields(kind) if f.init}
        unknown = set(data) - known
        if unknown:
            raise CodecError(f"{kind.__name__}: unknown fields {sorted(unknown)}")
        values = {}
        for name, value in data.items():
            try:
                values[name] = decode(hints[name], value)
            except (CodecError, TypeError, ValueError) as exc:
                raise CodecError(f"{kind.__name__}.{name}: {exc}") from None
        try:
            return kind(**values)
        except TypeError as exc:
            raise CodecError(f"{kind.__name__}: {exc}") from None
    if kind is str:
        if isinstance(data, dict) and set(data) == {"notice", "text"}:
            return Notice(NoticeKind(data["notice"]), str(data["text"]))
        if not isinstance(data, str):
            raise CodecError(f"expected text, got {type(data).__name__}")
        return data
    if kind is Notice:
        if not isinstance(data, dict) or set(data) != {"notice", "text"}:
            raise CodecError("expected a notice")
        return Notice(NoticeKind(data["notice"]), str(data["text"]))
    if kind is float:
        if isinstance(data, bool) or not isinstance(data, (int, float)):
            raise CodecError(f"expected a number, got {type(data).__name__}")
        return float(data)
    if kind is int or kind is bool:
        if not isinstance(data, kind) or (kind is int and isinstance(data, bool)):
            raise CodecError(f"expected {kind.__name__}, got {type(data).__name__}")
        return data
    if isinstance(kind, type) and issubclass(kind, Enum):
        return kind(data)
    if data is None:
        return None
    raise CodecError(f"cannot decode {kind}")


def decode_as(kind: type[T], data: Any) -> T:
    """decode() for a dataclass type, typed as that type."""
    return typing.cast(T, decode(kind, data))
