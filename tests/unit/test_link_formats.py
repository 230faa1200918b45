"""How images cross a link: previews in the format the client asks for, finished images as raw
pixels on a link timed fast when it opened and as PNG on a slow one. In-process: a RemoteEngine
on a Hub with the fake engine, through a link that can be made slow."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from spatiora_tui.engine.api import EngineError, GenerationRequest, StepPreview
from spatiora_tui.remote.client import PROBE_BYTES, RAW_ABOVE, OnEnd, OnFrame, Opener, RemoteEngine
from spatiora_tui.remote.server import Hub
from spatiora_tui.remote.wire import WireError, image_bytes, image_from
from tests.fake_engine import FakeEngine
from tests.helpers import small_settings


class HubLink:
    """A link to a Hub in this process whose server-to-client bytes take `seconds_per_byte`."""

    def __init__(self, hub: Hub, on_frame: OnFrame, seconds_per_byte: float, sent: list[dict[str, Any]]) -> None:
        def deliver(message: dict[str, Any], blob: bytes) -> None:
            time.sleep(len(blob) * seconds_per_byte)
            on_frame(message, blob)

        self._connection = hub.connect("test", deliver)
        self._sent = sent

    def send(self, message: dict[str, Any], blob: bytes = b"") -> None:
        self._sent.append(message)
        self._connection.receive(message, blob)

    def close(self) -> None:
        self._connection.close()


@pytest.fixture
def hub(tmp_path: Path):
    engine = FakeEngine(small_settings(tmp_path))
    engine.load()
    hub = Hub(engine)
    yield hub
    hub.close()


def opener(hub: Hub, bytes_per_second: float | None, sent: list[dict[str, Any]]) -> Opener:
    per_byte = 0.0 if bytes_per_second is None else 1 / bytes_per_second

    def open_link(on_frame: OnFrame, on_end: OnEnd) -> HubLink:
        return HubLink(hub, on_frame, per_byte, sent)

    return open_link


REQUEST = GenerationRequest(prompt="a flat", task="base", seed=5, steps=3, width=64, height=64)


def test_a_fast_link_carries_the_finished_image_as_pixels_identical_to_png(hub: Hub) -> None:
    sent: list[dict[str, Any]] = []
    fast = RemoteEngine(opener(hub, None, sent))
    fast.link_rate = RAW_ABOVE  # as timed on a fast link (the timing itself: the slow-link test)
    assert fast.image_format == "raw"
    raw = fast.generate(REQUEST)
    png = RemoteEngine(opener(hub, None, sent), image_format="png").generate(REQUEST)
    formats = [m["image_format"] for m in sent if m["type"] == "generate"]
    assert formats == ["raw", "png"]
    assert raw.image is not None and png.image is not None
    assert raw.image.mode == png.image.mode and raw.image.size == png.image.size == (64, 64)
    assert raw.image.tobytes() == png.image.tobytes()


def test_a_slow_link_is_timed_once_and_gets_png(hub: Hub) -> None:
    sent: list[dict[str, Any]] = []
    slow = RemoteEngine(opener(hub, 2 << 20, sent))  # 2 MB/s: a probe takes about 0.13 s
    assert slow.link_rate is not None and slow.link_rate < RAW_ABOVE / 4
    assert [m["type"] for m in sent].count("echo") == 1, "a link that is plainly slow is not timed twice"
    assert slow.image_format == "png"
    result = slow.generate(REQUEST)
    assert result.image is not None and result.image.size == (64, 64)
    assert sent[-2]["type"] == "generate" and sent[-2]["image_format"] == "png"


@pytest.mark.parametrize("fmt", ["jpeg", "webp", "png"])
def test_previews_cross_in_the_format_asked_for(hub: Hub, fmt: str) -> None:
    engine = RemoteEngine(opener(hub, None, []), preview_format=fmt)
    previews: list[StepPreview] = []
    engine.generate(REQUEST, on_step=previews.append, cancel=threading.Event())
    assert [p.step for p in previews] == [1, 2, 3]
    local: list[StepPreview] = []
    hub.engine.generate(REQUEST, on_step=local.append)
    for got, want in zip(previews, local, strict=True):
        assert got.image is not None and want.image is not None and got.image.size == want.image.size
        difference = np.abs(np.asarray(got.image, dtype=int) - np.asarray(want.image, dtype=int)).max()
        assert difference == 0 if fmt == "png" else difference <= 8


def test_an_unknown_preview_format_is_refused_naming_the_ones_there_are(hub: Hub) -> None:
    engine = RemoteEngine(opener(hub, None, []), preview_format="gif")
    with pytest.raises(EngineError, match="unknown preview format 'gif': one of jpeg, webp, png"):
        engine.generate(REQUEST)


def test_the_server_echoes_what_it_is_sent_at_once(hub: Hub) -> None:
    got: list[tuple[dict[str, Any], bytes]] = []
    connection = hub.connect("probe", lambda message, blob: got.append((message, blob)))
    connection.receive({"type": "echo", "id": 1}, bytes(range(256)) * (PROBE_BYTES // 256))
    assert got == [({"type": "ok", "id": 1}, bytes(range(256)) * (PROBE_BYTES // 256))]


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "L"])
def test_raw_pixels_round_trip_and_pixels_that_do_not_fit_their_shape_are_refused(mode: str) -> None:
    rng = np.random.default_rng(0)
    shape = (24, 40) if mode == "L" else (24, 40, len(mode))
    image = Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode)
    back = image_from(image.tobytes(), {"mode": mode, "size": [40, 24]})
    assert back.mode == mode and back.tobytes() == image.tobytes()
    assert image_from(image_bytes(image)).tobytes() == image.tobytes(), "PNG stays lossless"
    for wrong in (
        {"mode": mode, "size": [40, 25]},
        {"mode": "CMYK", "size": [40, 24]},
        {"mode": mode, "size": [40]},
        {"mode": mode, "size": [-40, -24]},
        {"mode": mode, "size": ["40", 24]},
        ["RGB", [40, 24]],
    ):
        with pytest.raises(WireError, match="do not fit"):
            image_from(image.tobytes(), wrong)


class DroppableLink(HubLink):
    """A HubLink whose end can be made to happen, as when the engine process dies."""

    def __init__(self, hub: Hub, on_frame: OnFrame, on_end: OnEnd) -> None:
        super().__init__(hub, on_frame, 0.0, [])
        self._on_end = on_end
        self.dropped = False

    def send(self, message: dict[str, Any], blob: bytes = b"") -> None:
        if self.dropped:
            raise BrokenPipeError("the engine is gone")
        super().send(message, blob)

    def drop(self) -> None:
        self.dropped = True
        self._connection.close()
        self._on_end("the engine was killed")


def test_a_poll_made_while_a_new_link_opens_fails_at_once_and_leaves_the_new_link_alone(hub: Hub) -> None:
    """The TUI polls the hardware twice a second. A poll that came while a request was reopening
    the link used to write to the dead link, wait, and then mark the new link dead too: the
    request after an engine crash failed with "reconnecting failed: the link to the engine
    dropped"."""
    links: list[DroppableLink] = []
    opening, go_on = threading.Event(), threading.Event()

    def open_link(on_frame: OnFrame, on_end: OnEnd) -> DroppableLink:
        if links:  # a reopening: slow, as an engine starting
            opening.set()
            assert go_on.wait(10)
        links.append(DroppableLink(hub, on_frame, on_end))
        return links[-1]

    engine = RemoteEngine(open_link)
    engine.load()
    links[0].drop()
    failures: list[Exception] = []

    def reopen() -> None:
        try:
            engine.switch_task("base")
        except EngineError as exc:
            failures.append(exc)

    request = threading.Thread(target=reopen)
    request.start()
    assert opening.wait(10)
    began = time.monotonic()
    with pytest.raises(EngineError, match="the engine was killed"):
        engine.hardware()
    assert time.monotonic() - began < 2  # at once, not after waiting on the dead link
    go_on.set()
    request.join(10)
    assert not failures
    assert engine.active_task == "base"
    snapshot, _, _ = engine.hardware()  # the new link works
    assert len(links) == 2
    engine.close()


def test_a_watcher_hears_the_drop_before_the_waiting_call_fails_and_the_restart_after(hub: Hub) -> None:
    """What lets a UI hold its queue before the running job's failure reaches the queue's
    runner; and `restart` makes a new link only when the last one dropped."""
    links: list[DroppableLink] = []
    heard: list[tuple[str | None, bool]] = []

    def open_link(on_frame: OnFrame, on_end: OnEnd) -> DroppableLink:
        links.append(DroppableLink(hub, on_frame, on_end))
        return links[-1]

    engine = RemoteEngine(open_link)
    engine.load()
    engine.restart()
    assert len(links) == 1 and engine.down is None  # up: nothing to do
    failed = threading.Event()
    stop_watching = engine.watch_link(lambda why: heard.append((why, failed.is_set())))
    gate = threading.Event()

    def held(preview: StepPreview) -> None:
        gate.set()
        time.sleep(0.2)

    def run() -> None:
        try:
            engine.generate(REQUEST, on_step=held)
        except EngineError:
            failed.set()

    caller = threading.Thread(target=run)
    caller.start()
    assert gate.wait(10)
    links[0].drop()
    caller.join(10)
    assert failed.is_set() and engine.down == "the engine was killed"
    assert heard == [("the engine was killed", False)]  # told before the call failed
    assert engine.restart() is not None and engine.down is None and len(links) == 2
    assert heard[-1] == (None, True)
    stop_watching()
    links[1].drop()
    assert len(heard) == 2
    engine.close()
    assert engine.down is None  # closed, not down


def test_a_model_switch_is_told_to_the_other_clients_with_the_switchers_label_only(tmp_path: Path) -> None:
    from spatiora_tui.engine.api import ModelChoice

    choice = ModelChoice("other", "/models/other.safetensors", 2048.0, "SD 1.x")
    engine = FakeEngine(small_settings(tmp_path), choices=(choice,))
    engine.load()
    hub = Hub(engine)
    told: dict[str, list[tuple[str, str]]] = {"a": [], "b": []}
    a = RemoteEngine(opener(hub, None, []), label="window\x1b[2J a")
    b = RemoteEngine(opener(hub, None, []), label="window b")
    a.watch_models(lambda chosen: told["a"].append((chosen[0].name, chosen[1])))
    b.watch_models(lambda chosen: told["b"].append((chosen[0].name, chosen[1])))
    try:
        a.switch_model(choice.path)
        deadline = time.monotonic() + 5
        while not told["b"] and time.monotonic() < deadline:
            time.sleep(0.02)
        assert told == {"a": [], "b": [("other", "window[2J a")]}  # the escape byte is dropped
        assert b.model is not None and b.model.name == "other"
        b.switch_task("base")  # a task switch changes no model: nobody is told
        time.sleep(0.2)
        assert told["a"] == []
    finally:
        a.close()
        b.close()
        hub.close()


def test_a_new_user_engine_after_a_crash_gets_back_the_model_that_was_switched_to(tmp_path: Path) -> None:
    """resume=False is the user's engine: a dropped link means the engine died, and the new one
    starts on the config's model. The restart switches it to the model the old one held."""
    from spatiora_tui.engine.api import ModelChoice

    choice = ModelChoice("other", "/models/other.safetensors", 2048.0, "SD 1.x")
    hubs: list[Hub] = []
    links: list[DroppableLink] = []

    def open_link(on_frame: OnFrame, on_end: OnEnd) -> DroppableLink:
        if not links or links[-1].dropped:  # a new engine process, on the config's model
            engine = FakeEngine(small_settings(tmp_path), choices=(choice,))
            engine.load()
            hubs.append(Hub(engine))
        links.append(DroppableLink(hubs[-1], on_frame, on_end))
        return links[-1]

    client = RemoteEngine(open_link, resume=False)
    try:
        client.switch_model(choice.path)
        links[-1].drop()
        model = client.restart()
        assert len(hubs) == 2 and model is not None and model.name == "other"
        assert hubs[1].engine.model is not None and hubs[1].engine.model.name == "other"
    finally:
        client.close()
        for hub in hubs:
            hub.close()


def test_a_started_call_whose_queued_frame_came_late_fails_with_its_link_and_is_not_parked(tmp_path: Path) -> None:
    """The hub's worker may send a call's first step before the transport sends its `queued`
    frame. A started image whose link drops must fail at once (the server stopped it), not be
    taken for one still waiting and parked, which reconnected by itself behind the user's back."""
    gate = threading.Event()
    fake = FakeEngine(small_settings(tmp_path), gate=gate, gate_step=2)
    fake.load()
    hub = Hub(fake)
    links: list[DroppableLink] = []

    class LateQueued(DroppableLink):
        def __init__(self, hub: Hub, on_frame: OnFrame, on_end: OnEnd) -> None:
            held: list[tuple[dict[str, Any], bytes]] = []

            def reorder(frame: dict[str, Any], blob: bytes) -> None:
                if frame.get("type") == "queued":
                    held.append((frame, blob))  # delivered after the first step
                    return
                on_frame(frame, blob)
                while held:
                    on_frame(*held.pop())

            super().__init__(hub, reorder, on_end)

    def open_link(on_frame: OnFrame, on_end: OnEnd) -> DroppableLink:
        links.append(LateQueued(hub, on_frame, on_end))
        return links[-1]

    engine = RemoteEngine(open_link)  # resume=True: a server that outlives its links
    outcome: list[object] = []

    def run() -> None:
        try:
            outcome.append(engine.generate(REQUEST))
        except EngineError as exc:
            outcome.append(exc)

    caller = threading.Thread(target=run)
    caller.start()
    try:
        assert fake.at_gate.wait(10)  # step 1 sent (then `queued`); step 2 held
        time.sleep(0.2)
        links[0].drop()
        caller.join(10)
        assert outcome and isinstance(outcome[0], EngineError) and "the engine was killed" in str(outcome[0])
        time.sleep(0.3)
        assert len(links) == 1 and engine.reconnects == 0  # nothing reconnected by itself
    finally:
        gate.set()
        caller.join(10)
        engine.close()
        hub.close()
