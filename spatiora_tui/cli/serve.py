"""`spatiora serve --stdio`: the engine for one client over stdin/stdout (spatiora_tui/remote)."""

from __future__ import annotations

import argparse
import os
import sys

from spatiora_tui.cli.common import EXIT_OK, UsageError
from spatiora_tui.config import Settings


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser) -> None:
    serve = sub.add_parser(
        "serve",
        parents=[common],
        help="run the engine for a client over stdin/stdout (what `ssh HOST spatiora serve --stdio` starts)",
        description="Run the engine for one client: frames on stdin and stdout, logs on stderr. Started "
        "through ssh, SSH is the authentication and the encryption, and nothing listens on a port.",
    )
    serve.add_argument(
        "--stdio", action="store_true", help="speak the protocol on stdin/stdout (the only transport yet)"
    )
    serve.set_defaults(run=run)


def run(settings: Settings, args: argparse.Namespace) -> int:
    if not args.stdio:
        raise UsageError("say how to serve: --stdio (for `ssh HOST spatiora serve --stdio`)")
    if sys.stdin.isatty() or sys.stdout.isatty():
        raise UsageError("serve --stdio speaks a binary protocol to a program, not to a terminal")
    # Frames go to the real stdout; anything a library prints goes to stderr instead of into them.
    frames_out = os.fdopen(os.dup(sys.stdout.fileno()), "wb", buffering=0)
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    from spatiora_tui.engine.local import LocalEngine
    from spatiora_tui.hw.telemetry import Telemetry
    from spatiora_tui.remote.server import serve

    telemetry = Telemetry.from_settings(settings)
    telemetry.start()  # what the client's hardware pane shows: this machine's GPU, CPU and RAM
    try:
        serve(LocalEngine(settings, telemetry=telemetry), sys.stdin.buffer, frames_out, telemetry)
    finally:
        telemetry.stop()
    return EXIT_OK
