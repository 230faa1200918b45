"""What hypothesis throws at an engine server's websocket (tests/unit/test_http.py for
`serve --http`, tests/e2e/test_ray.py for the Ray Serve ingress): bytes that are no frame, frames
whose lengths do not add up, and well-formed frames with wrong fields."""

from __future__ import annotations

import json
import struct
from collections.abc import Callable, Iterator
from typing import Any

from hypothesis import strategies as st
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection

from spatiora_tui.remote import frames
from spatiora_tui.remote.frames import pack, unpack
from spatiora_tui.remote.server import PROTOCOL

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8,
)
KINDS = st.sampled_from(
    [
        "generate",
        "switch_task",
        "switch_model",
        "prefetch",
        "load",
        "state",
        "models",
        "cancel",
        "queue",
        "hardware",
        "echo",
        "nope",
    ]
)
FIELDS = st.dictionaries(
    st.sampled_from(
        [
            "request",
            "name",
            "task",
            "target",
            "job",
            "source",
            "client",
            "preview_side",
            "preview_format",
            "image_format",
        ]
    ),
    JSON,
)


def wrong_lengths() -> st.SearchStrategy[bytes]:
    """A valid JSON part under a header whose lengths do not add up (or are over the limits)."""
    body = json.dumps({"type": "hello", "id": 1}).encode()
    lengths = st.tuples(
        st.integers(0, 2 * len(body)) | st.just(frames.MAX_JSON + 1), st.integers(0, 64) | st.just(frames.MAX_BLOB + 1)
    )
    return lengths.filter(lambda n: n != (len(body), 0)).map(lambda n: struct.pack(">II", *n) + body)


def answers(ws: ClientConnection) -> Iterator[dict[str, Any]]:
    """Frames until the server closes the connection."""
    try:
        while True:
            data = ws.recv(timeout=10)
            assert isinstance(data, bytes), "the server sends frames only"
            yield unpack(data)[0]
    except ConnectionClosed:
        return


def still_served(ws: ClientConnection, rid: int) -> None:
    ws.send(pack({"type": "hello", "id": rid}))
    frame = unpack(ws.recv(timeout=10))[0]  # type: ignore[arg-type]
    assert (frame["type"], frame["id"], frame["protocol"]) == ("ok", rid, PROTOCOL)


def no_frame(connect: Callable[[], ClientConnection], watcher: ClientConnection, data: bytes | str) -> None:
    """Bytes (or text) that are no frame: that connection is closed with a reason, and `watcher`,
    connected throughout, is still answered."""
    with connect() as ws:
        ws.send(data)
        said = list(answers(ws))
    try:
        valid = isinstance(data, bytes) and unpack(data)[0] is not None
    except frames.FrameError:
        valid = False
    if not valid:
        assert said and said[-1]["type"] == "error" and said[-1]["kind"] == "frame", said
    still_served(watcher, 1)


def wrong_fields(connect: Callable[[], ClientConnection], watcher: ClientConnection, batch: list[Any]) -> None:
    """Well-formed frames with wrong fields: each gets an answer on its connection, and the
    server goes on answering `watcher`."""
    with connect() as ws:
        for n, (kind, fields) in enumerate(batch):
            ws.send(pack({**fields, "type": kind, "id": 100 + n}))
        ws.send(pack({"type": "hello", "id": 99}))
        answered: set[int] = set()
        for frame in answers(ws):
            assert frame["type"] in ("ok", "error", "step", "progress", "queued"), frame
            if frame["type"] in ("ok", "error"):
                answered.add(frame["id"])
            if answered >= {99, *(100 + n for n in range(len(batch)))}:
                break
        else:
            raise AssertionError(f"the connection closed with {answered} answered")
    still_served(watcher, 2)
