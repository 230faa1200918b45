"""No sub-command: the terminal UI on the configured model."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from spatiora_tui.cli.common import (
    ENGINE_HELP,
    EXIT_OK,
    INPROC,
    USER_ENGINE,
    UsageError,
    engine_choice,
    quit_note,
    remote_engine,
)
from spatiora_tui.config import RENDERERS, Settings


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--renderer", choices=RENDERERS, help="how images are drawn (default: ui.renderer, auto)")
    parser.add_argument(
        "--engine", metavar="WHERE", help=ENGINE_HELP + "; the UI runs here, its images drawn by this terminal"
    )
    parser.add_argument(
        "--startup-time",
        action="store_true",
        help="open the UI, report the time from process start to its first frame, and quit",
    )


def run(settings: Settings, args: argparse.Namespace) -> int:
    """textual-image probes the terminal on import, so import it before the app runs."""
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        raise UsageError(
            "the terminal UI needs an interactive terminal; for scripts use `spatiora generate PROMPT` "
            "(see `spatiora --help`)"
        )
    from spatiora_tui.ui.app import SpatioraApp

    engine, telemetry, settings = _engine(settings, args)
    app = SpatioraApp(
        settings, engine, renderer=args.renderer, telemetry=telemetry, exit_after_first_frame=args.startup_time
    )
    try:
        app.run()
    finally:
        if engine_choice(args) != INPROC:
            engine.close()
            quit_note(args)
    if args.startup_time:
        if app.first_frame_age_s is None:
            raise UsageError("the UI exited before drawing its first frame")
        print(f"first frame {app.first_frame_age_s * 1000:.0f} ms after process start")
    return EXIT_OK


def _engine(settings: Settings, args: argparse.Namespace) -> tuple[Any, Any, Settings]:
    """(engine, telemetry, settings): here, or on the machine --engine names (connected before
    the UI takes the terminal, so ssh can ask for a passphrase or a host key; the task modes are
    that machine's)."""
    choice = engine_choice(args)
    if choice == INPROC:
        from spatiora_tui.engine.local import LocalEngine
        from spatiora_tui.hw import Telemetry

        telemetry = Telemetry.from_settings(settings)
        return LocalEngine(settings, telemetry=telemetry), telemetry, settings
    from spatiora_tui.remote.connect import describe
    from spatiora_tui.remote.telemetry import RemoteTelemetry

    settings, engine = remote_engine(settings, args)
    where = "your engine" if choice == USER_ENGINE else describe(choice)
    remote = RemoteTelemetry(engine, hz=min(settings.ui.hardware_hz, 2.0), where=where)
    return engine, remote, settings
