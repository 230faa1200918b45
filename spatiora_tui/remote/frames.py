"""Frames: how messages cross a byte stream (a pipe, an SSH channel) or a websocket (one frame
per binary message, the same bytes).

A frame is an 8-byte header (two big-endian unsigned 32-bit lengths: the JSON part, the binary
part), a JSON object, and its binary payload (an image as PNG, or nothing). Lengths are checked
before anything is read: a frame over MAX_JSON / MAX_BLOB bytes, JSON that is not an object, or a
stream that ends mid-frame is a FrameError, and the connection is dropped.
"""

from __future__ import annotations

import json
import struct
import threading
from typing import Any, BinaryIO

HEADER = struct.Struct(">II")
#: Largest JSON part (a result with its stages and warnings is a few KB).
MAX_JSON = 1 << 20
#: Largest binary part (a 4096x4096 PNG of noise is about 50 MB).
MAX_BLOB = 64 << 20


class FrameError(Exception):
    """The stream does not hold a valid frame; the connection cannot go on."""


class Closed(FrameError):
    """The stream ended cleanly between frames."""


def read_exact(stream: BinaryIO, size: int) -> bytes:
    chunks, left = [], size
    while left:
        chunk = stream.read(left)
        if not chunk:
            raise FrameError(f"the stream ended {left} bytes before the end of a frame")
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def read_frame(stream: BinaryIO) -> tuple[dict[str, Any], bytes]:
    """The next frame's message and payload; Closed at a clean end of the stream."""
    first = stream.read(HEADER.size)
    if not first:
        raise Closed("the other side closed the connection")
    head = first if len(first) == HEADER.size else first + read_exact(stream, HEADER.size - len(first))
    json_len, blob_len = HEADER.unpack(head)
    if json_len > MAX_JSON or blob_len > MAX_BLOB:
        raise FrameError(f"a frame of {json_len} + {blob_len} bytes is over the limit ({MAX_JSON} + {MAX_BLOB})")
    message = _message(read_exact(stream, json_len))
    return message, read_exact(stream, blob_len) if blob_len else b""


def unpack(data: bytes) -> tuple[dict[str, Any], bytes]:
    """A frame that arrived whole (a websocket message): the same checks as read_frame, and its
    header's lengths must add up to the message's."""
    if len(data) < HEADER.size:
        raise FrameError(f"a frame of {len(data)} bytes is shorter than its header")
    json_len, blob_len = HEADER.unpack_from(data)
    if json_len > MAX_JSON or blob_len > MAX_BLOB:
        raise FrameError(f"a frame of {json_len} + {blob_len} bytes is over the limit ({MAX_JSON} + {MAX_BLOB})")
    if HEADER.size + json_len + blob_len != len(data):
        raise FrameError(f"a frame's header says {json_len} + {blob_len} bytes and the message holds {len(data)}")
    return _message(data[HEADER.size : HEADER.size + json_len]), data[HEADER.size + json_len :]


def pack(message: dict[str, Any], blob: bytes = b"") -> bytes:
    """One frame as bytes; FrameError when a part is over its limit."""
    data = json.dumps(message, separators=(",", ":")).encode("utf-8")
    if len(data) > MAX_JSON or len(blob) > MAX_BLOB:
        raise FrameError(f"a {message.get('type')} frame is over the limit")
    return HEADER.pack(len(data), len(blob)) + data + blob


def _message(data: bytes) -> dict[str, Any]:
    try:
        message = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise FrameError(f"a frame's JSON part does not parse: {exc}") from None
    except RecursionError:
        raise FrameError("a frame's JSON part is nested too deeply") from None
    if not isinstance(message, dict) or not isinstance(message.get("type"), str):
        raise FrameError("a frame's JSON part is not an object with a type")
    return message


class FrameWriter:
    """Writes whole frames; several threads may send at once."""

    def __init__(self, stream: BinaryIO) -> None:
        self._stream = stream
        self._lock = threading.Lock()

    def send(self, message: dict[str, Any], blob: bytes = b"") -> None:
        frame = pack(message, blob)
        with self._lock:
            self._stream.write(frame)
            self._stream.flush()
