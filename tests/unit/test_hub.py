"""The Hub: one engine, several clients in turn (remote/server.py), in-process with the fake
engine. The transports (stdio, websocket) are tested on their own; here only who runs when, whose
job may be cancelled, and what a client's leaving does."""

from __future__ import annotations

import queue
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from spatiora_tui.remote.server import Connection, Hub
from tests.fake_engine import FakeEngine
from tests.helpers import small_settings


class Client:
    """A connection whose frames land in a queue."""

    def __init__(self, hub: Hub, name: str) -> None:
        self.frames: queue.Queue[dict[str, Any]] = queue.Queue()
        self.connection: Connection = hub.connect(name, lambda message, blob: self.frames.put(message))
        self.ids = iter(range(1, 10_000))

    def send(self, message: dict[str, Any]) -> int:
        rid = next(self.ids)
        self.connection.receive({**message, "id": rid})
        return rid

    def generate(self, prompt: str, steps: int = 2) -> int:
        return self.send({"type": "generate", "request": {"prompt": prompt, "task": "base", "seed": 1, "steps": steps}})

    def until(self, rid: int, kinds: tuple[str, ...] = ("ok", "error")) -> dict[str, Any]:
        while True:
            frame = self.frames.get(timeout=10)
            if frame.get("id") == rid and frame["type"] in kinds:
                return frame


def held_hub(tmp_path: Path) -> tuple[Hub, FakeEngine, threading.Event]:
    """A hub whose first generation waits at step 2 until the gate opens."""
    gate = threading.Event()
    engine = FakeEngine(small_settings(tmp_path), gate=gate)
    engine.load()
    return Hub(engine), engine, gate


def test_clients_take_turns_so_one_clients_batch_never_runs_ahead_of_everyone(tmp_path: Path) -> None:
    hub, engine, gate = held_hub(tmp_path)
    alice, bob, carol = Client(hub, "alice"), Client(hub, "bob"), Client(hub, "carol")
    first = alice.generate("a0")
    assert engine.at_gate.wait(5)
    batch = [alice.generate(f"a{i}") for i in range(1, 6)]  # alice queues five more...
    queued = bob.until(bob.generate("b0"), ("queued",))  # ...then bob and carol one each
    carol.generate("c0")
    assert queued["ahead"] == 2, "behind alice's running image and her next one only"
    assert [(job["client"], job["running"]) for job in hub.queue()[:4]] == [
        ("alice", True),
        ("alice", False),
        ("bob", False),
        ("carol", False),
    ]
    gate.set()
    alice.until(first)
    alice.until(batch[-1])
    assert [request.prompt for request in engine.requests] == ["a0", "a1", "b0", "c0", "a2", "a3", "a4", "a5"]
    assert [client for client, _, _ in hub.ran] == [
        "alice",
        "alice",
        "bob",
        "carol",
        "alice",
        "alice",
        "alice",
        "alice",
    ]
    hub.close()


def test_a_client_may_cancel_its_own_job_and_not_anothers(tmp_path: Path) -> None:
    hub, engine, gate = held_hub(tmp_path)
    alice, bob = Client(hub, "alice"), Client(hub, "bob")
    running = alice.generate("a0", steps=5)
    job = alice.until(running, ("queued",))["job"]
    assert engine.at_gate.wait(5)
    refused = bob.until(bob.send({"type": "cancel", "job": job}), ("error",))
    assert refused["kind"] == "refused" and f"job {job} is alice's" in refused["message"]
    assert bob.until(bob.send({"type": "cancel", "job": 999}))["cancelled"] is False, "no such job: nothing to do"
    assert alice.until(alice.send({"type": "cancel", "job": job}))["cancelled"] is True
    gate.set()
    result = alice.until(running)["result"]
    assert result["cancelled"] is True and result["steps_done"] < 5
    hub.close()


def test_a_client_that_leaves_has_its_running_image_stopped_and_its_waiting_calls_dropped(tmp_path: Path) -> None:
    hub, engine, gate = held_hub(tmp_path)
    alice, bob = Client(hub, "alice"), Client(hub, "bob")
    alice.generate("a0", steps=50)
    assert engine.at_gate.wait(5)
    alice.generate("a1")
    alice.generate("a2")
    later = bob.generate("b0")
    alice.connection.close()  # alice's link dropped
    gate.set()
    assert bob.until(later)["type"] == "ok"
    assert [request.prompt for request in engine.requests] == ["a0", "b0"], "a1 and a2 never ran"
    assert engine.requests and len(hub.ran) == 2
    hub.close()


def test_engine_calls_keep_their_order_within_a_client(tmp_path: Path) -> None:
    hub, engine, _ = held_hub(tmp_path)
    engine.gate = None
    alice = Client(hub, "alice")
    switch = alice.send({"type": "switch_task", "name": "floorplan"})
    generate = alice.send({"type": "generate", "request": {"prompt": "x", "task": "floorplan", "steps": 1}})
    assert alice.until(switch)["type"] == "ok" and alice.until(generate)["type"] == "ok"
    assert [kind for _, _, kind in hub.ran] == ["switch_task", "generate"]
    hub.close()


def test_a_client_names_itself_in_hello_and_a_queue_lists_no_prompts(tmp_path: Path) -> None:
    hub, engine, gate = held_hub(tmp_path)
    alice = Client(hub, "client 1")
    alice.until(alice.send({"type": "hello", "client": "alice@laptop"}))
    alice.generate("a secret prompt")
    assert engine.at_gate.wait(5)
    listing = alice.until(alice.send({"type": "queue"}))["jobs"]
    assert listing == [
        {"job": 1, "client": "alice@laptop", "type": "generate", "task": "base", "running": True, "parked": False}
    ]
    assert "secret" not in str(listing)
    gate.set()
    hub.close()


def test_the_hardware_pane_says_how_many_jobs_of_other_clients_go_first(tmp_path: Path) -> None:
    from spatiora_tui.hw.sampler import HardwareSampler
    from spatiora_tui.remote.telemetry import RemoteTelemetry

    class Shared:
        """What RemoteTelemetry asks a RemoteEngine, answered from a hub's queue listing."""

        name = "bob"
        bytes_received = 0

        def __init__(self, hub: Hub) -> None:
            self.hub = hub

        def hardware(self) -> tuple[Any, dict[str, Any], dict[str, Any]]:
            return HardwareSampler().sample(), {}, {}

        def queue(self) -> list[dict[str, Any]]:
            return self.hub.queue()

    hub, engine, gate = held_hub(tmp_path)
    alice, bob = Client(hub, "alice"), Client(hub, "bob")
    telemetry = RemoteTelemetry(Shared(hub))
    assert "ahead" not in (telemetry.sample().link or ""), "nobody else's work"
    alice.generate("a0")
    assert engine.at_gate.wait(5)
    alice.generate("a1")
    bob.generate("b0")
    alice.generate("a2")
    link = telemetry.sample().link
    assert link is not None and link.endswith(" · 2 jobs ahead"), link  # a0 running, a1 waiting
    gate.set()
    hub.close()


def test_a_client_that_comes_back_with_its_session_gets_its_waiting_calls_back(tmp_path: Path) -> None:
    """Alice's link drops: her running image stops, her two waiting ones are parked (others go
    past them), and when she reconnects with the same session they are hers again and run."""
    hub, engine, gate = held_hub(tmp_path)
    alice, bob = Client(hub, "alice"), Client(hub, "bob")
    alice.until(alice.send({"type": "hello", "session": "s-1"}))
    alice.generate("a0", steps=50)
    assert engine.at_gate.wait(5)
    waiting = [alice.generate("a1"), alice.generate("a2")]
    alice.connection.close()  # the link dropped
    later = bob.generate("b0")
    gate.set()
    assert bob.until(later)["type"] == "ok", "bob's call went past alice's parked ones"
    assert [job["parked"] for job in hub.queue()] == [True, True]
    again = Client(hub, "alice")
    again.ids = iter(range(100, 200))
    hello = again.until(again.send({"type": "hello", "session": "s-1"}))
    assert hello["resumed"] == waiting
    for rid in waiting:
        assert again.until(rid)["type"] == "ok"
    assert [request.prompt for request in engine.requests] == ["a0", "b0", "a1", "a2"]
    hub.close()


def test_parked_calls_are_forgotten_when_their_client_does_not_come_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from spatiora_tui.remote import server

    monkeypatch.setattr(server, "KEEP_S", 0.2)
    hub, engine, gate = held_hub(tmp_path)
    alice = Client(hub, "alice")
    alice.until(alice.send({"type": "hello", "session": "s-2"}))
    alice.generate("a0", steps=50)
    assert engine.at_gate.wait(5)
    alice.generate("a1")
    alice.connection.close()  # a0 stops, a1 is parked
    gate.set()
    time.sleep(0.3)  # longer than KEEP_S
    bob = Client(hub, "bob")
    assert bob.until(bob.generate("b0"))["type"] == "ok"
    assert hub.queue() == [] and "a1" not in [request.prompt for request in engine.requests]
    again = Client(hub, "alice")
    assert again.until(again.send({"type": "hello", "session": "s-2"}))["resumed"] == []
    hub.close()
