"""No sub-command: the terminal UI on the configured model."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from spatiora_tui.cli.common import EXIT_OK, UsageError, remote_engine
from spatiora_tui.config import RENDERERS, Settings


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--renderer", choices=RENDERERS, help="how images are drawn (default: ui.renderer, auto)")
    parser.add_argument(
        "--engine",
        metavar="URL",
        help="the engine in another process: ssh://[user@]host[:port][/path/to/config.toml] (through your ssh), "
        "unix:///path/to/engine.sock or http://127.0.0.1:PORT (a shared `spatiora serve --http`); "
        "the UI runs here (its images drawn by this terminal), the model there",
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
        if args.engine:
            engine.close()
    if args.startup_time:
        if app.first_frame_age_s is None:
            raise UsageError("the UI exited before drawing its first frame")
        print(f"first frame {app.first_frame_age_s * 1000:.0f} ms after process start")
    return EXIT_OK


def _engine(settings: Settings, args: argparse.Namespace) -> tuple[Any, Any, Settings]:
    """(engine, telemetry, settings): here, or on the machine --engine names (connected before
    the UI takes the terminal, so ssh can ask for a passphrase or a host key; the task modes are
    that machine's)."""
    if not args.engine:
        from spatiora_tui.engine.local import LocalEngine
        from spatiora_tui.hw import Telemetry

        telemetry = Telemetry.from_settings(settings)
        return LocalEngine(settings, telemetry=telemetry), telemetry, settings
    from spatiora_tui.remote.connect import describe
    from spatiora_tui.remote.telemetry import RemoteTelemetry

    settings, engine = remote_engine(settings, args)
    remote = RemoteTelemetry(engine, hz=min(settings.ui.hardware_hz, 2.0), where=describe(args.engine))
    return engine, remote, settings
