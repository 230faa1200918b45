"""`spatiora config`: the configuration in force, or a new documented one."""

from __future__ import annotations

import argparse
from pathlib import Path

from spatiora_tui.cli.common import EXIT_OK, UsageError
from spatiora_tui.config import Settings, find_config, load_settings, settings_to_toml, user_config_dir, write_settings


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser) -> None:
    parser = sub.add_parser("config", parents=[common], help="show the configuration in force, or write one")
    actions = parser.add_subparsers(dest="config_command", metavar="ACTION")
    actions.add_parser("show", help="print the configuration in force and where it came from")
    init = actions.add_parser(
        "init", help="write the default configuration, each key documented, to the user config dir"
    )
    init.add_argument("path", nargs="?", help=f"where to write (default: {user_config_dir() / 'config.toml'})")
    init.add_argument("--force", action="store_true", help="replace an existing file")
    # `init` must work when the configuration in force is broken: it reads none.
    parser.set_defaults(run=run, needs_settings=False)


def run(args: argparse.Namespace) -> int:
    if args.config_command == "init":
        target = Path(args.path).expanduser() if args.path else user_config_dir() / "config.toml"
        if target.exists() and not args.force:
            raise UsageError(f"{target} exists; pass --force to replace it")
        write_settings(Settings(), target)
        print(target)
        return EXIT_OK
    config_path = getattr(args, "config", None)
    path = find_config(config_path)
    settings = load_settings(config_path)
    print(f"# in force: {path or 'built-in defaults (no config file found)'}")
    print(f"# output dir: {settings.output_dir}")
    print(f"# adapter dir: {settings.adapter_dir}")
    print(settings_to_toml(settings))
    return EXIT_OK
