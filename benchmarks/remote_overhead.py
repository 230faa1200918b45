"""The remote engine's cost: the same requests on a LocalEngine in this process and on a
RemoteEngine (`spatiora serve --stdio` in a child process, or through ssh with --engine), the
two sides alternating rounds. Reports image time and time to first preview as the caller sees
them, the ratio remote/local, and what crossed the link per preview frame (PNG) against the sixel
image a terminal would be sent for the same preview at the preview pane's size.

Run: `python -m benchmarks.remote_overhead [--engine ssh://...] [--steps 20] [--size 512x512] [--rounds 3]`.
It reports figures and asserts nothing.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time

from spatiora_tui.config import load_settings, parse_size
from spatiora_tui.engine.api import GenerationRequest, StepPreview

#: The preview pane's image in xterm at 200x56 cells (docs/terminals.md): what sixel is sent for.
PANE_PIXELS = (912, 615)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--engine", help="ssh://... (default: a local `spatiora serve --stdio` child)")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--size", default="512x512")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--image-format", choices=("auto", "png", "raw"), default="auto", help="how finished images cross the link"
    )
    args = parser.parse_args()

    from spatiora_tui.engine.local import LocalEngine
    from spatiora_tui.remote.client import PREVIEW_FORMAT, RemoteEngine, pipe
    from spatiora_tui.remote.connect import server_argv

    settings = load_settings()
    width, height = parse_size(args.size)
    task = settings.tasks[0].name
    request = GenerationRequest(
        prompt="an open-plan flat", task=task, seed=3, steps=args.steps, width=width, height=height
    )
    local = LocalEngine(settings)
    local.load()
    argv = server_argv(args.engine) if args.engine else [sys.executable, "-m", "spatiora_tui", "serve", "--stdio"]
    remote = RemoteEngine(pipe(argv), image_format=args.image_format)
    remote.load()
    times: dict[str, list[float]] = {"local": [], "remote": []}
    firsts: dict[str, list[float]] = {"local": [], "remote": []}
    engine_s: dict[str, list[float]] = {"local": [], "remote": []}  # the engine's own image time
    frames: list[int] = []
    preview_bytes: list[int] = []
    previews = []

    def run(name: str, engine: object) -> None:
        first: list[float] = []
        start = time.perf_counter()

        def on_step(preview: StepPreview) -> None:
            if preview.image is not None:
                if not first:
                    first.append(time.perf_counter() - start)
                if name == "remote":
                    previews.append(preview.image)

        before, previews_before = remote.bytes_received, remote.preview_bytes
        result = engine.generate(request, on_step=on_step, cancel=threading.Event())  # type: ignore[attr-defined]
        times[name].append(time.perf_counter() - start)
        engine_s[name].append((result.timings.image_ms or float("nan")) / 1000)
        firsts[name].append(first[0] if first else float("nan"))
        if name == "remote":
            frames.append(remote.bytes_received - before)
            preview_bytes.append(remote.preview_bytes - previews_before)

    for warm in (local, remote):
        warm.generate(request)  # warm-up
    for round_no in range(args.rounds):
        order = [("local", local), ("remote", remote)]
        for name, engine in order if round_no % 2 == 0 else reversed(order):
            run(name, engine)
    rate, image_format = remote.link_rate, remote.image_format
    remote.close()
    per_image = statistics.median(frames)
    frames_per_image = len(previews) / args.rounds
    print(
        f"\n{args.engine or 'serve --stdio child'} · {task} · {args.size} · {args.steps} steps · median of {args.rounds}:"
    )
    for name in ("local", "remote"):
        print(
            f"  {name:6s} image {statistics.median(times[name]):.3f} s (the engine's own {statistics.median(engine_s[name]):.3f} s)"
            f" · first preview {statistics.median(firsts[name]):.3f} s"
        )
    print(f"  ratio remote/local: {statistics.median(times['remote']) / statistics.median(times['local']):.3f}")
    added = statistics.median(t - e for t, e in zip(times["remote"], engine_s["remote"], strict=True))
    print(
        f"  what the link adds (remote image - the server engine's own time): {added * 1000:.0f} ms "
        f"({added / statistics.median(engine_s['remote']) * 100:.1f}%)"
    )
    print(
        f"  link timed at {(rate or 0) / 2**20:.0f} MB/s when it opened: finished images cross as "
        f"{'raw pixels' if image_format == 'raw' else 'PNG'} ({args.image_format})"
    )
    per_preview = statistics.median(preview_bytes) / max(frames_per_image, 1)
    print(
        f"  link: {per_image / 1024:.0f} KB per image, of which {frames_per_image:.0f} previews "
        f"{per_preview / 1024:.1f} KB each ({previews[0].size[0]}x{previews[0].size[1]} px, {PREVIEW_FORMAT.upper()})"
    )
    try:
        from textual_image._sixel import image_to_sixels

        sample = previews[len(previews) // 2].resize(PANE_PIXELS)
        print(
            f"  the same preview as sixel at {PANE_PIXELS[0]}x{PANE_PIXELS[1]} (what xterm is sent): "
            f"{len(image_to_sixels(sample)) / 1024:.0f} KB"
        )
    except (ImportError, IndexError):
        pass


if __name__ == "__main__":
    main()
