"""vae: the model's own VAE decoder on the predicted clean latent. Exact and slow; the same
decode makes the final image (`decode_latents`)."""

from __future__ import annotations

from typing import Any

from PIL import Image

#: Previews are downscaled to this side: the terminal shows a few hundred pixels at most.
PREVIEW_MAX_SIDE = 256


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
        image: Image.Image = processor.postprocess(decoded, output_type="pil")[0]
        return image
    finally:
        if upcast:
            vae.to(torch.float16)


class VaePreview:
    label = "VAE"

    def __init__(self, vae: Any, processor: Any) -> None:
        self.vae, self.processor = vae, processor

    def __call__(self, latent: Any) -> Image.Image:
        image = decode_latents(latent, self.vae, self.processor)
        image.thumbnail((PREVIEW_MAX_SIDE, PREVIEW_MAX_SIDE))
        return image


def build(context: Any) -> VaePreview:
    return VaePreview(context.pipe.vae, context.pipe.image_processor)
