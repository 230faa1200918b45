"""Helpers for driving the app in real terminals: tmux (keys in, screen text out, raw output
bytes), xterm under Xvfb (keys through xdotool, screenshots through ImageMagick), sshd on a
loopback port.

A missing tool skips the test on a developer's machine, and fails it where SPATIORA_E2E_REQUIRE=1
(.ci/run sets it after installing the tools), so CI never passes by skipping.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.helpers import REPO

REQUIRE_ENV = "SPATIORA_E2E_REQUIRE"


def tasks_config(steps: int, size: int, height: int | None = None) -> str:
    """config.toml text with the two demo task modes at `steps` steps and size x size pixels
    (size x height when a height is given)."""
    blocks = []
    for name, weight, template in (
        ("interior", 0.8, "interior photo of {prompt}"),
        ("floorplan", 1.0, "floor plan of {prompt}"),
    ):
        blocks.append(
            f'[[tasks]]\nname = "{name}"\nadapters = [{{name = "{name}", weight = {weight}}}]\n'
            f'prompt_template = "{template}"\nsteps = {steps}\nwidth = {size}\nheight = {height or size}\n'
        )
    return "\n".join(blocks)


#: The random-weight demo model: its noise is what the screenshot tests recognise as a picture.
RANDOM_MODEL = '[model]\nsource = "demo-random"\n\n'
# Small images and enough steps that previews stream for a while.
E2E_CONFIG = '[ui]\nrenderer = "auto"\n\n' + RANDOM_MODEL + tasks_config(steps=16, size=128)


def require(*tools: str) -> None:
    missing = [tool for tool in tools if shutil.which(tool) is None and not Path(tool).exists()]
    if not missing:
        return
    message = f"needs {', '.join(missing)} (apt-get install them; .ci/run does)"
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(message)
    pytest.skip(message)


def app_command(project: Path, cache_dir: Path, *args: str, extra_env: dict[str, str] | None = None) -> str:
    """The shell command that starts the app in `project` on the demo model."""
    env = {
        "HF_HUB_OFFLINE": "1",
        "SPATIORA_CACHE_DIR": str(cache_dir),
        "SPATIORA_OUTPUT_DIR": str(project / "outputs"),
        "PYTHONPATH": str(REPO),
        "COLORTERM": "truecolor",
        # The conftest's: the engine in-process, and this test's own runtime folder.
        "SPATIORA_ENGINE": os.environ.get("SPATIORA_ENGINE", "inproc"),
        "XDG_RUNTIME_DIR": os.environ.get("XDG_RUNTIME_DIR", ""),
        **(extra_env or {}),
    }
    assignments = " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items())
    return (
        f"cd {shlex.quote(str(project))} && env -u COLUMNS -u LINES {assignments} {shlex.quote(sys.executable)} -m spatiora_tui "
        + " ".join(shlex.quote(a) for a in args)
    )


def make_project(tmp_path: Path, config: str = E2E_CONFIG) -> Path:
    project = tmp_path / "project"
    project.mkdir()
    (project / "config.toml").write_text(config, encoding="utf-8")
    return project


def pngs(project: Path) -> list[Path]:
    folder = project / "outputs"
    return sorted(folder.glob("*.png")) if folder.exists() else []


class Tmux:
    """One detached tmux session on its own server socket (never the user's)."""

    def __init__(self, tmp_path: Path, width: int = 160, height: int = 48) -> None:
        require("tmux")
        self.socket = str(tmp_path / f"tmux-{uuid.uuid4().hex[:8]}")
        self.session = "e2e"
        self.width, self.height = width, height

    def run(self, *args: str, check: bool = True) -> str:
        # Without COLUMNS/LINES: something in a pytest run sets them to 80/24, tmux hands them
        # to the pane, and programs there then believe the terminal is 80x24.
        env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
        return subprocess.run(
            ["tmux", "-S", self.socket, *args], check=check, capture_output=True, text=True, timeout=30, env=env
        ).stdout

    def start(self, command: str) -> None:
        self.run(
            "new-session",
            "-d",
            "-s",
            self.session,
            "-x",
            str(self.width),
            "-y",
            str(self.height),
            f"{command}; echo __EXITED__ $?; sleep 600",
        )

    def start_recorded(self, command: str, path: Path) -> None:
        """start(command) under script(1), which writes every byte the program sends to the
        terminal into `path` (tmux's pipe-pane stalled the pane's output in our runs)."""
        require("script")
        self.start(f"script -q -f -e -c {shlex.quote(command)} {shlex.quote(str(path))}")

    def screen(self) -> str:
        return self.run("capture-pane", "-p", "-t", self.session, check=False)

    def title(self) -> str:
        return self.run("display-message", "-p", "-t", self.session, "#{pane_title}", check=False).strip()

    def wait_for(self, text: str, timeout: float = 120) -> str:
        deadline = time.monotonic() + timeout
        while True:
            shown = self.screen()
            if text in shown:
                return shown
            if "__EXITED__" in shown or time.monotonic() > deadline:
                dump = Path(self.socket).with_suffix(".screen.txt")
                dump.write_text(shown, encoding="utf-8")
                raise AssertionError(f"waited for {text!r}; the screen (also in {dump}) was:\n{shown}")
            time.sleep(0.1)

    def keys(self, *keys: str) -> None:
        self.run("send-keys", "-t", self.session, *keys)

    def type(self, text: str) -> None:
        self.run("send-keys", "-t", self.session, "-l", text)

    def paste(self, text: str) -> None:
        """Paste as a terminal does (bracketed paste, when the app asked for it)."""
        self.run("set-buffer", "-b", "e2e", text)
        self.run("paste-buffer", "-p", "-b", "e2e", "-t", self.session)

    def close(self) -> None:
        """End the session and everything started in it. (tmux's hangup is not enough for a
        program under script(1), which outlives the pane and keeps the program's terminal open.)"""
        import psutil

        pane = self.run("display-message", "-p", "-t", self.session, "#{pane_pid}", check=False).strip()
        procs = []
        if pane.isdigit():
            try:
                root = psutil.Process(int(pane))
                procs = [root, *root.children(recursive=True)]
            except psutil.NoSuchProcess:
                pass
        self.run("kill-server", check=False)
        for proc in procs:
            try:
                proc.kill()
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(procs, timeout=10)


@contextlib.contextmanager
def xvfb_display() -> Iterator[str]:
    """An Xvfb server on a free display, 1600x1000, for the real terminals; yields ":N"."""
    read_fd, write_fd = os.pipe()
    server = subprocess.Popen(
        ["Xvfb", "-displayfd", str(write_fd), "-screen", "0", "1600x1000x24", "-nolisten", "tcp"],
        pass_fds=(write_fd,),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    os.close(write_fd)
    try:
        with os.fdopen(read_fd) as fh:
            yield f":{fh.readline().strip()}"
    finally:
        server.terminate()
        server.wait(timeout=10)


# -- the real terminals of the CI matrix (tests/e2e/test_terminals.py, benchmarks/terminal_previews.py)


XTERM_VT340 = [
    "xterm", "-ti", "vt340", "-xrm", "XTerm*decTerminalID: vt340", "-xrm", "XTerm*numColorRegisters: 256",
    "-geometry", "150x44", "-fa", "DejaVu Sans Mono", "-fs", "11", "-e",
]  # fmt: skip


KITTY = [
    "kitty", "--config", "NONE", "-o", "remember_window_size=no", "-o", "initial_window_width=150c",
    "-o", "initial_window_height=44c", "-e",
]  # fmt: skip


@dataclass(frozen=True)
class Terminal:
    """A real terminal under Xvfb as a user would start it, 150x44 cells."""

    argv: list[str]  # up to the command
    env: dict[str, str] = field(default_factory=dict)
    tmux: str = ""  # run inside this tmux (on the test's own socket), in the terminal
    method: str = ""  # inside tmux: the method the preview's title must name
    tile: int = 16  # half-cell blocks hold fewer colours per square: judged on larger ones


def sixel_tmux() -> str:
    """A tmux ≥ 3.4 built with sixel: SPATIORA_TMUX_SIXEL (.ci/run unpacks Debian's backport
    there), else the tmux on PATH when it is one."""
    if os.environ.get("SPATIORA_TMUX_SIXEL"):
        return os.environ["SPATIORA_TMUX_SIXEL"]
    try:
        version = subprocess.run(["tmux", "-V"], capture_output=True, text=True, timeout=10).stdout
    except OSError:
        return "tmux-3.4-with-sixel"
    numbers = tuple(int(n) for n in re.findall(r"\d+", version)[:2])
    return "tmux" if numbers >= (3, 4) else "tmux-3.4-with-sixel"


TERMINALS = {
    "xterm-vt340": Terminal(XTERM_VT340),
    # Debian 12's kitty: kitty graphics without Unicode placeholders (placed directly).
    "kitty-0.26": Terminal(KITTY, {"LIBGL_ALWAYS_SOFTWARE": "1"}),
    "mlterm": Terminal(["mlterm", "-geometry", "150x44", "-e"]),
    # Debian 12's tmux 3.3a in xterm: no sixel through it, half-cell blocks.
    "tmux-3.3-xterm": Terminal(XTERM_VT340, tmux="tmux", method="halfcell", tile=32),
    "tmux-sixel-xterm": Terminal(XTERM_VT340, tmux="SIXEL", method="sixel"),
}
