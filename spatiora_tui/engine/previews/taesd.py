"""taesd: Ollin Boer Bohan's tiny distilled VAE decoder (TAESD for SD 1.x/2.x, TAESDXL for SDXL),
through diffusers' AutoencoderTiny. It decodes a step's predicted clean latent to near-final
colours and detail at a small fraction of the full VAE's cost.

Its weights are found, never downloaded. In order:
  1. `[preview] taesd`: a diffusers folder (config.json + weights), or a decoder file;
  2. the decoder files an install already has: ComfyUI's models/vae_approx/taesd_decoder.safetensors
     (taesdxl_decoder.safetensors for SDXL), AUTOMATIC1111's models/VAE-approx/ the same;
  3. Spatiora's cache folder, <cache>/taesd/ (either form);
  4. the Hugging Face cache: madebyollin/taesd or madebyollin/taesdxl, offline.
A decoder file may be in the original layout ("1.weight", "3.conv.0.weight", ...: the
madebyollin/taesd repository's taesd_decoder.safetensors) or diffusers' ("decoder.layers.0...").
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from PIL import Image

from spatiora_tui.engine.previews import PreviewContext, PreviewUnavailable
from spatiora_tui.engine.previews.vae import PREVIEW_MAX_SIDE

HUB_IDS = {"taesd": "madebyollin/taesd", "taesdxl": "madebyollin/taesdxl"}
_ORIGINAL_KEY = re.compile(r"^(\d+)\.(.+)$")


def variant_for(family: str) -> str:
    return "taesdxl" if family == "sdxl" else "taesd"


def candidates(place: Path, name: str) -> list[Path]:
    """What to try in one place for `name` (taesd or taesdxl): the place itself when it is a
    file or a diffusers folder, else the usual names inside it."""
    if place.is_file() or (place / "config.json").is_file():
        return [place]
    return [place / f"{name}_decoder.safetensors", place / name, place / f"{name}.safetensors"]


def build(context: PreviewContext) -> TaesdPreview:
    name = variant_for(context.family)
    looked: list[str] = []
    for place in context.taesd_places:
        for candidate in candidates(Path(place), name):
            if candidate.exists():
                return TaesdPreview(_load(candidate, context), name)
        looked.append(str(place))
    decoder = _from_hub_cache(name)
    if decoder is not None:
        return TaesdPreview(_to_pipe(decoder, context), name)
    where = looked[-1] if looked else "<cache>/taesd"
    raise PreviewUnavailable(
        f"TAESD weights for {'SDXL' if name == 'taesdxl' else 'SD 1.x/2.x'} not found: put "
        f"{name}_decoder.safetensors (github.com/madebyollin/taesd) in {where}, or set [preview] taesd"
    )


def _load(path: Path, context: PreviewContext) -> Any:
    from diffusers import AutoencoderTiny

    try:
        if path.is_dir():
            model = AutoencoderTiny.from_pretrained(str(path), local_files_only=True, use_safetensors=True)
            return _to_pipe(model.decoder, context)
        if path.suffix != ".safetensors":
            raise PreviewUnavailable(f"{path}: give TAESD as .safetensors (a decoder file or a diffusers folder)")
        from safetensors.torch import load_file

        decoder = AutoencoderTiny().decoder
        decoder.load_state_dict(_decoder_state(load_file(str(path))), strict=True)
        return _to_pipe(decoder, context)
    except PreviewUnavailable:
        raise
    except Exception as exc:  # a damaged file or a different network: say which file
        raise PreviewUnavailable(
            f"{path} is not a usable TAESD decoder ({type(exc).__name__}: {str(exc).splitlines()[0][:160]})"
        ) from None


def _decoder_state(tensors: dict[str, Any]) -> dict[str, Any]:
    """The decoder's tensors under diffusers' DecoderTiny names. The original layout counts a
    Clamp module first, which diffusers applies in forward(): its indices are one higher."""
    if any(key.startswith("decoder.") for key in tensors):
        return {key[len("decoder.") :]: value for key, value in tensors.items() if key.startswith("decoder.")}
    state = {}
    for key, value in tensors.items():
        match = _ORIGINAL_KEY.match(key)
        if match is None:
            raise ValueError(f"unexpected tensor {key!r}")
        state[f"layers.{int(match.group(1)) - 1}.{match.group(2)}"] = value
    return state


def _from_hub_cache(name: str) -> Any | None:
    from diffusers import AutoencoderTiny

    try:
        return AutoencoderTiny.from_pretrained(HUB_IDS[name], local_files_only=True, use_safetensors=True).decoder
    except Exception:  # not in the cache: the normal case offline
        return None


def _to_pipe(decoder: Any, context: PreviewContext) -> Any:
    vae = getattr(context.pipe, "vae", None)
    if vae is not None:
        # Where the pipeline runs: under offload the VAE itself waits in RAM (vae.device).
        device = getattr(context.pipe, "_execution_device", None) or vae.device
        decoder = decoder.to(device=device, dtype=vae.dtype)
    return decoder.eval().requires_grad_(False)


class TaesdPreview:
    def __init__(self, decoder: Any, name: str) -> None:
        self.decoder = decoder
        self.label = "TAESDXL" if name == "taesdxl" else "TAESD"

    def __call__(self, latent: Any) -> Image.Image:
        import torch

        x = latent if latent.dim() == 4 else latent[None]
        param = next(self.decoder.parameters())
        with torch.no_grad():
            rgb = self.decoder(x[:1].to(device=param.device, dtype=param.dtype))[0]  # [-1, 1]
        pixels = ((rgb.float() + 1.0) * 127.5).clamp(0, 255).to(torch.uint8).permute(1, 2, 0).cpu().numpy()
        image = Image.fromarray(pixels, mode="RGB")
        image.thumbnail((PREVIEW_MAX_SIDE, PREVIEW_MAX_SIDE))
        return image
