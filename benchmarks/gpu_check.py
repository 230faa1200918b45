"""The GPU check: one prepared run of what only a GPU can show, writing one JSON and one Markdown
report (and one log) into --out.

    python -m benchmarks.gpu_check --out DIR               # on a CUDA machine, about 6 minutes on an H200
    python -m benchmarks.gpu_check --dry-run --out DIR     # every section on the CPU with the demo model
    python -m benchmarks.gpu_check --dry-run --jobs 2 ...  # two sections side by side (CI's dry run)

Sections, each a child process with its own time limit, in order of what they tell (a section
that fails or runs out of time is recorded as such and the next one runs):

  env        torch, CUDA, the device, NVML
  sd15       `spatiora bench`: SD 1.5 architecture 512x512, 25 steps, fp16 — per task mode, the
             time to first preview and to the image, the adapter switch, preview overhead, the
             peak memory of each stage
  gauge      the VRAM gauge at each stage (NVML device used and this process's, torch allocated
             and reserved), image-to-image's memory, and a CUDA out-of-memory: a request made to
             run out under a memory cap, then a normal one (recovered? time? memory back?)
  lora       `spatiora bench lora` on the SD 1.5 UNet: switch time by tier, naive vs tiered,
             fused, 200 switches' memory growth, a denoising step with an adapter unfused/fused
  img2img    benchmarks/img2img.py: the img2img pipeline's memory, image time per strength
  ui         benchmarks/ui_cost.py: the TUI (headless) against the bare engine, 25 steps
  previews   benchmarks/previews.py: preview cost per method on the SDXL VAE
  sdxl       `spatiora bench` on the SDXL architecture, 1024x1024, 25 steps
  bf16       `spatiora bench` on SD 1.5 in bf16
  compile-*  [model] compile (reduce-overhead, default) on SD 1.5 512x512: eager against compiled
             image time, the first image's compile time, switches and in-place swaps with Dynamo's
             graph counter (0 new graphs is the target), each task's image against eager
  offload-*  [model] offload none / model / group / sequential on SDXL 1024x1024: load, VRAM held,
             image time and peak, an in-place adapter swap, images compared with mode none

Random weights throughout (nothing is downloaded): compute and memory are the real models'.
The figures are reported, not asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

REPO = Path(__file__).resolve().parents[1]
MB = 2**20


@dataclass(frozen=True)
class Section:
    name: str
    what: str
    argv: Callable[[bool, Path], list[str]]  # (dry run, the section's JSON path) -> command
    limit_s: int
    after: str = ""  # a section whose output this one reads: it starts once that one ended


def _own_section(section: str, mode: str) -> Callable[[bool, Path], list[str]]:
    """A section this script runs in a process of its own (`--section SECTION --mode MODE`)."""

    def argv(dry: bool, out: Path) -> list[str]:
        dry_run = ["--dry-run"] if dry else []
        return [sys.executable, __file__, "--section", section, "--mode", mode, "--json", str(out), *dry_run]

    return argv


def _spatiora(*args: str) -> list[str]:
    return [sys.executable, "-m", "spatiora_tui", *args]


def _bench(arch: str, size: str, config: str | None = None) -> Callable[[bool, Path], list[str]]:
    def argv(dry: bool, out: Path) -> list[str]:
        if dry:
            return _spatiora(
                "bench", "--arch", "demo", "--steps", "2", "--runs", "1", "--size", "64x64", "--json", str(out)
            )
        extra = ["--config", config] if config else []
        return _spatiora(
            "bench",
            *extra,
            "--arch",
            arch,
            "--device",
            "cuda",
            "--steps",
            "25",
            "--runs",
            "2",
            "--size",
            size,
            "--json",
            str(out),
        )

    return argv


SECTIONS = (
    Section(
        "env",
        "torch, CUDA and the device",
        lambda dry, out: [sys.executable, __file__, "--section", "env", "--json", str(out)],
        60,
    ),
    Section("sd15", "spatiora bench, SD 1.5 512x512 25 steps fp16", _bench("sd15", "512x512"), 120),
    Section(
        "gauge",
        "VRAM gauge by stage, img2img memory, OOM recovery",
        lambda dry, out: [
            sys.executable,
            __file__,
            "--section",
            "gauge",
            "--json",
            str(out),
            *(["--dry-run"] if dry else []),
        ],
        120,
    ),
    Section(
        "lora",
        "spatiora bench lora, SD 1.5 UNet",
        lambda dry, out: _spatiora(
            "bench",
            "lora",
            "--arch",
            "demo" if dry else "sd15",
            "--device",
            "cpu" if dry else "cuda",
            "--switches",
            "5" if dry else "50",
            *(["--leak-switches", "20", "--fuse-cycles", "5", "--step-side", "64"] if dry else []),
            "--json",
            str(out),
        ),
        120,
    ),
    Section(
        "img2img",
        "benchmarks/img2img.py, SD 1.5 512x512 25 steps",
        lambda dry, out: [
            sys.executable,
            "-m",
            "benchmarks.img2img",
            *(
                ["--arch", "demo", "--steps", "4", "--rounds", "1"]
                if dry
                else ["--arch", "sd15", "--size", "512x512", "--steps", "25", "--rounds", "3", "--device", "cuda"]
            ),
        ],
        90,
    ),
    Section(
        "ui",
        "benchmarks/ui_cost.py: the TUI against the bare engine, SD 1.5 512x512 25 steps",
        lambda dry, out: [
            sys.executable,
            "-m",
            "benchmarks.ui_cost",
            "--runs",
            "1" if dry else "2",
            *(
                ["--arch", "demo", "--steps", "2", "--size", "64x64", "--keys", "5"]
                if dry
                else ["--arch", "sd15", "--steps", "25", "--size", "512x512"]
            ),
        ],
        120,
    ),
    Section(
        "previews",
        "benchmarks/previews.py: preview cost per method, SDXL VAE fp16",
        lambda dry, out: [
            sys.executable,
            str(REPO / "benchmarks" / "previews.py"),
            "--json",
            str(out),
            *(
                ["--runs", "2", "--latent-side", "16"]
                if dry
                else ["--arch", "sdxl", "--device", "cuda", "--dtype", "fp16", "--runs", "30"]
            ),
        ],
        60,
    ),
    Section("sdxl", "spatiora bench, SDXL 1024x1024 25 steps fp16", _bench("sdxl", "1024x1024"), 180),
    Section("bf16", "spatiora bench, SD 1.5 512x512 25 steps bf16", _bench("sd15", "512x512", "BF16_CONFIG"), 90),
    *(
        Section(
            f"compile-{mode}",
            f"[model] compile, mode {mode}: SD 1.5 512x512 25 steps fp16, eager against compiled, switches "
            "and in-place swaps with Dynamo's graph counter, images against eager",
            _own_section("compile", mode),
            300,
        )
        for mode in ("reduce-overhead", "default")
    ),
    *(
        Section(
            f"offload-{mode}",
            f"[model] offload = {mode}: SDXL 1024x1024 25 steps fp16, peak VRAM, image time, an in-place swap",
            _own_section("offload", mode),
            240 if mode == "sequential" else 120,
            after="" if mode == "none" else "offload-none",  # its images are compared with mode none's
        )
        for mode in ("none", "model", "group", "sequential")
    ),
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="gpu-check", help="folder for gpu-check.json, .md and .log")
    parser.add_argument("--dry-run", action="store_true", help="every section on the CPU with the demo model")
    parser.add_argument("--budget", type=float, default=480.0, help="seconds for all sections (default 480)")
    parser.add_argument("--only", help="comma-separated sections to run (default: all)")
    parser.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="sections run side by side (default 1: on a GPU each section's figures must be its own)",
    )
    parser.add_argument("--section", help=argparse.SUPPRESS)  # a child process: run one in-process section
    parser.add_argument("--json", help=argparse.SUPPRESS)
    parser.add_argument("--mode", help=argparse.SUPPRESS)  # the offload or compile section's mode
    args = parser.parse_args()
    if args.section in ("offload", "compile"):
        run = offload_section if args.section == "offload" else compile_section
        figures = run(args.dry_run, args.mode, Path(args.json).parent)
        Path(args.json).write_text(json.dumps(figures, indent=2, default=str), encoding="utf-8")
        return
    if args.section:
        figures = {"env": env_section, "gauge": gauge_section}[args.section](args.dry_run)
        Path(args.json).write_text(json.dumps(figures, indent=2, default=str), encoding="utf-8")
        return
    run_all(args)


def run_all(args: argparse.Namespace) -> None:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    wanted = set(args.only.split(",")) if args.only else None
    deadline = time.monotonic() + args.budget
    report: dict[str, Any] = {"dry_run": args.dry_run, "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "sections": {}}
    env = {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    }
    sections = [section for section in SECTIONS if wanted is None or section.name in wanted]
    written = threading.Lock()  # the report and the log, written as each section ends
    ended = {section.name: threading.Event() for section in sections}

    with tempfile.TemporaryDirectory(prefix="spatiora-gpu-check-") as tmp, open(out / "gpu-check.log", "w") as log:
        bf16 = Path(tmp) / "bf16.toml"
        bf16.write_text('[model]\ndtype = "bf16"\n', encoding="utf-8")

        def run(section: Section) -> None:
            try:
                if section.after in ended:  # (sections start in order: the one waited for has started)
                    ended[section.after].wait()
                run_one(section)
            finally:
                ended[section.name].set()

        def run_one(section: Section) -> None:
            left = deadline - time.monotonic()
            entry: dict[str, Any] = {"what": section.what}
            if left < 20:
                entry["status"] = "skipped: out of time"
                output = ""
            else:
                json_path = Path(tmp) / f"{section.name}.json"
                argv = [str(bf16) if a == "BF16_CONFIG" else a for a in section.argv(args.dry_run, json_path)]
                limit = min(section.limit_s * (3 if args.dry_run else 1), left)
                print(f"== {section.name}: {section.what} (limit {limit:.0f} s)", flush=True)
                t0 = time.monotonic()
                try:
                    proc = subprocess.run(
                        argv,
                        cwd=REPO,
                        env=env,
                        stdout=subprocess.PIPE,
                        stderr=subprocess.STDOUT,
                        text=True,
                        timeout=limit,
                    )
                    output = f"===== {section.name}: {' '.join(argv)}\n{proc.stdout}"
                    entry["status"] = "ok" if proc.returncode == 0 else f"failed (exit {proc.returncode})"
                except subprocess.TimeoutExpired as exc:
                    tail = exc.stdout.decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
                    output = f"===== {section.name}: {' '.join(argv)}\n{tail}"
                    entry["status"] = f"stopped at its limit ({limit:.0f} s)"
                entry["seconds"] = round(time.monotonic() - t0, 1)
                entry["output_tail"] = output.strip().splitlines()[-40:]
                if json_path.exists():
                    entry["figures"] = json.loads(json_path.read_text(encoding="utf-8"))
            with written:
                log.write(output)
                log.flush()
                report["sections"][section.name] = entry
                # In the order of SECTIONS, whichever ended first.
                report["sections"] = {
                    s.name: report["sections"][s.name] for s in sections if s.name in report["sections"]
                }
                print(
                    f"   {section.name}: {entry['status']}"
                    + (f" in {entry['seconds']} s" if "seconds" in entry else ""),
                    flush=True,
                )
                (out / "gpu-check.json").write_text(json.dumps(report, indent=2, default=str), encoding="utf-8")
                (out / "gpu-check.md").write_text(markdown(report), encoding="utf-8")

        # One at a time on a GPU (each section's timings and memory are its own); side by side
        # only where asked (--jobs), as the dry run in CI does.
        with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
            list(pool.map(run, sections))
    (out / "gpu-check.json").write_text(json.dumps(report, indent=2, default=str), encoding="utf-8")
    (out / "gpu-check.md").write_text(markdown(report), encoding="utf-8")
    failed = [name for name, e in report["sections"].items() if e["status"] != "ok"]
    print(f"report: {out / 'gpu-check.md'}" + (f"; not ok: {', '.join(failed)}" if failed else ""))
    sys.exit(1 if failed else 0)


def markdown(report: dict[str, Any]) -> str:
    """The report for docs/gpu.md: each section's status and the lines its tool printed."""
    lines = [f"# GPU check{' (dry run on the CPU)' if report['dry_run'] else ''}, {report['started']}", ""]
    env = report["sections"].get("env", {}).get("figures")
    if env:
        lines += [
            f"Device: {env.get('device')} · torch {env.get('torch')} · CUDA {env.get('cuda')} · driver {env.get('driver')}",
            "",
        ]
    for name, entry in report["sections"].items():
        lines += [
            f"## {name}: {entry['what']}",
            "",
            f"{entry['status']}" + (f", {entry['seconds']} s" if "seconds" in entry else ""),
            "",
        ]
        if entry.get("output_tail"):
            lines += ["```", *entry["output_tail"], "```", ""]
    return "\n".join(lines)


# -- in-process sections (each run in its own child process) ------------------------------------


def env_section(dry: bool) -> dict[str, Any]:
    import torch

    from spatiora_tui.hw.sampler import NvmlBackend

    gpus, error = NvmlBackend().read()
    figures: dict[str, Any] = {
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cuda_available": torch.cuda.is_available(),
    }
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        figures |= {
            "device": props.name,
            "memory_mb": props.total_memory / MB,
            "capability": f"{props.major}.{props.minor}",
        }
    else:
        figures["device"] = "cpu"
    figures["nvml"] = error or [g.__dict__ for g in gpus]
    try:
        import pynvml

        pynvml.nvmlInit()
        figures["driver"] = pynvml.nvmlSystemGetDriverVersion()
    except Exception as exc:  # no NVIDIA driver here: say so in the report
        figures["driver"] = f"unavailable ({type(exc).__name__})"
    import diffusers
    import peft

    figures |= {"diffusers": diffusers.__version__, "peft": peft.__version__}
    print(json.dumps(figures, indent=2, default=str))
    return figures


def gauge_section(dry: bool) -> dict[str, Any]:
    """The VRAM gauge's sources at each stage, image-to-image's memory, and an out-of-memory."""
    from PIL import Image

    from spatiora_tui import failpoints
    from spatiora_tui.bench.arch import engine_parts
    from spatiora_tui.config import load_settings
    from spatiora_tui.engine.api import EngineOOM, GenerationRequest
    from spatiora_tui.engine.local import LocalEngine
    from spatiora_tui.hw.sampler import HardwareSampler

    arch, size, steps, device = ("demo", (64, 64), 4, "cpu") if dry else ("sd15", (512, 512), 25, "cuda")
    sampler = HardwareSampler()
    rows: list[dict[str, Any]] = []

    def snap(stage: str) -> None:
        s = sampler.sample()
        gpu = s.gpu
        rows.append(
            {
                "stage": stage,
                "nvml_device_used_mb": gpu.memory_used_mb if gpu else None,
                "nvml_process_mb": gpu.process_memory_mb if gpu else None,
                "torch_allocated_mb": s.cuda.allocated_mb if s.cuda else None,
                "torch_reserved_mb": s.cuda.reserved_mb if s.cuda else None,
                "gauge_shows_mb": s.vram_mb,
                "rss_mb": s.host.process_rss_mb,
            }
        )

    figures: dict[str, Any] = {"arch": arch, "size": size, "steps": steps}
    with tempfile.TemporaryDirectory(prefix="spatiora-gauge-") as tmp:
        base = load_settings()
        task = base.tasks[0].name
        settings, loader = engine_parts(base, arch, (task,), steps, size, Path(tmp) / "adapters", device=device)
        snap("before load")
        engine = LocalEngine(settings, loader=loader)
        engine.load()
        snap("model loaded")
        engine.switch_task(task)
        snap("adapter active")
        request = GenerationRequest(prompt="a floor plan", task=task, seed=1)
        engine.generate(request)  # warm-up
        snap("after a first image")

        def on_step(preview: Any) -> None:
            if preview.step in (1, preview.total):
                snap(f"denoise step {preview.step}")

        result = engine.generate(request, on_step=on_step)
        snap("after an image")
        figures["image_s"] = (result.timings.image_ms or 0) / 1000
        figures["peak_allocated_mb"] = result.memory.cuda_max_allocated_mb
        init = Path(tmp) / "init.png"
        Image.new("RGB", size, "white").save(init)
        img2img = GenerationRequest(prompt="a floor plan", task=task, seed=1, init_image=str(init), strength=0.75)
        result = engine.generate(img2img)
        snap("after an img2img image")
        figures["img2img_image_s"] = (result.timings.image_ms or 0) / 1000
        figures["img2img_peak_allocated_mb"] = result.memory.cuda_max_allocated_mb
        figures["oom"] = _oom(engine, request, dry, snap, failpoints, EngineOOM)
    figures["gauge"] = rows
    for row in rows:
        print(" | ".join(f"{k} {v:.0f}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items()))
    print(json.dumps(figures["oom"], indent=2, default=str))
    return figures


def offload_section(dry: bool, mode: str, shared: Path) -> dict[str, Any]:
    """One offload mode on the SDXL architecture: load, VRAM held, an image (time, peak), then a
    task switch whose adapter takes the first one's place (resident_max = 1: in place where the
    weights are on the device, loaded where they live in the offload hooks) and that task's image,
    compared with the same image under mode none (written to `shared` by that section)."""
    import dataclasses

    import numpy as np

    from spatiora_tui.bench.arch import engine_parts
    from spatiora_tui.config import load_settings
    from spatiora_tui.engine.api import GenerationRequest
    from spatiora_tui.engine.local import LocalEngine
    from spatiora_tui.hw.sampler import HardwareSampler

    arch, size, steps, device = ("demo", (64, 64), 4, "cpu") if dry else ("sdxl", (1024, 1024), 25, "cuda")
    torch: Any = None
    if not dry:
        import torch
    figures: dict[str, Any] = {"mode": mode, "arch": arch, "size": size, "steps": steps}
    with tempfile.TemporaryDirectory(prefix="spatiora-offload-") as tmp:
        base = load_settings()
        first, second = base.tasks[0].name, base.tasks[1].name
        settings, loader = engine_parts(base, arch, (first, second), steps, size, Path(tmp) / "adapters", device=device)
        model = dataclasses.replace(settings.model, offload="none" if dry else mode)  # type: ignore[arg-type]
        adapters = dataclasses.replace(settings.adapters, resident_max=1, fuse=False)
        settings = dataclasses.replace(settings, model=model, adapters=adapters)
        engine = LocalEngine(settings, loader=loader)
        t0 = time.perf_counter()
        info = engine.load()
        figures["load_s"] = time.perf_counter() - t0
        figures["offload"] = info.offload
        if torch is not None:
            figures["allocated_after_load_mb"] = torch.cuda.memory_allocated() / MB
        request = GenerationRequest(prompt="a floor plan", task=first, seed=1)
        engine.generate(request)  # warm-up: the adapter comes in, kernels are chosen
        if torch is not None:
            torch.cuda.reset_peak_memory_stats()
        result = engine.generate(request, on_step=lambda preview: None)  # previews on, as in the UI
        figures["image_s"] = (result.timings.image_ms or 0) / 1000
        figures["first_preview_s"] = (result.timings.first_preview_ms or 0) / 1000
        figures["peak_allocated_mb"] = result.memory.cuda_max_allocated_mb
        figures["peak_reserved_mb"] = result.memory.cuda_max_reserved_mb
        gpu = HardwareSampler().sample().gpu
        figures["nvml_process_after_mb"] = gpu.process_memory_mb if gpu else None
        switch = engine.switch_task(second)
        figures["switch_ms"] = switch.duration_ms
        figures["switch_paths"] = list(switch.paths)
        other = engine.generate(dataclasses.replace(request, task=second))
        figures["second_image_s"] = (other.timings.image_ms or 0) / 1000
        images = {
            "first": np.asarray(result.image, dtype=np.int16),
            "second": np.asarray(other.image, dtype=np.int16),
        }
        reference = shared / "offload-none.npz"
        if mode == "none":
            np.savez(reference, first=images["first"], second=images["second"])
        elif reference.exists():
            saved = np.load(reference)
            for key, image in images.items():
                diff = np.abs(image - saved[key])
                figures[f"{key}_vs_none"] = {"max_abs": int(diff.max()), "mean_abs": float(diff.mean())}
    print(json.dumps(figures, indent=2, default=str))
    return figures


def compile_section(dry: bool, mode: str, shared: Path) -> dict[str, Any]:
    """[model] compile in `mode` on the SD 1.5 architecture: an eager engine's image time and
    images first, then a compiled engine's first image (tracing and compiling), its image time,
    switches among three tasks with two resident (so that resident switches and in-place swaps
    both happen), Dynamo's count of compiled graphs across all of that, and each task's image
    against the eager one. The dry run traces with the eager backend for reduce-overhead (the CPU
    has no CUDA graphs) and compiles with inductor on the CPU for default."""
    import dataclasses
    import statistics

    import numpy as np

    from spatiora_tui.bench.arch import engine_parts
    from spatiora_tui.config import load_settings
    from spatiora_tui.engine.api import GenerationRequest
    from spatiora_tui.engine.compiled import BACKEND_ENV, graphs
    from spatiora_tui.engine.local import LocalEngine

    if dry and mode == "reduce-overhead":
        os.environ[BACKEND_ENV] = "eager"
    arch, size, steps, device = ("demo", (64, 64), 4, "cpu") if dry else ("sd15", (512, 512), 25, "cuda")
    cycles = 2 if dry else 10
    figures: dict[str, Any] = {"mode": mode, "arch": arch, "size": size, "steps": steps}
    with tempfile.TemporaryDirectory(prefix="spatiora-compile-") as tmp:
        base = load_settings()
        third = dataclasses.replace(base.tasks[0], name=f"{base.tasks[0].name}_2")  # its own random adapter
        base = dataclasses.replace(base, tasks=(*base.tasks[:2], third))
        tasks = tuple(t.name for t in base.tasks)
        figures["tasks"] = tasks
        images: dict[str, dict[str, Any]] = {}
        for compiled in (False, True):
            settings, loader = engine_parts(base, arch, tasks, steps, size, Path(tmp) / "adapters", device=device)
            model = dataclasses.replace(settings.model, offload="none", compile=compiled, compile_mode=cast(Any, mode))
            adapters = dataclasses.replace(settings.adapters, resident_max=2, fuse=False)
            engine = LocalEngine(dataclasses.replace(settings, model=model, adapters=adapters), loader=loader)
            engine.load()
            label = "compiled" if compiled else "eager"
            request = GenerationRequest(prompt="a floor plan", task=tasks[0], seed=1)
            t0 = time.perf_counter()
            first = engine.generate(request, on_step=lambda preview: None)
            figures[f"{label}_first_image_s"] = time.perf_counter() - t0
            figures[f"{label}_first_notices"] = [str(w) for w in first.warnings]
            times = []
            for _ in range(2 if dry else 3):
                result = engine.generate(request, on_step=lambda preview: None)  # previews on, as in the UI
                times.append((result.timings.image_ms or 0) / 1000)
            figures[f"{label}_image_s"] = times
            graphs_before = graphs()
            switches: dict[str, list[float]] = {}
            for _ in range(cycles):
                # With two resident of three: two resident switches, then three in-place swaps.
                for task in (tasks[1], tasks[0], tasks[1], tasks[2], tasks[0]):
                    switch = engine.switch_task(task)
                    how = switch.paths[0][1] if switch.paths else dict(switch.tiers).get(switch.adapters[0][0], "")
                    switches.setdefault(how, []).append(switch.duration_ms)
                    if switch.uncompiled:
                        figures.setdefault(f"{label}_uncompiled", []).append(switch.uncompiled)
            images[label] = {}
            for task in tasks:
                result = engine.generate(dataclasses.replace(request, task=task))
                images[label][task] = np.asarray(result.image, dtype=np.int16)
            figures[f"{label}_switch_ms"] = {
                how: {
                    "n": len(ms),
                    "p50": statistics.median(ms),
                    "p95": sorted(ms)[max(0, round(0.95 * len(ms)) - 1)],
                }
                for how, ms in switches.items()
            }
            figures[f"{label}_graphs_added_by_switches_and_images"] = graphs() - graphs_before
            del engine
        figures["compiled_vs_eager"] = {
            task: {
                "max_abs": int(np.abs(images["compiled"][task] - images["eager"][task]).max()),
                "mean_abs": float(np.abs(images["compiled"][task] - images["eager"][task]).mean()),
            }
            for task in tasks
        }
        figures["speedup"] = statistics.median(figures["eager_image_s"]) / statistics.median(
            figures["compiled_image_s"]
        )
    print(json.dumps(figures, indent=2, default=str))
    return figures


def _oom(
    engine: Any, request: Any, dry: bool, snap: Callable[[str], None], failpoints: Any, oom_error: type[BaseException]
) -> dict[str, Any]:
    """A request made to run out of memory, then a normal one. On a GPU the process is capped at
    what it holds plus 1 GiB and asks for 3072x3072 in 2 steps; on the CPU (dry run) the
    failpoint makes the same error at the first UNet call."""
    import dataclasses

    figures: dict[str, Any] = {}
    big = dataclasses.replace(request, width=3072, height=3072, steps=2)
    torch: Any = None
    if dry:
        failpoints.arm("denoise", "oom")
        big = request
    else:
        import torch

        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        baseline = torch.cuda.memory_allocated() / MB
        total = torch.cuda.get_device_properties(0).total_memory
        cap = (torch.cuda.memory_reserved() + 2**30) / total
        torch.cuda.set_per_process_memory_fraction(cap)
        figures |= {"allocated_before_mb": baseline, "cap_mb": cap * total / MB}
    t0 = time.perf_counter()
    try:
        result = engine.generate(big)
        figures["outcome"] = "no out-of-memory: the request ran" + (
            f" (warnings: {list(result.warnings)})" if result.warnings else ""
        )
    except oom_error as exc:
        figures["outcome"] = "EngineOOM"
        figures["message"] = str(exc)
    figures["failed_after_s"] = time.perf_counter() - t0
    snap("after the out-of-memory")
    if torch is not None:
        figures["allocated_after_oom_mb"] = torch.cuda.memory_allocated() / MB
        torch.cuda.set_per_process_memory_fraction(1.0)
    t0 = time.perf_counter()
    result = engine.generate(request)
    figures["next_request_ok"] = result.image is not None
    figures["next_request_s"] = time.perf_counter() - t0
    snap("after the next request")
    if torch is not None:
        figures["allocated_after_next_mb"] = torch.cuda.memory_allocated() / MB
    return figures


if __name__ == "__main__":
    main()
