"""The `spatiora` command: headless sub-commands, and the terminal UI when none is given.

One module per command (generate, sweep, queue, engine, tasks, models, doctor, bench, evaluate,
config, serve, tui); each registers its own sub-parser and the function that runs it. Every failure
the user can cause ends in one line on stderr and a non-zero exit: 2 for bad configuration or
arguments, 1 for a failed run, 130 for a run cancelled with ctrl+c. A traceback is shown only with SPATIORA_DEBUG=1.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence

from spatiora_tui import __version__, failpoints
from spatiora_tui.cli import bench, config, doctor, engine, evaluate, generate, models, queue, serve, sweep, tasks, tui
from spatiora_tui.cli.common import EXIT_CANCELLED, EXIT_FAILED, EXIT_USAGE, UsageError, config_parent, fail
from spatiora_tui.config import ConfigError, load_settings

COMMANDS = (generate, sweep, queue, engine, tasks, models, doctor, bench, evaluate, config, serve)


def build_parser() -> argparse.ArgumentParser:
    common = config_parent()
    parser = argparse.ArgumentParser(
        prog="spatiora",
        parents=[common],
        description="Stable Diffusion design images from a terminal: task modes as hot-swapped LoRA sets.",
        epilog="With no sub-command, opens the terminal UI on the configured model (the demo by default).",
    )
    parser.add_argument("--version", action="version", version=f"spatiora {__version__}")
    tui.add_arguments(parser)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for command in COMMANDS:
        command.register(sub, common)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if os.environ.get(failpoints.ENV):
            try:
                failpoints.arm_from_env()
            except ValueError as exc:
                raise UsageError(f"{failpoints.ENV}: {exc}") from None
        run: Callable[..., int] = getattr(args, "run", tui.run)  # no sub-command: the TUI
        if getattr(args, "needs_settings", True):
            return run(load_settings(getattr(args, "config", None)), args)
        return run(args)
    except (ConfigError, UsageError) as exc:
        return fail(str(exc), EXIT_USAGE)
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return EXIT_CANCELLED
    except BrokenPipeError:
        # The reader went away (`spatiora models | head`): nothing more to say to it.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_FAILED
    except Exception as exc:  # the last line of defence: one line, never a traceback
        from spatiora_tui.engine.api import EngineError
        from spatiora_tui.outputs import OutputError

        if os.environ.get("SPATIORA_DEBUG"):
            raise
        if isinstance(exc, (EngineError, OutputError)):
            return fail(str(exc), EXIT_FAILED)
        return fail(f"unexpected {type(exc).__name__}: {exc} (set SPATIORA_DEBUG=1 for the traceback)", EXIT_FAILED)
