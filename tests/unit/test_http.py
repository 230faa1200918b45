"""`serve --http` in this process: uvicorn on a Unix socket in a thread, the fake engine behind it.
Frames over the websocket (hypothesis, 1,000 per kind), the token, the socket's permissions and
the addresses refused. The real subprocess and the real engine are in tests/e2e/test_http.py
and the contract suite."""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import stat
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, unix_connect

from spatiora_tui import __version__
from spatiora_tui.engine.api import EngineError, GenerationRequest
from spatiora_tui.remote.client import RemoteEngine
from spatiora_tui.remote.frames import pack, unpack
from spatiora_tui.remote.http import AddressError, Listener, bound, listener, uvicorn_server
from spatiora_tui.remote.server import PROTOCOL, Hub
from spatiora_tui.remote.websocket import ENGINE_PATH, MAX_MESSAGE, websocket
from tests.fake_engine import FakeEngine
from tests.frame_fuzz import FIELDS, KINDS, no_frame, still_served, wrong_fields, wrong_lengths
from tests.helpers import LIVE_FUZZ_EXAMPLES, small_settings


@contextlib.contextmanager
def served(hub: Hub, where: Listener) -> Iterator[str | None]:
    """uvicorn serving `hub` on `where` in a thread; yields the token (None on a socket)."""
    with bound(where) as (sock, token):
        server = uvicorn_server(hub, token)
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        while not server.started:
            time.sleep(0.01)
        try:
            yield token
        finally:
            server.should_exit = True
            thread.join(10)


@pytest.fixture(scope="module")
def folder() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="sp-", dir="/tmp"))  # a socket path has at most 107 bytes
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def hub(folder: Path) -> Iterator[Hub]:
    engine = FakeEngine(small_settings(folder))
    engine.load()
    hub = Hub(engine)
    with served(hub, Listener(socket_path=folder / "e.sock")):
        yield hub
    hub.close()


def open_ws(folder: Path) -> ClientConnection:
    return unix_connect(str(folder / "e.sock"), f"ws://localhost{ENGINE_PATH}", max_size=MAX_MESSAGE, compression=None)


@pytest.fixture(scope="module")
def watcher(hub: Hub, folder: Path) -> Iterator[ClientConnection]:
    """Another client, connected throughout: after each bad frame it must still be answered."""
    ws = open_ws(folder)
    yield ws
    ws.close()


def test_the_socket_is_born_for_its_owner_only(hub: Hub, folder: Path) -> None:
    mode = (folder / "e.sock").stat().st_mode
    assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o600


def test_a_second_server_on_a_live_socket_is_refused_and_a_stale_one_is_replaced(hub: Hub, folder: Path) -> None:
    with pytest.raises(AddressError, match="another engine server is listening"), bound(Listener(folder / "e.sock")):
        pass
    stale = folder / "stale.sock"
    dead = socket.socket(socket.AF_UNIX)
    dead.bind(str(stale))
    dead.close()  # a server that died left its socket behind
    with bound(Listener(stale)) as (sock, token):
        assert token is None and sock.getsockname() == str(stale)
    assert not stale.exists(), "removed when the server stops"
    (folder / "file.sock").write_text("not a socket")
    with pytest.raises(AddressError, match="is not a socket"), bound(Listener(folder / "file.sock")):
        pass


@pytest.mark.parametrize(
    ("address", "words"),
    [
        ("0.0.0.0:8765", "listens on this machine only"),
        ("gpu-box.example:8765", "listens on this machine only"),
        ("127.0.0.1:http", "give a socket path or HOST:PORT"),
        ("/" + "x" * 120 + "/e.sock", "at most 107 bytes"),
    ],
)
def test_addresses_that_would_expose_the_engine_or_cannot_work_are_refused(address: str, words: str) -> None:
    with pytest.raises(AddressError, match=words):
        listener(address, Path("/tmp"))


def test_the_default_is_a_socket_in_the_state_folder_and_tcp_is_loopback_with_a_token_file() -> None:
    assert listener("", Path("/run/me")) == Listener(socket_path=Path("/run/me/engine.sock"))
    assert listener("127.0.0.1:8765", Path("/s")) == Listener(
        host="127.0.0.1", port=8765, token_file=Path("/s/serve-token")
    )
    assert listener("[::1]:9", Path("/s")).host == "::1"


def test_on_tcp_every_request_needs_the_token(folder: Path) -> None:
    engine = FakeEngine(small_settings(folder))
    engine.load()
    hub = Hub(engine)
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    where = Listener(host="127.0.0.1", port=port, token_file=folder / "tcp" / "serve-token")
    with served(hub, where) as token:
        assert token and stat.S_IMODE(where.token_file.stat().st_mode) == 0o600
        assert where.token_file.read_text().strip() == token
        for wrong in (None, "guess"):
            with pytest.raises(EngineError, match=r"refused this client \(403\).*SPATIORA_TOKEN"):
                RemoteEngine(websocket(f"127.0.0.1:{port}", wrong))
            headers = {"Authorization": f"Bearer {wrong}"} if wrong else {}
            with pytest.raises(urllib.error.HTTPError, match="401"):
                urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{port}/v1/queue", headers=headers))
        client = RemoteEngine(websocket(f"127.0.0.1:{port}", token), name="alice@laptop")
        request = GenerationRequest(prompt="a loft", task="base", seed=1, steps=2)
        assert client.generate(request).image is not None
        hello = urllib.request.Request(
            f"http://127.0.0.1:{port}/v1/hello", headers={"Authorization": f"Bearer {token}"}
        )
        assert json.load(urllib.request.urlopen(hello)) == {"version": __version__, "protocol": PROTOCOL}
        client.close()
    assert not where.token_file.exists(), "the token goes with the server"
    hub.close()


# -- frames over the websocket: what hypothesis throws at it ---------------------------------------


@settings(max_examples=LIVE_FUZZ_EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=64) | wrong_lengths() | st.text(max_size=16))
def test_bytes_that_are_no_frame_close_that_connection_with_a_reason_and_others_go_on(
    folder: Path, watcher: ClientConnection, data: bytes | str
) -> None:
    no_frame(lambda: open_ws(folder), watcher, data)


@settings(max_examples=LIVE_FUZZ_EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(KINDS, FIELDS), min_size=1, max_size=3))
def test_wellformed_frames_with_wrong_fields_each_get_an_answer_and_others_go_on(
    folder: Path, watcher: ClientConnection, batch: list[Any]
) -> None:
    wrong_fields(lambda: open_ws(folder), watcher, batch)


def test_an_oversized_message_is_refused_at_the_websocket_and_others_go_on(
    folder: Path, watcher: ClientConnection
) -> None:
    ws = unix_connect(str(folder / "e.sock"), f"ws://localhost{ENGINE_PATH}", max_size=None, compression=None)
    with contextlib.suppress(ConnectionClosed):
        ws.send(b"\0" * (MAX_MESSAGE + 1))
    with pytest.raises(ConnectionClosed) as closed:
        ws.recv(timeout=10)
    # "Message too big" (1009) when the close frame arrives; the server may also drop the
    # socket while 64 MB are still being sent, and then no close frame comes.
    assert closed.value.rcvd is None or closed.value.rcvd.code == 1009
    still_served(watcher, 3)


def test_serve_http_without_the_extra_says_what_to_install_before_any_model_loads(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    import importlib.util
    import sys

    from spatiora_tui import cli

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "uvicorn" else real(name, *a))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SPATIORA_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.delitem(sys.modules, "spatiora_tui.engine.local", raising=False)
    code = cli.main(["serve", "--http"])
    assert code == 2 and "pip install 'spatiora-tui[http]'" in capsys.readouterr().err
    assert "spatiora_tui.engine.local" not in sys.modules, "refused before the engine was imported"


def test_over_the_websocket_a_client_cannot_cancel_another_clients_job(hub: Hub, folder: Path) -> None:
    engine = hub.engine
    gate = threading.Event()
    engine.gate = gate  # type: ignore[attr-defined]
    engine.at_gate.clear()  # type: ignore[attr-defined]
    alice, bob = open_ws(folder), open_ws(folder)
    try:
        alice.send(pack({"type": "hello", "id": 1, "client": "alice"}))
        alice.send(pack({"type": "generate", "id": 2, "request": {"prompt": "x", "task": "base", "steps": 5}}))
        frames_seen: list[dict[str, Any]] = []
        while not frames_seen or frames_seen[-1]["type"] != "queued":
            frames_seen.append(unpack(alice.recv(timeout=10))[0])  # type: ignore[arg-type]
        job = frames_seen[-1]["job"]
        assert engine.at_gate.wait(5)  # type: ignore[attr-defined]
        bob.send(pack({"type": "cancel", "id": 1, "job": job}))
        refused = unpack(bob.recv(timeout=10))[0]  # type: ignore[arg-type]
        assert refused["kind"] == "refused" and f"job {job} is alice's" in refused["message"]
        gate.set()
        while (frame := unpack(alice.recv(timeout=10))[0])["type"] != "ok":  # type: ignore[arg-type]
            pass
        assert frame["result"]["cancelled"] is False, "alice's image ran to its end"
    finally:
        engine.gate = None  # type: ignore[attr-defined]
        gate.set()
        alice.close()
        bob.close()
