"""`spatiora bench`: the paper's Table 1, per task mode, measured the way the paper ran it.

For each task, N requests with a task switch before each one (the tasks take turns, as in the
paper's pilot), through the real engine: adapter switch, text encode, denoise with step
previews, VAE decode, save with metadata. Every request is timed from the moment it is made.
Each task's requests run twice per round, once with previews at every step and once without, so
the preview overhead is a ratio from the same run.

The model is the demo or a real architecture with random weights (see arch.py); each task gets
its own random LoRA adapter of the given rank. The table is printed and written by table_report.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spatiora_tui.bench.arch import default_rank, engine_parts
from spatiora_tui.config import Settings, user_cache_dir
from spatiora_tui.hw.telemetry import STAGES, StageRecord, Telemetry, format_ms


@dataclass(frozen=True)
class StagePeakRow:
    """One stage of one task over its requests: median time, peak memory."""

    stage: str
    median_ms: float
    peak_rss_mb: float
    peak_gpu_mb: float | None


@dataclass(frozen=True)
class TaskRow:
    """One task's figures over its requests (medians of time, maxima of memory)."""

    task: str
    runs: int
    ttfp_ms: float | None  # request made -> first step preview on screen (previews on)
    ttfi_ms: float  # request made -> final image decoded (previews on)
    total_ms: float  # request made -> image saved with metadata (previews on)
    throughput_img_min: float  # 60 000 / total_ms
    peak_gpu_mb: float | None  # this process's GPU memory (NVML, else CUDA reserved); None off-GPU
    peak_cpu_mb: float  # process RSS
    switch_ms: float  # adapter switch, median
    total_ms_no_previews: float
    preview_overhead_ratio: float  # total with previews every step / total without
    stages: tuple[StagePeakRow, ...] = field(default=())


@dataclass(frozen=True)
class BenchResult:
    arch: str
    device: str
    dtype: str
    model: str
    steps: int
    width: int
    height: int
    runs: int
    rank: int
    preview: str
    load_ms: float
    load_peak_rss_mb: float
    rows: tuple[TaskRow, ...]
    warnings: tuple[str, ...] = ()


@dataclass
class _Request:
    task: str
    previews: bool
    first_preview_ms: float | None
    image_ms: float
    total_ms: float
    switch_ms: float
    stages: tuple[StageRecord, ...]


def run_bench(
    settings: Settings,
    arch: str = "demo",
    tasks: tuple[str, ...] = ("interior", "floorplan"),
    runs: int = 2,
    steps: int = 4,
    size: tuple[int, int] = (512, 512),
    device: str | None = None,
    rank: int | None = None,
    cache_dir: Path | None = None,
    say: Callable[[str], object] = print,
) -> BenchResult:
    """Run the requests and return the table's figures (see the module docstring)."""
    from spatiora_tui.engine.api import GenerationRequest
    from spatiora_tui.engine.local import LocalEngine
    from spatiora_tui.outputs import save_result

    if runs < 1 or steps < 1:
        raise ValueError("--runs and --steps must be at least 1")
    rank = rank or default_rank(arch)
    width, height = size
    cache_dir = cache_dir or user_cache_dir()
    for name in tasks:
        settings.task(name)  # a clear ConfigError for a task the config does not have
    with tempfile.TemporaryDirectory(prefix="spatiora-bench-") as tmp:
        folder = Path(tmp)
        adapters_dir, out_dir = folder / "adapters", folder / "out"
        adapters_dir.mkdir()
        bench_settings, loader = engine_parts(settings, arch, tasks, steps, size, adapters_dir, rank, device, say)
        telemetry = Telemetry.from_settings(settings)
        telemetry.start()
        try:
            engine = LocalEngine(bench_settings, cache_dir=cache_dir, telemetry=telemetry, loader=loader)
            model = engine.load(on_progress=lambda msg: say(f"{msg}…"))
            load = telemetry.records_since(0)[-1]
            say(f"loaded {model.name} on {model.device} ({model.dtype}) in {format_ms(load.ms)}")
            # One untimed request first: the first call into each part pays one-time costs
            # (kernel selection, allocator growth) that every later request would not.
            say("warm-up request…")
            engine.generate(GenerationRequest(prompt="warm-up", task=tasks[-1], seed=0, steps=1))
            requests: list[_Request] = []
            total = runs * 2 * len(tasks)
            for run in range(runs):
                for previews in (True, False):
                    for name in tasks:
                        say(f"request {len(requests) + 1}/{total}: {name}, previews {'on' if previews else 'off'}…")
                        requests.append(
                            _one_request(
                                engine, telemetry, name, previews, run, out_dir, save_result, GenerationRequest
                            )
                        )
        finally:
            telemetry.stop()
        warnings = tuple(sorted(set(_drift_warnings(engine))))
        rows = tuple(_row(name, [r for r in requests if r.task == name]) for name in tasks)
        return BenchResult(
            arch=arch,
            device=model.device,
            dtype=model.dtype,
            model=model.name,
            steps=steps,
            width=width,
            height=height,
            runs=runs,
            rank=rank,
            preview=f"{bench_settings.preview.method}, every {bench_settings.preview.every_n_steps} step(s)",
            load_ms=load.ms,
            load_peak_rss_mb=load.peak_rss_mb,
            rows=rows,
            warnings=warnings,
        )


def _drift_warnings(engine: Any) -> list[str]:
    from spatiora_tui.hw.watchdog import read_memory

    held_ram, held_vram = engine.loras.held_mb()
    warning = engine.watchdog.check(read_memory(), held_ram, held_vram, after="the bench's requests")
    return [warning] if warning else []


def _one_request(
    engine: Any,
    telemetry: Telemetry,
    task: str,
    previews: bool,
    run: int,
    out_dir: Path,
    save_result: Any,
    request_class: Any,
) -> _Request:
    first: list[float] = []
    start = time.perf_counter()

    def on_step(preview: Any) -> None:
        if preview.image is not None and not first:
            first.append((time.perf_counter() - start) * 1000.0)

    mark = telemetry.mark()
    # No step callback, no previews: the engine then skips preview work entirely.
    result = engine.generate(
        request_class(prompt=f"a {task} design study", task=task, seed=run), on_step=on_step if previews else None
    )
    image_ms = (time.perf_counter() - start) * 1000.0
    with telemetry.stage("save"):
        save_result(result, out_dir)
    total_ms = (time.perf_counter() - start) * 1000.0
    return _Request(
        task=task,
        previews=previews,
        first_preview_ms=first[0] if first else None,
        image_ms=image_ms,
        total_ms=total_ms,
        switch_ms=result.timings.switch_ms,
        stages=telemetry.records_since(mark),
    )


def _row(task: str, requests: list[_Request]) -> TaskRow:
    on = [r for r in requests if r.previews]
    off = [r for r in requests if not r.previews]
    records = [s for r in requests for s in r.stages]
    gpu = [s.peak_vram_mb for s in records if s.peak_vram_mb is not None]
    firsts = [r.first_preview_ms for r in on if r.first_preview_ms is not None]
    total_on = statistics.median(r.total_ms for r in on)
    total_off = statistics.median(r.total_ms for r in off)
    stages = []
    for stage in STAGES:
        passes = [s for s in records if s.stage == stage]
        if not passes:
            continue
        stage_gpu = [s.peak_vram_mb for s in passes if s.peak_vram_mb is not None]
        stages.append(
            StagePeakRow(
                stage=stage,
                median_ms=statistics.median(s.ms for s in passes),
                peak_rss_mb=max(s.peak_rss_mb for s in passes),
                peak_gpu_mb=max(stage_gpu) if stage_gpu else None,
            )
        )
    return TaskRow(
        task=task,
        runs=len(on),
        ttfp_ms=statistics.median(firsts) if firsts else None,
        ttfi_ms=statistics.median(r.image_ms for r in on),
        total_ms=total_on,
        throughput_img_min=60_000.0 / total_on,
        peak_gpu_mb=max(gpu) if gpu else None,
        peak_cpu_mb=max(s.peak_rss_mb for s in records),
        switch_ms=statistics.median(r.switch_ms for r in requests),
        total_ms_no_previews=total_off,
        preview_overhead_ratio=total_on / total_off,
        stages=tuple(stages),
    )
