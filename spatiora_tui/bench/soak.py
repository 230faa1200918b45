"""`spatiora bench soak`: many generations with a task switch before each, in one process.

What a long working session does to the process: every generation switches task (so adapters
move through the tiers), every Nth is cancelled part-way, every finished image is saved with
its metadata and listed in the history index. The process's RSS (and CUDA allocated memory on a
GPU) is read after each generation; the figures are the growth after the warm-up generations
(first-use allocations settle there), the slope of a least-squares line through the readings,
and what the leak watchdog said. Nothing here asserts; the CI test and docs/reliability.md
state the tolerance.
"""

from __future__ import annotations

import json
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from spatiora_tui.config import Settings
from spatiora_tui.hw.telemetry import Telemetry
from spatiora_tui.notices import NoticeKind, of_kind


@dataclass(frozen=True)
class SoakResult:
    generations: int
    completed: int
    cancelled: int
    failed: int  # generations that raised (counted, not stopped on)
    errors: tuple[str, ...]
    switches: int
    tasks: tuple[str, ...]
    width: int
    height: int
    steps: int
    warmup: int
    seconds: float
    median_generation_ms: float
    rss_mb: tuple[float, ...]  # after each generation
    cuda_allocated_mb: tuple[float, ...]  # after each generation (empty off-GPU)
    baseline_rss_mb: float  # after the warm-up generations
    final_rss_mb: float
    max_rss_mb: float
    growth_mb: float  # final - baseline
    growth_pct: float
    slope_mb_per_100: float  # least-squares slope of RSS after the warm-up, per 100 generations
    watchdog_warnings: tuple[str, ...]
    saved: int
    history_entries: int


def run_soak(
    settings: Settings,
    generations: int = 200,
    tasks: tuple[str, ...] = ("interior", "floorplan"),
    size: tuple[int, int] = (64, 64),
    steps: int = 4,
    cancel_every: int = 20,
    warmup: int = 10,
    cache_dir: Path | None = None,
    say: Callable[[str], object] = print,
) -> SoakResult:
    from spatiora_tui.engine.api import EngineError, GenerationRequest, StepPreview
    from spatiora_tui.engine.local import LocalEngine
    from spatiora_tui.hw.watchdog import read_memory
    from spatiora_tui.outputs import HistoryIndex, OutputError, save_result

    if generations < 2 or steps < 2:
        raise ValueError("--generations and --steps must be at least 2")
    if not 0 <= warmup < generations:
        raise ValueError("--warmup must be at least 0 and below --generations")
    for name in tasks:
        settings.task(name)  # a clear ConfigError for a task the config does not have
    width, height = size
    telemetry = Telemetry.from_settings(settings)
    engine = LocalEngine(settings, cache_dir=cache_dir, telemetry=telemetry)
    model = engine.load(on_progress=lambda msg: say(f"{msg}…"))
    say(
        f"soak: {generations} generations on {model.name}, tasks {', '.join(tasks)} in turn, "
        f"{width}x{height}, {steps} steps, every {cancel_every or 'no'}th cancelled"
    )
    rss: list[float] = []
    cuda: list[float] = []
    durations: list[float] = []
    errors: list[str] = []
    warnings: set[str] = set()
    completed = cancelled = failed = saved = switches = 0
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="spatiora-soak-") as tmp:
        out_dir = Path(tmp)
        for i in range(generations):
            task = tasks[i % len(tasks)]
            if engine.active_task != task:
                switches += 1
            cancel = threading.Event()
            cancelling = bool(cancel_every) and (i + 1) % cancel_every == 0

            def on_step(preview: StepPreview, cancelling: bool = cancelling, cancel: threading.Event = cancel) -> None:
                if cancelling and preview.step >= steps // 2:
                    cancel.set()

            request = GenerationRequest(prompt=f"soak {i}", task=task, seed=i, steps=steps, width=width, height=height)
            t0 = time.perf_counter()
            try:
                result = engine.generate(request, on_step=on_step, cancel=cancel)
            except EngineError as exc:
                failed += 1
                errors.append(f"generation {i + 1}: {exc}")
            else:
                warnings.update(of_kind(result.warnings, NoticeKind.MEMORY_LEAK))
                if result.cancelled:
                    cancelled += 1
                else:
                    completed += 1
                    try:
                        save_result(result, out_dir)
                        saved += 1
                    except OutputError as exc:
                        errors.append(f"generation {i + 1}: {exc}")
            durations.append((time.perf_counter() - t0) * 1000.0)
            reading = read_memory()
            rss.append(reading.rss_mb)
            if reading.vram_mb is not None:
                cuda.append(reading.vram_mb)
            if (i + 1) % max(1, generations // 10) == 0:
                say(f"  {i + 1}/{generations}: RSS {reading.rss_mb:.0f} MB")
        history_entries = len(HistoryIndex(out_dir).entries())
    seconds = time.perf_counter() - started
    settled = rss[warmup:] if warmup else rss
    baseline = settled[0]
    growth = rss[-1] - baseline
    return SoakResult(
        generations=generations,
        completed=completed,
        cancelled=cancelled,
        failed=failed,
        errors=tuple(errors),
        switches=switches,
        tasks=tasks,
        width=width,
        height=height,
        steps=steps,
        warmup=warmup,
        seconds=seconds,
        median_generation_ms=statistics.median(durations),
        rss_mb=tuple(rss),
        cuda_allocated_mb=tuple(cuda),
        baseline_rss_mb=baseline,
        final_rss_mb=rss[-1],
        max_rss_mb=max(settled),
        growth_mb=growth,
        growth_pct=100.0 * growth / baseline,
        slope_mb_per_100=100.0 * _slope(settled),
        watchdog_warnings=tuple(sorted(warnings)),
        saved=saved,
        history_entries=history_entries,
    )


def _slope(values: list[float]) -> float:
    """Least-squares slope per index step (0 for fewer than two values)."""
    n = len(values)
    if n < 2:
        return 0.0
    mean_x, mean_y = (n - 1) / 2, sum(values) / n
    num = sum((x - mean_x) * (y - mean_y) for x, y in enumerate(values))
    den = sum((x - mean_x) ** 2 for x in range(n))
    return num / den


def print_soak(result: SoakResult, out: Callable[[str], object] = print) -> None:
    r = result
    out(
        f"generations      {r.generations} ({r.completed} completed, {r.cancelled} cancelled, {r.failed} failed), "
        f"{r.switches} task switches, {r.saved} saved, {r.history_entries} in the history index"
    )
    out(f"request          {', '.join(r.tasks)} in turn · {r.width}x{r.height} · {r.steps} steps")
    out(f"time             {r.seconds:.1f} s in all, median {r.median_generation_ms:.0f} ms per generation")
    out(
        f"RSS              {r.rss_mb[0]:.0f} MB after the first generation, {r.baseline_rss_mb:.0f} MB after "
        f"{r.warmup} warm-up, {r.final_rss_mb:.0f} MB at the end (max {r.max_rss_mb:.0f} MB)"
    )
    out(
        f"RSS growth       {r.growth_mb:+.1f} MB ({r.growth_pct:+.2f}%) after the warm-up; "
        f"slope {r.slope_mb_per_100:+.2f} MB per 100 generations"
    )
    if r.cuda_allocated_mb:
        out(f"CUDA allocated   {r.cuda_allocated_mb[r.warmup]:.0f} -> {r.cuda_allocated_mb[-1]:.0f} MB")
    out(
        f"leak watchdog    {len(r.watchdog_warnings)} warning(s)"
        + "".join(f"\n                 {w}" for w in r.watchdog_warnings)
    )
    for error in r.errors:
        out(f"error            {error}")


def write_json(result: SoakResult, path: Path) -> None:
    data: dict[str, Any] = asdict(result)
    path.write_text(json.dumps(data, indent=1), encoding="utf-8")
