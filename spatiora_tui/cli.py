"""The `spatiora` command: headless sub-commands (generate, tasks, doctor, config).

Every failure the user can cause ends in one line on stderr and a non-zero exit: 2 for bad
configuration or arguments, 1 for a failed run, 130 for a run cancelled with ctrl+c. A traceback
is shown only with SPATIORA_DEBUG=1.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import threading
from importlib import metadata
from pathlib import Path
from typing import Any, Callable, Sequence

from spatiora_tui import __version__, failpoints
from spatiora_tui.config import (
    OUTPUT_DIR_ENV,
    RENDERERS,
    SCHEDULERS,
    ConfigError,
    Settings,
    find_config,
    load_settings,
    settings_to_toml,
    user_cache_dir,
    user_config_dir,
    write_settings,
)

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_CANCELLED = 0, 1, 2, 130
DEMO_NOTE = (
    "note: the demo model has random weights, so the image looks like coloured noise; every "
    "mechanism (adapters, previews, metadata) is real. Set model.source in config.toml to use a "
    "real Stable Diffusion model (docs/models.md)."
)


class UsageError(Exception):
    """Bad arguments; exit code 2."""


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", metavar="PATH", default=argparse.SUPPRESS,
                        help="config file (default: $SPATIORA_CONFIG, ./config.toml, then the user config dir)")
    parser = argparse.ArgumentParser(
        prog="spatiora", parents=[common],
        description="Stable Diffusion design images from a terminal: task modes as hot-swapped LoRA sets.",
        epilog="With no sub-command, opens the terminal UI on the configured model (the demo by default).",
    )
    parser.add_argument("--version", action="version", version=f"spatiora {__version__}")
    parser.add_argument("--renderer", choices=RENDERERS, help="how images are drawn (default: ui.renderer, auto)")
    parser.add_argument("--startup-time", action="store_true",
                        help="open the UI, report the time from process start to its first frame, and quit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    gen = sub.add_parser("generate", parents=[common], help="generate one image and save it with metadata")
    gen.add_argument("prompt", help="what to draw; the task's prompt template wraps it")
    gen.add_argument("--task", "-t", help="task mode (default: the first in config.toml)")
    gen.add_argument("--seed", type=int, help="random seed (default: random; printed)")
    gen.add_argument("--steps", type=int, help="denoising steps (default: the task's)")
    gen.add_argument("--guidance", type=float, help="CFG scale (default: the task's)")
    gen.add_argument("--width", type=int, help="width in pixels, a multiple of 8")
    gen.add_argument("--height", type=int, help="height in pixels, a multiple of 8")
    gen.add_argument("--negative", help="negative prompt (default: the task's)")
    gen.add_argument("--scheduler", choices=list(SCHEDULERS), help="sampler (default: the task's)")
    gen.add_argument("--out", metavar="PATH", help="output folder, or a .png file name")

    sub.add_parser("tasks", parents=[common], help="list task modes with their adapters and settings")
    models = sub.add_parser(
        "models", parents=[common], help="list the checkpoints, LoRAs and embeddings in your folders",
        description="Every checkpoint, LoRA and embedding in the folders of [paths] (an AUTOMATIC1111 or ComfyUI "
                    "install included) and [adapters] dir: what each is, its size and its AUTOMATIC1111 hash. "
                    "Hashes are computed once per file and cached.")
    models.add_argument("--no-hash", action="store_true", help="skip hashing (files not hashed before show no hash)")
    models.add_argument("--json", dest="models_json", action="store_true", help="print JSON instead of a table")
    sub.add_parser("doctor", parents=[common], help="check versions, device, NVML, model and adapters")

    bench = sub.add_parser(
        "bench", parents=[common], help="benchmarks that print measured figures",
        description="Per task mode, as in the paper's Table 1: N requests with a task switch before each, "
                    "timed from the request: first preview, final image, total (saved), img/min, peak GPU "
                    "and CPU MB, adapter switch, preview overhead and per-stage peaks. `spatiora bench lora` "
                    "measures adapter switching alone.")
    # Own dests: `bench lora` has options of the same names, and argparse would mix the two.
    bench.add_argument("--arch", dest="bench_arch", default="demo", choices=["demo", "sd15", "sdxl"],
                       help="demo: the demo model (fast); sd15/sdxl: the real architectures with random "
                            "weights (time and memory of the real models)")
    bench.add_argument("--tasks", dest="bench_tasks", default="interior,floorplan", metavar="A,B",
                       help="task modes from config.toml, comma-separated (default interior,floorplan)")
    bench.add_argument("--runs", dest="bench_runs", type=int, default=2, help="requests per task (default 2)")
    bench.add_argument("--steps", dest="bench_steps", type=int, default=4, help="denoising steps (default 4)")
    bench.add_argument("--size", dest="bench_size", default="512x512", metavar="WxH", help="default 512x512")
    bench.add_argument("--rank", dest="bench_rank", type=int, default=None,
                       help="LoRA rank of each task's adapter (default 64; 4 on demo)")
    bench.add_argument("--device", dest="bench_device", default=None,
                       help="cpu, cuda or mps (default: model.device from config.toml)")
    bench.add_argument("--json", dest="bench_json", metavar="PATH", help="also write the figures as JSON")
    bench.add_argument("--markdown", dest="bench_markdown", metavar="PATH",
                       help="also write the table as Markdown (the paper's rows beside ours)")
    bench_sub = bench.add_subparsers(dest="bench_command", metavar="BENCH")
    soak = bench_sub.add_parser(
        "soak", help="many generations with a task switch before each, in one process: RSS growth, "
                     "slope, leak watchdog, errors (docs/reliability.md)")
    soak.add_argument("--generations", type=int, default=200, help="default 200")
    soak.add_argument("--tasks", dest="soak_tasks", default="interior,floorplan", metavar="A,B",
                      help="task modes from config.toml, taken in turn (default interior,floorplan)")
    soak.add_argument("--size", dest="soak_size", default="64x64", metavar="WxH",
                      help="default 64x64 (memory behaviour, not image quality, is what is soaked)")
    soak.add_argument("--steps", dest="soak_steps", type=int, default=4, help="default 4")
    soak.add_argument("--cancel-every", type=int, default=20, help="cancel every Nth generation half-way "
                      "(default 20; 0: never)")
    soak.add_argument("--warmup", type=int, default=10, help="generations before the baseline (default 10)")
    soak.add_argument("--json", dest="soak_json", metavar="PATH", help="also write the figures as JSON")

    lora = bench_sub.add_parser(
        "lora", help="adapter switch costs on the real SD 1.5 or SDXL UNet architecture (random weights): "
                     "naive load+fuse vs resident, RAM-cache, cold and fused switches; memory growth; "
                     "per-step cost")
    lora.add_argument("--arch", default="sd15", choices=["sd15", "sdxl", "demo"],
                      help="UNet architecture (default sd15; demo: the tiny demo UNet, a quick check)")
    lora.add_argument("--rank", type=int, default=64, help="LoRA rank of the three adapters (default 64)")
    lora.add_argument("--switches", type=int, default=30, help="switches timed per kind (default 30)")
    lora.add_argument("--leak-switches", type=int, default=200,
                      help="switches over which memory growth is measured (default 200)")
    lora.add_argument("--fuse-cycles", type=int, default=100,
                      help="fuse/unfuse cycles before the base weights are compared (default 100)")
    lora.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    lora.add_argument("--json", metavar="PATH", help="also write the figures as JSON")

    cfg = sub.add_parser("config", parents=[common], help="show the configuration in force, or write one")
    cfg_sub = cfg.add_subparsers(dest="config_command", metavar="ACTION")
    cfg_sub.add_parser("show", help="print the configuration in force and where it came from")
    init = cfg_sub.add_parser("init", help="write the default configuration to the user config dir")
    init.add_argument("path", nargs="?", help=f"where to write (default: {user_config_dir() / 'config.toml'})")
    init.add_argument("--force", action="store_true", help="replace an existing file")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if os.environ.get(failpoints.ENV):
            try:
                failpoints.arm_from_env()
            except ValueError as exc:
                raise UsageError(f"{failpoints.ENV}: {exc}") from None
        return _dispatch(args)
    except ConfigError as exc:
        return _fail(str(exc), EXIT_USAGE)
    except UsageError as exc:
        return _fail(str(exc), EXIT_USAGE)
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return EXIT_CANCELLED
    except Exception as exc:  # the last line of defence: one line, never a traceback
        from spatiora_tui.engine.api import EngineError
        from spatiora_tui.outputs import OutputError

        if os.environ.get("SPATIORA_DEBUG"):
            raise
        if isinstance(exc, (EngineError, OutputError)):
            return _fail(str(exc), EXIT_FAILED)
        return _fail(f"unexpected {type(exc).__name__}: {exc} (set SPATIORA_DEBUG=1 for the traceback)", EXIT_FAILED)


def _fail(message: str, code: int) -> int:
    print(f"spatiora: error: {_one_line(message)}", file=sys.stderr)
    return code


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _dispatch(args: argparse.Namespace) -> int:
    config_path = getattr(args, "config", None)
    if args.command == "config":
        return _cmd_config(args, config_path)
    settings = load_settings(config_path)
    if args.command == "tasks":
        return _cmd_tasks(settings)
    if args.command == "models":
        return _cmd_models(settings, args)
    if args.command == "doctor":
        return _cmd_doctor(settings)
    if args.command == "generate":
        return _cmd_generate(settings, args)
    if args.command == "bench":
        if args.bench_command == "soak":
            return _cmd_bench_soak(settings, args)
        return _cmd_bench(args) if args.bench_command == "lora" else _cmd_bench_tasks(settings, args)
    return _cmd_tui(settings, args)


def _task_list(text: str) -> tuple[str, ...]:
    """--tasks A,B as task names (each checked against the config by the command)."""
    tasks = tuple(name.strip() for name in text.split(",") if name.strip())
    if not tasks:
        raise UsageError("--tasks names no task; give task names from config.toml, e.g. interior,floorplan")
    return tasks


def _cmd_bench_tasks(settings: Settings, args: argparse.Namespace) -> int:
    from spatiora_tui.bench.tasks import markdown_table, parse_size, print_table, run_bench, write_json

    tasks = _task_list(args.bench_tasks)
    if args.bench_runs < 1 or args.bench_steps < 1:
        raise UsageError("--runs and --steps must be at least 1")
    if args.bench_rank is not None and args.bench_rank < 1:
        raise UsageError("--rank must be at least 1")
    try:
        size = parse_size(args.bench_size)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    result = run_bench(settings, args.bench_arch, tasks, args.bench_runs, args.bench_steps, size,
                       device=args.bench_device, rank=args.bench_rank, say=lambda text: print(text, file=sys.stderr))
    print_table(result)
    if args.bench_json:
        write_json(result, Path(args.bench_json))
    if args.bench_markdown:
        Path(args.bench_markdown).write_text(markdown_table(result, with_paper=args.bench_arch != "demo"),
                                             encoding="utf-8")
    return EXIT_OK


def _cmd_bench_soak(settings: Settings, args: argparse.Namespace) -> int:
    from spatiora_tui.bench.soak import print_soak, run_soak, write_json
    from spatiora_tui.bench.tasks import parse_size

    tasks = _task_list(args.soak_tasks)
    try:
        size = parse_size(args.soak_size)
        result = run_soak(settings, args.generations, tasks, size, args.soak_steps, args.cancel_every,
                          args.warmup, say=lambda text: print(text, file=sys.stderr))
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    print_soak(result)
    if args.soak_json:
        write_json(result, Path(args.soak_json))
    return EXIT_OK if result.failed == 0 and not result.errors else EXIT_FAILED


def _cmd_bench(args: argparse.Namespace) -> int:
    if args.rank < 1 or args.switches < 3:
        raise UsageError("--rank must be at least 1 and --switches at least 3")
    if args.leak_switches < 1 or args.fuse_cycles < 1:
        raise UsageError("--leak-switches and --fuse-cycles must be at least 1")
    from spatiora_tui.bench.lora import print_lora_bench, run_lora_bench, write_json

    device = args.device
    if device is None:
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    result = run_lora_bench(args.arch, args.rank, args.switches, device,
                            say=lambda text: print(text, file=sys.stderr),
                            leak_switches=args.leak_switches, fuse_cycles=args.fuse_cycles)
    print_lora_bench(result)
    if args.json:
        write_json(result, Path(args.json))
    return EXIT_OK


def _cmd_tui(settings: Settings, args: argparse.Namespace) -> int:
    """The terminal UI. textual-image probes the terminal on import, so import before running."""
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        raise UsageError(
            "the terminal UI needs an interactive terminal; for scripts use `spatiora generate PROMPT` "
            "(see `spatiora --help`)"
        )
    from spatiora_tui.engine.local import LocalEngine
    from spatiora_tui.hw import Telemetry
    from spatiora_tui.ui.app import SpatioraApp

    telemetry = Telemetry(hz=settings.ui.hardware_hz, leak_tolerance_mb=settings.adapters.leak_tolerance_mb)
    engine = LocalEngine(settings, telemetry=telemetry)
    app = SpatioraApp(settings, engine, renderer=args.renderer, telemetry=telemetry,
                   exit_after_first_frame=args.startup_time)
    app.run()
    if args.startup_time:
        if app.first_frame_age_s is None:
            raise UsageError("the UI exited before drawing its first frame")
        print(f"first frame {app.first_frame_age_s * 1000:.0f} ms after process start")
    return EXIT_OK


# -- generate -----------------------------------------------------------------------------------


def _cmd_generate(settings: Settings, args: argparse.Namespace) -> int:
    from spatiora_tui.atomic import clean_stale_partials
    from spatiora_tui.engine.api import GenerationRequest
    from spatiora_tui.engine.local import LocalEngine
    from spatiora_tui.outputs import OutputError, save_result

    if not args.prompt.strip():
        raise UsageError('the prompt is empty; describe what to draw, e.g. spatiora generate "a sunlit loft"')
    task = settings.task(args.task) if args.task else settings.tasks[0]
    out_dir, out_name = _output_target(settings, args.out)
    clean_stale_partials(out_dir)  # temp files a killed writer left (atomic writes leave nothing else)
    request = GenerationRequest(
        prompt=args.prompt, task=task.name, seed=args.seed, steps=args.steps, guidance=args.guidance,
        width=args.width, height=args.height, negative_prompt=args.negative, scheduler=args.scheduler,
    )
    # Check the overrides before paying for the model load.
    from spatiora_tui.config import task_with_overrides

    task_with_overrides(task, steps=args.steps, guidance=args.guidance, width=args.width, height=args.height)

    from spatiora_tui.hw.telemetry import Telemetry, stage_summary

    status = _status_printer()
    telemetry = Telemetry(hz=settings.ui.hardware_hz, leak_tolerance_mb=settings.adapters.leak_tolerance_mb)
    telemetry.start()
    engine = LocalEngine(settings, telemetry=telemetry)
    model = engine.load(on_progress=lambda msg: status(f"{msg}…"), source=task.model)
    status(None)
    print(f"model: {model.name} · {model.variant or model.family_label} · {model.device} {model.dtype}", file=sys.stderr)
    if model.random_weights:
        print(DEMO_NOTE, file=sys.stderr)
    switch = engine.switch_task(task.name)
    adapters = ", ".join(f"{n}@{w:g}" for n, w in switch.adapters) or "none (base model)"
    print(f"task: {task.name} · adapters: {adapters} · {switch.summary()}", file=sys.stderr)
    if switch.warning:
        print(f"warning: {switch.warning}", file=sys.stderr)

    progress = _ProgressLine()
    result, interrupted = _run_cancellable(
        lambda cancel: engine.generate(request, on_step=progress.update, cancel=cancel))
    progress.done()
    for warning in result.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    if result.cancelled or interrupted:
        # ctrl+c after the last step's check still means "stop, keep nothing".
        print(f"cancelled after {result.steps_done} steps; nothing saved", file=sys.stderr)
        return EXIT_CANCELLED
    try:
        with telemetry.stage("save"):
            path = save_result(result, out_dir, out_name)
    except OutputError as exc:
        telemetry.stop()
        return _rescue(result, exc)
    telemetry.stop()
    t = result.timings
    first = f"{t.first_preview_ms / 1000:.2f} s" if t.first_preview_ms is not None else "off"
    mem = f"peak RSS {result.memory.peak_rss_mb:.0f} MB"
    if result.memory.cuda_max_allocated_mb is not None:
        mem += f", CUDA peak {result.memory.cuda_max_allocated_mb:.0f} MB"
    print(
        f"seed {result.params.seed} · {result.steps_done} steps · {result.params.width}x{result.params.height} · "
        f"image in {(t.image_ms or 0) / 1000:.2f} s (first preview {first}) · {mem}",
        file=sys.stderr,
    )
    print("stages: " + stage_summary(telemetry.records_since(0)), file=sys.stderr)
    print(path)
    return EXIT_OK


def _rescue(result: Any, error: Exception) -> int:
    """The image could not be saved where asked: keep it anyway, in the cache folder, and say so."""
    from spatiora_tui.outputs import OutputError, save_result

    print(f"spatiora: error: {_one_line(str(error))}", file=sys.stderr)
    rescue_dir = user_cache_dir() / "unsaved"
    try:
        path = save_result(result, rescue_dir)
    except OutputError as second:
        print(f"spatiora: error: the image is lost: it could not be kept in {rescue_dir} either "
              f"({_one_line(str(second))})", file=sys.stderr)
        return EXIT_FAILED
    print(f"the image was kept in {path}; move it where you want it", file=sys.stderr)
    print(path)
    return EXIT_FAILED


def _output_target(settings: Settings, out: str | None) -> tuple[Path, str | None]:
    if not out:
        return settings.output_dir, None
    path = Path(out).expanduser()
    if path.suffix.lower() == ".png":
        return path.parent, path.stem
    if path.suffix:
        raise UsageError(f"--out {out}: give a folder or a .png file name")
    return path, None


def _run_cancellable(job: Callable[[threading.Event], Any]) -> tuple[Any, bool]:
    """Run `job` in a thread so ctrl+c can cancel it cleanly (within one step) instead of killing it.
    Returns (its value, whether ctrl+c was pressed): a ctrl+c that lands after the job's last look
    at `cancel` (as the last step ends, or while the image decodes) still counts, so the caller
    keeps nothing either way.

    The main thread waits on an Event, not Thread.join: on Python 3.11 a join interrupted by
    ctrl+c can return while the thread still runs, and the interpreter then aborts at exit.
    A second ctrl+c while cancelling quits at once.
    """
    cancel, finished = threading.Event(), threading.Event()
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = job(cancel)
        except BaseException as exc:  # handed to the main thread below
            box["error"] = exc
        finally:
            finished.set()

    threading.Thread(target=target, name="spatiora-generate", daemon=True).start()
    try:
        while not finished.wait(0.1):
            pass
    except KeyboardInterrupt:
        cancel.set()
        print("\ncancelling… (ctrl+c again to quit at once)", file=sys.stderr)
        try:
            while not finished.wait(0.1):
                pass
        except KeyboardInterrupt:
            print("quit before the step finished", file=sys.stderr)
            os._exit(EXIT_CANCELLED)
    if "error" in box:
        raise box["error"]
    return box["value"], cancel.is_set()


def _status_printer() -> Callable[[str | None], None]:
    tty = sys.stderr.isatty()

    def show(message: str | None) -> None:
        if tty:
            sys.stderr.write("\r\x1b[2K" + (message or ""))
            sys.stderr.flush()
        elif message:
            print(message, file=sys.stderr)

    return show


class _ProgressLine:
    """Step progress on stderr: a redrawn bar on a terminal, a few plain lines in a log."""

    def __init__(self) -> None:
        self._tty = sys.stderr.isatty()
        self._last_logged = -1
        self._drawn = False

    def update(self, preview: Any) -> None:
        step, total, elapsed = preview.step, preview.total, max(preview.elapsed_s, 1e-6)
        rate = step / elapsed
        eta = (total - step) / rate if rate > 0 else 0.0
        if self._tty:
            width = 24
            filled = round(width * step / total)
            bar = "█" * filled + "░" * (width - filled)
            sys.stderr.write(f"\r\x1b[2K  step {step:>3}/{total} {bar} {rate:5.1f} it/s  ETA {eta:4.1f} s")
            sys.stderr.flush()
            self._drawn = True
        else:
            decile = step * 10 // total
            if decile != self._last_logged:
                self._last_logged = decile
                print(f"  step {step}/{total} · {rate:.1f} it/s · ETA {eta:.1f} s", file=sys.stderr)

    def done(self) -> None:
        if self._drawn:
            sys.stderr.write("\n")
            sys.stderr.flush()


# -- tasks, config ------------------------------------------------------------------------------


def _cmd_tasks(settings: Settings) -> int:
    origin = settings.source_file or "built-in defaults"
    print(f"Task modes ({origin}):")
    for task in settings.tasks:
        adapters = ", ".join(f"{a.name}@{_weight(a.weight)}" for a in task.adapters) or "none (base model)"
        print(f"\n  {task.name}  {task.description}")
        print(f"    adapters   {adapters}")
        print(
            f"    settings   {task.steps} steps · CFG {task.guidance:g} · "
            f"{SCHEDULERS[task.scheduler]} ({task.scheduler}) · {task.width}x{task.height}"
        )
        print(f"    template   {task.prompt_template}")
        if task.negative_prompt:
            print(f"    negative   {task.negative_prompt}")
    return EXIT_OK


def _cmd_models(settings: Settings, args: argparse.Namespace) -> int:
    import json

    from spatiora_tui.engine.adapters import LoraManager
    from spatiora_tui.engine.demo import demo_dir
    from spatiora_tui.library.hashing import HashCache
    from spatiora_tui.library.listing import build_report

    status = _status_printer()

    def progress(entry: Any) -> Callable[[int, int], None]:
        def show(done: int, total: int) -> None:
            if done < total:
                status(f"hashing {entry.name} ({total / 2**30:.1f} GB): {100 * done // total}%")
            else:
                status(None)
        return show

    adapter_dirs = [settings.adapter_dir]
    if settings.model.source == "demo" and (demo_dir(user_cache_dir()) / "adapters").is_dir():
        adapter_dirs.append(demo_dir(user_cache_dir()) / "adapters")
    adapters = LoraManager(pipe=None, family="", search_dirs=adapter_dirs).available()
    hashes = None if args.no_hash else HashCache(user_cache_dir() / "hashes.json")
    report = build_report(settings, hashes, progress if sys.stderr.isatty() else None, adapters)
    status(None)
    if args.models_json:
        print(json.dumps([{**row.__dict__, "path": str(row.path)} for row in report.rows], indent=1))
        return EXIT_OK
    folders = report.folders
    for install in folders.installs:
        print(f"{install.kind} install: {install.root}")
    for missing in folders.missing:
        print(f"warning: {missing} (named in [paths]) does not exist")
    headings = {"checkpoint": ("Checkpoints", folders.checkpoints), "lora": ("LoRAs", (*adapter_dirs, *folders.loras)),
                "embedding": ("Embeddings", folders.embeddings)}
    for kind, (title, where) in headings.items():
        rows = [r for r in report.rows if r.kind == kind]
        shown = ", ".join(str(p) for p in where if p.is_dir()) or "no folder found"
        print(f"\n{title} ({len(rows)}) in {shown}")
        width = max([len(r.name) for r in rows] + [4])
        for row in rows:
            size = f"{row.size / 2**30:.1f} GB" if row.size >= 2**30 else f"{row.size / 2**20:.0f} MB" \
                if row.size >= 2**20 else f"{row.size / 2**10:.0f} KB"
            mark = "  " if row.ok else "✗ "
            extra = row.details or (f"shadowed by {row.shadowed_by}" if row.shadowed_by else "")
            print(f"  {mark}{row.name:<{width}}  {size:>7}  {row.short_hash or '-':<12}  {row.what}"
                  + (f" · {extra}" if extra else ""))
    return EXIT_OK


def _cmd_config(args: argparse.Namespace, config_path: str | None) -> int:
    if args.config_command == "init":
        target = Path(args.path).expanduser() if args.path else user_config_dir() / "config.toml"
        if target.exists() and not args.force:
            raise UsageError(f"{target} exists; pass --force to replace it")
        write_settings(Settings(), target)
        print(target)
        return EXIT_OK
    path = find_config(config_path)
    settings = load_settings(config_path)
    print(f"# in force: {path or 'built-in defaults (no config file found)'}")
    print(f"# output dir: {settings.output_dir}")
    print(f"# adapter dir: {settings.adapter_dir}")
    print(settings_to_toml(settings))
    return EXIT_OK


# -- doctor -------------------------------------------------------------------------------------


def _cmd_doctor(settings: Settings) -> int:
    problems: list[str] = []

    def row(label: str, value: str) -> None:
        print(f"  {label:<14} {value}")

    print("Spatiora doctor")
    row("spatiora", __version__)
    row("python", f"{platform.python_version()} ({sys.executable})")
    for dist in ("torch", "diffusers", "transformers", "peft", "safetensors", "textual", "textual-image",
                 "nvidia-ml-py", "psutil"):
        try:
            row(dist, metadata.version(dist))
        except metadata.PackageNotFoundError:
            row(dist, "MISSING")
            problems.append(f"{dist} is not installed; run `make setup` or `pip install -e .`")
    row("config", str(settings.source_file or "built-in defaults (no config file found)"))
    row("cache", str(user_cache_dir()))

    _doctor_device(settings, row, problems)
    _doctor_nvml(row)
    _doctor_paths(settings, row, problems)
    _doctor_model(settings, row, problems)
    _doctor_adapters(settings, row, problems)
    _doctor_output(settings, row, problems)

    if problems:
        print(f"\n{len(problems)} problem(s):")
        for problem in problems:
            print(f"  - {_one_line(problem)}")
        return EXIT_FAILED
    print("\nno problems found")
    return EXIT_OK


def _doctor_device(settings: Settings, row: Callable[[str, str], None], problems: list[str]) -> None:
    try:
        import torch
    except ImportError:
        return
    if torch.cuda.is_available():
        names = ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
        row("CUDA", f"available, torch CUDA {torch.version.cuda}: {names}")
    else:
        build = "CPU-only build of torch" if torch.version.cuda is None else f"torch CUDA {torch.version.cuda}, no GPU seen"
        row("CUDA", f"not available ({build})")
    mps = getattr(torch.backends, "mps", None)
    row("MPS", "available" if mps and mps.is_available() else "not available")
    from spatiora_tui.engine.api import EngineError
    from spatiora_tui.engine.pipeline import resolve_device

    try:
        row("device", f"{resolve_device(settings.model.device)} (model.device = {settings.model.device})")
    except EngineError as exc:
        problems.append(str(exc))


def _doctor_nvml(row: Callable[[str, str], None]) -> None:
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            count = pynvml.nvmlDeviceGetCount()
            driver = pynvml.nvmlSystemGetDriverVersion()
            row("NVML", f"driver {driver}, {count} GPU(s)")
        finally:
            pynvml.nvmlShutdown()
    except Exception as exc:  # no driver, no library: a normal state on CPU machines
        row("NVML", f"unavailable ({type(exc).__name__}): no NVIDIA GPU or driver; VRAM readouts off")


def _doctor_model(settings: Settings, row: Callable[[str, str], None], problems: list[str]) -> None:
    from spatiora_tui.engine.api import EngineError
    from spatiora_tui.engine.pipeline import classify_source

    from spatiora_tui.library.catalog import resolve_source

    try:
        source = classify_source(resolve_source(settings), settings.security.allow_pickle)
    except EngineError as exc:
        row("model", f"{settings.model.source} — PROBLEM")
        problems.append(str(exc))
        return
    if source.kind == "demo":
        from spatiora_tui.engine.demo import demo_dir, verify_demo

        folder = demo_dir(user_cache_dir())
        state = verify_demo(folder) if folder.exists() else "not built yet (built on first use, ~1 s)"
        row("model", f"demo (random weights) at {folder}: {state or 'intact'}")
    elif source.kind == "single_file":
        from spatiora_tui.engine.pipeline import single_file_plan

        try:
            info, config = single_file_plan(Path(source.value), settings.model)
        except EngineError as exc:
            row("model", f"{source.value} — PROBLEM")
            problems.append(str(exc))
            return
        row("model", f"{source.value}: {info.variant.label} ({info.how}); builds with {config}")
    else:
        row("model", f"{source.value} ({source.kind})")


def _doctor_paths(settings: Settings, row: Callable[[str, str], None], problems: list[str]) -> None:
    from spatiora_tui.library.catalog import library_folders, scan

    try:
        folders = library_folders(settings)
    except ConfigError as exc:
        row("paths", "PROBLEM")
        problems.append(str(exc))
        return
    for install in folders.installs:
        row("install", f"{install.kind}: {install.root}")
    for label, where in (("checkpoints", folders.checkpoints), ("loras", folders.loras),
                         ("embeddings", folders.embeddings)):
        present = [p for p in where if p.is_dir()]
        count = len(scan(tuple(present)).entries) if present else 0
        row(label, f"{count} file(s) in {', '.join(map(str, present)) or 'no folder'}")
    for missing in folders.missing:
        problems.append(f"{missing} is named in [paths] but does not exist; fix the path in config.toml")


def _doctor_adapters(settings: Settings, row: Callable[[str, str], None], problems: list[str]) -> None:
    from safetensors import safe_open

    from spatiora_tui.engine.api import EngineError
    from spatiora_tui.engine.demo import DEMO_ADAPTERS, demo_dir
    from spatiora_tui.engine.adapters import LoraManager

    dirs = [settings.adapter_dir]
    if settings.model.source == "demo":
        dirs.append(demo_dir(user_cache_dir()) / "adapters")
    from spatiora_tui.library.catalog import library_folders

    manager = LoraManager(pipe=None, family="", search_dirs=dirs, library_dirs=library_folders(settings).loras)
    found = manager.available()
    row("adapters", f"{len(found)} file(s) in {', '.join(str(d) for d in dirs)} and the [paths] LoRA folders")
    for name, path in sorted(found.items()):
        try:
            with safe_open(str(path), framework="pt") as fh:
                count = len(list(fh.keys()))
            row("", f"{name}: {path.name}, {count} tensors, {path.stat().st_size / 2**20:.1f} MB")
        except Exception as exc:
            row("", f"{name}: UNREADABLE")
            problems.append(f"adapter {name!r} ({path}) is not a valid .safetensors file ({exc}); replace it")
    demo_pending = settings.model.source == "demo" and not (dirs[-1]).exists()
    for task in settings.tasks:
        for ref in task.adapters:
            if ref.name in found:
                continue
            if demo_pending and ref.name in DEMO_ADAPTERS:
                continue  # made with the demo model on first use
            try:
                manager.find(ref.name)
            except EngineError as exc:
                problems.append(f"task {task.name!r}: {exc}")


def _doctor_output(settings: Settings, row: Callable[[str, str], None], problems: list[str]) -> None:
    out = settings.output_dir
    probe = out if out.exists() else next((p for p in out.parents if p.exists()), None)
    writable = probe is not None and os.access(probe, os.W_OK)
    row("output dir", f"{out} ({'writable' if writable else 'NOT writable'})")
    if not writable:
        problems.append(f"output dir {out} is not writable; set output.dir or {OUTPUT_DIR_ENV}")


def _weight(weight: float | None) -> str:
    return "default" if weight is None else f"{weight:g}"


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
