"""`spatiora bench`: the paper's table per task mode; `bench soak` and `bench lora`.

`bench` and its sub-commands each register their own options and runner: argparse copies a
sub-command's values over the parent's, so `bench lora --arch` and `bench --arch` never mix.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from spatiora_tui.bench.arch import ARCHES
from spatiora_tui.cli.common import EXIT_FAILED, EXIT_OK, UsageError, task_list
from spatiora_tui.config import Settings, check_size, parse_size


def _say(text: str) -> None:
    print(text, file=sys.stderr)


def _size(text: str) -> tuple[int, int]:
    """--size WIDTHxHEIGHT, each side checked (a UsageError naming what is wrong)."""
    try:
        width, height = parse_size(text)
    except ValueError as exc:
        raise UsageError(f"--size: {exc}") from None
    for name, value in (("width", width), ("height", height)):
        problem = check_size(value)
        if problem:
            raise UsageError(f"--size {text}: width and height must be multiples of 8; the {name} {problem}")
    return width, height


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser) -> None:
    bench = sub.add_parser(
        "bench",
        parents=[common],
        help="benchmarks that print measured figures",
        description="Per task mode, as in the paper's Table 1: N requests with a task switch before each, "
        "timed from the request: first preview, final image, total (saved), img/min, peak GPU "
        "and CPU MB, adapter switch, preview overhead and per-stage peaks. `spatiora bench lora` "
        "measures adapter switching alone.",
    )
    bench.add_argument(
        "--arch",
        default="demo",
        choices=ARCHES,
        help="demo: the demo model (fast); sd15/sdxl: the real architectures with random "
        "weights (time and memory of the real models)",
    )
    bench.add_argument(
        "--tasks",
        default="interior,floorplan",
        metavar="A,B",
        help="task modes from config.toml, comma-separated (default interior,floorplan)",
    )
    bench.add_argument("--runs", type=int, default=2, help="requests per task (default 2)")
    bench.add_argument("--steps", type=int, default=4, help="denoising steps (default 4)")
    bench.add_argument("--size", default="512x512", metavar="WxH", help="default 512x512")
    bench.add_argument(
        "--rank", type=int, default=None, help="LoRA rank of each task's adapter (default 64; 4 on demo)"
    )
    bench.add_argument("--device", default=None, help="cpu, cuda or mps (default: model.device from config.toml)")
    bench.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    bench.add_argument(
        "--markdown", metavar="PATH", help="also write the table as Markdown (the paper's rows beside ours)"
    )
    bench.set_defaults(run=run_tasks)
    kinds = bench.add_subparsers(dest="bench_command", metavar="BENCH")

    soak = kinds.add_parser(
        "soak",
        help="many generations with a task switch before each, in one process: RSS growth, "
        "slope, leak watchdog, errors (docs/reliability.md)",
    )
    soak.add_argument("--generations", type=int, default=200, help="default 200")
    soak.add_argument(
        "--tasks",
        default="interior,floorplan",
        metavar="A,B",
        help="task modes from config.toml, taken in turn (default interior,floorplan)",
    )
    soak.add_argument(
        "--size",
        default="64x64",
        metavar="WxH",
        help="default 64x64 (memory behaviour, not image quality, is what is soaked)",
    )
    soak.add_argument("--steps", type=int, default=4, help="default 4")
    soak.add_argument(
        "--cancel-every", type=int, default=20, help="cancel every Nth generation half-way (default 20; 0: never)"
    )
    soak.add_argument("--warmup", type=int, default=10, help="generations before the baseline (default 10)")
    soak.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    soak.set_defaults(run=run_soak)

    lora = kinds.add_parser(
        "lora",
        help="adapter switch costs on the real SD 1.5 or SDXL UNet architecture (random weights): "
        "naive load+fuse vs resident, RAM-cache, cold and fused switches; memory growth; "
        "per-step cost",
    )
    lora.add_argument(
        "--arch",
        default="sd15",
        choices=ARCHES,
        help="UNet architecture (default sd15; demo: the tiny demo UNet, a quick check)",
    )
    lora.add_argument("--rank", type=int, default=64, help="LoRA rank of the three adapters (default 64)")
    lora.add_argument("--switches", type=int, default=30, help="switches timed per kind (default 30)")
    lora.add_argument(
        "--leak-switches", type=int, default=200, help="switches over which memory growth is measured (default 200)"
    )
    lora.add_argument(
        "--fuse-cycles",
        type=int,
        default=100,
        help="fuse/unfuse cycles before the base weights are compared (default 100)",
    )
    lora.add_argument(
        "--step-side",
        type=int,
        default=512,
        metavar="PIXELS",
        help="side of the square image the per-step cost is timed at (default 512; a multiple of 64)",
    )
    lora.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    lora.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    lora.set_defaults(run=run_lora)


def run_tasks(settings: Settings, args: argparse.Namespace) -> int:
    from spatiora_tui.bench.table import run_bench
    from spatiora_tui.bench.table_report import markdown_table, print_table, write_json

    tasks = task_list(args.tasks)
    if args.runs < 1 or args.steps < 1:
        raise UsageError("--runs and --steps must be at least 1")
    if args.rank is not None and args.rank < 1:
        raise UsageError("--rank must be at least 1")
    size = _size(args.size)
    result = run_bench(
        settings, args.arch, tasks, args.runs, args.steps, size, device=args.device, rank=args.rank, say=_say
    )
    print_table(result)
    if args.json:
        write_json(result, Path(args.json))
    if args.markdown:
        Path(args.markdown).write_text(markdown_table(result, with_paper=args.arch != "demo"), encoding="utf-8")
    return EXIT_OK


def run_soak(settings: Settings, args: argparse.Namespace) -> int:
    from spatiora_tui.bench.soak import print_soak, write_json
    from spatiora_tui.bench.soak import run_soak as soak

    tasks = task_list(args.tasks)
    size = _size(args.size)
    try:
        result = soak(settings, args.generations, tasks, size, args.steps, args.cancel_every, args.warmup, say=_say)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    print_soak(result)
    if args.json:
        write_json(result, Path(args.json))
    return EXIT_OK if result.failed == 0 and not result.errors else EXIT_FAILED


def run_lora(settings: Settings, args: argparse.Namespace) -> int:
    if args.rank < 1 or args.switches < 3:
        raise UsageError("--rank must be at least 1 and --switches at least 3")
    if args.leak_switches < 1 or args.fuse_cycles < 1:
        raise UsageError("--leak-switches and --fuse-cycles must be at least 1")
    if args.step_side < 64 or args.step_side % 64:
        raise UsageError(f"--step-side must be a multiple of 64 (64, 512, 1024…), not {args.step_side}")
    from spatiora_tui.bench.lora import print_lora_bench, run_lora_bench, write_json

    device = args.device
    if device is None:
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    result = run_lora_bench(
        args.arch,
        args.rank,
        args.switches,
        device,
        say=_say,
        leak_switches=args.leak_switches,
        fuse_cycles=args.fuse_cycles,
        step_side=args.step_side,
    )
    print_lora_bench(result)
    if args.json:
        write_json(result, Path(args.json))
    return EXIT_OK
