"""Step-preview cost per method on the real SD 1.5 (or SDXL) VAE and TAESD architectures.

Random weights: compute and memory are those of the real networks (AutoencoderKL from the config
Spatiora ships for the variant; AutoencoderTiny's default config is TAESD's). One latent of a
512x512 image (1x4x64x64; 1024x1024 for SDXL) is previewed by each method through the same
previewer classes the engine uses, --runs times after one untimed call; the median per preview
is printed beside latent2rgb's, with each decoder's parameter memory.

    python benchmarks/previews.py                   # SD 1.5 on the CPU
    python benchmarks/previews.py --arch sdxl --device cuda --dtype fp16 --runs 50

Nothing is downloaded.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", default="sd15", choices=["sd15", "sdxl"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="fp32", choices=["fp32", "fp16", "bf16"])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--latent-side", type=int, help="latent side (default 64 for sd15, 128 for sdxl: 512/1024 px)")
    parser.add_argument("--json", metavar="PATH")
    args = parser.parse_args()

    import torch
    from diffusers import AutoencoderKL, AutoencoderTiny
    from diffusers.image_processor import VaeImageProcessor

    from spatiora_tui.engine.previews.latent2rgb import LatentToRGB
    from spatiora_tui.engine.previews.taesd import TaesdPreview
    from spatiora_tui.engine.previews.vae import VaePreview

    dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[args.dtype]
    family = "sdxl" if args.arch == "sdxl" else "sd1"
    side = args.latent_side or (128 if args.arch == "sdxl" else 64)
    config = REPO / "spatiora_tui" / "engine" / "configs" / args.arch / "vae"
    torch.manual_seed(0)
    vae = AutoencoderKL.from_config(AutoencoderKL.load_config(str(config))).to(args.device, dtype).eval()
    tiny = AutoencoderTiny().decoder.to(args.device, dtype).eval()
    latent = torch.randn(1, 4, side, side, device=args.device, dtype=dtype)
    methods: dict[str, tuple[Callable[[Any], Any], int]] = {
        "latent2rgb": (LatentToRGB(family), 0),
        "taesd": (
            TaesdPreview(tiny, "taesdxl" if family == "sdxl" else "taesd"),
            sum(p.numel() for p in tiny.parameters()),
        ),
        "vae": (
            VaePreview(vae, VaeImageProcessor(vae_scale_factor=8)),
            sum(p.numel() for p in vae.decoder.parameters()),
        ),
    }
    rows: list[dict[str, Any]] = []
    for name, (previewer, params) in methods.items():
        previewer(latent)  # first call: allocator growth, kernel selection
        times = []
        for _ in range(args.runs):
            if args.device == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            image = previewer(latent)
            if args.device == "cuda":
                torch.cuda.synchronize()
            times.append((time.perf_counter() - t0) * 1000)
        rows.append(
            {
                "method": name,
                "median_ms": statistics.median(times),
                "min_ms": min(times),
                "image": f"{image.size[0]}x{image.size[1]}",
                "params_mb": params * torch.tensor([], dtype=dtype).element_size() / 2**20,
            }
        )
    base = rows[0]["median_ms"]
    print(
        f"previews of one {side * 8}x{side * 8} latent, {args.arch}, {args.device} {args.dtype}, "
        f"{args.runs} runs (median)"
    )
    print(f"{'method':<12}{'ms / preview':>14}{'min ms':>10}{'x latent2rgb':>14}{'preview':>10}{'weights MB':>12}")
    for row in rows:
        print(
            f"{row['method']:<12}{row['median_ms']:>14.2f}{row['min_ms']:>10.2f}"
            f"{row['median_ms'] / base:>14.0f}{row['image']:>10}{row['params_mb']:>12.1f}"
        )
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {"arch": args.arch, "device": args.device, "dtype": args.dtype, "runs": args.runs, "rows": rows},
                indent=1,
            )
        )


if __name__ == "__main__":
    main()
