"""`spatiora tasks`: the task modes with their adapters and settings."""

from __future__ import annotations

import argparse

from spatiora_tui.cli.common import EXIT_OK, weight
from spatiora_tui.config import SCHEDULERS, Settings


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser) -> None:
    parser = sub.add_parser("tasks", parents=[common], help="list task modes with their adapters and settings")
    parser.set_defaults(run=run)


def run(settings: Settings, args: argparse.Namespace) -> int:
    origin = settings.source_file or "built-in defaults"
    print(f"Task modes ({origin}):")
    for task in settings.tasks:
        adapters = ", ".join(f"{a.name}@{weight(a.weight)}" for a in task.adapters) or "none (base model)"
        print(f"\n  {task.name}  {task.description}")
        print(f"    adapters   {adapters}")
        print(
            f"    settings   {task.steps} steps · CFG {task.guidance:g} · "
            f"{SCHEDULERS[task.scheduler].a1111} ({task.scheduler}) · {task.width}x{task.height}"
        )
        print(f"    template   {task.prompt_template}")
        if task.negative_prompt:
            print(f"    negative   {task.negative_prompt}")
    return EXIT_OK
