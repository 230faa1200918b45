"""`spatiora generate`: one image, or a batch (--count N), each saved with its metadata; ctrl+c
cancels within a step."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from spatiora_tui.cli.common import (
    DEMO_NOTE,
    ENGINE_HELP,
    EXIT_CANCELLED,
    EXIT_FAILED,
    EXIT_OK,
    USER_ENGINE,
    UsageError,
    engine_choice,
    engine_for,
    one_line,
    status_printer,
)
from spatiora_tui.config import SCHEDULERS, Settings, user_cache_dir


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser) -> None:
    gen = sub.add_parser(
        "generate", parents=[common], help="generate an image (or a batch: --count) and save it with metadata"
    )
    add_request_arguments(gen)
    gen.add_argument(
        "--count",
        "-n",
        type=int,
        default=1,
        metavar="N",
        help="make N images with seeds s, s+1, ... and a contact sheet of them (default 1)",
    )
    gen.set_defaults(run=run)


def add_request_arguments(parser: argparse.ArgumentParser) -> None:
    """What one request may set, shared by `generate` and `sweep`."""
    parser.add_argument("prompt", help="what to draw; the task's prompt template wraps it")
    parser.add_argument("--task", "-t", help="task mode (default: the first in config.toml)")
    parser.add_argument("--seed", type=seed_arg, help="random seed (default: random; printed)")
    parser.add_argument("--steps", type=int, help="denoising steps (default: the task's)")
    parser.add_argument("--guidance", type=float, help="CFG scale (default: the task's)")
    parser.add_argument("--width", type=int, help="width in pixels, a multiple of 8")
    parser.add_argument("--height", type=int, help="height in pixels, a multiple of 8")
    parser.add_argument("--negative", help="negative prompt (default: the task's)")
    parser.add_argument("--scheduler", choices=list(SCHEDULERS), help="sampler (default: the task's)")
    parser.add_argument(
        "--init",
        metavar="IMAGE",
        help="image-to-image: start from this image (a sketch, a photo, an earlier result); it runs at "
        "its own aspect ratio unless --width/--height are given (then it is cropped to them)",
    )
    parser.add_argument(
        "--strength",
        type=float,
        metavar="S",
        help="with --init: how much to change it, above 0 to 1 (default 0.75; int(steps x S) steps run)",
    )
    parser.add_argument("--out", metavar="PATH", help="output folder, or a .png file name (numbered in a batch)")
    parser.add_argument("--engine", metavar="WHERE", help=ENGINE_HELP + "; images are saved here")


def request_from_args(settings: Settings, args: argparse.Namespace) -> tuple[Any, Any]:
    """(task, request) from the command line, checked as the engine will check it (every
    override) before anything pays for the model load; UsageError naming what is wrong."""
    from spatiora_tui.engine.api import EngineError, GenerationRequest
    from spatiora_tui.engine.requests import check_request

    if not args.prompt.strip():
        raise UsageError(f'the prompt is empty; describe what to draw, e.g. spatiora {args.command} "a sunlit loft"')
    task = settings.task(args.task) if args.task else settings.tasks[0]
    request = GenerationRequest(
        prompt=args.prompt,
        task=task.name,
        seed=args.seed,
        steps=args.steps,
        guidance=args.guidance,
        width=args.width,
        height=args.height,
        negative_prompt=args.negative,
        scheduler=args.scheduler,
        init_image=args.init,
        strength=args.strength,
    )
    try:
        check_request(settings, request)
    except EngineError as exc:
        raise UsageError(str(exc)) from None
    return task, request


def start_engine(settings: Settings, task: Any, engine: Any = None) -> tuple[Any, Any]:
    """Load the model for `task` and switch to it, saying what was loaded: (engine, telemetry).
    `engine`: one already connected (--engine); else a LocalEngine."""
    from spatiora_tui.engine.local import LocalEngine
    from spatiora_tui.hw.telemetry import Telemetry

    status = status_printer()
    telemetry = Telemetry.from_settings(settings)
    telemetry.start()
    engine = engine or LocalEngine(settings, telemetry=telemetry)
    model = engine.load(on_progress=lambda msg: status(f"{msg}…"), source=task.model)
    status(None)
    print(
        f"model: {model.name} · {model.variant or model.family_label} · {model.device} {model.dtype}"
        + (f" · offload {model.offload}" if model.offload != "none" else "")
        + (f" · compiled ({model.compiled})" if model.compiled else ""),
        file=sys.stderr,
    )
    if model.random_weights:
        print(DEMO_NOTE, file=sys.stderr)
    switch = engine.switch_task(task.name)
    adapters = ", ".join(f"{n}@{w:g}" for n, w in switch.adapters) or "none (base model)"
    print(f"task: {task.name} · adapters: {adapters} · {switch.summary()}", file=sys.stderr)
    if switch.warning:
        print(f"warning: {switch.warning}", file=sys.stderr)
    return engine, telemetry


def run(settings: Settings, args: argparse.Namespace) -> int:
    from spatiora_tui.jobs.session import MAX_BATCH

    if not 1 <= args.count <= MAX_BATCH:
        raise UsageError(f"--count must be between 1 and {MAX_BATCH}, got {args.count}")
    with engine_for(settings, args) as (settings, remote):
        return _run(settings, args, remote)


def _run(settings: Settings, args: argparse.Namespace, remote: Any) -> int:
    from spatiora_tui.atomic import clean_stale_partials
    from spatiora_tui.outputs import OutputError, save_result

    task, request = request_from_args(settings, args)
    out_dir, out_name = output_target(settings, args.out)
    clean_stale_partials(out_dir)  # temp files a killed writer left (atomic writes leave nothing else)

    engine, telemetry = start_engine(settings, task, remote)

    if on_engine_queue(engine, args):
        telemetry.stop()
        return run_on_engine_queue(engine, request, args.count, out_dir, out_name)
    if args.count > 1:
        code = run_batch(settings, engine, telemetry, request, args.count, out_dir, out_name)
        telemetry.stop()
        return code
    progress = ProgressLine()
    result, interrupted = run_cancellable(
        lambda cancel: engine.generate(request, on_step=progress.update, cancel=cancel)
    )
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
    # A remote engine's stages were marked on its own telemetry; only the save was here.
    stages = (*result.stages, *telemetry.records_since(0)) if remote is not None else telemetry.records_since(0)
    say_image(result, stages, path)
    return EXIT_OK


def say_image(result: Any, stages: Any, path: Path) -> None:
    """One saved image as `generate` reports it: its seed, size and times, its stages (stderr),
    and its path (stdout)."""
    from spatiora_tui.hw.telemetry import stage_summary

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
    print("stages: " + stage_summary(stages), file=sys.stderr)
    print(path)


def run_batch(
    settings: Settings,
    engine: Any,
    telemetry: Any,
    request: Any,
    count: int,
    out_dir: Path,
    out_name: str | None,
) -> int:
    """`--count N`: the images through a Session (each saved as it is made, then the contact
    sheet); ctrl+c cancels the running image and the rest."""
    from spatiora_tui.jobs.session import Session

    session = Session(engine, settings, telemetry=telemetry, output_dir=out_dir, output_name=out_name)
    jobs = session.submit_batch(request, count)
    print(f"batch of {count}: seeds {jobs[0].request.seed} to {jobs[-1].request.seed}", file=sys.stderr)
    _, interrupted = run_session(session, BatchReport(len(jobs)))
    return group_outcome(jobs, interrupted)


def run_on_engine_queue(
    engine: Any, request: Any, count: int, out_dir: Path, out_name: str | None, axes: list[Any] | None = None
) -> int:
    """`count` images, or a sweep over `axes`, through the queue the user's engine keeps
    (cli/follow.py): made and saved there, printed here as run_batch (or, for one image, _run)
    prints them."""
    from spatiora_tui.cli.follow import EngineBatch, LostEngine
    from spatiora_tui.engine.api import EngineError

    batch = EngineBatch(engine)
    folder = out_dir.expanduser().resolve()
    try:
        jobs = batch.submit(request, count, folder, out_name, axes)
    except EngineError as exc:
        raise UsageError(str(exc)) from None
    keeps = "your engine saves them even if this terminal closes"
    if axes:
        shape = " x ".join(f"{len(a.values)} {a.title}" for a in axes)
        print(f"sweep of {len(jobs)} images ({shape}), seed {jobs[0].request.seed}: {keeps}", file=sys.stderr)
        batch.report = BatchReport(len(jobs), "grid", {job.id: job.label for job in jobs})
    elif count > 1:
        print(f"batch of {count}: {keeps}", file=sys.stderr)
        batch.report = BatchReport(count)
    else:
        batch.report = OneImage()
    try:
        _, interrupted = run_cancellable(batch.follow)
    except LostEngine as exc:
        waiting = sum(1 for job in batch.ours() if job is None or not job.state.ended)
        print(
            f"spatiora: error: {one_line(str(exc))}; {waiting} image(s) stay queued for your engine "
            "(spatiora queue shows them)",
            file=sys.stderr,
        )
        return EXIT_FAILED
    ended = batch.ours()
    if len(ended) == 1:
        return OneImage.outcome(ended[0], interrupted)
    return group_outcome([job for job in ended if job is not None], interrupted)


class OneImage:
    """One image's events, printed as `spatiora generate` prints one."""

    def __init__(self) -> None:
        self._progress = ProgressLine()

    def __call__(self, event: Any) -> None:
        from spatiora_tui.jobs import events

        if isinstance(event, events.JobStepped):
            self._progress.update(event.preview)
        elif isinstance(event, (events.JobFinished, events.JobFailed)):
            self._progress.done()
            if isinstance(event, events.JobFinished):
                for warning in event.result.warnings:
                    print(f"warning: {warning}", file=sys.stderr)
        elif isinstance(event, events.TaskSwitchFailed):
            print(f"could not switch to {event.task}: {one_line(event.error)}", file=sys.stderr)

    @staticmethod
    def outcome(job: Any, interrupted: bool) -> int:
        from spatiora_tui.jobs.job import JobState
        from spatiora_tui.outputs import OutputError

        result = job.result if job is not None else None
        if job is not None and job.state is JobState.FAILED:
            print(f"spatiora: error: {one_line(job.error or 'the image failed')}", file=sys.stderr)
            return EXIT_FAILED
        if job is None or job.state is JobState.CANCELLED or interrupted or result is None:
            steps = result.steps_done if result is not None else 0
            print(f"cancelled after {steps} steps; nothing saved", file=sys.stderr)
            return EXIT_CANCELLED
        if job.path is None:
            return _rescue(result, OutputError(job.error or "not saved"))
        say_image(result, result.stages, job.path)
        return EXIT_OK


def on_engine_queue(engine: Any, args: argparse.Namespace) -> bool:
    """Whether the command's images go through the queue of the user's engine on this machine:
    it makes and saves them, so a closed terminal or a dropped SSH link loses none of them.
    (Over ssh:// images are saved on this side, so there they are made as calls.)"""
    return bool(getattr(engine, "hosts_queue", False)) and engine_choice(args) == USER_ENGINE


def group_outcome(jobs: list[Any], interrupted: bool) -> int:
    """After a batch or sweep: keep the images whose save failed (in the cache folder), say how
    many were saved, and return the exit code."""
    from spatiora_tui.outputs import OutputError

    for job in jobs:
        if job.path is None and job.result is not None and job.result.image is not None:
            _rescue(job.result, OutputError(job.error or "not saved"))
    done = sum(job.path is not None for job in jobs)
    print(f"{done} of {len(jobs)} image(s) saved" + (" (cancelled)" if interrupted else ""), file=sys.stderr)
    if interrupted:
        return EXIT_CANCELLED
    return EXIT_OK if done == len(jobs) else EXIT_FAILED


def run_session(session: Any, report: Callable[[Any], object], keep: bool = False) -> tuple[None, bool]:
    """Run a session's queue to the end; ctrl+c cancels what runs and what waits (within one
    step), or with `keep` stops the running job and leaves it and the rest queued (in the queue
    file, for `spatiora queue run` or the TUI). Returns (None, whether ctrl+c was pressed)."""

    def job(cancel: threading.Event) -> None:
        def stop() -> None:
            if keep:
                session.pause()
                session.close()
            else:
                session.cancel_all()

        def on_step(current: Any, preview: Any) -> None:
            if cancel.is_set():
                stop()

        if session.wants_runner():
            while session.run_next(report, on_step):
                if cancel.is_set():
                    stop()

    return run_cancellable(job)


class BatchReport:
    """A session's events as lines on stderr (the saved paths on stdout, one per line)."""

    def __init__(self, total: int, sheet: str = "contact sheet", labels: dict[int, str] | None = None) -> None:
        self._total = total
        self._sheet = sheet
        self._labels = labels or {}
        self._progress = ProgressLine()
        self._n = 0
        self._warned: set[str] = set()  # each warning once, not once per image

    def __call__(self, event: Any) -> None:
        from spatiora_tui.jobs import events

        if isinstance(event, events.JobStarted):
            self._n += 1
            self._progress = ProgressLine()
            label = self._labels.get(event.job_id)
            print(
                f"[{self._n}/{self._total}] job {event.job_id} ({event.task}{f' · {label}' if label else ''})",
                file=sys.stderr,
            )
        elif isinstance(event, events.JobStepped):
            self._progress.update(event.preview)
        elif isinstance(event, events.JobFinished):
            self._progress.done()
            for warning in event.result.warnings:
                if warning not in self._warned:
                    self._warned.add(warning)
                    print(f"  warning: {warning}", file=sys.stderr)
            if event.path is not None:
                print(event.path)
                print(f"  seed {event.result.params.seed} · saved {event.path}", file=sys.stderr)
            elif event.result.cancelled:
                print(f"  {event.cancelled_words()}; nothing saved", file=sys.stderr)
            else:
                print(f"  not saved: {event.save_error}", file=sys.stderr)
        elif isinstance(event, events.JobFailed):
            self._progress.done()
            print(f"  failed: {one_line(event.error)}", file=sys.stderr)
        elif isinstance(event, events.TaskSwitchFailed):
            print(f"  could not switch to {event.task}: {one_line(event.error)}", file=sys.stderr)
        elif isinstance(event, events.GroupFinished):
            if event.path is not None:
                print(event.path)
                print(f"{self._sheet}: {event.path}", file=sys.stderr)
            else:
                print(f"no {self._sheet}: {event.error}", file=sys.stderr)


def _rescue(result: Any, error: Exception) -> int:
    """The image could not be saved where asked: keep it anyway, in the cache folder, and say so."""
    from spatiora_tui.outputs import OutputError, save_result

    print(f"spatiora: error: {one_line(str(error))}", file=sys.stderr)
    rescue_dir = user_cache_dir() / "unsaved"
    try:
        path = save_result(result, rescue_dir)
    except OutputError as second:
        print(
            f"spatiora: error: the image is lost: it could not be kept in {rescue_dir} either "
            f"({one_line(str(second))})",
            file=sys.stderr,
        )
        return EXIT_FAILED
    print(f"the image was kept in {path}; move it where you want it", file=sys.stderr)
    print(path)
    return EXIT_FAILED


def seed_arg(text: str) -> int:
    """--seed: a whole number in SEED_RANGE, refused as a usage error before any model loads."""
    from spatiora_tui.config import SEED_RANGE

    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    low, high = SEED_RANGE
    if not low <= value <= high:
        raise argparse.ArgumentTypeError(
            f"{value} is outside {low}..{high}; leave --seed out for a random seed (A1111's -1)"
        )
    return value


def output_target(settings: Settings, out: str | None) -> tuple[Path, str | None]:
    if not out:
        return settings.output_dir, None
    path = Path(out).expanduser()
    if path.suffix.lower() == ".png":
        return path.parent, path.stem
    if path.suffix:
        raise UsageError(f"--out {out}: give a folder or a .png file name")
    return path, None


def run_cancellable(job: Callable[[threading.Event], Any]) -> tuple[Any, bool]:
    """Run `job` in a thread so ctrl+c can cancel it cleanly (within one step) instead of killing it.
    Returns (its value, whether ctrl+c was pressed): a ctrl+c that lands after the job's last look
    at `cancel` (as the last step ends, or while the image decodes) still counts, so the caller
    keeps nothing either way.

    While the job runs, SIGINT sets a flag through a handler of its own rather than raising
    KeyboardInterrupt: Python runs a signal's handler at the main thread's next bytecode, and a
    KeyboardInterrupt that landed just after the job finished escaped every `except` around the
    wait (the image was then kept, or the run ended as "interrupted"). The main thread waits on an
    Event, not Thread.join: on Python 3.11 a join interrupted by ctrl+c can return while the
    thread still runs, and the interpreter then aborts at exit. A second ctrl+c while cancelling
    quits at once. A process started with SIGINT ignored (a shell's background job) keeps
    ignoring it, as Python itself does.
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

    def on_sigint(signum: int, frame: object) -> None:
        if cancel.is_set():
            print("quit before the step finished", file=sys.stderr)
            os._exit(EXIT_CANCELLED)
        cancel.set()
        print("\ncancelling… (ctrl+c again to quit at once)", file=sys.stderr)

    previous = signal.getsignal(signal.SIGINT)
    if previous is signal.SIG_IGN:
        previous = None  # started with ctrl+c ignored (`spatiora generate ... &`): it stays ignored
    else:
        try:
            signal.signal(signal.SIGINT, on_sigint)
        except ValueError:  # not the main thread, where no ctrl+c is delivered anyway
            previous = None
    try:
        threading.Thread(target=target, name="spatiora-generate", daemon=True).start()
        while not finished.wait(0.1):
            pass
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
    if "error" in box:
        raise box["error"]
    return box["value"], cancel.is_set()


class ProgressLine:
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
