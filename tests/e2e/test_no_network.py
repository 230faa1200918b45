"""No listening sockets, no network: the CLI and the app, on the demo model, open no port and
attempt no network operation at all. Two witnesses: Python's audit hooks in the process
(tests/e2e/netguard/sitecustomize.py logs every inet socket, bind, connect and name lookup), and
the kernel's view of the process's sockets (psutil), polled while it runs."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from tests.e2e.terminals import Tmux, app_command, make_project, pngs
from tests.helpers import REPO

pytestmark = [pytest.mark.slow, pytest.mark.skipif(sys.platform != "linux", reason="Linux /proc")]

NETGUARD = Path(__file__).parent / "netguard"


# urllib3 (under huggingface_hub) checks at import whether the host has IPv6 by binding a socket
# to ("::1", 0) and closing it: no listening, no traffic, never leaves the machine. That one probe
# is the only socket operation allowed.
IPV6_PROBE = ("socket.__new__ family=", "socket.bind (('::1', 0),)")


def network_attempts(log: Path) -> list[str]:
    lines = log.read_text().splitlines() if log.exists() else []
    return [
        line
        for line in lines
        if not (line.endswith("origin=urllib3.util.connection") and any(p in line for p in IPV6_PROBE))
    ]


def guarded_env(log: Path, cache_dir: Path, project: Path) -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": f"{NETGUARD}{os.pathsep}{REPO}",
        "SPATIORA_SOCKET_LOG": str(log),
        "HF_HUB_OFFLINE": "1",
        "SPATIORA_CACHE_DIR": str(cache_dir),
        "SPATIORA_OUTPUT_DIR": str(project / "outputs"),
    }


def watch_sockets(pid: int, until, timeout: float = 180) -> list[str]:
    """Poll the sockets of `pid` and its children until until() is true; the suspicious ones
    (any listening socket, any inet socket) seen on the way."""
    seen: set[str] = set()
    deadline = time.monotonic() + timeout
    while not until():
        assert time.monotonic() < deadline, "timed out"
        try:
            root = psutil.Process(pid)
            procs = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            break
        for proc in procs:
            try:
                connections = proc.net_connections(kind="all")
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
            for conn in connections:
                inet = conn.family in (socket.AF_INET, socket.AF_INET6)
                if conn.status == psutil.CONN_LISTEN or inet:
                    seen.add(f"{proc.pid} {conn}")
        time.sleep(0.05)
    return sorted(seen)


def test_the_guard_sees_a_network_attempt(tmp_path: Path, cache_dir: Path) -> None:
    """The witness can fail: a process that does try the network is caught."""
    log = tmp_path / "sockets.log"
    code = "import socket\ntry:\n    socket.create_connection(('127.0.0.1', 9), timeout=1)\nexcept OSError:\n    pass\n"
    subprocess.run([sys.executable, "-c", code], env=guarded_env(log, cache_dir, tmp_path), check=True, timeout=60)
    assert any("socket.connect" in line for line in network_attempts(log))


def test_cli_generate_opens_no_socket(tmp_path: Path, cache_dir: Path) -> None:
    project = make_project(tmp_path)
    log = tmp_path / "sockets.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "spatiora_tui", "generate", "--steps", "8", "a quiet room"],
        cwd=project,
        env=guarded_env(log, cache_dir, project),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    seen = watch_sockets(proc.pid, lambda: proc.poll() is not None)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert len(pngs(project)) == 1
    assert seen == [], f"sockets: {seen}"
    assert network_attempts(log) == []


def test_the_app_opens_no_socket(tmp_path: Path, cache_dir: Path) -> None:
    project = make_project(tmp_path)
    log = tmp_path / "sockets.log"
    tmux = Tmux(tmp_path)
    try:
        extra = {"PYTHONPATH": f"{NETGUARD}{os.pathsep}{REPO}", "SPATIORA_SOCKET_LOG": str(log)}
        tmux.start(app_command(project, cache_dir, extra_env=extra))
        pane_pid = int(tmux.run("display-message", "-p", "-t", tmux.session, "#{pane_pid}").strip())
        tmux.wait_for("model ready", timeout=120)
        tmux.type("a quiet room")
        tmux.keys("C-g")
        seen = watch_sockets(pane_pid, lambda: bool(pngs(project)))
        tmux.wait_for("saved ")
        tmux.keys("C-o")
        tmux.wait_for("View large")
        tmux.keys("Escape", "C-q")
        seen += watch_sockets(pane_pid, lambda: "__EXITED__" in tmux.screen(), timeout=30)
        assert "__EXITED__ 0" in tmux.screen()
    finally:
        tmux.close()
    assert seen == [], f"sockets: {seen}"
    assert network_attempts(log) == []
