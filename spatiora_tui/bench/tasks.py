"""`spatiora bench`: the paper's Table 1, per task mode, measured the way the paper ran it.

For each task, N requests with a task switch before each one (the tasks take turns, as in the
paper's pilot), through the real engine: adapter switch, text encode, denoise with step
previews, VAE decode, save with metadata. Every request is timed from the moment it is made.
Each task's requests run twice per round, once with previews at every step and once without, so
the preview overhead is a ratio from the same run.

`--arch demo` is the demo model (seconds; what CI runs). `--arch sd15|sdxl` builds the real
architectures with random weights: the UNet, the VAE and the text encoders at their published
sizes, so time and memory match the real models while the images mean nothing. Nothing is
downloaded; the tokenizer is the demo's (same 77-token window). Each task gets its own LoRA
adapter of the given rank on the attention and feed-forward projections, written for the run.
"""

from __future__ import annotations

import dataclasses
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spatiora_tui.config import AdapterRef, Settings, check_size, user_cache_dir
from spatiora_tui.hw.telemetry import STAGES, StageRecord, Telemetry, format_mb, format_ms

#: The paper's Table 1 (Spatiora pilot; their hardware, SD 1.5-based, 512x512 as we read it).
PAPER_ROWS = (
    {
        "task": "interior",
        "ttfi_ms": 657_766,
        "total_ms": 658_719,
        "throughput_img_min": 0.09,
        "peak_gpu_mb": 5_430,
        "peak_cpu_mb": 4_293,
    },
    {
        "task": "floorplan",
        "ttfi_ms": 511_296,
        "total_ms": 511_296,
        "throughput_img_min": 0.12,
        "peak_gpu_mb": 5_430,
        "peak_cpu_mb": 4_296,
    },
)


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


def parse_size(text: str) -> tuple[int, int]:
    try:
        width, height = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise ValueError(f"--size {text!r} is not WIDTHxHEIGHT, e.g. 512x512") from None
    for name, value in (("width", width), ("height", height)):
        problem = check_size(value)
        if problem:
            raise ValueError(f"--size {text}: width and height must be multiples of 8; the {name} {problem}")
    return width, height


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
    rank = rank or (4 if arch == "demo" else 64)
    width, height = size
    cache_dir = cache_dir or user_cache_dir()
    for name in tasks:
        settings.task(name)  # a clear ConfigError for a task the config does not have
    with tempfile.TemporaryDirectory(prefix="spatiora-bench-") as tmp:
        folder = Path(tmp)
        adapters_dir, out_dir = folder / "adapters", folder / "out"
        adapters_dir.mkdir()
        bench_settings, loader = arch_engine_parts(settings, arch, tasks, steps, size, adapters_dir, rank, device, say)
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


# -- the model and the tasks ------------------------------------------------------------------


def _bench_settings(
    settings: Settings,
    arch: str,
    tasks: tuple[str, ...],
    steps: int,
    width: int,
    height: int,
    adapters_dir: Path,
    device: str | None,
) -> Settings:
    """The config's tasks (prompt template, guidance, scheduler), each with its own bench adapter,
    at the bench's steps and size; everything else as configured."""
    bench_tasks = tuple(
        dataclasses.replace(
            settings.task(name),
            steps=steps,
            width=width,
            height=height,
            adapters=(AdapterRef(_adapter_name(name), 1.0),),
        )
        for name in tasks
    )
    model = dataclasses.replace(settings.model, source="demo" if arch == "demo" else settings.model.source)
    if device:
        model = dataclasses.replace(model, device=device)  # type: ignore[arg-type]  # checked by the loader
    return dataclasses.replace(
        settings,
        model=model,
        tasks=bench_tasks,
        adapters=dataclasses.replace(settings.adapters, dir=str(adapters_dir)),
    )


def arch_engine_parts(
    settings: Settings,
    arch: str,
    tasks: tuple[str, ...],
    steps: int,
    size: tuple[int, int],
    adapters_dir: Path,
    rank: int | None = None,
    device: str | None = None,
    say: Callable[[str], object] = print,
) -> tuple[Settings, Any]:
    """Settings and a loader for a LocalEngine on `arch` (demo, sd15, sdxl with random weights),
    each task with its own adapter written into adapters_dir: what the bench runs, for other
    measurements (the UI's cost on a real-size model) to run the same way."""
    rank = rank or (4 if arch == "demo" else 64)
    width, height = size
    bench_settings = _bench_settings(settings, arch, tasks, steps, width, height, adapters_dir, device)
    return bench_settings, _loader(arch, adapters_dir, tasks, rank, say)


def _adapter_name(task: str) -> str:
    return f"bench_{task}"


def _loader(arch: str, adapters_dir: Path, tasks: tuple[str, ...], rank: int, say: Callable[[str], object]) -> Any:
    """A stand-in for load_pipeline: the demo model or a real architecture with random weights,
    plus one adapter per task written for it."""

    def load(model_settings: Any, cache_dir: Path, on_progress: Callable[[str], object] | None = None) -> Any:
        from spatiora_tui.bench.lora import _write_adapter
        from spatiora_tui.engine.pipeline import load_pipeline

        if arch == "demo":
            pipe, info, _ = load_pipeline(model_settings, cache_dir, on_progress)
        else:
            pipe, info = build_random_pipeline(arch, model_settings, cache_dir, on_progress or say)
        say(f"writing {len(tasks)} rank-{rank} task adapters…")
        for i, name in enumerate(tasks):
            _write_adapter(pipe, adapters_dir, _adapter_name(name), rank, seed=i)
        return pipe, info, None

    return load


def build_random_pipeline(
    arch: str, model_settings: Any, cache_dir: Path, say: Callable[[str], object]
) -> tuple[Any, Any]:
    """SD 1.5 or SDXL at full size with random weights (UNet, VAE, text encoders); the demo's
    tokenizer and scheduler config."""
    from spatiora_tui.engine.pipeline import dtype_label, quiet_libraries, resolve_device, resolve_dtype

    quiet_libraries()
    import torch
    from diffusers import (
        AutoencoderKL,
        EulerDiscreteScheduler,
        StableDiffusionPipeline,
        StableDiffusionXLPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    from spatiora_tui.bench.lora import unet_config
    from spatiora_tui.engine.api import ModelInfo
    from spatiora_tui.engine.demo import ensure_demo

    device = resolve_device(model_settings.device)
    dtype = resolve_dtype(model_settings.dtype, device)
    demo = ensure_demo(cache_dir) / "pipeline"
    tokenizer = CLIPTokenizer.from_pretrained(str(demo / "tokenizer"))
    say(f"building the {arch} architecture with random weights")
    torch.manual_seed(0)
    unet = UNet2DConditionModel(**unet_config(arch))
    vae = AutoencoderKL(
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(128, 256, 512, 512),
        layers_per_block=2,
        latent_channels=4,
        sample_size=1024 if arch == "sdxl" else 512,
        scaling_factor=0.13025 if arch == "sdxl" else 0.18215,
    )
    clip_l = CLIPTextConfig(
        vocab_size=49408,
        hidden_size=768,
        intermediate_size=3072,
        num_hidden_layers=12,
        num_attention_heads=12,
        max_position_embeddings=77,
        hidden_act="quick_gelu",
        projection_dim=768,
    )
    scheduler = EulerDiscreteScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000, steps_offset=1
    )
    if arch == "sdxl":
        clip_g = CLIPTextConfig(
            vocab_size=49408,
            hidden_size=1280,
            intermediate_size=5120,
            num_hidden_layers=32,
            num_attention_heads=20,
            max_position_embeddings=77,
            hidden_act="gelu",
            projection_dim=1280,
        )
        pipe = StableDiffusionXLPipeline(
            vae=vae,
            text_encoder=CLIPTextModel(clip_l),
            text_encoder_2=CLIPTextModelWithProjection(clip_g),
            tokenizer=tokenizer,
            tokenizer_2=tokenizer,
            unet=unet,
            scheduler=scheduler,
        )
    else:
        pipe = StableDiffusionPipeline(
            vae=vae,
            text_encoder=CLIPTextModel(clip_l),
            tokenizer=tokenizer,
            unet=unet,
            scheduler=scheduler,
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
        )
    pipe.set_progress_bar_config(disable=True)
    pipe.to(device, dtype)
    info = ModelInfo(
        name=f"{arch} architecture (random weights)",
        source=f"random:{arch}",
        kind="random",
        family="sdxl" if arch == "sdxl" else "sd1",
        device=device,
        dtype=dtype_label(dtype),
        random_weights=True,
    )
    return pipe, info


# -- output -----------------------------------------------------------------------------------


def _cell(value: float | None, fmt: str = "{:,.0f}") -> str:
    return "—" if value is None else fmt.format(value)


def markdown_table(result: BenchResult, with_paper: bool = True) -> str:
    """The comparison table (paper rows first when asked), then the per-stage peaks."""
    r = result
    lines = [
        f"`spatiora bench --arch {r.arch} --runs {r.runs} --steps {r.steps} --size {r.width}x{r.height}` · "
        f"{r.model} · {r.device} {r.dtype} · rank-{r.rank} adapter per task · previews {r.preview}",
        "",
        "| source | task | first preview ms | final image ms | total ms | img/min | peak GPU MB | peak CPU MB "
        "| switch ms | preview overhead |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    if with_paper:
        for p in PAPER_ROWS:
            lines.append(
                f"| paper (pilot) | {p['task']} | — | {p['ttfi_ms']:,} | {p['total_ms']:,} | {p['throughput_img_min']} "
                f"| ~{p['peak_gpu_mb']:,} | ~{p['peak_cpu_mb']:,} | — | — |"
            )
    for row in r.rows:
        lines.append(
            f"| spatiora | {row.task} | {_cell(row.ttfp_ms)} | {row.ttfi_ms:,.0f} | {row.total_ms:,.0f} "
            f"| {row.throughput_img_min:.2f} | {_cell(row.peak_gpu_mb)} | {row.peak_cpu_mb:,.0f} "
            f"| {row.switch_ms:.1f} | {row.preview_overhead_ratio:.3f} |"
        )
    lines += ["", "| task | stage | median ms | peak CPU MB | peak GPU MB |", "|---|---|---|---|---|"]
    lines.append(f"| — | load base | {r.load_ms:,.0f} | {r.load_peak_rss_mb:,.0f} | — |")
    for row in r.rows:
        for s in row.stages:
            lines.append(
                f"| {row.task} | {s.stage} | {s.median_ms:,.1f} | {s.peak_rss_mb:,.0f} | {_cell(s.peak_gpu_mb)} |"
            )
    return "\n".join(lines) + "\n"


def print_table(result: BenchResult) -> None:
    r = result
    print(
        f"spatiora bench · {r.model} · {r.device} {r.dtype} · {r.width}x{r.height} · {r.steps} steps · "
        f"{r.runs} run(s) per task · previews {r.preview}"
    )
    print(f"load base {format_ms(r.load_ms)} (peak RSS {format_mb(r.load_peak_rss_mb)})")
    header = (
        f"{'':10s} {'task':10s} {'1st preview':>12s} {'final image':>12s} {'total':>12s} {'img/min':>8s} "
        f"{'peak GPU MB':>12s} {'peak CPU MB':>12s} {'switch ms':>10s} {'preview ovh':>12s}"
    )
    print(header)
    if r.arch != "demo":
        for p in PAPER_ROWS:
            print(
                f"{'paper':10s} {p['task']:10s} {'—':>12s} {p['ttfi_ms']:>12,} {p['total_ms']:>12,} "
                f"{p['throughput_img_min']:>8} {'~' + format(p['peak_gpu_mb'], ','):>12s} "
                f"{'~' + format(p['peak_cpu_mb'], ','):>12s} {'—':>10s} {'—':>12s}"
            )
    for row in r.rows:
        print(
            f"{'spatiora':10s} {row.task:10s} {_cell(row.ttfp_ms):>12s} {row.ttfi_ms:>12,.0f} {row.total_ms:>12,.0f} "
            f"{row.throughput_img_min:>8.2f} {_cell(row.peak_gpu_mb):>12s} {row.peak_cpu_mb:>12,.0f} "
            f"{row.switch_ms:>10.1f} {row.preview_overhead_ratio:>11.3f}x"
        )
    print(
        "(times in ms, medians over the runs; total = request made -> image saved with metadata; "
        "preview overhead = total with previews every step / without)"
    )
    print("per-stage peaks (median ms · peak CPU MB · peak GPU MB):")
    for row in r.rows:
        cells = [
            f"{s.stage} {format_ms(s.median_ms)} · {s.peak_rss_mb:,.0f} · {_cell(s.peak_gpu_mb)}" for s in row.stages
        ]
        print(f"  {row.task:10s} " + " | ".join(cells))
    for warning in r.warnings:
        print(f"warning: {warning}")


def write_json(result: BenchResult, path: Path) -> None:
    data = dataclasses.asdict(result)
    data["paper"] = list(PAPER_ROWS)
    path.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
