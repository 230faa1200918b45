"""LoRA files in the exact key layouts the tools users share them from, built from a model's own
module names, and the reference they are checked against: the same deltas merged by hand.

- Kohya / AUTOMATIC1111 (sd-scripts): `lora_unet_<module with _>.lora_down.weight`, `.lora_up.
  weight`, `.alpha`; text encoders `lora_te_` (SD 1.x/2.x) or `lora_te1_`/`lora_te2_` (SDXL). SD 1.x
  names UNet modules as diffusers does; SDXL as the original (sgm) model does
  (`lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q`).
- LoCon: the same names, on the ResNet convolutions too (down [r, in, k, k], up [out, r, 1, 1]).
- LyCORIS LoHa (`hada_w1_a/b`, `hada_w2_a/b`) and LoKr (`lokr_w1`, `lokr_w2`).
- peft / diffusers: `unet.<module>.lora_A.weight` / `lora_B.weight`.

A delta is W += weight * alpha / rank * up @ down.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from spatiora_tui.engine import ldm_layout as layouts

#: (component, module name) -> (down, up, alpha): what a written file holds, for the reference.
Reference = dict[tuple[str, str], tuple[Any, Any, float]]


def _sgm_modules(pipe: Any) -> dict[str, str]:
    """diffusers UNet module name -> its name in the original SDXL model."""
    state = pipe.unet.state_dict()
    ldm = layouts.unet_to_ldm(state, pipe.unet.config)
    by_tensor = {id(v): k for k, v in ldm.items()}
    names = {}
    for key, value in state.items():
        if key.endswith(".weight") and ".lora_" not in key:
            names[key[: -len(".weight")].replace(".base_layer", "")] = by_tensor[id(value)][: -len(".weight")].replace(
                ".base_layer", ""
            )
    return names


def target_modules(pipe: Any, component: str, conv: bool = False) -> list[tuple[str, Any]]:
    import torch

    model = getattr(pipe, component)
    found = []
    for name, module in model.named_modules():
        if ".base_layer" in name or ".lora_" in name:  # inside a LoRA layer already injected
            continue
        if hasattr(module, "get_base_layer"):
            module = module.get_base_layer()
        if component == "unet":
            if (isinstance(module, torch.nn.Linear) and "transformer_blocks" in name) or (
                conv
                and isinstance(module, torch.nn.Conv2d)
                and ".resnets." in name
                and name.endswith(("conv1", "conv2"))
            ):
                found.append((name, module))
        elif (
            isinstance(module, torch.nn.Linear)
            and ".layers." in name
            and name.endswith(("q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"))
        ):
            found.append((name, module))
    return found


def kohya_prefix(pipe: Any, component: str) -> str:
    sdxl = getattr(pipe, "text_encoder_2", None) is not None
    return {"unet": "lora_unet_", "text_encoder": "lora_te1_" if sdxl else "lora_te_", "text_encoder_2": "lora_te2_"}[
        component
    ]


def write_kohya(
    pipe: Any,
    path: Path,
    components: tuple[str, ...] = ("unet",),
    conv: bool = False,
    varying_alphas: bool = False,
    rank: int = 4,
    seed: int = 0,
    metadata: dict[str, str] | None = None,
) -> Reference:
    """A Kohya/LoCon file for `pipe`'s modules; returns what it holds, for the reference."""
    import torch
    from safetensors.torch import save_file

    gen = torch.Generator().manual_seed(seed)
    sgm = _sgm_modules(pipe) if getattr(pipe, "text_encoder_2", None) is not None else {}
    tensors: dict[str, Any] = {}
    reference: Reference = {}
    for component in components:
        for index, (name, module) in enumerate(target_modules(pipe, component, conv)):
            stem = sgm.get(name, name) if component == "unet" else name.removeprefix("text_model.")
            if component != "unet":
                stem = "text_model." + stem
            key = kohya_prefix(pipe, component) + stem.replace(".", "_")
            if isinstance(module, torch.nn.Conv2d):
                down = torch.randn(rank, module.in_channels, *module.kernel_size, generator=gen) * 0.3
                up = torch.randn(module.out_channels, rank, 1, 1, generator=gen) * 0.3
            else:
                down = torch.randn(rank, module.in_features, generator=gen) * 0.3
                up = torch.randn(module.out_features, rank, generator=gen) * 0.3
            alpha = float(rank / 2 + (index % 3) if varying_alphas else rank / 2)
            tensors[f"{key}.lora_down.weight"] = down
            tensors[f"{key}.lora_up.weight"] = up
            tensors[f"{key}.alpha"] = torch.tensor(alpha)
            reference[(component, name)] = (down, up, alpha)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata=metadata)
    return reference


def write_peft(pipe: Any, path: Path, rank: int = 4, seed: int = 0) -> Reference:
    """A diffusers/peft-format file (what save_lora_weights writes, without its config)."""
    import torch
    from safetensors.torch import save_file

    gen = torch.Generator().manual_seed(seed)
    tensors, reference = {}, {}
    for name, module in target_modules(pipe, "unet"):
        down = torch.randn(rank, module.in_features, generator=gen) * 0.3
        up = torch.randn(module.out_features, rank, generator=gen) * 0.3
        tensors[f"unet.{name}.lora_A.weight"] = down
        tensors[f"unet.{name}.lora_B.weight"] = up
        reference[("unet", name)] = (down, up, float(rank))
    save_file(tensors, str(path))
    return reference


def write_dora(pipe: Any, path: Path, rank: int = 4, seed: int = 0) -> dict[str, tuple[Any, Any, Any]]:
    """A peft-format DoRA file (lora_A, lora_B, lora_magnitude_vector) on the attention
    projections; returns module -> (down, up, magnitude) for the reference."""
    import torch
    from safetensors.torch import save_file

    gen = torch.Generator().manual_seed(seed)
    tensors, reference = {}, {}
    for name, module in target_modules(pipe, "unet"):
        if name.split(".")[-1] not in ("to_q", "to_k", "to_v") and not name.endswith("to_out.0"):
            continue
        down = torch.randn(rank, module.in_features, generator=gen) * 0.3
        up = torch.randn(module.out_features, rank, generator=gen) * 0.3
        magnitude = module.weight.detach().norm(dim=1) * (1 + 0.2 * torch.rand(module.out_features, generator=gen))
        tensors.update(
            {
                f"unet.{name}.lora_A.weight": down,
                f"unet.{name}.lora_B.weight": up,
                f"unet.{name}.lora_magnitude_vector": magnitude,
            }
        )
        reference[name] = (down, up, magnitude)
    save_file(tensors, str(path))
    return reference


def merged_dora(pipe: Any, reference: dict[str, tuple[Any, Any, Any]], weight: float) -> Any:
    """A copy of `pipe` with DoRA merged by hand: W' = m * (W + s B A) / ||W + s B A|| per row."""
    import torch

    merged = copy.deepcopy(pipe)
    with torch.no_grad():
        for name, (down, up, magnitude) in reference.items():
            module = merged.unet.get_submodule(name)
            combined = module.weight + weight * (up @ down)
            module.weight.copy_(combined * (magnitude / combined.norm(dim=1)).unsqueeze(1))
    return merged


def write_lycoris(pipe: Any, path: Path, kind: str, rank: int = 4, seed: int = 0) -> None:
    """A LyCORIS LoHa or LoKr file on the UNet's attention projections."""
    import torch
    from safetensors.torch import save_file

    gen = torch.Generator().manual_seed(seed)
    tensors = {}
    for name, module in target_modules(pipe, "unet"):
        key = "lora_unet_" + name.replace(".", "_")
        if kind == "loha":
            for w in ("w1", "w2"):
                tensors[f"{key}.hada_{w}_a"] = torch.randn(module.out_features, rank, generator=gen) * 0.1
                tensors[f"{key}.hada_{w}_b"] = torch.randn(rank, module.in_features, generator=gen) * 0.1
        else:
            tensors[f"{key}.lokr_w1"] = torch.randn(2, 2, generator=gen) * 0.1
            tensors[f"{key}.lokr_w2"] = torch.randn(module.out_features // 2, module.in_features // 2, generator=gen)
        tensors[f"{key}.alpha"] = torch.tensor(float(rank))
    save_file(tensors, str(path))


def merged_by_hand(pipe: Any, reference: Reference, weight: float) -> Any:
    """A copy of `pipe` with each delta added to its base weight: what the adapter must equal."""
    import torch

    merged = copy.deepcopy(pipe)
    with torch.no_grad():
        for (component, name), (down, up, alpha) in reference.items():
            module = getattr(merged, component).get_submodule(name)
            scale = weight * alpha / down.shape[0]
            if down.ndim == 4:
                delta = (up.flatten(1) @ down.flatten(1)).reshape(module.weight.shape)
            else:
                delta = up @ down
            module.weight += scale * delta.to(module.weight.dtype)
    return merged


def conditioned_output(pipe: Any, prompt: str = "a room with a window", seed: int = 0) -> Any:
    """The text encoders' output for `prompt` and one UNet step on fixed noise: what a LoRA on
    any component changes. The same inputs every call."""
    import torch

    with torch.no_grad():
        if getattr(pipe, "text_encoder_2", None) is not None:
            embeds, _, pooled, _ = pipe.encode_prompt(prompt, do_classifier_free_guidance=False)
            gen = torch.Generator().manual_seed(seed)
            sample = torch.randn(1, pipe.unet.config.in_channels, 8, 8, generator=gen)
            time_ids = torch.tensor([[64.0, 64.0, 0.0, 0.0, 64.0, 64.0]])
            added = {"text_embeds": pooled, "time_ids": time_ids}
            out = pipe.unet(sample, 500, encoder_hidden_states=embeds, added_cond_kwargs=added).sample
        else:
            embeds, _ = pipe.encode_prompt(prompt, "cpu", 1, False)
            gen = torch.Generator().manual_seed(seed)
            sample = torch.randn(1, pipe.unet.config.in_channels, 8, 8, generator=gen)
            out = pipe.unet(sample, 500, encoder_hidden_states=embeds).sample
    return torch.cat([embeds.flatten(), out.flatten()])
