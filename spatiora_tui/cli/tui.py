"""No sub-command: the terminal UI on the configured model."""

from __future__ import annotations

import argparse
import sys

from spatiora_tui.cli.common import EXIT_OK, UsageError
from spatiora_tui.config import RENDERERS, Settings


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--renderer", choices=RENDERERS, help="how images are drawn (default: ui.renderer, auto)")
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
    from spatiora_tui.engine.local import LocalEngine
    from spatiora_tui.hw import Telemetry
    from spatiora_tui.ui.app import SpatioraApp

    telemetry = Telemetry.from_settings(settings)
    engine = LocalEngine(settings, telemetry=telemetry)
    app = SpatioraApp(
        settings, engine, renderer=args.renderer, telemetry=telemetry, exit_after_first_frame=args.startup_time
    )
    app.run()
    if args.startup_time:
        if app.first_frame_age_s is None:
            raise UsageError("the UI exited before drawing its first frame")
        print(f"first frame {app.first_frame_age_s * 1000:.0f} ms after process start")
    return EXIT_OK
