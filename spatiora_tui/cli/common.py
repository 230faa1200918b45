"""What every sub-command shares: exit codes, usage errors, one-line messages, status lines."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import re
import sys
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from spatiora_tui.config import Settings

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_CANCELLED = 0, 1, 2, 130
DEMO_NOTE = (
    "note: the demo model has random weights, so the image looks like coloured noise; every "
    "mechanism (adapters, previews, metadata) is real. Set model.source in config.toml to use a "
    "real Stable Diffusion model (docs/models.md)."
)


class UsageError(Exception):
    """Bad arguments; exit code 2."""


def config_parent() -> argparse.ArgumentParser:
    """--config, accepted before and after the sub-command."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--config",
        metavar="PATH",
        default=argparse.SUPPRESS,
        help="config file (default: $SPATIORA_CONFIG, ./config.toml, then the user config dir)",
    )
    common.add_argument(
        "--gpu",
        metavar="N",
        default=argparse.SUPPRESS,
        help="which GPU your engine runs on: one engine per GPU (default: $CUDA_VISIBLE_DEVICES, else the first)",
    )
    return common


#: Characters a terminal acts on instead of showing: C0 controls (tab and newline aside), DEL and
#: C1 (an ESC or CSI in a file name could retitle the window, clear it or write the clipboard).
_CONTROLS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def printable(text: str) -> str:
    """`text` with every terminal control character shown as \\xNN instead of acted on: file
    names, prompts and queue files are anyone's text."""
    return _CONTROLS.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


def one_line(text: str) -> str:
    return printable(" ".join(text.split()))


def fail(message: str, code: int) -> int:
    print(f"spatiora: error: {one_line(message)}", file=sys.stderr)
    return code


def task_list(text: str) -> tuple[str, ...]:
    """--tasks A,B as task names (each checked against the config by the command)."""
    tasks = tuple(name.strip() for name in text.split(",") if name.strip())
    if not tasks:
        raise UsageError("--tasks names no task; give task names from config.toml, e.g. interior,floorplan")
    return tasks


def status_printer() -> Callable[[str | None], None]:
    """A status line on stderr: redrawn in place on a terminal, plain lines in a log."""
    tty = sys.stderr.isatty()

    def show(message: str | None) -> None:
        if tty:
            sys.stderr.write("\r\x1b[2K" + (message or ""))
            sys.stderr.flush()
        elif message:
            print(message, file=sys.stderr)

    return show


def weight(value: float | None) -> str:
    return "default" if value is None else f"{value:g}"


#: The environment variable that picks the engine when --engine is not given ("inproc" for scripts
#: and benchmarks that want the engine in their own process).
ENGINE_ENV = "SPATIORA_ENGINE"
#: --engine's words: the user's own engine (the default) and the engine in this process.
USER_ENGINE, INPROC = "user", "inproc"
ENGINE_HELP = (
    "where the model runs: your own engine, shared by every window and command and started when none runs "
    "(default; `spatiora engine status`), inproc (in this process, as a script or a benchmark wants), "
    "ssh://[user@]host[:port][/path/to/config.toml] (through your ssh), or a shared `spatiora serve --http` at "
    "unix:///path/to/engine.sock or http://127.0.0.1:PORT ($SPATIORA_ENGINE sets the default)"
)


def engine_choice(args: argparse.Namespace) -> str:
    """--engine, else $SPATIORA_ENGINE, else the user's own engine."""
    return (getattr(args, "engine", None) or os.environ.get(ENGINE_ENV) or USER_ENGINE).strip()


def remote_engine(settings: Settings, args: argparse.Namespace) -> tuple[Settings, Any]:
    """The engine the command runs on, connected (versions checked), and the settings with its
    task modes (the requests are checked against those): the user's own engine (started when
    none runs), another machine's; (settings, None) for --engine inproc (the caller makes a
    LocalEngine)."""
    choice = engine_choice(args)
    if choice == INPROC:
        return settings, None
    status = status_printer()
    if choice == USER_ENGINE:
        from spatiora_tui.remote import userengine

        def say(text: str) -> None:
            status(None)
            print(text, file=sys.stderr, flush=True)

        where = userengine.place(getattr(args, "gpu", None))
        status("connecting to your engine…")
        try:
            engine: Any = userengine.connect(settings, where, say)
        finally:
            status(None)
        return dataclasses.replace(settings, tasks=engine.tasks), engine
    from spatiora_tui.remote.connect import EngineUrlError, connect

    status(f"connecting to {choice}…")
    try:
        engine = connect(choice)
    except EngineUrlError as exc:
        raise UsageError(str(exc)) from None
    finally:
        status(None)
    return dataclasses.replace(settings, tasks=engine.tasks), engine


@contextlib.contextmanager
def engine_for(settings: Settings, args: argparse.Namespace) -> Iterator[tuple[Settings, Any]]:
    """remote_engine() for the length of a command: the link closed after it, and on the user's
    engine the line saying what stays behind (quit_note)."""
    settings, remote = remote_engine(settings, args)
    try:
        yield settings, remote
    finally:
        if remote is not None:
            remote.close()
            quit_note(args)


def quit_note(args: argparse.Namespace) -> None:
    """On the user's own engine: say what stays behind as the command ends."""
    if engine_choice(args) != USER_ENGINE:
        return
    from spatiora_tui.engine.api import EngineError
    from spatiora_tui.remote import userengine

    try:
        note = userengine.quit_note(userengine.place(getattr(args, "gpu", None)))
    except EngineError:
        return
    if note:
        print(note, file=sys.stderr)
