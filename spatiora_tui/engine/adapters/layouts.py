"""An adapter's tensors in the layouts the model takes: diffusers' conversion of whatever layout
the file is in, with alphas baked in, and the per-UNet-module view an in-place swap copies from.
Also what diffusers' LoRA errors mean, said for a person."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from spatiora_tui.engine.adapters.catalog import AdapterFile
from spatiora_tui.engine.api import EngineError


def normalize(pipe: Any, name: str, path: Path, raw: dict[str, Any]) -> dict[str, Any]:
    """The adapter in the one layout diffusers loads without guessing: its own conversion of
    whatever layout the file is in (Kohya, LoCon, old diffusers, peft), with each module's
    alpha multiplied into its up weight. diffusers 0.42 turns per-module alphas into a
    pattern that matches no module and drops them (peft warns "alpha_pattern keys did not
    match any targeted module"), so a Kohya file whose alphas differ between layers drew at
    the wrong strength; baked in, every layer has scale 1 and nothing depends on alphas."""
    import torch

    try:
        # The UNet's config lets diffusers map SDXL's original block names (input_blocks_4_1)
        # to its own (down_blocks.1.attentions.0); load_lora_weights passes it the same way.
        state, alphas = pipe.lora_state_dict(dict(raw), unet_config=pipe.unet.config)[:2]
    except Exception as exc:
        raise EngineError(f"adapter {name!r} ({path}) could not be read: {load_error(exc)}") from None
    if not alphas:
        return dict(state)
    baked = dict(state)
    for key, alpha in alphas.items():
        base = key[: -len(".alpha")] if key.endswith(".alpha") else key
        pairs = (
            (base, base[: -len("down.weight")] + "up.weight")
            if base.endswith(".down.weight")
            else (base + ".lora.down.weight", base + ".lora.up.weight"),
            (base + ".lora_A.weight", base + ".lora_B.weight"),
        )
        for down_key, up_key in pairs:
            if down_key in baked and up_key in baked:
                up = baked[up_key]
                scale = float(alpha) / baked[down_key].shape[0]
                baked[up_key] = (up.to(torch.float32) * scale).to(up.dtype)
                break
        else:
            raise EngineError(
                f"adapter {name!r} ({path}) has an alpha for {base}, a layer it holds no weights "
                "for; the file is damaged or in a layout Spatiora does not know: replace it"
            )
    return baked


def unet_layers(pipe: Any, adapter: AdapterFile) -> dict[str, tuple[Any, Any, float]]:
    """UNet module name -> (down, up, alpha) of a UNet-only adapter; {} when in-place swaps
    do not apply (text-encoder parts, a LoRA config in the file, alphas that vary, DoRA).
    Worked out once per file and kept on it."""
    if adapter.unet is not None:
        return adapter.unet
    adapter.unet = {}
    if adapter.has_config:
        return adapter.unet
    from diffusers.utils import convert_unet_state_dict_to_peft

    state, alphas = pipe.lora_state_dict(dict(adapter.raw))[:2]
    if any(not key.startswith("unet.") or "lora_magnitude_vector" in key for key in state):
        return adapter.unet  # text-encoder parts, or DoRA (its magnitudes are no A/B copy)
    values = set((alphas or {}).values())
    if len(values) > 1:
        return adapter.unet
    uniform_alpha = float(next(iter(values))) if values else None  # None: alpha = rank
    peft = convert_unet_state_dict_to_peft({k[len("unet.") :]: v for k, v in state.items()})
    layers: dict[str, tuple[Any, Any, float]] = {}
    for key, down in peft.items():
        if not key.endswith(".lora_A.weight"):
            continue
        module = key[: -len(".lora_A.weight")]
        up = peft.get(f"{module}.lora_B.weight")
        if up is None:
            return adapter.unet
        layers[module] = (down, up, uniform_alpha if uniform_alpha is not None else float(down.shape[0]))
    adapter.unet = layers
    return layers


def load_error(exc: Exception) -> str:
    """What went wrong in diffusers' LoRA loading, said for a person."""
    text = str(exc)
    detail = text.splitlines()[0] if text else type(exc).__name__
    if "size mismatch" in text or "shape" in detail.lower():
        return "its tensor shapes do not fit this model, so it was made for another base model"
    if "not found in the base model" in text:
        missing = text.split("{", 1)[-1].split("}", 1)[0] if "{" in text else ""
        return (
            f"its layer names match no layer of this model ({_elide(missing, 80)}), so it was "
            "made for another model architecture"
        )
    if "Invalid LoRA checkpoint" in text:
        return "it holds no LoRA tensors that diffusers recognises (no 'lora' in their names)"
    return detail


def _elide(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"
