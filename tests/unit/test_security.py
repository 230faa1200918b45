"""The audit of 2026-12-06 (../shared/research/reliability-audit-2026-12-06.md), finding by finding,
in-process with the fake engine where the Hub decides, and on the real file checks where the
library or the client does. The served transports end to end are in tests/e2e/test_security.py."""

from __future__ import annotations

import argparse
import json
import os
import socket
import stat
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from spatiora_tui.cli.common import one_line, printable
from spatiora_tui.config import ConfigError, check_size, read_settings
from spatiora_tui.engine.api import EngineError, GenerationRequest, ModelChoice
from spatiora_tui.engine.init_image import size_for
from spatiora_tui.jobs.job import Job
from spatiora_tui.library.catalog import name_problem, scan
from spatiora_tui.remote import connect as connect_module
from spatiora_tui.remote.frames import FrameError, pack, unpack
from spatiora_tui.remote.http import write_token
from spatiora_tui.remote.server import Hub, Policy
from tests.fake_engine import FakeEngine
from tests.helpers import small_settings
from tests.hostile import png_bytes
from tests.unit.test_hub import Client


def hub_of(tmp_path: Path, **policy: Any) -> tuple[Hub, FakeEngine]:
    engine = FakeEngine(small_settings(tmp_path))
    engine.load()
    return Hub(engine, policy=Policy(**policy)), engine


def generate(client: Client, blob: bytes = b"", **request: Any) -> dict[str, Any]:
    rid = next(client.ids)
    message = {"type": "generate", "id": rid, "request": {"prompt": "x", "task": "base", "steps": 2, **request}}
    client.connection.receive(message, blob)
    return client.until(rid)


# -- H1: an init image is the file sent with the request, never a path on the server --------------


def test_h1_an_init_image_named_without_its_file_is_refused_and_never_opened(tmp_path: Path) -> None:
    hub, engine = hub_of(tmp_path)
    secret = tmp_path / "secret.png"
    secret.write_bytes(png_bytes())
    client = Client(hub, "mallory")
    for path in (str(secret), "/etc/shadow", "/root", "/proc/self/environ", "/nothing/here.png"):
        reply = generate(client, init_image=path, strength=0.05)
        assert reply["type"] == "error" and reply["kind"] == "refused", reply
        assert "must travel with the request" in reply["message"]
        assert path not in reply["message"], "the reply must not say anything of the path"
    assert engine.requests == [], "nothing reached the engine"
    hub.close()


def test_h5_an_upload_with_a_255_byte_file_name_runs_and_errors_name_the_clients_file(tmp_path: Path) -> None:
    hub, _engine = hub_of(tmp_path)
    client = Client(hub, "alice")
    long_name = "s" * 251 + ".png"
    reply = generate(client, png_bytes(), init_image=f"/home/alice/{long_name}", strength=0.5)
    assert reply["type"] == "ok", reply
    bad = generate(client, b"not an image", init_image="/home/alice/sketch.png", strength=0.5)
    assert bad["type"] == "error" and "sketch.png" in bad["message"]
    assert "spatiora-serve-" not in bad["message"], "the server's temp copy is not the user's file"
    hub.close()


# -- H2: <lora:NAME> names an adapter, never a file by path ------------------------------------------


@pytest.mark.parametrize(
    "name",
    ["/tmp/private/evil", "..", "../../../../etc/evil", "a/../../b", "~/x", "a" * 300, "x\x00y"],
)
def test_h2_a_lora_tag_that_is_a_path_or_too_long_is_refused_at_once(tmp_path: Path, name: str) -> None:
    hub, engine = hub_of(tmp_path)
    client = Client(hub, "mallory")
    for field in ("prompt", "negative_prompt"):
        reply = generate(client, b"", **{field: f"a room <lora:{name}:1>"})
        assert reply["type"] == "error" and reply["kind"] == "refused", reply
    assert engine.requests == []
    hub.close()


def test_h2_names_are_names_and_subfolders_of_a_lora_folder_still_work() -> None:
    assert name_problem("detail_v1.5") is None
    assert name_problem("styles/detail_tweaker") is None
    for bad in ("/abs", "..", "a/../b", "./x", "~/x", "c:x", "a" * 241, "a\x1bb", ""):
        assert name_problem(bad) is not None, bad


def test_h2_the_catalog_refuses_a_path_name_before_it_looks_at_the_disk(tmp_path: Path) -> None:
    from spatiora_tui.engine.adapters.catalog import AdapterCatalog

    folder = tmp_path / "adapters"
    folder.mkdir()
    outside = tmp_path / "evil.safetensors"
    outside.write_bytes(b"x")
    catalog = AdapterCatalog([folder])
    for name in (str(outside.with_suffix("")), "../evil", "a" * 300):
        with pytest.raises(EngineError) as caught:
            catalog.find(name)
        assert "not found" not in str(caught.value), "a path is refused as one, not looked for"


# -- H3: the shared model switches to listed models only, or not at all -----------------------------


def test_h3_a_model_switch_to_a_path_the_server_does_not_list_is_refused(tmp_path: Path) -> None:
    hub, engine = hub_of(tmp_path)
    engine.choices = (ModelChoice("listed", str(tmp_path / "models" / "listed.safetensors"), 2.0, "SD 1.x"),)
    client = Client(hub, "mallory")
    for source in (str(tmp_path / "private" / "model.safetensors"), "/etc/passwd", "some/hub-id"):
        rid = client.send({"type": "switch_model", "source": source})
        reply = client.until(rid)
        assert (
            reply["type"] == "error"
            and reply["kind"] == "refused"
            and "not a model this server lists" in reply["message"]
        )
    rid = client.send({"type": "switch_model", "source": "listed"})
    assert client.until(rid)["type"] == "ok"
    assert engine.model_switches == ["listed"]
    hub.close()


def test_h3_with_model_switch_off_no_client_switches_the_model(tmp_path: Path) -> None:
    hub, engine = hub_of(tmp_path, model_switch="off", configured_model="demo")
    engine.choices = (ModelChoice("listed", "/models/listed.safetensors", 2.0, "SD 1.x"),)
    client = Client(hub, "alice")
    reply = client.until(client.send({"type": "switch_model", "source": "listed"}))
    assert reply["type"] == "error" and "remote_model_switch" in reply["message"]
    assert client.until(client.send({"type": "load", "source": "/etc/passwd"}))["type"] == "error"
    assert engine.model_switches == []
    hub.close()


# -- H4/H5: every request gets exactly one answer -----------------------------------------------------


def test_h4_an_oserror_in_the_engine_is_an_error_reply_and_the_hub_goes_on(tmp_path: Path) -> None:
    hub, engine = hub_of(tmp_path)
    engine.fail_generate = OSError(36, "File name too long", "/srv/adapters/" + "a" * 300)  # type: ignore[assignment]
    client = Client(hub, "alice")
    reply = generate(client)
    assert reply["type"] == "error" and "File name too long" in reply["message"]
    assert "/srv/adapters" not in reply["message"], "the server's path stays on the server"
    engine.fail_generate = None
    assert generate(Client(hub, "bob"))["type"] == "ok", "the next client is served"
    hub.close()


def test_h5_a_client_whose_server_lost_its_request_fails_instead_of_waiting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server that queues a call and then never answers it (the audit's H4 state): the client
    asks for the server's queue, does not find its job there, and fails with a reason."""
    from spatiora_tui.remote import client as client_module
    from spatiora_tui.remote.client import RemoteEngine

    monkeypatch.setattr(client_module, "CHECK_S", 0.3)
    engine = FakeEngine(small_settings(tmp_path))
    engine.load()
    hub = Hub(engine)

    class Losing:
        """A link to the hub that drops every generate after saying it is queued."""

        def __init__(self, on_frame: Any, on_end: Any) -> None:
            self.on_frame = on_frame
            self.connection = hub.connect("lossy", lambda m, b: on_frame(m, b))

        def send(self, message: dict[str, Any], blob: bytes = b"") -> None:
            if message["type"] == "generate":
                self.on_frame({"type": "queued", "id": message["id"], "job": 999, "ahead": 0, "call": "generate"}, b"")
                return
            self.connection.receive(message, blob)

        def close(self) -> None:
            self.connection.close()

    remote = RemoteEngine(lambda on_frame, on_end: Losing(on_frame, on_end))
    start = time.monotonic()
    with pytest.raises(EngineError, match="no longer holds this request"):
        remote.generate(GenerationRequest("x", "base", steps=2))
    assert time.monotonic() - start < 30
    remote.close()
    hub.close()


def test_h5_a_client_whose_server_stops_answering_fails_after_the_deadline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from spatiora_tui.remote import client as client_module
    from spatiora_tui.remote.client import RemoteEngine

    monkeypatch.setattr(client_module, "CHECK_S", 0.2)
    monkeypatch.setattr(client_module, "ANSWER_S", 0.5)
    engine = FakeEngine(small_settings(tmp_path))
    engine.load()
    hub = Hub(engine)
    silent = threading.Event()

    class Hanging:
        def __init__(self, on_frame: Any, on_end: Any) -> None:
            self.connection = hub.connect("hung", lambda m, b: None if silent.is_set() else on_frame(m, b))

        def send(self, message: dict[str, Any], blob: bytes = b"") -> None:
            if message["type"] == "generate":
                silent.set()  # the server host froze: nothing comes back any more
            self.connection.receive(message, blob)

        def close(self) -> None:
            self.connection.close()

    remote = RemoteEngine(lambda on_frame, on_end: Hanging(on_frame, on_end))
    with pytest.raises(EngineError, match="has not answered"):
        remote.generate(GenerationRequest("x", "base", steps=2))
    remote.close()
    hub.close()


# -- M3: limits per client --------------------------------------------------------------------------


def test_m3_a_client_past_its_limits_is_refused_and_others_are_not(tmp_path: Path) -> None:
    engine = FakeEngine(small_settings(tmp_path), gate=threading.Event())
    engine.load()
    hub = Hub(engine, policy=Policy(max_calls=3, max_bytes=100_000))
    greedy, other = Client(hub, "greedy"), Client(hub, "other")
    greedy.generate("running")
    assert engine.at_gate.wait(5)
    waiting = [greedy.generate(f"w{i}") for i in range(3)]
    refused = greedy.until(greedy.generate("one too many"))
    assert refused["type"] == "error" and "the most one client may" in refused["message"]
    assert other.until(other.generate("mine"), ("queued",))["type"] == "queued"
    big = b"\x89PNG" + bytes(200_000)
    rid = next(other.ids)
    other.connection.receive(
        {"type": "generate", "id": rid, "request": {"prompt": "x", "task": "base", "init_image": "a.png"}}, big
    )
    reply = other.until(rid)
    assert reply["type"] == "error" and "MB of uploads" in reply["message"]
    engine.gate.set()
    for rid in waiting:
        greedy.until(rid)
    hub.close()


# -- M1: the token goes only to the server that wrote it --------------------------------------------


def test_m1_the_token_file_is_used_only_for_the_address_its_server_wrote(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SPATIORA_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.delenv("SPATIORA_TOKEN", raising=False)
    token_file = tmp_path / "state" / "serve-token"
    write_token(token_file, "secret-token", "http://127.0.0.1:18765")
    assert connect_module.token("http://127.0.0.1:18765") == "secret-token"
    assert connect_module.token("http://localhost:18765") == "secret-token"
    assert connect_module.token("http://127.0.0.1:18799") is None, "another user's port gets nothing"
    assert connect_module.token("ray://127.0.0.1:18765") is None
    assert connect_module.token("http://gpu-box:18765") is None
    monkeypatch.setenv("SPATIORA_TOKEN", "explicit")
    assert connect_module.token("http://elsewhere:1") == "explicit"


def test_l10_a_token_file_that_was_0644_is_0600_once_rewritten(tmp_path: Path) -> None:
    token_file = tmp_path / "serve-token"
    token_file.write_text("old\n")
    os.chmod(token_file, 0o644)
    write_token(token_file, "new", "ray://127.0.0.1:8000")
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    assert token_file.read_text().strip() == "new"


# -- M2: a Unix socket is used only when it is the user's -------------------------------------------


def test_m2_a_socket_in_a_folder_others_can_write_is_refused_before_anything_is_sent(tmp_path: Path) -> None:
    from spatiora_tui.remote.unix import own_socket

    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o1777)
    path = shared / "spatiora.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(1)
    try:
        with pytest.raises(EngineError, match="other users can write to"):
            own_socket(path)
        if os.getuid() == 0:  # root can play the other user
            mine = tmp_path / "mine"
            mine.mkdir(mode=0o700)
            other = mine / "other.sock"
            second = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            second.bind(str(other))
            second.listen(1)
            os.chown(other, 12345, 12345)
            with pytest.raises(EngineError, match="belongs to another user"):
                own_socket(other)
            second.close()
    finally:
        listener.close()


def test_m2_the_owners_own_socket_is_accepted_and_its_peer_is_checked(tmp_path: Path) -> None:
    from spatiora_tui.remote.unix import OwnerOnlySocket, own_socket, peer_uid

    folder = tmp_path / "run"
    folder.mkdir(mode=0o700)
    path = folder / "engine.sock"
    server = OwnerOnlySocket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(1)
    try:
        client = own_socket(path)
        conn, _ = server.accept()
        assert peer_uid(conn) == os.getuid()
        conn.close()
        client.close()
    finally:
        server.close()


# -- M6, L8: the queue file --------------------------------------------------------------------------


def test_m6_a_failed_job_is_kept_in_its_record_with_its_reason_and_read_back_as_failed() -> None:
    job = Job(id=1, request=GenerationRequest("my carefully written prompt", "removed-task", seed=42))
    job.state = type(job.state).FAILED
    job.error = "could not switch to task removed-task"
    record = json.loads(json.dumps(job.to_record()))
    back = Job.from_record(record, 7)
    assert back.state.value == "failed" and back.error == job.error
    assert back.request.prompt == "my carefully written prompt"


@pytest.mark.parametrize(
    ("field", "value"), [("seed", "x"), ("init_image", {}), ("steps", 2.5), ("guidance", "high"), ("prompt", None)]
)
def test_l8_a_queue_file_field_of_the_wrong_type_is_refused_when_read(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=f"GenerationRequest.{field}: "):
        Job.from_record({"request": {"prompt": "x", "task": "base", field: value}}, 1)


# -- Low: messages, terminals, frames, files ------------------------------------------------------


def test_l2_json_nested_past_the_recursion_limit_is_a_frame_error() -> None:
    data = pack({"type": "x"})
    deep = b"[" * 100_000 + b"]" * 100_000
    body = b'{"type":"generate","request":' + deep + b"}"
    frame = data[:0] + len(body).to_bytes(4, "big") + (0).to_bytes(4, "big") + body
    with pytest.raises(FrameError, match="nested too deeply"):
        unpack(frame)


def test_l3_terminal_controls_in_file_names_and_queue_files_are_shown_not_acted_on() -> None:
    name = "nice\x1b]0;PWNED\x07\x1b[2Jlora\x9b31m"
    shown = printable(name)
    assert "\x1b" not in shown and "\x07" not in shown and "\x9b" not in shown
    assert "\\x1b]0;PWNED" in shown
    assert "\x1b" not in one_line(f"prompt {name}\nsecond line")


def test_l5_a_fifo_named_like_a_model_is_skipped_not_opened(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "stuck.safetensors")
    (tmp_path / "real.safetensors").write_bytes(b"x")
    assert list(scan((tmp_path,)).entries) == ["real"]


def test_l9_a_long_thin_init_image_runs_near_the_tasks_pixel_count() -> None:
    width, height = size_for((4, 8000), (64, 64))
    assert width * height <= 2 * 64 * 64
    width, height = size_for((4000, 3000), (512, 512))
    assert abs(width / height - 4 / 3) < 0.05


def test_l11_size_hints_stay_in_range_and_a_bom_config_reads(tmp_path: Path) -> None:
    assert "between" in str(check_size(7)) and "try" not in str(check_size(7))
    assert "try 64 or 72" in str(check_size(70))
    assert "try" not in str(check_size(99_999_999_999))
    config = tmp_path / "config.toml"
    config.write_bytes(b"\xef\xbb\xbf[model]\nsource = 'demo'\n")
    assert read_settings(config).model.source == "demo"
    config.write_bytes(b"\xef\xbb\xbf[model\n")
    with pytest.raises(ConfigError):
        read_settings(config)


def test_l11_a_seed_out_of_range_is_a_usage_error_before_any_model_loads() -> None:
    from spatiora_tui.cli.generate import seed_arg

    assert seed_arg("42") == 42
    for bad in ("-1", "4294967296", "x"):
        with pytest.raises(argparse.ArgumentTypeError):
            seed_arg(bad)


def test_l1_a_connection_that_never_finishes_its_headers_is_closed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import urllib.request

    from spatiora_tui.remote import http as http_module
    from spatiora_tui.remote.http import listener
    from tests.ray_app import free_port
    from tests.unit.test_http import served

    monkeypatch.setattr(http_module, "HEADER_S", 0.5)
    hub, _engine = hub_of(tmp_path)
    port = free_port()
    with served(hub, listener(f"127.0.0.1:{port}", tmp_path / "state")) as token:
        slow = [socket.create_connection(("127.0.0.1", port)) for _ in range(20)]
        for sock in slow:
            sock.sendall(b"GET /v1/hello HTTP/1.1\r\nHost: x\r\n")  # and never the blank line
            sock.settimeout(10)
        start = time.monotonic()
        assert all(sock.recv(100) == b"" for sock in slow), "each half-open connection is closed"
        assert time.monotonic() - start < 8
        for sock in slow:
            sock.close()
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/v1/hello", headers={"Authorization": f"Bearer {token}"}
        )
        with urllib.request.urlopen(request, timeout=10) as reply:
            assert json.loads(reply.read())["protocol"]
    hub.close()
