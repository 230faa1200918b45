"""`spatiora doctor`: versions, device, NVML, paths, the model and the adapters, checked."""

from __future__ import annotations

import argparse
import os
import platform
import sys
from collections.abc import Callable
from importlib import metadata
from pathlib import Path

from spatiora_tui import __version__
from spatiora_tui.cli.common import EXIT_FAILED, EXIT_OK, one_line, printable
from spatiora_tui.config import OUTPUT_DIR_ENV, ConfigError, Settings, user_cache_dir
from spatiora_tui.units import MB


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser) -> None:
    parser = sub.add_parser("doctor", parents=[common], help="check versions, device, NVML, model and adapters")
    parser.set_defaults(run=run)


def run(settings: Settings, args: argparse.Namespace) -> int:
    problems: list[str] = []

    def row(label: str, value: str) -> None:
        print(printable(f"  {label:<14} {value}"))

    print("Spatiora doctor")
    row("spatiora", __version__)
    row("python", f"{platform.python_version()} ({sys.executable})")
    for dist in (
        "torch",
        "diffusers",
        "transformers",
        "peft",
        "safetensors",
        "textual",
        "textual-image",
        "nvidia-ml-py",
        "psutil",
    ):
        try:
            row(dist, metadata.version(dist))
        except metadata.PackageNotFoundError:
            row(dist, "MISSING")
            problems.append(f"{dist} is not installed; run `make setup` or `pip install -e .`")
    row("config", str(settings.source_file or "built-in defaults (no config file found)"))
    row("cache", str(user_cache_dir()))

    _doctor_terminal(settings, row)
    _doctor_device(settings, row, problems)
    _doctor_nvml(row)
    _doctor_paths(settings, row, problems)
    _doctor_model(settings, row, problems)
    _doctor_adapters(settings, row, problems)
    _doctor_output(settings, row, problems)

    if problems:
        print(f"\n{len(problems)} problem(s):")
        for problem in problems:
            print(f"  - {one_line(problem)}")
        return EXIT_FAILED
    print("\nno problems found")
    return EXIT_OK


def _doctor_terminal(settings: Settings, row: Callable[[str, str], None]) -> None:
    """How the TUI would draw images here, and why: the terminal is asked as the TUI asks it."""
    from spatiora_tui.ui import sixel_encoder

    if sixel_encoder.IMPLEMENTATION == "compiled":
        row("sixel encoder", "compiled (ui/_sixel.c)")
    else:
        row(
            "sixel encoder",
            "numpy: the compiled one was not built (no C compiler at install); with gcc or clang, "
            "`pip install -e .` again builds it, about 5x faster on noisy previews",
        )
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        row("images", "not a terminal here; run `spatiora doctor` in the terminal you use to see how it draws")
        return
    from spatiora_tui.ui.images import choose_drawing, describe

    row("images", describe(choose_drawing(settings.ui.renderer)))


def _doctor_device(settings: Settings, row: Callable[[str, str], None], problems: list[str]) -> None:
    try:
        import torch
    except ImportError:
        return
    if torch.cuda.is_available():
        names = ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
        row("CUDA", f"available, torch CUDA {torch.version.cuda}: {names}")
    else:
        build = (
            "CPU-only build of torch" if torch.version.cuda is None else f"torch CUDA {torch.version.cuda}, no GPU seen"
        )
        row("CUDA", f"not available ({build})")
    mps = getattr(torch.backends, "mps", None)
    row("MPS", "available" if mps and mps.is_available() else "not available")
    from spatiora_tui.engine.api import EngineError
    from spatiora_tui.engine.pipeline import resolve_device

    try:
        device = resolve_device(settings.model.device)
        row("device", f"{device} (model.device = {settings.model.device})")
    except EngineError as exc:
        problems.append(str(exc))
        return
    from spatiora_tui.engine.pipeline import choose_offload

    offload = settings.model.offload
    try:
        choose_offload(offload, device, None, 0, 0, "sd1")  # refuses a mode the device cannot do
    except EngineError as exc:
        problems.append(str(exc))
        return
    if device != "cuda":
        row("offload", f"none (model.offload = {offload}; nothing to offload to on {device})")
    elif offload == "auto":
        free = torch.cuda.mem_get_info()[0] / MB
        row("offload", f"auto: chosen at load from the free VRAM ({free:,.0f} MB free now)")
    else:
        row("offload", offload)
    tiling = [
        name for name, on in (("tiling", settings.model.vae_tiling), ("slicing", settings.model.vae_slicing)) if on
    ]
    row("VAE", ", ".join(tiling) or "whole images (tiled only after running out of memory)")
    model = settings.model
    if not model.compile:
        row("compile", "off (model.compile = false)")
    elif device == "cuda" and offload not in ("auto", "none"):
        row("compile", f'off: {offload} offload rules it out (set offload = "none")')
    else:
        rank = model.compile_rank or "auto (the task adapters' highest)"
        row("compile", f"{model.compile_mode}; LoRA lanes of rank {rank}; the first image at each size compiles")


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
    from spatiora_tui.engine.demo import trained_demo

    if source.kind == "demo" and trained_demo(source.value) is not None:
        row("model", f"demo, trained on procedural plans and interiors (64x64): {trained_demo(source.value)}")
    elif source.kind == "demo":
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
    for label, where in (
        ("checkpoints", folders.checkpoints),
        ("loras", folders.loras),
        ("embeddings", folders.embeddings),
    ):
        present = [p for p in where if p.is_dir()]
        count = len(scan(tuple(present)).entries) if present else 0
        row(label, f"{count} file(s) in {', '.join(map(str, present)) or 'no folder'}")
    for missing in folders.missing:
        problems.append(f"{missing} is named in [paths] but does not exist; fix the path in config.toml")


def _doctor_adapters(settings: Settings, row: Callable[[str, str], None], problems: list[str]) -> None:
    from safetensors import safe_open

    from spatiora_tui.engine.adapters import AdapterCatalog
    from spatiora_tui.engine.api import EngineError
    from spatiora_tui.engine.demo import DEMO_ADAPTERS, demo_adapter_dir

    dirs = [settings.adapter_dir]
    demo_adapters = demo_adapter_dir(settings.model.source, user_cache_dir())
    if demo_adapters is not None:
        dirs.append(demo_adapters)
    from spatiora_tui.library.catalog import library_folders

    catalog = AdapterCatalog(dirs, library_folders(settings).loras)
    found = catalog.available()
    row("adapters", f"{len(found)} file(s) in {', '.join(str(d) for d in dirs)} and the [paths] LoRA folders")
    for name, path in sorted(found.items()):
        try:
            with safe_open(str(path), framework="pt") as fh:
                count = len(list(fh.keys()))
            row("", f"{name}: {path.name}, {count} tensors, {path.stat().st_size / MB:.1f} MB")
        except Exception as exc:
            row("", f"{name}: UNREADABLE")
            problems.append(f"adapter {name!r} ({path}) is not a valid .safetensors file ({exc}); replace it")
    demo_pending = demo_adapters is not None and not demo_adapters.exists()
    for task in settings.tasks:
        for ref in task.adapters:
            if ref.name in found:
                continue
            if demo_pending and ref.name in DEMO_ADAPTERS:
                continue  # made with the demo model on first use
            try:
                catalog.find(ref.name)
            except EngineError as exc:
                problems.append(f"task {task.name!r}: {exc}")


def _doctor_output(settings: Settings, row: Callable[[str, str], None], problems: list[str]) -> None:
    out = settings.output_dir
    probe = out if out.exists() else next((p for p in out.parents if p.exists()), None)
    writable = probe is not None and os.access(probe, os.W_OK)
    row("output dir", f"{out} ({'writable' if writable else 'NOT writable'})")
    if not writable:
        problems.append(f"output dir {out} is not writable; set output.dir or {OUTPUT_DIR_ENV}")
