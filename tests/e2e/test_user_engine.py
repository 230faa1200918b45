"""The user's own engine, end to end: real `spatiora` commands in subprocesses start it detached,
share it warm, find it crashed, restart it, and stop it. Each test has its own runtime and state
folders (tests/conftest.py), and the conftest fails a test that leaves an engine running."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.terminals import tasks_config
from tests.e2e.test_cli import SMALL_CONFIG, spatiora

pytestmark = pytest.mark.slow

USER = {"SPATIORA_ENGINE": "user"}


def record(runtime: Path) -> dict:
    return json.loads((runtime / "spatiora" / "engine.json").read_text(encoding="utf-8"))


def wait_for(check, timeout: float = 60, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def over_bridges(config: Path) -> tuple[Any, list[subprocess.Popen]]:
    """A RemoteEngine whose every link is a `spatiora engine bridge` process, as --engine ssh://
    runs on the far side; the bridges' processes, in the order they were opened."""
    from spatiora_tui.remote.client import PipeLink, RemoteEngine

    argv = [sys.executable, "-m", "spatiora_tui", "--config", str(config), "engine", "bridge"]
    bridges: list[subprocess.Popen] = []

    def opener(on_frame, on_end):
        link = PipeLink(argv, on_frame, on_end)
        bridges.append(link.proc)
        return link

    return RemoteEngine(opener), bridges


@pytest.fixture
def project(tmp_path: Path, cache_dir: Path):
    """A folder with a small config.toml; the engine it starts is stopped after the test."""
    (tmp_path / "config.toml").write_text(SMALL_CONFIG, encoding="utf-8")
    try:
        yield tmp_path
    finally:
        spatiora("engine", "stop", cwd=tmp_path, env=USER)


def test_the_first_command_starts_the_engine_and_the_next_ones_share_it_warm(project: Path) -> None:
    runtime = Path(os.environ["XDG_RUNTIME_DIR"])
    first = spatiora("generate", "--task", "floorplan", "a flat", "--out", str(project / "a"), cwd=project, env=USER)
    assert first.returncode == 0, first.stderr
    assert "starting your engine" in first.stderr
    assert "loading" in first.stderr  # the model load's progress reached this client
    assert (
        "your engine keeps spatiora-demo (random weights) warm for 30 min; `spatiora engine stop` frees it now"
        in first.stderr
    )
    pid = record(runtime)["pid"]

    # A second command, as from another shell: the same engine, the model already loaded.
    second = spatiora("generate", "--task", "interior", "a loft", "--out", str(project / "b"), cwd=project, env=USER)
    assert second.returncode == 0, second.stderr
    assert "starting your engine" not in second.stderr and "loading" not in second.stderr
    assert record(runtime)["pid"] == pid
    assert len(list((project / "a").glob("*.png"))) == len(list((project / "b").glob("*.png"))) == 1

    status = spatiora("engine", "status", cwd=project, env=USER)
    assert status.returncode == 0, status.stderr
    assert f"pid {pid}" in status.stdout and "model: spatiora-demo (random weights)" in status.stdout
    assert "clients connected: 0" in status.stdout and "exits after 30 min idle" in status.stdout
    socket_file = runtime / "spatiora" / "engine.sock"
    assert oct(socket_file.stat().st_mode & 0o777) == "0o600"
    assert oct((runtime / "spatiora").stat().st_mode & 0o777) == "0o700"

    logs = spatiora("engine", "logs", cwd=project, env=USER)
    assert "listening on" in logs.stdout and "job 2 (interior): started" in logs.stdout

    # An edited config is taken up by restarting the idle engine; the new one is told why.
    config = project / "config.toml"
    config.write_text(config.read_text(encoding="utf-8") + "\n# edited\n", encoding="utf-8")
    third = spatiora("generate", "a plan", "--task", "floorplan", "--out", str(project / "c"), cwd=project, env=USER)
    assert third.returncode == 0, third.stderr
    assert "restarting your engine: its config file has changed since it started" in third.stderr
    assert record(runtime)["pid"] != pid

    stopped = spatiora("engine", "stop", cwd=project, env=USER)
    assert "stopped your engine" in stopped.stderr
    after = spatiora("engine", "status", cwd=project, env=USER)
    assert after.returncode == 1
    assert "no engine of yours is running" in after.stdout
    assert "the last one: the engine exited; its log's last line:" in after.stdout
    assert "stopped (SIGTERM)" in after.stdout
    assert not socket_file.exists()


def test_an_engine_killed_mid_image_is_reported_and_the_next_command_starts_a_new_one(project: Path) -> None:
    runtime = Path(os.environ["XDG_RUNTIME_DIR"])
    config = project / "config.toml"
    config.write_text(SMALL_CONFIG.replace(tasks_config(steps=3, size=64), tasks_config(steps=500, size=64)))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", **USER}
    long = subprocess.Popen(
        [sys.executable, "-m", "spatiora_tui", "generate", "a loft", "--out", str(project / "a")],
        cwd=project,
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert long.stderr is not None
        for line in long.stderr:  # the engine has started the image
            if "step " in line:
                break
        pid = record(runtime)["pid"]
        os.kill(pid, signal.SIGKILL)
        said = long.stderr.read()
        assert long.wait(timeout=60) == 1
    finally:
        if long.poll() is None:
            long.kill()
    errors = [line for line in said.splitlines() if line.startswith("spatiora: error:")]
    assert len(errors) == 1, said
    assert errors[0].startswith("spatiora: error: the engine was killed by SIGKILL"), said
    assert "its log's last line: " in errors[0]
    assert "reattaching" in said and "starting your engine" in said  # the queue lives on in a new one
    assert "Traceback" not in said
    # The new engine took up the queue: the image shows as failed, with why, not as lost.
    listed = spatiora("queue", cwd=project, env=USER)
    assert "[the engine was killed by SIGKILL" in listed.stdout, listed.stdout

    assert record(runtime)["pid"] != pid
    again = spatiora("generate", "a loft", "--steps", "2", "--out", str(project / "b"), cwd=project, env=USER)
    assert again.returncode == 0, again.stderr
    assert "starting your engine" not in again.stderr, "the engine the first command started again is warm"
    assert len(list((project / "b").glob("*.png"))) == 1


def test_an_idle_engine_exits_by_itself(tmp_path: Path, cache_dir: Path) -> None:
    """No model load: the engine is started and left alone; with idle_exit_minutes = 0.02 (1.2 s)
    it exits, removing its socket and record, and its log says why."""
    from spatiora_tui.config import load_settings
    from spatiora_tui.remote import userengine

    config = tmp_path / "config.toml"
    config.write_text(SMALL_CONFIG + "\n[engine]\nidle_exit_minutes = 0.02\n", encoding="utf-8")
    where = userengine.place()
    started = userengine.start(load_settings(config), where, lambda _: None)
    try:
        wait_for(lambda: userengine.read_record(where) is None, what="the idle engine to exit")
        wait_for(lambda: userengine.last_end(where) is not None, what="its supervisor's record")
    finally:
        userengine.stop(where, timeout_s=5)
    assert not where.socket.exists() and not where.record.exists()
    log = where.log.read_text(encoding="utf-8")
    assert "no client and nothing queued for 1.2 s: exiting to free the GPU" in log, log
    assert (
        started["pid"] > 0
        and userengine.last_end(where) == "the engine exited; its log's last line: " + log.splitlines()[-1].strip()
    )


def test_two_clients_starting_at_once_share_one_engine(tmp_path: Path, cache_dir: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from spatiora_tui.config import load_settings
    from spatiora_tui.remote import userengine

    config = tmp_path / "config.toml"
    config.write_text(SMALL_CONFIG, encoding="utf-8")
    settings, where = load_settings(config), userengine.place()
    try:
        with ThreadPoolExecutor(2) as pool:
            records = list(pool.map(lambda _: userengine.start(settings, where, lambda _: None), range(2)))
        assert records[0]["pid"] == records[1]["pid"]
        assert where.log.read_text(encoding="utf-8").count("starting the engine") == 1
    finally:
        userengine.stop(where, timeout_s=10)


def test_the_tui_starts_the_engine_a_command_from_another_shell_shares_it_and_quitting_says_what_stays(
    tmp_path: Path, cache_dir: Path
) -> None:
    """What `make run` does on a fresh clone: the TUI on the user's engine. While it is open, a
    `spatiora generate` typed in another shell runs on the same loaded model; quitting the TUI
    says that the engine keeps the model warm."""
    from tests.e2e.terminals import Tmux, app_command, make_project, pngs

    project = make_project(tmp_path)
    runtime = Path(os.environ["XDG_RUNTIME_DIR"])
    tmux = Tmux(tmp_path)
    try:
        tmux.start(app_command(project, cache_dir, extra_env={**USER, "SPATIORA_STATE_DIR": str(tmp_path / "state")}))
        shown = tmux.wait_for("model ready", 180)
        assert "Hardware · your engine" in shown
        pid = record(runtime)["pid"]
        other = spatiora(
            "generate",
            "a loft",
            "--out",
            str(tmp_path / "other"),
            cwd=project,
            env={**USER, "SPATIORA_STATE_DIR": str(tmp_path / "state")},
        )
        assert other.returncode == 0, other.stderr
        assert "starting your engine" not in other.stderr and "loading" not in other.stderr
        assert record(runtime)["pid"] == pid
        status = spatiora("engine", "status", cwd=project, env={**USER, "SPATIORA_STATE_DIR": str(tmp_path / "state")})
        assert "clients connected: 1" in status.stdout, status.stdout  # the TUI
        tmux.type("a flat")
        tmux.keys("C-g")
        # The other shell's image is on this screen too ("saved …/other/…", the shared queue):
        # this window's own is the one in the project's outputs.
        deadline = time.monotonic() + 120
        while not pngs(project):
            assert time.monotonic() < deadline, "the TUI's image was not saved"
            time.sleep(0.2)
        tmux.wait_for(pngs(project)[0].name, 30)  # on the status line: the window has its news
        tmux.keys("C-q")
        shown = tmux.wait_for("__EXITED__ 0")
        assert "your engine keeps spatiora-demo (random weights) warm for 30 min" in shown.replace("\n", "")
        assert record(runtime)["pid"] == pid  # the engine outlived the window
    finally:
        tmux.close()
        spatiora("engine", "stop", cwd=project, env={**USER, "SPATIORA_STATE_DIR": str(tmp_path / "state")})


def test_a_batch_goes_on_on_a_new_engine_when_its_engine_is_killed(project: Path) -> None:
    """Crash isolation in a batch: the command reattaches, starting a new engine, which takes up
    the queue: the image that was running fails with the engine's end in words, the next one is
    made and saved; the exit code says one failed."""
    runtime = Path(os.environ["XDG_RUNTIME_DIR"])
    config = project / "config.toml"
    config.write_text(SMALL_CONFIG.replace(tasks_config(steps=3, size=64), tasks_config(steps=200, size=64)))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", **USER}
    batch = subprocess.Popen(
        [sys.executable, "-m", "spatiora_tui", "generate", "a loft", "--count", "2", "--out", str(project / "a")],
        cwd=project,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert batch.stderr is not None
        said = []
        for line in batch.stderr:
            said.append(line)
            if "step " in line:
                break
        first = record(runtime)["pid"]
        os.kill(first, signal.SIGKILL)
        _, rest = batch.communicate(timeout=240)
    finally:
        if batch.poll() is None:
            batch.kill()
    err = "".join(said) + rest
    assert batch.returncode == 1, err
    assert "[1/2] job 1" in err and "failed: the engine was killed by SIGKILL" in err
    assert "reattaching" in err and "[2/2] job 2" in err
    assert "starting your engine" in err and "1 of 2 image(s) saved" in err
    assert len(list((project / "a").glob("*-interior-*[0-9].png"))) == 1
    assert record(runtime)["pid"] != first


def test_calls_waiting_on_the_engine_outlive_a_dropped_bridge_and_run_after_the_reconnect(project: Path) -> None:
    """What --engine ssh:// runs on the box is `engine bridge`: when that link drops (ssh gone),
    the image it was making stops, the engine stays warm, and the generations still waiting are
    kept and handed back to the client's reconnect, which runs them."""
    from concurrent.futures import ThreadPoolExecutor

    from spatiora_tui.engine.api import EngineError, GenerationRequest

    runtime = Path(os.environ["XDG_RUNTIME_DIR"])
    config = project / "config.toml"
    config.write_text(SMALL_CONFIG.replace(tasks_config(steps=3, size=64), tasks_config(steps=30, size=64)))
    engine, bridges = over_bridges(config)
    try:
        engine.load()
        pid = record(runtime)["pid"]
        started = []
        request = GenerationRequest(prompt="a loft", task="interior", seed=1)
        with ThreadPoolExecutor(3) as pool:
            first = pool.submit(engine.generate, request, lambda step: started.append(step))
            wait_for(lambda: bool(started), what="the first image's first step")
            waiting = [pool.submit(engine.generate, request) for _ in range(2)]
            wait_for(lambda: len(engine.queue()) == 3, what="two calls waiting behind the first")
            bridges[0].kill()  # the link drops
            with pytest.raises(EngineError):
                first.result(timeout=60)
            results = [future.result(timeout=120) for future in waiting]
        assert all(result.image is not None and not result.cancelled for result in results)
        assert engine.reconnects == 1 and len(bridges) == 2
        assert record(runtime)["pid"] == pid  # the same engine, warm
    finally:
        engine.close()


def test_a_bridge_ends_as_soon_as_its_client_closes_after_an_engine_call(project: Path) -> None:
    """The engine hangs up on a client that closed its side, even while the hub still holds the
    client's last call: a bridge (what ssh:// runs) ends at once rather than being killed after
    the client's 30 s wait."""
    engine, bridges = over_bridges(project / "config.toml")
    try:
        engine.load()
        engine.models()  # a call the hub's worker runs
    finally:
        began = time.monotonic()
        engine.close()
    assert time.monotonic() - began < 10, "the bridge outlived its client"
    assert bridges[0].returncode == 0


def test_the_tui_outlives_its_engine_killed_mid_image_and_ctrl_n_starts_it_and_the_queue_again(
    tmp_path: Path, cache_dir: Path
) -> None:
    """kill -9 of the engine while the TUI makes an image with another queued: the window stays
    up and says what happened, the image is marked failed, the queued one waits; ctrl+n starts a
    new engine and the queued image is made on it."""
    from tests.e2e.terminals import E2E_CONFIG, Tmux, app_command, make_project, pngs

    project = make_project(tmp_path)
    (project / "config.toml").write_text(
        E2E_CONFIG.replace(tasks_config(steps=16, size=128), tasks_config(steps=150, size=128)), encoding="utf-8"
    )
    runtime = Path(os.environ["XDG_RUNTIME_DIR"])
    env = {**USER, "SPATIORA_STATE_DIR": str(tmp_path / "state")}
    tmux = Tmux(tmp_path)
    try:
        tmux.start(app_command(project, cache_dir, extra_env=env))
        tmux.wait_for("model ready", 180)
        pid = record(runtime)["pid"]
        tmux.type("a loft")
        tmux.keys("C-g")
        tmux.wait_for("generating job 1")
        tmux.keys("C-g")  # a second image, queued behind it
        tmux.wait_for("queued job 2")
        time.sleep(1)
        os.kill(pid, signal.SIGKILL)
        shown = tmux.wait_for("starts it again", 30).replace("\n", "")
        assert "killed by SIGKILL" in shown
        tmux.wait_for("Restart engine", 10)  # the Footer is redrawn after the status line
        time.sleep(1)
        assert not (runtime / "spatiora" / "engine.json").exists() or (record(runtime)["pid"] == pid), (
            "an engine was started before the user asked"
        )
        tmux.keys("C-n")
        tmux.wait_for("saved ", 360)  # 150 steps on the new engine: minutes on a loaded 2-core machine
        assert len(pngs(project)) == 1
        assert record(runtime)["pid"] != pid
        tmux.keys("C-r")  # the queue: job 1 failed with the reason, job 2 done
        shown = tmux.wait_for("in this session").replace("\n", "")
        assert "failed" in shown and "killed by" in shown and "saved" in shown
        tmux.keys("Escape", "C-q")
        tmux.wait_for("__EXITED__ 0")
    finally:
        tmux.close()
        spatiora("engine", "stop", cwd=project, env=env)


def _saved(folder: Path) -> list[Path]:
    """The images of a batch in `folder` (its sheet left out)."""
    return sorted(p for p in folder.glob("*.png") if not p.stem.endswith(("-batch", "-sweep")))


def _kill_batch_at(project: Path, out: Path, count: int, steps: int, seen: Callable[[str], bool]) -> None:
    """`spatiora generate` a batch of `count` into `out` on the user's engine, killed (as a closed
    terminal would end it) at the first line of its output that `seen` picks."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", **USER}
    argv = [sys.executable, "-m", "spatiora_tui", "generate", "a loft", "--count", str(count), "--steps", str(steps)]
    command = subprocess.Popen([*argv, "--out", str(out)], cwd=project, env=env, stderr=subprocess.PIPE, text=True)
    try:
        assert command.stderr is not None
        for line in command.stderr:
            if seen(line):
                break
        command.kill()
        command.wait(timeout=30)
    finally:
        if command.poll() is None:
            command.kill()


def test_a_batch_is_saved_whole_by_the_engine_when_its_command_is_killed(project: Path) -> None:
    """The command is only a view of its batch: killed after the first image (a closed terminal
    does the same), the engine makes and saves the rest and the sheet, each once; `spatiora
    queue` lists them with their files; the engine's status says what ran meanwhile."""
    out = project / "a"
    # Killed once the first image is saved and the second has started.
    _kill_batch_at(project, out, 4, 12, lambda line: line.startswith("[2/4]"))
    status = spatiora("engine", "status", cwd=project, env=USER)
    assert "queue: 1 running" in status.stdout or len(_saved(out)) == 4, status.stdout
    wait_for(lambda: len(list(out.glob("*-batch.png"))) == 1, 240, "the engine to finish the batch and its sheet")
    saved = _saved(out)
    seeds = [int(p.stem.rsplit("-", 1)[1]) for p in saved]
    assert len(saved) == 4 and seeds == list(range(seeds[0], seeds[0] + 4)), "each seed once, none lost"
    listed = spatiora("queue", cwd=project, env=USER)
    assert listed.returncode == 0, listed.stderr
    assert sum(f"-> {out}" in line and "  done  " in line for line in listed.stdout.splitlines()) == 4, listed.stdout


def test_a_batch_typed_over_ssh_outlives_the_ssh_client_and_the_next_login_lists_it(
    sshd, project: Path, cache_dir: Path
) -> None:
    """Part of what the user's engine is for: `spatiora generate --count 8` typed in an SSH
    session; the ssh client dies after the second image (a laptop's lid, a dropped Wi-Fi); the
    next login's `spatiora queue` shows the batch going on, then all 8 images saved, each once."""
    from tests.e2e.sshd import ssh_argv
    from tests.helpers import REPO

    port, key = sshd
    out = project / "over-ssh"
    names = ("XDG_RUNTIME_DIR", "SPATIORA_STATE_DIR", "SPATIORA_OUTPUT_DIR", "XDG_CONFIG_HOME")
    remote_env = " ".join(
        [f"{name}={os.environ[name]}" for name in names]
        + [f"SPATIORA_CACHE_DIR={cache_dir}", "HF_HUB_OFFLINE=1", "SPATIORA_ENGINE=user", f"PYTHONPATH={REPO}"]
    )
    spatiora_there = f"cd {project} && env {remote_env} {sys.executable} -m spatiora_tui"
    ssh = ssh_argv(port, key)
    login = subprocess.Popen(
        [*ssh, f"{spatiora_there} generate 'a loft' --count 8 --steps 12 --out {out}"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert login.stderr is not None
        said = []
        for line in login.stderr:
            said.append(line)
            if line.startswith("[3/8]"):  # two images saved
                break
        login.kill()  # the ssh client, not anything on the far side
        login.wait(timeout=30)
    finally:
        if login.poll() is None:
            login.kill()
    assert len(_saved(out)) >= 2, "".join(said)
    again = subprocess.run([*ssh, f"{spatiora_there} queue"], capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr
    mine = [line for line in again.stdout.splitlines() if "(" in line and "/8 · seed" in line]
    assert len(mine) == 8 and sum(f"-> {out}" in line for line in mine) >= 2, again.stdout
    wait_for(lambda: len(list(out.glob("*-batch.png"))) == 1, 300, "the engine to finish the batch and its sheet")
    saved = _saved(out)
    seeds = [int(p.stem.rsplit("-", 1)[1]) for p in saved]
    assert len(saved) == 8 and seeds == list(range(seeds[0], seeds[0] + 8)), "all 8, each once"


def test_a_sweep_goes_through_the_engines_queue_and_its_grid_is_saved(project: Path) -> None:
    out = project / "sweep"
    proc = spatiora("sweep", "--x", "seed=1,2", "--y", "steps=2,3", "a flat", "--out", str(out), cwd=project, env=USER)
    assert proc.returncode == 0, proc.stderr
    assert "sweep of 4 images (2 seed x 2 steps), seed" in proc.stderr and "your engine saves them" in proc.stderr
    assert "grid: " in proc.stderr and "4 of 4 image(s) saved" in proc.stderr
    assert len(_saved(out)) == 4 and len(list(out.glob("*-sweep.png"))) == 1
    logs = spatiora("engine", "logs", cwd=project, env=USER)
    assert "job 4: saved" in logs.stdout, "the engine made them, not the command"


def test_the_engines_queue_is_watched_paused_cancelled_and_resumed_from_a_shell(project: Path) -> None:
    """Over SSH without the TUI: `spatiora queue watch` follows the batch another command queued,
    and `pause`, `cancel JOB` and `resume` change it; nothing starts a second engine."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", **USER}
    out = project / "a"
    argv = [sys.executable, "-m", "spatiora_tui", "generate", "a loft", "--count", "3", "--steps", "20"]
    batch = subprocess.Popen([*argv, "--out", str(out)], cwd=project, env=env, stderr=subprocess.PIPE, text=True)
    try:
        assert batch.stderr is not None
        for line in batch.stderr:
            if line.startswith("[1/3]"):
                break
        assert spatiora("queue", "pause", cwd=project, env=USER).returncode == 0
        listed = spatiora("queue", cwd=project, env=USER).stdout
        assert "(paused: nothing new starts)" in listed and listed.count("  paused  ") == 2, listed
        last = max(int(line.split()[1]) for line in listed.splitlines() if "  paused  " in line)
        cancelled = spatiora("queue", "cancel", str(last), cwd=project, env=USER)
        assert cancelled.returncode == 0 and f"job {last}: cancelled" in cancelled.stderr
        assert spatiora("queue", "resume", cwd=project, env=USER).returncode == 0
        watched = spatiora("queue", "watch", cwd=project, env=USER)
        assert watched.returncode == 0 and "the queue is empty" in watched.stderr, watched.stderr
        rest = batch.communicate(timeout=120)[1]
    finally:
        if batch.poll() is None:
            batch.kill()
    assert "2 of 3 image(s) saved" in rest and batch.returncode == 1
    assert len(_saved(out)) == 2 and all(str(path) in watched.stdout for path in _saved(out)[1:])
    bad = spatiora("queue", "cancel", "x", cwd=project, env=USER)
    assert bad.returncode == 2 and "'x' is not a job number" in bad.stderr


def test_a_stopped_engine_keeps_its_queue_for_the_next_one(project: Path) -> None:
    """`spatiora engine stop` with images queued says they stay; the next engine takes them up
    and runs them, the one that was running again (stopped, not failed)."""
    out = project / "a"
    _kill_batch_at(project, out, 2, 30, lambda line: "step " in line)  # the first image under way
    stopped = spatiora("engine", "stop", cwd=project, env=USER)
    assert "its 2 queued image(s) stay in its queue file" in stopped.stderr, stopped.stderr
    none = spatiora("queue", "watch", cwd=project, env=USER)
    assert none.returncode == 1 and "no engine of yours is running" in none.stderr
    # The next engine takes them up and runs them, before any window asks.
    assert spatiora("engine", "start", cwd=project, env=USER).returncode == 0
    assert "took up 2 job(s)" in spatiora("engine", "logs", cwd=project, env=USER).stdout
    watched = spatiora("queue", "watch", cwd=project, env=USER)
    assert watched.returncode == 0 and "the queue is empty" in watched.stderr
    listed = spatiora("queue", cwd=project, env=USER).stdout
    ours = [line for line in listed.splitlines() if "/2 · seed" in line]
    assert len(ours) == 2 and all("  done  " in line for line in ours), listed
    assert len(_saved(out)) == 2
