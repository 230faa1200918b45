"""The served engine's trust model as a property, on each transport (`serve --stdio`, `serve --http`,
the Ray Serve app): 1,000 hostile requests each (tests/hostile.py) under an audit hook in the server
process. No request may make the server open a file outside its own folders; every request gets
exactly one answer within a deadline; and a well-behaved client keeps being served meanwhile."""

from __future__ import annotations

import dataclasses
import itertools
import os
import queue
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from spatiora_tui.config import settings_to_toml
from spatiora_tui.remote.frames import FrameError, FrameWriter, pack, read_frame, unpack
from tests.helpers import small_settings
from tests.hostile import Bait, OpenLog, hostile, make_bait

#: 1,000 requests and a server's start-up take about a minute on a 2-core machine; Ray's more.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

#: Seconds a hostile request may take to be answered (a few run a tiny image-to-image).
DEADLINE_S = 60.0
#: Hostile requests per transport: 1,000 through stdio and HTTP, 200 through Ray, whose ingress
#: screens the same way before the same Hub (a Ray request costs about 0.25 s on two cores).
#: SPATIORA_SECURITY_EXAMPLES=N runs N through each (fewer for a quick look, 1000 for all).
EXAMPLES = int(os.environ.get("SPATIORA_SECURITY_EXAMPLES", "1000"))
RAY_EXAMPLES = int(os.environ.get("SPATIORA_SECURITY_EXAMPLES", "200"))
GOOD = {"prompt": "a flat", "task": "base", "steps": 1, "width": 64, "height": 64, "seed": 3}


class Frames:
    """A client speaking raw frames: send, then read each id's frames from a queue."""

    def __init__(self, send: Callable[[dict[str, Any], bytes], None]) -> None:
        self._send = send
        self.inbox: queue.Queue[dict[str, Any]] = queue.Queue()
        self.ids = itertools.count(1)
        self.finals: dict[int, int] = {}

    def received(self, frame: dict[str, Any]) -> None:
        if frame.get("type") in ("ok", "error") and isinstance(frame.get("id"), int):
            self.finals[frame["id"]] = self.finals.get(frame["id"], 0) + 1
        self.inbox.put(frame)

    def ask(self, message: dict[str, Any], blob: bytes = b"") -> dict[str, Any]:
        """Send one request; its one final frame (AssertionError past the deadline)."""
        rid = next(self.ids)
        self._send({**message, "id": rid}, blob)
        deadline = time.monotonic() + DEADLINE_S
        while True:
            try:
                frame = self.inbox.get(timeout=max(deadline - time.monotonic(), 0.01))
            except queue.Empty:
                raise AssertionError(f"no answer in {DEADLINE_S:.0f} s to {str(message)[:300]}") from None
            if frame.get("id") == rid and frame["type"] in ("ok", "error"):
                return frame

    def answered_once(self) -> None:
        twice = {rid: n for rid, n in self.finals.items() if n != 1}
        assert not twice, f"requests answered more than once: {twice}"


@dataclasses.dataclass
class Served:
    """A server under test: a raw client, a well-behaved client's count, the open log."""

    client: Frames
    log: OpenLog
    good: Callable[[], None]  # one well-behaved request, asserting it is served


def check(served: Served, message: dict[str, Any], blob: bytes, n: int) -> None:
    reply = served.client.ask(message, blob)
    if reply["type"] == "ok" and message["type"] == "generate":
        assert message["request"].get("init_image") is None or blob, "ran an init image the client did not send"
    served.client.answered_once()
    if n % 25 == 0:
        served.good()
    bad = served.log.outside()
    assert not bad, f"{str(message)[:300]} made the server open {bad[:5]}"


def server_folder(tmp: Path) -> tuple[Path, Path]:
    """A config for the tiny model in `tmp`, and its state folder."""
    config = tmp / "config.toml"
    config.write_text(settings_to_toml(small_settings(tmp)), encoding="utf-8")
    return config, tmp / "state"


@pytest.fixture(scope="module")
def bait(tmp_path_factory: pytest.TempPathFactory) -> Bait:
    return make_bait(tmp_path_factory.mktemp("bait"))


def _count() -> Iterator[int]:
    return itertools.count()


# -- serve --stdio ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def stdio(bait: Bait, tmp_path_factory: pytest.TempPathFactory, cache_dir: Path) -> Iterator[Served]:
    tmp = tmp_path_factory.mktemp("stdio")
    config, state = server_folder(tmp)
    log = OpenLog.for_server(tmp / "opens.log", bait, tmp, cache_dir)
    env = {**os.environ, **log.env(), "SPATIORA_STATE_DIR": str(state)}
    argv = [sys.executable, "-m", "spatiora_tui", "serve", "--stdio", "--config", str(config)]
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env)
    assert proc.stdin is not None and proc.stdout is not None
    writer = FrameWriter(proc.stdin)  # type: ignore[arg-type]
    client = Frames(writer.send)
    stdout = proc.stdout

    def read() -> None:
        try:
            while True:
                frame, _ = read_frame(stdout)  # type: ignore[arg-type]
                client.received(frame)
        except FrameError:
            pass

    threading.Thread(target=read, daemon=True).start()

    def good() -> None:
        assert client.ask({"type": "generate", "request": GOOD})["type"] == "ok"

    try:
        assert client.ask({"type": "load"})["type"] == "ok"
        assert str(proc.pid) in log.pids(), "the audit hook is not running in the server"
        log.outside()  # start-up's reading is not a request's
        yield Served(client, log, good)
    finally:
        proc.stdin.close()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_serve_stdio_opens_nothing_a_hostile_client_names_and_answers_each_request_once(
    stdio: Served, bait: Bait, data: st.DataObject
) -> None:
    message, blob = data.draw(hostile(bait))
    check(stdio, message, blob, next(_STDIO))


_STDIO = _count()


# -- websockets: serve --http and the Ray Serve ingress ---------------------------------------------


class Websocket:
    """A raw frames client on a websocket, its frames read on a thread."""

    def __init__(self, connect: Callable[[], Any]) -> None:
        self.ws = connect()
        self.frames = Frames(lambda message, blob: self.ws.send(pack(message, blob)))
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        try:
            while True:
                data = self.ws.recv()
                frame, _ = unpack(data)
                self.frames.received(frame)
        except Exception:
            pass

    def close(self) -> None:
        self.ws.close()


class GoodClient:
    """A well-behaved client generating in a loop on its own connection, meanwhile."""

    def __init__(self, connect: Callable[[], Any]) -> None:
        self.socket = Websocket(connect)
        self.served = 0
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                reply = self.socket.frames.ask({"type": "generate", "request": GOOD})
            except AssertionError as exc:
                self.failures.append(str(exc))
                return
            if reply["type"] == "ok":
                self.served += 1
            else:
                self.failures.append(str(reply.get("message")))
            time.sleep(0.2)

    def check(self) -> None:
        assert not self.failures, self.failures[:3]

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(DEADLINE_S)
        self.socket.close()


def opener(where: str, token: str) -> Callable[[], Any]:
    """Opens websockets to the engine at HOST:PORT with `token`."""
    from websockets.sync.client import connect

    from spatiora_tui.remote.websocket import ENGINE_PATH, MAX_MESSAGE

    return lambda: connect(
        f"ws://{where}{ENGINE_PATH}",
        additional_headers={"Authorization": f"Bearer {token}"},
        max_size=MAX_MESSAGE,
        proxy=None,
    )


def websocket_served(connect: Callable[[], Any], log: OpenLog, pids: Callable[[], set[str]]) -> Iterator[Served]:
    """`pids`: the processes that run the engine (their opens must be in the log)."""
    raw = Websocket(connect)
    good = GoodClient(connect)
    before = 0

    def progress() -> None:
        nonlocal before
        good.check()
        deadline = time.monotonic() + DEADLINE_S
        while good.served <= before and time.monotonic() < deadline:
            time.sleep(0.05)
        assert good.served > before, "the well-behaved client was not served"
        before = good.served

    try:
        assert raw.frames.ask({"type": "generate", "request": GOOD})["type"] == "ok"
        running = pids()
        assert running and running <= log.pids(), f"the audit hook is not running in the server ({running})"
        log.outside()
        yield Served(raw.frames, log, progress)
        good.check()
    finally:
        good.stop()
        raw.close()


@pytest.fixture(scope="module")
def http(bait: Bait, tmp_path_factory: pytest.TempPathFactory, cache_dir: Path) -> Iterator[Served]:
    from tests.http_server import http_server
    from tests.ray_app import free_port

    tmp = Path(tempfile.mkdtemp(prefix="sp-sec-", dir="/tmp"))
    config, _ = server_folder(tmp)
    log = OpenLog.for_server(tmp / "opens.log", bait, tmp, cache_dir)
    address = f"127.0.0.1:{free_port()}"
    with http_server(config, address, env=log.env()) as server:
        token = (server.state / "serve-token").read_text().strip()

        yield from websocket_served(opener(address, token), log, lambda: {str(server.proc.pid)})


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_serve_http_opens_nothing_a_hostile_client_names_and_answers_each_request_once(
    http: Served, bait: Bait, data: st.DataObject
) -> None:
    message, blob = data.draw(hostile(bait))
    check(http, message, blob, next(_HTTP))


_HTTP = _count()


@pytest.fixture(scope="module")
def ray(bait: Bait, ray_cluster: Path, tmp_path_factory: pytest.TempPathFactory, cache_dir: Path) -> Iterator[Served]:
    from tests.ray_app import TOKEN, deployed

    tmp = tmp_path_factory.mktemp("ray-sec")
    config, _ = server_folder(tmp)
    log = OpenLog.for_server(ray_cluster, bait, tmp, cache_dir, tmp_path_factory.getbasetemp())
    with deployed(config) as where:

        def replicas() -> set[str]:
            from spatiora_tui.remote.ray_serve import replica_stats

            return {str(entry["replica"]).rsplit(":", 1)[-1] for entry in replica_stats()}

        yield from websocket_served(opener(where, TOKEN), log, replicas)


@pytest.mark.ray
@settings(max_examples=RAY_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_serve_ray_opens_nothing_a_hostile_client_names_and_answers_each_request_once(
    ray: Served, bait: Bait, data: st.DataObject
) -> None:
    message, blob = data.draw(hostile(bait))
    check(ray, message, blob, next(_RAY))


_RAY = _count()
