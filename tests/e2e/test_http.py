"""A real `spatiora serve --http` (uvicorn, LocalEngine on the demo model) and its clients: three
sharing it in turn, a link dropped mid-image, the command line against it. (The contract suite
runs it as an engine too.)"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from spatiora_tui.config import TaskSettings, settings_to_toml
from spatiora_tui.engine.api import EngineError, GenerationRequest, GenerationResult, StepPreview
from spatiora_tui.outputs import read_metadata
from spatiora_tui.remote.client import RemoteEngine
from spatiora_tui.remote.websocket import websocket
from tests.e2e.test_cli import assert_one_line_failure, spatiora
from tests.helpers import small_settings
from tests.http_server import Server, http_server

pytestmark = pytest.mark.slow

SLOW = TaskSettings(name="slow", prompt_template="{prompt}", scheduler="euler", steps=400, width=64, height=64)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, cache_dir: Path) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("http")
    settings = small_settings(root)
    settings = dataclasses.replace(settings, tasks=(*settings.tasks, SLOW))
    config = root / "config.toml"
    config.write_text(settings_to_toml(settings), encoding="utf-8")
    with http_server(config) as server:
        yield server


def client(server: Server, name: str) -> RemoteEngine:
    return RemoteEngine(websocket(f"unix:{server.socket}"), name=name)


def ask(seed: int, task: str = "base", steps: int = 2) -> GenerationRequest:
    return GenerationRequest(prompt=f"a flat {seed}", task=task, seed=seed, steps=steps, width=64, height=64)


def test_three_clients_share_the_server_in_turn_and_no_job_is_lost_or_doubled(server: Server) -> None:
    """Alice holds the engine with a long image and queues a batch of 5; Bob and Carol then ask
    for 2 each. Nobody waits behind Alice's whole batch: the queue takes one job of each in turn."""
    alice, bob, carol = (client(server, name) for name in ("alice", "bob", "carol"))
    started = threading.Event()
    done: list[tuple[str, int]] = []
    lock = threading.Lock()

    def hold(preview: StepPreview) -> None:
        started.set()

    def run(engine: RemoteEngine, request: GenerationRequest, on_step=None) -> None:
        result: GenerationResult = engine.generate(request, on_step=on_step)
        assert result.image is not None and not result.cancelled
        with lock:
            done.append((engine.name, result.params.seed))

    holder = threading.Thread(target=run, args=(alice, ask(100, "slow", steps=60), hold))
    holder.start()
    assert started.wait(120)
    threads = [threading.Thread(target=run, args=(alice, ask(101 + i))) for i in range(5)]
    for thread in threads:
        thread.start()
    _wait_for_queue(alice, 6)
    more = [threading.Thread(target=run, args=(who, ask(seed))) for who, seed in ((bob, 201), (carol, 301))]
    more += [threading.Thread(target=run, args=(who, ask(seed))) for who, seed in ((bob, 202), (carol, 302))]
    for thread in more:
        thread.start()
        _wait_for_queue(alice, 6 + more.index(thread) + 1)
    listing = alice.queue()
    assert [job["client"] for job in listing] == ["alice", "alice", "bob", "carol", "alice", "bob", "carol"] + [
        "alice"
    ] * 3
    for thread in [holder, *threads, *more]:
        thread.join(120)
    order = [who for who, _ in done]
    assert order == ["alice", "alice", "bob", "carol", "alice", "bob", "carol", "alice", "alice", "alice"]
    seeds = sorted(seed for _, seed in done)
    assert seeds == [100, 101, 102, 103, 104, 105, 201, 202, 301, 302], "each job ran once"
    for engine in (alice, bob, carol):
        engine.close()


def _wait_for_queue(engine: RemoteEngine, size: int) -> None:
    deadline = time.monotonic() + 30
    while len(engine.queue()) < size:
        assert time.monotonic() < deadline, engine.queue()
        time.sleep(0.02)


def test_a_client_whose_link_drops_mid_image_has_it_stopped_and_reconnects_next_time(server: Server) -> None:
    alice, bob = client(server, "alice"), client(server, "bob")
    elapsed: list[float] = []

    def drop(preview: StepPreview) -> None:
        elapsed.append(preview.elapsed_s)
        if preview.step == 3:
            alice._link.close()

    with pytest.raises(EngineError, match="next request reconnects"):
        alice.generate(ask(1, "slow", steps=400), on_step=drop)
    dropped = time.monotonic()
    while bob.queue():  # the server stops the image nobody waits for
        time.sleep(0.01)
    step_s = (elapsed[2] - elapsed[0]) / 2
    assert time.monotonic() - dropped < 0.5 * 397 * step_s, "stopped, not run to its 400th step"
    assert bob.generate(ask(2)).image is not None
    assert alice.generate(ask(3)).image is not None and alice.reconnects == 1
    alice.close()
    bob.close()


def test_the_command_line_generates_through_the_socket_and_saves_here(server: Server, tmp_path: Path) -> None:
    (tmp_path / "config.toml").write_text("", encoding="utf-8")
    proc = spatiora("generate", "--engine", server.url, "--task", "floorplan", "--seed", "9", "a flat", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    (path,) = [Path(line) for line in proc.stdout.split()]
    assert read_metadata(path).spatiora["request"]["seed"] == 9
    refused = spatiora("generate", "--engine", f"unix://{tmp_path}/none.sock", "a flat", cwd=tmp_path)
    assert_one_line_failure(refused, 1, "cannot reach the engine server at")


def test_queued_generations_survive_a_dropped_link_and_run_after_the_reconnect(server: Server) -> None:
    """The link drops while Alice's long image runs and two more wait on the server: the running
    one fails saying so, the waiting two are kept there, handed back when the client reconnects
    (at once, by itself), and run."""
    alice = client(server, "alice")
    started = threading.Event()
    outcomes: dict[int, object] = {}

    def run(seed: int, task: str, steps: int) -> None:
        try:
            result = alice.generate(ask(seed, task, steps), on_step=lambda preview: started.set())
            outcomes[seed] = result.image is not None and not result.cancelled
        except EngineError as exc:
            outcomes[seed] = str(exc)

    threads = [threading.Thread(target=run, args=(1, "slow", 400))]
    threads[0].start()
    assert started.wait(60)
    threads += [threading.Thread(target=run, args=(seed, "base", 2)) for seed in (2, 3)]
    for thread in threads[1:]:
        thread.start()
    _wait_for_queue(alice, 3)
    alice._link.close()
    for thread in threads:
        thread.join(120)
    assert "the next request reconnects" in str(outcomes[1])
    assert outcomes[2] is True and outcomes[3] is True, outcomes
    assert alice.reconnects == 1
    alice.close()
