"""Write diffusers components as the single-file checkpoints users download (A1111/Civitai).

The original Stable Diffusion code (CompVis LDM, Stability's sgm) names every tensor its own
way; AUTOMATIC1111, ComfyUI and Civitai share files in that layout. diffusers only converts from
it, so this converts the other way, from any diffusers pipeline: the tiny ones the tests build,
the real SD 1.5 / SDXL architectures with random weights the benchmarks use, and the trained
demo model Spatiora ships (tools/train_demo.py). A file written here is then loaded the way a
user's file is, and must come back tensor for tensor.

Layouts by family:
- UNet: `model.diffusion_model.` (input_blocks / middle_block / output_blocks)
- VAE: `first_stage_model.` (encoder.down.N.block.M, decoder.up.N..., mid.attn_1 as 1x1 convs)
- SD 1.x: CLIP-L as transformers names it, under `cond_stage_model.transformer.text_model.`
- SD 2.x: OpenCLIP-H under `cond_stage_model.model.` (fused qkv `in_proj_weight`)
- SDXL: CLIP-L under `conditioner.embedders.0.transformer.text_model.`, OpenCLIP-bigG under
  `conditioner.embedders.1.model.` (with `text_projection`, stored transposed)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

UNET = "model.diffusion_model."
VAE = "first_stage_model."
SD1_TE = "cond_stage_model.transformer.text_model."
SD2_TE = "cond_stage_model.model."
SDXL_TE1 = "conditioner.embedders.0.transformer.text_model."
SDXL_TE2 = "conditioner.embedders.1.model."

_RESNET = {
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "time_emb_proj": "emb_layers.1",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "conv_shortcut": "skip_connection",
}
_VAE_ATTN = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}


def _rename(state: dict[str, Any], src: str, dst: str, table: dict[str, str] | None = None) -> dict[str, Any]:
    """Tensors under `src` moved under `dst`, renaming their first sub-name through `table`."""
    out = {}
    for key, value in state.items():
        if not key.startswith(src):
            continue
        rest = key[len(src) :]
        if table:
            for old, new in table.items():
                if rest.startswith(old + "."):
                    rest = new + rest[len(old) :]
                    break
        out[dst + rest] = value
    return out


def unet_to_ldm(state: dict[str, Any], config: Any) -> dict[str, Any]:
    """A diffusers UNet2DConditionModel state dict in the LDM layout (without the prefix)."""
    out: dict[str, Any] = {}
    fixed = {
        "time_embedding.linear_1": "time_embed.0",
        "time_embedding.linear_2": "time_embed.2",
        "conv_in": "input_blocks.0.0",
        "conv_norm_out": "out.0",
        "conv_out": "out.2",
        "add_embedding.linear_1": "label_emb.0.0",
        "add_embedding.linear_2": "label_emb.0.2",
    }
    for old, new in fixed.items():
        out.update(_rename(state, old + ".", new + "."))
    layers = config["layers_per_block"]
    index = 1
    for i, _ in enumerate(config["down_block_types"]):
        for j in range(layers):
            out.update(_rename(state, f"down_blocks.{i}.resnets.{j}.", f"input_blocks.{index}.0.", _RESNET))
            out.update(_rename(state, f"down_blocks.{i}.attentions.{j}.", f"input_blocks.{index}.1."))
            index += 1
        if f"down_blocks.{i}.downsamplers.0.conv.weight" in state:
            out.update(_rename(state, f"down_blocks.{i}.downsamplers.0.conv.", f"input_blocks.{index}.0.op."))
            index += 1
    out.update(_rename(state, "mid_block.resnets.0.", "middle_block.0.", _RESNET))
    out.update(_rename(state, "mid_block.attentions.0.", "middle_block.1."))
    out.update(_rename(state, "mid_block.resnets.1.", "middle_block.2.", _RESNET))
    index = 0
    for i, _ in enumerate(config["up_block_types"]):
        for j in range(layers + 1):
            out.update(_rename(state, f"up_blocks.{i}.resnets.{j}.", f"output_blocks.{index}.0.", _RESNET))
            has_attention = f"up_blocks.{i}.attentions.{j}.proj_in.weight" in state
            out.update(_rename(state, f"up_blocks.{i}.attentions.{j}.", f"output_blocks.{index}.1."))
            if j == layers and f"up_blocks.{i}.upsamplers.0.conv.weight" in state:
                slot = 2 if has_attention else 1
                out.update(_rename(state, f"up_blocks.{i}.upsamplers.0.conv.", f"output_blocks.{index}.{slot}.conv."))
            index += 1
    missing = len(state) - len(out)
    assert missing == 0, f"{missing} UNet tensors have no LDM name"
    return out


def vae_to_ldm(state: dict[str, Any], config: Any) -> dict[str, Any]:
    """A diffusers AutoencoderKL state dict in the LDM layout (attention as 1x1 convolutions)."""
    out: dict[str, Any] = {}
    resnet = {"conv_shortcut": "nin_shortcut"}
    for part in ("encoder", "decoder"):
        for name in ("conv_in", "conv_out"):
            out.update(_rename(state, f"{part}.{name}.", f"{part}.{name}."))
        out.update(_rename(state, f"{part}.conv_norm_out.", f"{part}.norm_out."))
        out.update(_rename(state, f"{part}.mid_block.resnets.0.", f"{part}.mid.block_1.", resnet))
        out.update(_rename(state, f"{part}.mid_block.resnets.1.", f"{part}.mid.block_2.", resnet))
        for key, value in _rename(state, f"{part}.mid_block.attentions.0.", f"{part}.mid.attn_1.", _VAE_ATTN).items():
            out[key] = value[:, :, None, None] if value.ndim == 2 else value
    blocks = len(config["block_out_channels"])
    for i in range(blocks):
        out.update(_rename(state, f"encoder.down_blocks.{i}.resnets.", f"encoder.down.{i}.block.", None))
        out.update(
            _rename(state, f"encoder.down_blocks.{i}.downsamplers.0.conv.", f"encoder.down.{i}.downsample.conv.")
        )
        up = blocks - 1 - i
        out.update(_rename(state, f"decoder.up_blocks.{i}.resnets.", f"decoder.up.{up}.block.", None))
        out.update(_rename(state, f"decoder.up_blocks.{i}.upsamplers.0.conv.", f"decoder.up.{up}.upsample.conv."))
    out = {k.replace(".conv_shortcut.", ".nin_shortcut."): v for k, v in out.items()}
    for name in ("quant_conv", "post_quant_conv"):
        out.update(_rename(state, f"{name}.", f"{name}."))
    missing = len(state) - len(out)
    assert missing == 0, f"{missing} VAE tensors have no LDM name"
    return out


def _hf_text(state: dict[str, Any]) -> dict[str, Any]:
    """A transformers CLIP text model's tensors without the `text_model.` wrapper (transformers 5.6
    and later flatten CLIPTextModel; CLIPTextModelWithProjection still wraps)."""
    return {k.removeprefix("text_model."): v for k, v in state.items() if not k.endswith("position_ids")}


def clip_to_ldm(state: dict[str, Any]) -> dict[str, Any]:
    """CLIP-L as the LDM files keep it: the transformers names, under `...text_model.`."""
    return {k: v for k, v in _hf_text(state).items() if not k.startswith("text_projection")}


def openclip_to_ldm(state: dict[str, Any]) -> dict[str, Any]:
    """A transformers CLIP text model in OpenCLIP's layout (SD 2.x, SDXL's second encoder)."""
    import torch

    hf = _hf_text(state)
    out: dict[str, Any] = {
        "token_embedding.weight": hf["embeddings.token_embedding.weight"],
        "positional_embedding": hf["embeddings.position_embedding.weight"],
        "ln_final.weight": hf["final_layer_norm.weight"],
        "ln_final.bias": hf["final_layer_norm.bias"],
    }
    if "text_projection.weight" in hf:
        out["text_projection"] = hf["text_projection.weight"].T.contiguous()
    layer = 0
    while f"encoder.layers.{layer}.layer_norm1.weight" in hf:
        src, dst = f"encoder.layers.{layer}.", f"transformer.resblocks.{layer}."
        for kind in ("weight", "bias"):
            out[f"{dst}attn.in_proj_{kind}"] = torch.cat(
                [hf[f"{src}self_attn.{p}_proj.{kind}"] for p in ("q", "k", "v")]
            )
            out[f"{dst}attn.out_proj.{kind}"] = hf[f"{src}self_attn.out_proj.{kind}"]
            out[f"{dst}ln_1.{kind}"] = hf[f"{src}layer_norm1.{kind}"]
            out[f"{dst}ln_2.{kind}"] = hf[f"{src}layer_norm2.{kind}"]
            out[f"{dst}mlp.c_fc.{kind}"] = hf[f"{src}mlp.fc1.{kind}"]
            out[f"{dst}mlp.c_proj.{kind}"] = hf[f"{src}mlp.fc2.{kind}"]
        layer += 1
    return out


def _prefixed(prefix: str, state: dict[str, Any]) -> dict[str, Any]:
    return {prefix + k: v for k, v in state.items()}


def pipeline_to_ldm(pipe: Any) -> dict[str, Any]:
    """The whole pipeline as one LDM/sgm state dict, in the layout of its family."""
    unet = pipe.unet
    tensors = {
        **_prefixed(UNET, unet_to_ldm(unet.state_dict(), unet.config)),
        **_prefixed(VAE, vae_to_ldm(pipe.vae.state_dict(), pipe.vae.config)),
    }
    te = pipe.text_encoder.state_dict()
    if getattr(pipe, "text_encoder_2", None) is not None:
        tensors.update(_prefixed(SDXL_TE1, clip_to_ldm(te)))
        tensors.update(_prefixed(SDXL_TE2, openclip_to_ldm(pipe.text_encoder_2.state_dict())))
    elif pipe.text_encoder.config.hidden_act == "gelu":  # OpenCLIP-H (SD 2.x) uses exact GELU
        tensors.update(_prefixed(SD2_TE, openclip_to_ldm(te)))
    else:
        tensors.update(_prefixed(SD1_TE, clip_to_ldm(te)))
    return tensors


def save_single_file(
    pipe: Any,
    path: Path,
    extra: dict[str, Any] | None = None,
    metadata: dict[str, str] | None = None,
    dtype: Any = None,
) -> Path:
    """Write `pipe` as a single-file .safetensors checkpoint (plus any `extra` tensors, such as
    the `v_pred` marker some SDXL v-prediction models carry)."""
    tensors = {
        k: (v.to(dtype) if dtype is not None and v.is_floating_point() else v).contiguous()
        for k, v in pipeline_to_ldm(pipe).items()
    }
    tensors.update(extra or {})
    return save_safetensors(tensors, path, metadata)


def save_safetensors(tensors: dict[str, Any], path: Path, metadata: dict[str, str] | None = None) -> Path:
    """Write a .safetensors file whose bytes depend only on what is in it.

    safetensors keeps the metadata in a Rust hash map, so a file with two or more metadata keys
    comes out in a different byte order from one save to the next (the same tensors, a header
    shuffled). The header is written again here with the metadata keys sorted, so the same
    weights give the same file, and a training run can be checked byte for byte against the
    shipped one."""
    from safetensors.torch import save

    data = save(tensors, metadata=metadata)
    size = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + size])  # the tensors in safetensors' own (stable) order
    if "__metadata__" in header:
        header["__metadata__"] = dict(sorted(header["__metadata__"].items()))
    raw = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    raw += b" " * (-len(raw) % 8)  # tensor data stays 8-byte aligned, as safetensors writes it
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(len(raw).to_bytes(8, "little") + raw + data[8 + size :])
    return path


def write_config_folder(pipe: Any, folder: Path) -> Path:
    """The pipeline's diffusers config folder, without weights or tokenizer (as Spatiora ships)."""
    folder.mkdir(parents=True, exist_ok=True)
    index: dict[str, Any] = {"_class_name": type(pipe).__name__, "_diffusers_version": "0.32.0"}
    for name, component in pipe.components.items():
        if component is None:
            index[name] = [None, None]
            continue
        library = "transformers" if type(component).__module__.startswith("transformers") else "diffusers"
        index[name] = [library, type(component).__name__]
        if name.startswith("tokenizer"):
            continue
        if hasattr(component, "save_config"):
            component.save_config(folder / name)
        else:
            component.config.save_pretrained(folder / name)
        for written in (folder / name).glob("*.json"):
            # Where the component was loaded from is not part of the model (and would make the
            # same weights, trained in another folder, give another config).
            config = json.loads(written.read_text(encoding="utf-8"))
            if config.pop("_name_or_path", None) is not None:
                written.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    for key, value in pipe.config.items():
        if not key.startswith("_") and key not in index:
            index[key] = value
    (folder / "model_index.json").write_text(json.dumps(index, indent=2))
    return folder
