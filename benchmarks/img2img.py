"""Image-to-image on the loaded base: what building the img2img pipeline costs in memory (it
reuses the txt2img components, so it should cost nothing), and the image time of img2img at
strengths 0.5, 0.75 and 1.0 against txt2img, measured side by side in one process (alternating
rounds so machine noise hits every side).

Run: `python -m benchmarks.img2img [--arch demo|sd15|sdxl] [--size 512x512] [--steps 20] [--rounds 3]`.
`--device cuda` reports CUDA allocated memory too. It reports figures and asserts nothing.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from spatiora_tui.config import load_settings, parse_size
from spatiora_tui.engine.api import GenerationRequest

STRENGTHS = (0.5, 0.75, 1.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--arch", default="demo", choices=("demo", "sd15", "sdxl"))
    parser.add_argument("--size", default="64x64")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--device", default=None)
    args = parser.parse_args()

    from PIL import Image, ImageDraw

    from spatiora_tui.bench.arch import engine_parts
    from spatiora_tui.engine.local import LocalEngine
    from spatiora_tui.hw.memory import process_rss_mb, release_freed_memory
    from spatiora_tui.hw.watchdog import cuda_allocated_mb

    size = parse_size(args.size)
    base = load_settings()
    task = base.tasks[0].name
    with tempfile.TemporaryDirectory(prefix="spatiora-img2img-") as tmp:
        root = Path(tmp)
        settings, loader = engine_parts(
            base, args.arch, (task,), args.steps, size, root / "adapters", device=args.device
        )
        engine = LocalEngine(settings, loader=loader)
        model = engine.load()
        sketch = Image.new("RGB", size, "white")
        ImageDraw.Draw(sketch).rectangle(
            (size[0] // 8, size[1] // 8, size[0] * 7 // 8, size[1] * 7 // 8), outline="black", width=4
        )
        init = root / "sketch.png"
        sketch.save(init)
        txt2img = GenerationRequest(prompt="a floor plan", task=task, seed=1)
        engine.generate(txt2img)  # warm-up: first-run allocations and caches
        from spatiora_tui.engine.generate import img2img_pipeline

        def build() -> tuple[float, float, float | None]:
            """Build the img2img pipeline once: (ms, RSS growth MB, CUDA allocated growth MB)."""
            release_freed_memory()
            rss, cuda = process_rss_mb(), cuda_allocated_mb()
            t0 = time.perf_counter()
            built = img2img_pipeline(engine.pipeline)  # what the engine builds at its first img2img
            ms = (time.perf_counter() - t0) * 1000
            release_freed_memory()
            components = engine.pipeline.components.items()
            assert all(built.components[n] is c for n, c in components if n != "scheduler"), "a component was copied"
            after = cuda_allocated_mb()
            return ms, process_rss_mb() - rss, None if cuda is None or after is None else after - cuda

        builds = [build(), build()]  # the first may import the img2img pipeline's module

        requests = {"txt2img": txt2img}
        requests |= {
            f"img2img {s:g}": GenerationRequest(
                prompt="a floor plan", task=task, seed=1, init_image=str(init), strength=s
            )
            for s in STRENGTHS
        }
        for request in requests.values():
            engine.generate(request)  # warm-up of each path
        times: dict[str, list[float]] = {name: [] for name in requests}
        peaks: dict[str, float] = {}
        order = list(requests)
        for round_no in range(args.rounds):
            for name in order if round_no % 2 == 0 else reversed(order):
                result = engine.generate(requests[name])
                times[name].append((result.timings.image_ms or 0) / 1000)
                peaks[name] = max(
                    peaks.get(name, 0.0), result.memory.cuda_max_allocated_mb or result.memory.peak_rss_mb
                )
        print(
            f"\n{args.arch} {args.size}, {args.steps} steps, {model.device} {model.dtype}, median of {args.rounds} rounds:"
        )
        for label, (ms, rss, cuda) in zip(("first", "again"), builds):
            vram = "" if cuda is None else f", CUDA allocated {cuda:+.1f} MB"
            print(f"  img2img pipeline built {label}: {ms:.1f} ms, RSS {rss:+.1f} MB{vram}; every component shared")
        bare = statistics.median(times["txt2img"])
        peak_kind = "CUDA peak allocated" if model.device == "cuda" else "peak RSS"
        for name, values in times.items():
            median = statistics.median(values)
            print(f"  {name:<13} {median:6.2f} s  ({median / bare:.2f} x txt2img)  {peak_kind} {peaks[name]:.0f} MB")


if __name__ == "__main__":
    main()
