"""RemoteEngine against a real `spatiora serve --stdio` process: what the link does when it breaks
or the versions differ. (The contract suite runs it as a third engine.)"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from spatiora_tui.config import settings_to_toml
from spatiora_tui.engine.api import EngineError, GenerationRequest, StepPreview
from spatiora_tui.outputs import read_metadata
from spatiora_tui.remote import client
from spatiora_tui.remote.client import RemoteEngine, pipe
from tests.e2e.test_cli import assert_one_line_failure, spatiora
from tests.helpers import REPO, small_settings

pytestmark = pytest.mark.slow


def server_argv(root: Path) -> list[str]:
    config = root / "config.toml"
    config.write_text(settings_to_toml(small_settings(root)), encoding="utf-8")
    return [sys.executable, "-m", "spatiora_tui", "serve", "--stdio", "--config", str(config)]


def test_a_link_that_drops_mid_generation_fails_that_call_and_the_next_one_reconnects(
    tmp_path: Path, cache_dir: Path
) -> None:
    engine = RemoteEngine(pipe(server_argv(tmp_path)))
    engine.load()
    first = engine._link

    def kill_at_step_two(preview: StepPreview) -> None:
        if preview.step == 2:
            first.proc.kill()

    with pytest.raises(EngineError, match="engine server stopped.*the next request reconnects"):
        engine.generate(GenerationRequest(prompt="a loft", task="base", seed=1, steps=6), on_step=kill_at_step_two)
    result = engine.generate(GenerationRequest(prompt="again", task="base", seed=1, steps=2))
    assert result.image is not None and engine.reconnects == 1, "a new server, its model loaded again"
    assert engine._link is not first and engine.model is not None
    engine.close()
    with pytest.raises(EngineError, match="closed"):
        engine.generate(GenerationRequest(prompt="after close", task="base"))


def test_the_server_stops_a_generation_within_a_step_when_its_client_is_gone(tmp_path: Path, cache_dir: Path) -> None:
    """ssh dropping closes the server's stdin: the running image stops at its next step and the
    server exits, instead of running the other 494 steps for nobody."""
    import time

    engine = RemoteEngine(pipe(server_argv(tmp_path)))
    engine.load()
    link = engine._link
    seen: list[float] = []

    def drop_at_step_two(preview: StepPreview) -> None:
        seen.append(preview.elapsed_s)
        if preview.step == 2:
            link.proc.stdin.close()  # what the server sees when the link drops

    try:  # the cancelled result may still reach this side before the server exits, or not
        result = engine.generate(
            GenerationRequest(prompt="a loft", task="base", seed=1, steps=500), on_step=drop_at_step_two
        )
        assert result.cancelled and result.steps_done < 500
    except EngineError as exc:
        assert "the next request reconnects" in str(exc)
    step_s = seen[1] - seen[0]
    started = time.monotonic()
    assert link.proc.wait(timeout=60) == 0
    assert time.monotonic() - started < 30 + 50 * step_s, "stopped, not run to its 500th step"


def test_a_server_of_another_version_is_refused_naming_both(
    tmp_path: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(client, "__version__", "0.0.1")
    with pytest.raises(EngineError, match=r"server is spatiora \S+ .* this is spatiora 0\.0\.1"):
        RemoteEngine(pipe(server_argv(tmp_path)))


def test_a_server_that_cannot_start_says_why(tmp_path: Path) -> None:
    with pytest.raises(EngineError, match="cannot start the engine server"):
        RemoteEngine(pipe([str(tmp_path / "no-such-program")]))
    bad = [sys.executable, "-m", "spatiora_tui", "serve", "--stdio", "--config", str(tmp_path / "missing.toml")]
    with pytest.raises(EngineError, match="engine server stopped: .*missing.toml"):
        RemoteEngine(pipe(bad))


# -- through a real sshd on loopback ---------------------------------------------------------------


def ssh_env(port_key: tuple[int, Path], root: Path, cache_dir: Path) -> dict[str, str]:
    """The environment that points --engine's ssh at the test sshd and its key, and runs this
    checkout's spatiora on the other side (the same machine here)."""
    _, key = port_key
    ssh = (
        f"ssh -i {key} -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o IdentitiesOnly=yes "
        "-o BatchMode=yes -o LogLevel=ERROR"
    )
    remote = " ".join(
        [
            "env",
            "HF_HUB_OFFLINE=1",
            f"SPATIORA_CACHE_DIR={cache_dir}",
            f"SPATIORA_STATE_DIR={root / 'server-state'}",
            f"XDG_RUNTIME_DIR={os.environ['XDG_RUNTIME_DIR']}",  # this test's: its engine is stopped after it
            f"PYTHONPATH={REPO}",
            sys.executable,
            "-m",
            "spatiora_tui",
        ]
    )
    return {"SPATIORA_SSH": ssh, "SPATIORA_REMOTE_COMMAND": remote, "SPATIORA_OUTPUT_DIR": str(root / "here-out")}


@pytest.fixture
def far_engine() -> Iterator[None]:
    """--engine ssh:// starts the user's engine on the other side (here, this machine, in this
    test's runtime folder): stopped after the test."""
    from spatiora_tui.remote import userengine

    try:
        yield
    finally:
        userengine.stop(userengine.place(), timeout_s=20)


def user() -> str:
    return os.environ.get("USER") or subprocess.run(["id", "-un"], capture_output=True, text=True).stdout.strip()


def test_generate_runs_on_the_engine_over_ssh_and_saves_here(sshd, far_engine, tmp_path: Path, cache_dir: Path) -> None:
    port, _ = sshd
    server_config = tmp_path / "server" / "config.toml"
    server_config.parent.mkdir()
    server_config.write_text(settings_to_toml(small_settings(server_config.parent)), encoding="utf-8")
    (tmp_path / "config.toml").write_text("", encoding="utf-8")  # this side's config: no tasks of its own
    url = f"ssh://{user()}@127.0.0.1:{port}{server_config}"
    env = ssh_env(sshd, tmp_path, cache_dir)
    proc = spatiora("generate", "--engine", url, "--task", "floorplan", "--seed", "5", "a flat", cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr
    (path,) = [Path(line) for line in proc.stdout.split()]
    assert path.parent == tmp_path / "here-out", "the image is saved on this side"
    request = read_metadata(path).spatiora["request"]
    assert (request["task"], request["seed"]) == ("floorplan", 5)

    # The link ended with the command; the user's engine on the other side did not: the next
    # command over ssh finds the model loaded.
    from spatiora_tui.remote import userengine

    engine = userengine.read_record(userengine.place())
    assert engine is not None and engine["config"] == str(server_config)
    again = spatiora("generate", "--engine", url, "--task", "interior", "a loft", cwd=tmp_path, env=env)
    assert again.returncode == 0, again.stderr
    assert "loading" not in again.stderr
    assert userengine.read_record(userengine.place())["pid"] == engine["pid"]
    assert "task: floorplan" in proc.stderr and "stages: " in proc.stderr and "denoise" in proc.stderr
    sweep = spatiora("sweep", "--engine", url, "--x", "seed=1,2", "--task", "base", "a flat", cwd=tmp_path, env=env)
    assert sweep.returncode == 0, sweep.stderr
    assert len(sweep.stdout.split()) == 3 and "grid:" in sweep.stderr


@pytest.mark.parametrize(
    ("url", "code", "words"),
    [
        ("ftp://gpu-box", 2, "--engine takes ssh://"),
        ("http://gpu-box", 2, "give the server's port"),
        ("unix://tmp/s.sock", 2, "a socket address is unix:// and an absolute path"),
        ("ssh://me:secret@gpu-box", 2, "no password in the address"),
        ("ssh://127.0.0.1:1", 1, "engine server stopped: ssh: connect to host 127.0.0.1 port 1"),
    ],
)
def test_a_bad_engine_address_is_one_line(tmp_path: Path, url: str, code: int, words: str) -> None:
    env = {"SPATIORA_SSH": "ssh -o BatchMode=yes -o ConnectTimeout=5 -o StrictHostKeyChecking=no"}
    proc = spatiora("generate", "--engine", url, "a flat", cwd=tmp_path, env=env)
    assert_one_line_failure(proc, code, words)


def test_the_tui_drives_the_engine_over_ssh_generate_switch_queue_cancel(
    sshd, far_engine, tmp_path: Path, cache_dir: Path
) -> None:
    """The UI here, the engine behind a real sshd: an image, a task switch, a second request
    queued behind a running one, both cancelled, and the hardware pane naming the other side."""
    import dataclasses

    from spatiora_tui.config import TaskSettings
    from tests.e2e.terminals import Tmux, app_command

    port, _ = sshd
    server = tmp_path / "server"
    server.mkdir()
    slow = TaskSettings(name="slow", prompt_template="{prompt}", scheduler="euler", steps=500, width=256, height=256)
    settings = small_settings(server)
    settings = dataclasses.replace(settings, tasks=(*settings.tasks, slow))
    (server / "config.toml").write_text(settings_to_toml(settings), encoding="utf-8")
    here = tmp_path / "here"
    here.mkdir()
    url = f"ssh://{user()}@127.0.0.1:{port}{server / 'config.toml'}"
    tmux = Tmux(tmp_path)
    try:
        tmux.start(app_command(here, cache_dir, "--engine", url, extra_env=ssh_env(sshd, tmp_path, cache_dir)))
        shown = tmux.wait_for("model ready", 180)
        assert "Hardware · 127.0.0.1" in shown and "slow" in shown, "the other side's pane and task modes"
        tmux.type("a flat over ssh")
        tmux.keys("C-g")
        tmux.wait_for("saved ")
        assert len(list((tmp_path / "here-out").glob("*.png"))) == 1
        tmux.keys("C-t")  # interior -> floorplan
        tmux.wait_for("● floorplan")
        tmux.keys("C-t", "C-t")  # base, slow
        tmux.wait_for("● slow")
        tmux.keys("C-g")
        tmux.wait_for("step ")
        tmux.keys("C-g")
        tmux.wait_for("1st in the queue")
        tmux.keys("Escape")  # the running job stops; the queued one starts
        tmux.wait_for("generating job 3")  # job 1 was the first image, 2 the slow one
        tmux.keys("Escape")
        tmux.wait_for("cancelled · ")
        tmux.keys("C-r")
        queue = tmux.wait_for("in this session")
        rows = [line.split() for line in queue.splitlines() if line.split()[:1] in (["2"], ["3"])]
        assert [row[1] for row in rows] == ["cancelled", "cancelled"], queue
        assert len(list((tmp_path / "here-out").glob("*.png"))) == 1, "a cancelled job saves nothing"
    finally:
        tmux.close()


def test_the_servers_hardware_and_peaks_reach_the_client_also_while_it_generates(
    tmp_path: Path, cache_dir: Path
) -> None:
    from spatiora_tui.remote.telemetry import RemoteTelemetry

    engine = RemoteEngine(pipe(server_argv(tmp_path)))
    engine.load()
    telemetry = RemoteTelemetry(engine, where="gpu-box")
    seen: list[Any] = []
    telemetry.subscribe(seen.append)
    during = []

    def on_step(preview: StepPreview) -> None:
        if preview.step == 2:
            during.append(telemetry.sample())  # answered while the server is generating

    engine.generate(GenerationRequest(prompt="a loft", task="floorplan", seed=1, steps=4), on_step=on_step)
    snapshot = telemetry.sample()
    assert snapshot is not None and snapshot.host.process_rss_mb > 100, "the server process's memory"
    assert during and during[0] is not None and during[0].stage == "denoise"
    assert "floorplan" in telemetry.peaks_by_task() and "denoise" in telemetry.peaks_by_stage("floorplan")
    assert len(seen) == 2
    engine.close()


def test_serve_needs_a_transport_and_a_program_on_the_other_end(tmp_path: Path) -> None:
    assert_one_line_failure(spatiora("serve", cwd=tmp_path), 2, "say how to serve: --stdio")


def test_a_dropped_link_fails_the_running_job_and_the_queue_goes_on_through_a_new_link(
    tmp_path: Path, cache_dir: Path
) -> None:
    """The queue lives in the client's Session (and its queue file): when the server dies mid-job,
    that job fails saying so (the user may retry it) and the queued jobs run on a new link."""
    from spatiora_tui.jobs.job import JobState
    from spatiora_tui.jobs.session import Session

    engine = RemoteEngine(pipe(server_argv(tmp_path)))
    engine.load()
    session = Session(engine, small_settings(tmp_path), output_dir=tmp_path / "out")
    first = session.submit(GenerationRequest(prompt="a loft", task="base", seed=1, steps=6))
    rest = [session.submit(GenerationRequest(prompt="a flat", task="floorplan", seed=s, steps=2)) for s in (2, 3)]
    link = engine._link

    def kill_at_step_two(job, preview: StepPreview) -> None:
        if job.id == first.id and preview.step == 2:
            link.proc.kill()

    assert session.wants_runner()
    while session.run_next(on_step=kill_at_step_two):
        pass
    assert first.state is JobState.FAILED and "the next request reconnects" in (first.error or "")
    assert [job.state for job in rest] == [JobState.DONE, JobState.DONE]
    assert engine.reconnects == 1 and len(list((tmp_path / "out").glob("*.png"))) == 2
    retried = session.retry(first.id)
    assert retried is not None and session.wants_runner()
    while session.run_next():
        pass
    assert retried.state is JobState.DONE
    session.close()
    engine.close()


def test_requests_queued_on_a_server_that_died_fail_saying_so_after_the_reconnect(
    tmp_path: Path, cache_dir: Path
) -> None:
    """A `serve --stdio` process keeps nothing once it is gone: the generations that waited in it
    fail, saying to run them again; the new link serves the next request."""
    import threading

    engine = RemoteEngine(pipe(server_argv(tmp_path)))
    engine.load()
    first = engine._link
    started = threading.Event()
    outcomes: dict[int, str] = {}

    def run(seed: int, steps: int) -> None:
        try:
            engine.generate(
                GenerationRequest(prompt="x", task="base", seed=seed, steps=steps), on_step=lambda p: started.set()
            )
            outcomes[seed] = "ok"
        except EngineError as exc:
            outcomes[seed] = str(exc)

    threads = [threading.Thread(target=run, args=(1, 300))]
    threads[0].start()
    assert started.wait(60)
    threads.append(threading.Thread(target=run, args=(2, 2)))
    threads[1].start()
    deadline = time.monotonic() + 30
    while len(engine.queue()) < 2:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    first.proc.kill()
    for thread in threads:
        thread.join(120)
    assert "engine server stopped" in outcomes[1]
    assert "the engine server that queued this request is gone; run it again" in outcomes[2]
    assert engine.generate(GenerationRequest(prompt="x", task="base", seed=3, steps=2)).image is not None
    engine.close()
