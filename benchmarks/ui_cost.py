"""Measure the UI's cost: generation time inside the app vs the bare engine, and key-to-screen
latency while a generation runs. Run: `python -m benchmarks.ui_cost [--runs N] [--task T]`.

Both sides use the same engine, model, request and seed, in one process, alternating so that
machine noise hits both. The app runs headless (Textual's test driver) with the real hardware
sampler and real preview rendering; the figures report, they assert nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from spatiora_tui.config import load_settings
from spatiora_tui.engine.api import GenerationRequest


def thread_cpu_s() -> dict[str, float]:
    """CPU seconds so far of each thread of this process, by role: the UI (main thread), each
    other Python thread by name, and "torch (native)" for threads Python did not start (PyTorch's
    OpenMP team)."""
    import psutil

    names = {t.native_id: t.name for t in threading.enumerate()}
    main = threading.main_thread().native_id
    by_role: dict[str, float] = {}
    for t in psutil.Process().threads():
        if t.id == main:
            role = "UI (main thread)"
        elif t.id in names:
            role = names[t.id]
        else:
            role = "torch (native)"
        role = re.sub(r"_\d+$", "", role)  # asyncio_0, asyncio_1: Textual's thread workers
        by_role[role] = by_role.get(role, 0.0) + t.user_time + t.system_time
    return by_role


class _Accounted:
    """The engine, with the CPU each thread used during its last generate() kept as shares of
    that call's wall time (percent; 100 = one core busy)."""

    def __init__(self, engine: Any) -> None:
        self._engine = engine
        self.last_cpu_shares: dict[str, float] = {}

    def add_last_shares_to(self, by_thread: dict[str, list[float]]) -> None:
        """Append the last generation's share of each thread to that thread's list."""
        for name, share in self.last_cpu_shares.items():
            by_thread.setdefault(name, []).append(share)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._engine, name)

    def generate(self, *args: Any, **kwargs: Any) -> Any:
        before, start = thread_cpu_s(), time.monotonic()
        try:
            return self._engine.generate(*args, **kwargs)
        finally:
            wall = time.monotonic() - start
            self.last_cpu_shares = {
                name: (seconds - before.get(name, 0.0)) / wall * 100.0 for name, seconds in thread_cpu_s().items()
            }


async def _in_app(
    app, engine, request: GenerationRequest, runs: int, keys: int, by_thread: dict[str, list[float]]
) -> tuple[list[float], list[float], list[float], list[int], list[int]]:
    from textual.widgets import Input

    from spatiora_tui.jobs.events import JobFinished, JobStepped
    from spatiora_tui.ui.messages import SessionNews

    finished: list[JobFinished] = []
    done = asyncio.Event()
    previews = [0]
    shares: list[float] = []

    def hook(message: object) -> None:
        event = message.event if isinstance(message, SessionNews) else None
        if isinstance(event, JobStepped):
            previews[0] += 1
        if isinstance(event, JobFinished):
            shares.append(app.frames.pacer.cpu_share())
            finished.append(event)
            done.set()

    image_ms: list[float] = []
    latencies: list[float] = []
    ui_cpu_ms: list[float] = []
    frames: list[int] = []
    messages: list[int] = []
    async with app.run_test(size=(160, 48), message_hook=hook) as pilot:
        while not app.model_ready:
            await asyncio.sleep(0.05)
        # Same task as the bare run (the form then holds that task's settings).
        app.request_switch(request.task)
        while app.task_pane.active != request.task:
            await asyncio.sleep(0.02)
        prompt = app.query_one("#prompt", Input)
        for run in range(runs):
            prompt.value = request.prompt
            app.query_one("#seed", Input).value = str(request.seed)
            done.clear()
            previews[0] = 0
            await pilot.press("ctrl+g")
            typed = 0
            while not done.is_set():
                if run == runs - 1 and typed < keys:
                    # Type into the prompt while the generation runs; time until it is processed and drawn.
                    prompt.focus()
                    start = time.perf_counter()
                    await pilot.press("x")
                    latencies.append((time.perf_counter() - start) * 1000.0)
                    typed += 1
                    await asyncio.sleep(0.1)
                else:
                    try:
                        await asyncio.wait_for(done.wait(), timeout=1.0)
                    except asyncio.TimeoutError:
                        pass
            engine.add_last_shares_to(by_thread)
            ui_cpu_ms.append(shares[-1] * 100.0)
            frames.append(app.frames.pacer.drawn)
            messages.append(previews[0])
            result = finished[-1].result
            assert (
                result.params.task == request.task and result.params.steps == engine.settings.task(request.task).steps
            )
            if result.timings.image_ms is not None:
                image_ms.append(result.timings.image_ms)
    return image_ms, latencies, ui_cpu_ms, frames, messages


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--task", default="floorplan")
    parser.add_argument("--keys", type=int, default=30, help="keys typed during the last in-app generation")
    parser.add_argument(
        "--arch",
        choices=("config", "demo", "sd15", "sdxl"),
        default="config",
        help="the configured model (default), or an architecture with random weights as "
        "`spatiora bench` builds it (real size: real compute per step)",
    )
    parser.add_argument("--steps", type=int, default=4, help="steps per image with --arch")
    parser.add_argument("--size", default="512x512", help="WIDTHxHEIGHT with --arch")
    args = parser.parse_args()

    from spatiora_tui.engine.local import LocalEngine

    settings = load_settings()
    with tempfile.TemporaryDirectory(prefix="spatiora-measure-") as tmp:
        loader = None
        if args.arch != "config":
            from spatiora_tui.bench.arch import engine_parts
            from spatiora_tui.config import parse_size

            settings, loader = engine_parts(
                settings, args.arch, (args.task,), args.steps, parse_size(args.size), Path(tmp)
            )
        _measure(args, settings, LocalEngine(settings, loader=loader))


def _measure(args: argparse.Namespace, settings: Any, engine: Any) -> None:
    from spatiora_tui.ui.app import SpatioraApp

    engine = _Accounted(engine)
    engine.load()
    request = GenerationRequest(prompt="an open-plan flat", task=args.task, seed=7)
    engine.generate(request)  # warm-up: first-run allocations and caches

    bare: list[float] = []
    app_ms: list[float] = []
    latencies: list[float] = []
    ui_cpu: list[float] = []
    frames: list[int] = []
    messages: list[int] = []
    by_thread: dict[str, list[float]] = {}
    bare_by_thread: dict[str, list[float]] = {}
    for _ in range(args.runs):
        result = engine.generate(request, cancel=threading.Event())
        bare.append(result.timings.image_ms or 0.0)
        engine.add_last_shares_to(bare_by_thread)
        app = SpatioraApp(settings, engine, renderer="halfcell")
        ms, lat, cpu, n, m = asyncio.run(_in_app(app, engine, request, 1, args.keys, by_thread))
        app_ms += ms
        latencies += lat
        ui_cpu += cpu
        frames += n
        messages += m
    task = settings.task(args.task)
    print(
        f"model {engine.model.name} · task {task.name} · {task.width}x{task.height} · {task.steps} steps · "
        f"{args.runs} runs each, alternating"
    )
    print(
        f"bare engine  median image time {statistics.median(bare):8.0f} ms  (runs: {', '.join(f'{v:.0f}' for v in bare)})"
    )
    print(
        f"in the app   median image time {statistics.median(app_ms):8.0f} ms  (runs: {', '.join(f'{v:.0f}' for v in app_ms)})"
    )
    print(f"ratio app / bare: {statistics.median(app_ms) / statistics.median(bare):.3f}")
    print(
        f"UI thread CPU as the preview pacer counts it (from the start of a generation to its end): median {statistics.median(ui_cpu):.1f}% of the wall time, "
        f"preview images drawn: median {statistics.median(frames):.0f} of {statistics.median(messages):.0f} "
        f"step updates (budget {settings.ui.preview_cpu_budget}, at most {settings.ui.preview_fps:g} fps)"
    )
    for side, shares in (("bare", bare_by_thread), ("in the app", by_thread)):
        print(
            f"CPU by thread, {side} (median % of the generation's wall time; 100% = one core): "
            + ", ".join(
                f"{name} {statistics.median(v):.1f}%"
                for name, v in sorted(shares.items(), key=lambda kv: -max(kv[1]))
                if max(v) >= 0.05
            )
        )
    if latencies:
        print(
            f"key-to-screen while generating: median {statistics.median(latencies):.1f} ms, "
            f"worst {max(latencies):.1f} ms over {len(latencies)} keys"
        )


if __name__ == "__main__":
    main()
