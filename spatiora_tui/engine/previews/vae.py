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
    device, may_upcast = _placement(vae, x)
    upcast = may_upcast and vae.dtype == torch.float16 and getattr(vae.config, "force_upcast", False)
    if upcast:
        vae.to(torch.float32)
    try:
        x = x.to(device=device, dtype=vae.dtype)
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


def _placement(vae: Any, latents: Any) -> tuple[Any, bool]:
    """Where the decode's input goes, and whether the VAE may be cast to float32 for it.
    Offloaded ([model] offload), the VAE waits in RAM and its hooks bring it to the GPU when
    it decodes: the input goes where the latents are. Offloaded layer by layer (sequential,
    group), its weights live in the hooks and keep their dtype: no upcast (an SDXL VAE then runs
    in fp16; a fp16-fixed VAE avoids its overflow)."""
    accelerate_hooked = hasattr(vae, "_hf_hook")
    grouped = any(
        getattr(module, "_diffusers_hook", None) is not None
        and module._diffusers_hook.get_hook("group_offloading") is not None
        for module in vae.modules()
    )
    param = next(vae.parameters(), None)
    layered = grouped or (param is not None and param.device.type == "meta")
    return (latents.device if accelerate_hooked or grouped else vae.device), not layered


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
