"""Turn a latent into a small RGB preview image, cheaply enough to do at every step.

The linear projection maps the 4 latent channels to RGB with per-family factors (the approach of
AUTOMATIC1111's "Approx cheap", ComfyUI's latent2rgb and InvokeAI). Applied to the predicted clean
latent x0 it shows where denoising is heading, not the noise it is still carrying. A preview is
one pixel per latent cell (64x64 for a 512x512 image): the terminal scales it, and small images
encode to sixel/kitty quickly.
"""

from __future__ import annotations

from typing import Any

from PIL import Image

# Rows = latent channels, columns = R, G, B.
_FACTORS: dict[str, tuple[tuple[tuple[float, float, float], ...], tuple[float, float, float]]] = {
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
_FACTORS["sd2"] = _FACTORS["sd1"]

VAE_PREVIEW_MAX_SIDE = 256


def latent_to_rgb(latent: Any, family: str) -> Image.Image:
    """Project one latent (C, H, W) or (1, C, H, W) tensor to an RGB image of size W x H."""
    import torch

    factors, bias = _FACTORS.get(family, _FACTORS["sd1"])
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


def vae_preview(latent: Any, vae: Any, processor: Any) -> Image.Image:
    """Exact preview through the full VAE decoder (slow); downscaled for the terminal."""
    image = decode_latents(latent, vae, processor)
    image.thumbnail((VAE_PREVIEW_MAX_SIDE, VAE_PREVIEW_MAX_SIDE))
    return image


def decode_latents(latents: Any, vae: Any, processor: Any) -> Image.Image:
    """Decode diffusers-scaled latents to a PIL image, upcasting VAEs that overflow in fp16."""
    import torch

    x = latents if latents.dim() == 4 else latents[None]
    upcast = vae.dtype == torch.float16 and getattr(vae.config, "force_upcast", False)
    if upcast:
        vae.to(torch.float32)
    try:
        x = x.to(device=vae.device, dtype=vae.dtype)
        mean = getattr(vae.config, "latents_mean", None)
        std = getattr(vae.config, "latents_std", None)
        if mean is not None and std is not None:
            mean_t = torch.tensor(mean, device=x.device, dtype=x.dtype).view(1, -1, 1, 1)
            std_t = torch.tensor(std, device=x.device, dtype=x.dtype).view(1, -1, 1, 1)
            x = x * std_t / vae.config.scaling_factor + mean_t
        else:
            x = x / vae.config.scaling_factor
        with torch.no_grad():
            decoded = vae.decode(x, return_dict=False)[0]
        return processor.postprocess(decoded, output_type="pil")[0]
    finally:
        if upcast:
            vae.to(torch.float16)
