"""The Ray Serve application on a local Ray (the serve extra): routing by adapter set, the token, a
client that leaves, `spatiora serve --ray` as a user runs it, and Ray staying out of everything
else. (The contract suite runs the app as an engine too.)"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.sync.client import ClientConnection, connect

from spatiora_tui.config import TaskSettings, settings_to_toml
from spatiora_tui.engine.api import EngineError, GenerationRequest, StepPreview
from spatiora_tui.remote.client import RemoteEngine
from spatiora_tui.remote.websocket import ENGINE_PATH, MAX_MESSAGE, websocket
from tests.e2e.test_cli import assert_one_line_failure, spatiora
from tests.frame_fuzz import FIELDS, KINDS, no_frame, wrong_fields, wrong_lengths
from tests.helpers import small_settings
from tests.ray_app import TOKEN, deployed

pytestmark = [pytest.mark.slow, pytest.mark.ray]

SLOW = TaskSettings(name="slow", prompt_template="{prompt}", scheduler="euler", steps=400, width=64, height=64)


@pytest.fixture(scope="module")
def app(ray_cluster: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("ray")
    settings = small_settings(root)
    settings = dataclasses.replace(settings, tasks=(*settings.tasks, SLOW))
    config = root / "config.toml"
    config.write_text(settings_to_toml(settings), encoding="utf-8")
    with deployed(config, replicas=2) as where:
        yield where


def ask(task: str, seed: int = 1, steps: int = 2) -> GenerationRequest:
    return GenerationRequest(prompt="a flat", task=task, seed=seed, steps=steps, width=64, height=64)


def stats() -> dict[str, dict[str, int]]:
    from spatiora_tui.remote.ray_serve import replica_stats

    return {entry["replica"]: entry for entry in replica_stats()}


def test_calls_of_one_task_go_to_the_replica_holding_its_set_and_a_busy_holder_spills(app: str) -> None:
    engine = RemoteEngine(websocket(app, TOKEN), name="alice")
    # Replicas tell Ray's routers what they hold every 0.1 s, asynchronously: a call right after
    # a load may not know yet, and may bring the set in on the other replica too, after which
    # both hold it and the calls rightly go to either. So each try takes a set no replica holds
    # yet: one call brings it in, then a probe of 8 calls must stay on that holder with no new
    # load (a router blind to sets would do that with odds of 1 in 128). How long the news takes
    # grows with the machine's load (under a loaded CI run 1 s was not enough): each try waits
    # longer than the one before.
    tried = []
    for task, news_s in (("interior", 1.0), ("floorplan", 4.0), ("slow", 10.0)):
        assert engine.generate(ask(task)).image is not None  # some replica brings the set in
        time.sleep(news_s)
        before = stats()
        for seed in range(8):
            assert engine.generate(ask(task, seed)).image is not None
        after = stats()
        served = sorted(after[name]["requests"] - before.get(name, {}).get("requests", 0) for name in after)
        loads = sum(after[name]["loads"] - before.get(name, {}).get("loads", 0) for name in after)
        tried.append((task, served, loads))
        if served == [0, 8] and loads == 0:
            break
    else:
        raise AssertionError(f"calls of one task did not stay on the replica holding its set: {tried}")
    # Two at once: the holder is busy (max_ongoing_requests=1), so Ray sends the second to the
    # other replica, which brings the set in (Ray's documented behaviour for a busy holder).
    other = RemoteEngine(websocket(app, TOKEN), name="bob")
    started = threading.Event()
    results = []

    def long() -> None:
        results.append(engine.generate(ask("floorplan", 1, steps=60), on_step=lambda preview: started.set()))

    thread = threading.Thread(target=long)
    thread.start()
    assert started.wait(60)
    results.append(other.generate(ask("floorplan", 2)))
    thread.join(60)
    assert all(result.image is not None for result in results)
    final = stats()
    assert all(final[name]["requests"] > before[name]["requests"] for name in final), "both replicas served"
    engine.close()
    other.close()


def test_a_client_without_the_token_is_refused_in_one_line(app: str) -> None:
    with pytest.raises(EngineError, match=r"refused this client \(403\)"):
        RemoteEngine(websocket(app, "wrong"))
    with pytest.raises(urllib.error.HTTPError, match="401"):
        urllib.request.urlopen(f"http://{app}/v1/hello")
    hello = urllib.request.Request(f"http://{app}/v1/hello", headers={"Authorization": f"Bearer {TOKEN}"})
    assert urllib.request.urlopen(hello).status == 200


def test_a_client_that_leaves_mid_image_has_it_stopped_on_its_replica(app: str) -> None:
    engine = RemoteEngine(websocket(app, TOKEN), name="carol")
    elapsed: list[float] = []

    def leave(preview: StepPreview) -> None:
        elapsed.append(preview.elapsed_s)
        if preview.step == 3:
            engine._link.close()

    with pytest.raises(EngineError, match="next request reconnects"):
        engine.generate(ask("slow", steps=400), on_step=leave)
    left = time.monotonic()
    watcher = RemoteEngine(websocket(app, TOKEN), name="watcher")
    while watcher.queue():
        time.sleep(0.02)
    step_s = (elapsed[2] - elapsed[0]) / 2
    # The ingress forgets the call at once; the replica stops within a step and takes calls again.
    both = [threading.Thread(target=watcher.generate, args=(ask("base", seed),)) for seed in (1, 2)]
    for thread in both:
        thread.start()
    for thread in both:
        thread.join(60)
    assert time.monotonic() - left < 0.5 * 397 * step_s, "the 400-step image did not run on for nobody"
    assert engine.generate(ask("base")).image is not None and engine.reconnects == 1
    engine.close()
    watcher.close()


def open_ws(where: str) -> ClientConnection:
    return connect(
        f"ws://{where}{ENGINE_PATH}",
        additional_headers={"Authorization": f"Bearer {TOKEN}"},
        max_size=MAX_MESSAGE,
        compression=None,
        proxy=None,
    )


@pytest.fixture(scope="module")
def watcher(app: str) -> Iterator[ClientConnection]:
    """Another client of the ingress, connected throughout the frames hypothesis sends."""
    ws = open_ws(app)
    yield ws
    ws.close()


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=64) | wrong_lengths() | st.text(max_size=16))
def test_at_the_ingress_bytes_that_are_no_frame_close_that_connection_and_others_go_on(
    app: str, watcher: ClientConnection, data: bytes | str
) -> None:
    no_frame(lambda: open_ws(app), watcher, data)


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(KINDS, FIELDS), min_size=1, max_size=3))
def test_at_the_ingress_frames_with_wrong_fields_each_get_an_answer_and_others_go_on(
    app: str, watcher: ClientConnection, batch: list[object]
) -> None:
    wrong_fields(lambda: open_ws(app), watcher, batch)


def serving_ray(
    config: Path, port: int, tmp_path: Path, env: dict[str, str]
) -> tuple[subprocess.Popen[str], list[str]]:
    """`spatiora serve --ray 127.0.0.1:PORT` with `env` (state in tmp_path/state), once it serves;
    its stderr lines keep coming into the list. The caller terminates it."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "spatiora_tui", "serve", "--ray", f"127.0.0.1:{port}", "--config", str(config)],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        env={**env, "SPATIORA_STATE_DIR": str(tmp_path / "state")},
    )
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(line.rstrip() for line in proc.stderr), daemon=True).start()
    deadline = time.monotonic() + 240
    while not any(line.startswith("serving on") for line in lines):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise AssertionError("\n".join(lines))
        time.sleep(0.2)
    return proc, lines


def test_serve_ray_deploys_and_a_client_generates_through_it(tmp_path: Path, cache_dir: Path) -> None:
    from tests.ray_app import free_port

    config = tmp_path / "config.toml"
    config.write_text(settings_to_toml(small_settings(tmp_path)), encoding="utf-8")
    port = free_port()
    # A Ray of its own ("local"): the tests' Ray and its Serve stay as they are.
    env = {"RAY_AUTH_MODE": "disabled", "RAY_ADDRESS": "local"}
    proc, lines = serving_ray(config, port, tmp_path, {**os.environ, **env})
    try:
        token = (tmp_path / "state" / "serve-token").read_text().strip()
        out = spatiora(
            "generate",
            "--engine",
            f"ray://127.0.0.1:{port}",
            "--task",
            "floorplan",
            "a flat",
            cwd=tmp_path,
            env={"SPATIORA_TOKEN": token},
        )
        assert out.returncode == 0, out.stderr
        assert len(out.stdout.split()) == 1 and out.stdout.strip().endswith(".png")
    finally:
        proc.terminate()
        proc.wait(120)
    assert not (tmp_path / "state" / "serve-token").exists()
    assert "taking the application down" in "\n".join(lines)


def test_serve_ray_keeps_the_cluster_it_starts_on_loopback_with_token_auth(tmp_path: Path, cache_dir: Path) -> None:
    """The audit's M7: a cluster `serve --ray` starts itself had its GCS, raylet and agents on every
    interface. They are on loopback now, with Ray's cluster token required; only Ray Serve's own
    inter-deployment gRPC servers (bound to [::] inside Ray, serve/_private/replica.py) remain."""
    import psutil

    from tests.ray_app import free_port

    config = tmp_path / "config.toml"
    config.write_text(settings_to_toml(small_settings(tmp_path)), encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    proc, _lines = serving_ray(config, free_port(), tmp_path, {**env, "HOME": str(tmp_path / "home")})
    try:
        tree = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
        pids = {p.pid: p.name() for p in tree}
        open_to_all = {
            (pids[c.pid], c.laddr.port)
            for c in psutil.net_connections(kind="inet")
            if c.status == psutil.CONN_LISTEN
            and c.pid in pids
            and not ipaddress.ip_address(c.laddr.ip.removeprefix("::ffff:")).is_loopback
        }
        names = {name for name, _ in open_to_all}
        assert not names & {"gcs_server", "raylet"}, open_to_all
        assert all(name.startswith("ray::ServeRepli") for name in names), open_to_all
        raylet = psutil.Process(next(p for p, n in pids.items() if n == "raylet"))
        assert "--node_ip_address=127.0.0.1" in " ".join(raylet.cmdline())
        assert raylet.environ().get("RAY_AUTH_MODE") == "token" and raylet.environ().get("RAY_AUTH_TOKEN")
    finally:
        proc.terminate()
        proc.wait(120)


def test_serve_ray_refuses_an_address_off_this_machine(tmp_path: Path) -> None:
    assert_one_line_failure(spatiora("serve", "--ray", "0.0.0.0:8000", cwd=tmp_path), 2, "listens on this machine only")


def test_the_tui_and_the_other_commands_never_import_ray_fastapi_or_uvicorn() -> None:
    code = (
        "import sys; import spatiora_tui.cli, spatiora_tui.ui.app, spatiora_tui.remote.connect, "
        "spatiora_tui.remote.client, spatiora_tui.engine.local; "
        "print(sorted(m for m in ('ray', 'fastapi', 'uvicorn', 'websockets', 'starlette') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
