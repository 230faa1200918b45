"""A .safetensors file's header, read and checked without loading a tensor (and without torch).

The format: 8 bytes little-endian N, then N bytes of JSON naming each tensor's dtype, shape and
[begin, end) byte range in the data that follows, plus an optional "__metadata__" table of
strings. Everything wrong with a download shows here: a file cut short ends before the last
tensor's range, a damaged header is not JSON or names impossible ranges.
"""

from __future__ import annotations

import json
import math
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path

from spatiora_tui.errors import EngineError

#: Bytes per element of each dtype safetensors writes.
DTYPE_SIZES = {
    "F64": 8,
    "F32": 4,
    "F16": 2,
    "BF16": 2,
    "I64": 8,
    "I32": 4,
    "I16": 2,
    "I8": 1,
    "U8": 1,
    "U16": 2,
    "U32": 4,
    "U64": 8,
    "BOOL": 1,
    "F8_E4M3": 1,
    "F8_E5M2": 1,
}
#: The largest header we accept (safetensors itself caps it at 100 MB).
MAX_HEADER = 100_000_000


class FileProblem(EngineError):
    """A model file that cannot be used; the message names the file, what is wrong and what to do."""


@dataclass(frozen=True)
class TensorInfo:
    dtype: str
    shape: tuple[int, ...]
    begin: int  # byte offsets into the data section
    end: int


@dataclass(frozen=True)
class Header:
    path: Path
    size: int  # the file's size in bytes
    data_start: int
    tensors: dict[str, TensorInfo] = field(repr=False)
    metadata: dict[str, str] = field(repr=False)

    def keys(self) -> list[str]:
        return list(self.tensors)

    def shape(self, name: str) -> tuple[int, ...] | None:
        info = self.tensors.get(name)
        return info.shape if info else None

    def has_prefix(self, prefix: str) -> bool:
        return any(key.startswith(prefix) for key in self.tensors)


def _damaged(path: Path, detail: str, kind: str = "file") -> FileProblem:
    return FileProblem(
        f"{path.name} is not a readable .safetensors {kind} ({detail}); it is damaged or was cut "
        "short while downloading: download it again"
    )


def read_header(path: Path, kind: str = "file") -> Header:
    """Read and check the header of `path` (a `kind`: "file", "checkpoint", ... as messages
    name it). Raises FileProblem with what is wrong."""
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as fh:
            prefix = fh.read(8)
            length = int.from_bytes(prefix, "little") if len(prefix) == 8 else 0
            raw = prefix + fh.read(length) if 2 <= length <= MAX_HEADER else prefix
    except OSError as exc:
        raise FileProblem(
            f"{path}: cannot read it ({exc.strerror or exc}); check the path and its permissions"
        ) from None
    return parse_header(raw, path, size, kind)


def parse_header(data: bytes, path: Path, size: int | None = None, kind: str = "file") -> Header:
    """Check the header at the start of `data` (a whole file, or its first 8 + N bytes) of a
    file of `size` bytes (default: len(data)). Raises FileProblem with what is wrong."""
    size = len(data) if size is None else size
    if len(data) < 8:
        raise _damaged(path, f"{size} bytes, shorter than a header", kind)
    length = int.from_bytes(data[:8], "little")
    if length < 2 or length > MAX_HEADER:
        raise _damaged(path, "its header length is impossible", kind)
    if 8 + length > size or 8 + length > len(data):
        raise _damaged(path, f"the header needs {8 + length:,} bytes, the file has {size:,}", kind)
    try:
        parsed = json.loads(bytes(data[8 : 8 + length]).decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise _damaged(path, "its header is not the JSON a .safetensors file starts with", kind) from None
    if not isinstance(parsed, dict):
        raise _damaged(path, "its header is not a table of tensors", kind)
    metadata = parsed.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict):
        raise _damaged(path, "its metadata is not a table", kind)
    metadata = {str(k): v if isinstance(v, str) else json.dumps(v) for k, v in metadata.items()}
    data_size = size - 8 - length
    tensors: dict[str, TensorInfo] = {}
    for name, entry in parsed.items():
        tensors[name] = _tensor(path, name, entry, data_size, kind)
    if not tensors:
        raise FileProblem(f"{path.name} holds no tensors; it is not a model file: replace it")
    return Header(path, size, 8 + length, tensors, metadata)


def _tensor(path: Path, name: str, entry: object, data_size: int, kind: str = "file") -> TensorInfo:
    if not isinstance(entry, dict):
        raise _damaged(path, f"the entry of {name!r} is not a table", kind)
    dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
    if dtype not in DTYPE_SIZES:
        raise _damaged(path, f"tensor {name!r} has an unknown dtype {dtype!r}", kind)
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
        raise _damaged(path, f"tensor {name!r} has a malformed shape", kind)
    if (
        not isinstance(offsets, list)
        or len(offsets) != 2
        or not all(isinstance(o, int) and not isinstance(o, bool) for o in offsets)
    ):
        raise _damaged(path, f"tensor {name!r} has malformed byte offsets", kind)
    begin, end = offsets
    if not 0 <= begin <= end:
        raise _damaged(path, f"tensor {name!r} has impossible byte offsets", kind)
    if end > data_size:
        raise _damaged(
            path,
            f"tensor {name!r} ends at byte {end:,} of the data, which has {data_size:,}: the file is cut short",
            kind,
        )
    if (end - begin) != math.prod(shape) * DTYPE_SIZES[dtype]:
        raise _damaged(path, f"tensor {name!r} has {end - begin:,} bytes for a {dtype} tensor of shape {shape}", kind)
    return TensorInfo(dtype, tuple(shape), begin, end)


def read_floats(header: Header, name: str, limit: int = 1 << 16) -> list[float] | None:
    """The values of a small floating-point tensor (at most `limit` elements), or None when the
    file has no such tensor. For the few values identification needs; not a loader."""
    info = header.tensors.get(name)
    if info is None or info.dtype not in ("F32", "F16", "BF16", "F64") or math.prod(info.shape) > limit:
        return None
    try:
        with open(header.path, "rb") as fh:
            fh.seek(header.data_start + info.begin)
            data = fh.read(info.end - info.begin)
    except OSError:
        return None
    if len(data) != info.end - info.begin:
        return None
    count = len(data) // DTYPE_SIZES[info.dtype]
    if info.dtype == "BF16":  # the top half of a float32
        halves = struct.unpack(f"<{count}H", data)
        return list(struct.unpack(f"<{count}f", b"".join(struct.pack("<I", h << 16) for h in halves)))
    code = {"F32": "f", "F16": "e", "F64": "d"}[info.dtype]
    return list(struct.unpack(f"<{count}{code}", data))
