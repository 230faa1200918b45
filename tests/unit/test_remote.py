"""The remote protocol without a subprocess: frames, the dataclass codec, and the server over a
pair of pipes in this process, driven by the fake engine."""

from __future__ import annotations

import dataclasses
import io
import json
import os
import struct
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from spatiora_tui.engine.api import GenerationRequest, GenerationResult
from spatiora_tui.notices import Notice, NoticeKind
from spatiora_tui.remote import frames
from spatiora_tui.remote.frames import Closed, FrameError, FrameWriter, read_frame
from spatiora_tui.remote.server import PROTOCOL, serve
from spatiora_tui.remote.wire import WireError, decode, encode
from tests.fake_engine import FakeEngine
from tests.helpers import LIVE_FUZZ_EXAMPLES, make_result, small_settings


def framed(message: dict[str, Any], blob: bytes = b"") -> bytes:
    buffer = io.BytesIO()
    FrameWriter(buffer).send(message, blob)
    return buffer.getvalue()


def test_a_frame_round_trips_with_its_payload_and_a_clean_end_is_closed() -> None:
    stream = io.BytesIO(framed({"type": "step", "id": 3}, b"\x89PNG") + framed({"type": "ok", "id": 4}))
    assert read_frame(stream) == ({"type": "step", "id": 3}, b"\x89PNG")
    assert read_frame(stream) == ({"type": "ok", "id": 4}, b"")
    with pytest.raises(Closed):
        read_frame(stream)


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (struct.pack(">II", frames.MAX_JSON + 1, 0), "over the limit"),
        (struct.pack(">II", 10, frames.MAX_BLOB + 1), "over the limit"),
        (struct.pack(">II", 10, 0) + b'{"typ', "ended 5 bytes before"),
        (struct.pack(">II", 3, 0) + b"[1]", "not an object with a type"),
        (struct.pack(">II", 2, 0) + b"\xff\xfe", "does not parse"),
        (b"\x00\x00", "ended"),
    ],
)
def test_a_bad_frame_is_refused_before_its_body_is_read(data: bytes, words: str) -> None:
    with pytest.raises(FrameError, match=words):
        read_frame(io.BytesIO(data))


def test_a_result_crosses_the_wire_whole_with_its_notices_kinds() -> None:
    result = dataclasses.replace(
        make_result(), image=None, warnings=(Notice(NoticeKind.INIT_IMAGE, "cropped"), "plain text")
    )
    back = decode(GenerationResult, json.loads(json.dumps(encode(result))))
    assert back == result
    assert back.warnings[0].kind is NoticeKind.INIT_IMAGE and not isinstance(back.warnings[1], Notice)


@pytest.mark.parametrize(
    "data",
    [
        {"prompt": "x", "task": "t", "colour": "red"},  # a field the contract does not have
        {"prompt": 3, "task": "t"},
        {"prompt": "x", "task": "t", "seed": "7"},
        {"prompt": "x", "task": "t", "strength": True},
        {"task": "t"},
        ["x"],
    ],
)
def test_a_request_that_does_not_fit_the_contract_is_refused(data: Any) -> None:
    with pytest.raises(WireError):
        decode(GenerationRequest, data)


class Link:
    """A server on a pair of pipes, served in a thread; frames are written and read here."""

    def __init__(self, engine: FakeEngine) -> None:
        to_server_r, self.to_server_w = os.pipe()
        self.from_server_r, from_server_w = os.pipe()
        self.send_stream = os.fdopen(self.to_server_w, "wb", buffering=0)
        self.recv_stream = os.fdopen(self.from_server_r, "rb", buffering=0)
        reader = os.fdopen(to_server_r, "rb", buffering=0)
        writer = os.fdopen(from_server_w, "wb", buffering=0)

        def run() -> None:
            serve(engine, reader, writer)
            writer.close()

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()
        self.out = FrameWriter(self.send_stream)

    def send(self, message: dict[str, Any], blob: bytes = b"") -> None:
        self.out.send(message, blob)

    def reply(self) -> dict[str, Any]:
        """The next frame other than `queued` (the job number a waiting call got)."""
        while (frame := read_frame(self.recv_stream)[0])["type"] == "queued":
            pass
        return frame


@pytest.fixture
def link(tmp_path) -> Iterator[Link]:
    engine = FakeEngine(small_settings(tmp_path))
    engine.load()
    link = Link(engine)
    yield link
    link.send_stream.close()
    link.thread.join(10)


def test_the_server_says_hello_and_answers_a_bad_request_then_keeps_serving(link: Link) -> None:
    link.send({"type": "hello", "id": 1})
    assert link.reply()["protocol"] == PROTOCOL
    link.send({"type": "launch_rockets", "id": 2})
    error = link.reply()
    assert error["type"] == "error" and error["id"] == 2 and "unknown request type" in error["message"]
    link.send({"type": "generate", "id": 3, "request": {"prompt": "x", "task": "base", "colour": "red"}})
    assert "unknown fields" in link.reply()["message"]
    link.send({"type": "state", "id": 4})
    state = link.reply()
    assert state["type"] == "ok" and [t["name"] for t in state["tasks"]] == ["interior", "floorplan", "base"]


def test_a_frame_that_cannot_be_read_ends_the_connection_with_a_reason(link: Link) -> None:
    link.send_stream.write(struct.pack(">II", frames.MAX_JSON + 1, 0))
    error = link.reply()
    assert error["type"] == "error" and error["kind"] == "frame" and "over the limit" in error["message"]
    link.thread.join(10)
    assert not link.thread.is_alive()


def test_a_cancel_frame_stops_the_generation_it_names(tmp_path) -> None:
    gate = threading.Event()
    engine = FakeEngine(small_settings(tmp_path), gate=gate)
    engine.load()
    link = Link(engine)
    link.send({"type": "generate", "id": 7, "request": {"prompt": "x", "task": "base", "seed": 1}})
    assert link.reply()["type"] == "step"  # step 1; step 2 waits at the gate
    assert engine.at_gate.wait(5)
    link.send({"type": "cancel", "id": 8, "target": 7})
    while (frame := link.reply())["type"] == "step":
        pass
    assert (frame["type"], frame["id"], frame["cancelled"]) == ("ok", 8, True), "answered at once"
    gate.set()
    while (frame := link.reply())["type"] == "step":
        pass
    assert frame["type"] == "ok" and frame["result"]["cancelled"] is True
    link.send_stream.close()
    link.thread.join(10)


@settings(max_examples=1000, deadline=None)
@given(st.binary(max_size=64))
def test_random_bytes_are_a_frame_or_a_frame_error_never_anything_else(data: bytes) -> None:
    stream = io.BytesIO(data)
    try:
        while True:
            message, _ = read_frame(stream)
            assert isinstance(message["type"], str)
    except FrameError:
        pass


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8,
)
KINDS = st.sampled_from(["generate", "switch_task", "prefetch", "load", "state", "models", "cancel", "nope"])


@settings(max_examples=LIVE_FUZZ_EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.lists(
        st.tuples(KINDS, st.dictionaries(st.sampled_from(["request", "name", "task", "target", "source"]), JSON)),
        max_size=3,
    )
)
def test_wellformed_frames_with_wrong_fields_get_an_answer_and_the_server_goes_on(link: Link, batch: list[Any]) -> None:
    for sent, (kind, fields) in enumerate(batch):
        link.send({**fields, "type": kind, "id": 100 + sent})
    link.send({"type": "hello", "id": 99})
    answered = set()
    while True:
        frame = link.reply()
        assert frame["type"] in ("ok", "error", "step", "progress")
        answered.add(frame["id"])
        if frame["id"] == 99:
            break
    expected = {100 + i for i in range(len(batch))}
    while not expected <= answered:  # the worker answers requests in order, after hello maybe
        answered.add(link.reply()["id"])


def test_an_engine_address_becomes_the_users_ssh_running_spatiora_serve(monkeypatch: pytest.MonkeyPatch) -> None:
    from spatiora_tui.remote.connect import EngineUrlError, server_argv

    monkeypatch.delenv("SPATIORA_SSH", raising=False)
    monkeypatch.delenv("SPATIORA_REMOTE_COMMAND", raising=False)
    assert server_argv("ssh://gpu-box") == ["ssh", "gpu-box", "spatiora engine bridge"]
    assert server_argv("ssh://me@gpu-box:2222/home/me/my config.toml") == [
        "ssh",
        "-p",
        "2222",
        "me@gpu-box",
        "spatiora engine bridge --config '/home/me/my config.toml'",
    ]
    monkeypatch.setenv("SPATIORA_SSH", "ssh -i ~/.ssh/box -J bastion")
    monkeypatch.setenv("SPATIORA_REMOTE_COMMAND", "~/sp/.venv/bin/spatiora")
    assert server_argv("ssh://box") == [
        "ssh",
        "-i",
        "~/.ssh/box",
        "-J",
        "bastion",
        "box",
        "~/sp/.venv/bin/spatiora engine bridge",
    ]
    for bad in ("gpu-box", "http://gpu-box", "ssh://", "ssh://box:port", "ssh://me:pw@box"):
        with pytest.raises(EngineUrlError):
            server_argv(bad)
