"""latent2rgb: the 4 latent channels mapped to RGB by a fixed linear projection per family (the
approach of AUTOMATIC1111's "Approx cheap", ComfyUI's latent2rgb and InvokeAI). Applied to the
predicted clean latent x0 it shows where denoising is heading. One pixel per latent cell (64x64
for a 512x512 image): the terminal scales it, and small images encode to sixel/kitty quickly.
"""

from __future__ import annotations

from typing import Any

from PIL import Image

# Rows = latent channels, columns = R, G, B.
FACTORS: dict[str, tuple[tuple[tuple[float, float, float], ...], tuple[float, float, float]]] = {
    "sd1": (
        ((0.3512, 0.2297, 0.3227), (0.3250, 0.4974, 0.2350), (-0.2829, 0.1762, 0.2721), (-0.2120, -0.2616, -0.7177)),
        (0.0, 0.0, 0.0),
    ),
    "sdxl": (
        ((0.3651, 0.4232, 0.4341), (-0.2533, -0.0042, 0.1068), (0.1076, 0.1111, -0.0362), (-0.3165, -0.2492, -0.2188)),
        (0.1084, -0.0175, -0.0011),
    ),
}
# SD 2.x shares the SD 1.x VAE latent space.
FACTORS["sd2"] = FACTORS["sd1"]


def latent_to_rgb(latent: Any, family: str) -> Image.Image:
    """Project one latent (C, H, W) or (1, C, H, W) tensor to an RGB image of size W x H."""
    import torch

    factors, bias = FACTORS.get(family, FACTORS["sd1"])
    x = latent.detach()
    if x.dim() == 4:
        x = x[0]
    x = x.to(device="cpu", dtype=torch.float32)
    weights = torch.tensor(factors, dtype=torch.float32)
    if x.shape[0] != weights.shape[0]:
        raise ValueError(f"latent has {x.shape[0]} channels; the {family} projection expects {weights.shape[0]}")
    rgb = torch.einsum("chw,cr->hwr", x, weights) + torch.tensor(bias, dtype=torch.float32)
    pixels = ((rgb + 1.0) * 127.5).clamp(0, 255).to(torch.uint8).numpy()
    return Image.fromarray(pixels, mode="RGB")


class LatentToRGB:
    label = "latent2rgb"

    def __init__(self, family: str) -> None:
        self.family = family

    def __call__(self, latent: Any) -> Image.Image:
        return latent_to_rgb(latent, self.family)


def build(context: Any) -> LatentToRGB:
    return LatentToRGB(context.family)
