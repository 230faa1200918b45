"""What a caption tells the demo base about each kind of image, by noise level: the denoising
error of the shipped base model (no adapter) on held-out procedural plans and rooms, with their
own caption, with the empty prompt, and with another image's caption.

Where the caption lowers the error against the empty prompt, the model reads it for that kind.
At the high noise levels where a sampler settles what kind of image it draws, a caption that
helps one kind and not the other pulls every captioned image towards that kind: why the base
draws rooms for any prompt but both kinds for none (docs/demo.md).

    python -m benchmarks.caption_probe [--images 64] [--config config.toml]

It reports figures and asserts nothing.
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
from pathlib import Path

TIMESTEPS = (950, 900, 700, 500, 200)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=64, help="held-out images per kind (default 64)")
    parser.add_argument("--seed", type=int, default=999, help="the held-out images' seed (training used 2026-2036)")
    args = parser.parse_args()

    import numpy as np
    import torch

    from spatiora_tui.config import ModelSettings
    from spatiora_tui.engine.pipeline import load_pipeline
    from spatiora_tui.procedural.scenes import samples

    with tempfile.TemporaryDirectory() as cache:
        settings = dataclasses.replace(ModelSettings(), source="demo", device="cpu", dtype="fp32")
        pipe, info, _ = load_pipeline(settings, Path(cache))
    print(f"{info.name} · base model, no adapter · {args.images} held-out images per kind")
    print("| kind | t | own caption | empty prompt | another's caption | caption helps by |")
    print("|---|---|---|---|---|---|")

    def encode(texts: list[str]) -> torch.Tensor:
        ids = pipe.tokenizer(texts, padding="max_length", max_length=77, truncation=True, return_tensors="pt")
        return pipe.text_encoder(ids.input_ids)[0]

    scheduler = pipe.scheduler
    alphas = scheduler.alphas_cumprod
    for kind in ("plan", "room"):
        drawn = samples(args.images, args.seed, (kind,))
        pixels = torch.from_numpy(np.stack([np.asarray(image) for image, *_ in drawn])).permute(0, 3, 1, 2)
        captions = [caption for _, caption, *_ in drawn]
        with torch.no_grad():
            x = pixels.float() / 127.5 - 1.0
            latents = pipe.vae.encode(x).latent_dist.mean * pipe.vae.config.scaling_factor
            contexts = {
                "own": encode(captions),
                "empty": encode([""] * len(captions)),
                "other": encode(captions[1:] + captions[:1]),
            }
            for t in TIMESTEPS:
                noise = torch.randn(latents.shape, generator=torch.Generator().manual_seed(t))
                a = alphas[t]
                noisy = a.sqrt() * latents + (1 - a).sqrt() * noise
                steps = torch.full((len(captions),), t)
                error = {
                    name: float((pipe.unet(noisy, steps, context).sample - noise).pow(2).mean())
                    for name, context in contexts.items()
                }
                helps = 100.0 * (error["empty"] - error["own"]) / error["empty"]
                print(
                    f"| {kind} | {t} | {error['own']:.4f} | {error['empty']:.4f} | {error['other']:.4f} | {helps:+.0f} % |"
                )


if __name__ == "__main__":
    main()
