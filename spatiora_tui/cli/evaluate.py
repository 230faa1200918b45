"""`spatiora eval`: what each task mode draws, as numbers (bench/quality.py): plans and rooms per
task and for the base model alone, walls in the colour asked for, rooms counted in plans, time
per image. Meant for the demo model, whose prompts and images the procedural scorer knows."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from spatiora_tui.cli.common import EXIT_OK, UsageError, status_printer, task_list
from spatiora_tui.config import Settings


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser) -> None:
    parser = sub.add_parser(
        "eval",
        parents=[common],
        help="score what each task mode draws (plans, rooms, wall colours, room counts)",
        description="Generates the same prompts (captions of procedural scenes) with each task mode and with "
        "the base model alone (each task's prompt and settings without its adapters, and the plain prompt), and scores each image with the procedural scorer: plan or room, the walls' "
        "colour against the prompt's, the rooms counted against the rooms asked for. Meant for the demo "
        "model; on another model the scores say how much it draws like the procedural data.",
    )
    parser.add_argument("--tasks", default="interior,floorplan", metavar="A,B", help="default interior,floorplan")
    parser.add_argument("--prompts", type=int, default=20, help="prompts per task (default 20)")
    parser.add_argument("--seeds", type=int, default=1, help="seeds per prompt (default 1)")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the figures as JSON")
    parser.add_argument("--grid", type=Path, metavar="PNG", help="also write each task's first images as a grid")
    parser.set_defaults(run=run)


def run(settings: Settings, args: argparse.Namespace) -> int:
    from spatiora_tui.bench import quality
    from spatiora_tui.engine.local import LocalEngine

    if args.prompts < 1 or args.seeds < 1:
        raise UsageError("--prompts and --seeds must be at least 1")
    names = task_list(args.tasks)
    known = {t.name for t in settings.tasks}
    missing = [n for n in names if n not in known]
    if missing:
        raise UsageError(f"no task named {', '.join(missing)} in the config; tasks: {', '.join(sorted(known))}")
    settings, base = quality.with_base_tasks(settings, names)
    tasks = [settings.task(n) for n in (*names, *base)]
    status = status_printer()
    engine = LocalEngine(settings)
    engine.load(on_progress=lambda msg: status(f"{msg}…"))
    results = quality.evaluate(
        engine,
        tasks,
        quality.prompts(args.prompts),
        args.seeds,
        on_image=lambda task, done, total: status(f"{task}: image {done}/{total}"),
    )
    status(None)
    print(quality.table(results))
    if words := quality.colours(results):
        print(f"\n{words}")
    if args.json:
        args.json.write_text(json.dumps([r.row() for r in results], indent=1), encoding="utf-8")
    if args.grid:
        # A 256-colour palette: a third of the bytes, and these flat drawings lose nothing to see.
        quality.grid(results).quantize(256).save(args.grid, optimize=True)
        print(f"grid: {args.grid} (rows: {', '.join(r.task for r in results)})")
    return EXIT_OK
