"""Write the diffusers config folders Spatiora ships for single-file checkpoints.

A single .safetensors checkpoint holds weights only; diffusers needs each component's config to
build the model around them, and would download them from the Hugging Face hub. These folders
(spatiora_tui/engine/configs/VARIANT/) are what it reads instead, one per variant: the published
architectures of Stable Diffusion 1.x, 2.x and SDXL, written out here in one place. The CLIP
tokenizer is not in them; engine/clip_tokenizer.py builds it from the shipped merges.

    python tools/write_model_configs.py      # rewrites every folder; commit the result

tests/engine/test_model_configs.py checks each folder builds models of the published sizes.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "spatiora_tui" / "engine" / "configs"

SCHEDULER = {  # the betas every SD 1.x/2.x/SDXL model was trained with
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "num_train_timesteps": 1000,
    "clip_sample": False,
    "set_alpha_to_one": False,
    "steps_offset": 1,
    "timestep_spacing": "leading",
    "trained_betas": None,
    "prediction_type": "epsilon",
}
UNET_COMMON = {
    "act_fn": "silu",
    "center_input_sample": False,
    "downsample_padding": 1,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "layers_per_block": 2,
    "mid_block_scale_factor": 1,
    "norm_eps": 1e-05,
    "norm_num_groups": 32,
    "out_channels": 4,
    "in_channels": 4,
}
SD_UNET = {
    **UNET_COMMON,
    "block_out_channels": [320, 640, 1280, 1280],
    "down_block_types": ["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"],
    "up_block_types": ["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3,
}
SD1_UNET = {**SD_UNET, "attention_head_dim": 8, "cross_attention_dim": 768, "sample_size": 64}
SD2_UNET = {
    **SD_UNET,
    "attention_head_dim": [5, 10, 20, 20],
    "cross_attention_dim": 1024,
    "use_linear_projection": True,
    "sample_size": 64,
}
SDXL_UNET = {
    **UNET_COMMON,
    "block_out_channels": [320, 640, 1280],
    "attention_head_dim": [5, 10, 20],
    "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
    "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
    "transformer_layers_per_block": [1, 2, 10],
    "cross_attention_dim": 2048,
    "use_linear_projection": True,
    "addition_embed_type": "text_time",
    "addition_embed_type_num_heads": 64,
    "addition_time_embed_dim": 256,
    "projection_class_embeddings_input_dim": 2816,
    "sample_size": 128,
}
VAE = {
    "act_fn": "silu",
    "block_out_channels": [128, 256, 512, 512],
    "in_channels": 3,
    "out_channels": 3,
    "latent_channels": 4,
    "layers_per_block": 2,
    "norm_num_groups": 32,
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
    "sample_size": 512,
    "scaling_factor": 0.18215,
}
SDXL_VAE = {**VAE, "sample_size": 1024, "scaling_factor": 0.13025, "force_upcast": True}
TEXT_COMMON = {
    "vocab_size": 49408,
    "max_position_embeddings": 77,
    "layer_norm_eps": 1e-05,
    "bos_token_id": 0,
    "eos_token_id": 2,
    "pad_token_id": 1,
    "initializer_factor": 1.0,
    "attention_dropout": 0.0,
    "dropout": 0.0,
    "model_type": "clip_text_model",
}
CLIP_L = {
    **TEXT_COMMON,
    "architectures": ["CLIPTextModel"],
    "hidden_size": 768,
    "intermediate_size": 3072,
    "num_attention_heads": 12,
    "num_hidden_layers": 12,
    "hidden_act": "quick_gelu",
    "projection_dim": 768,
}
# OpenCLIP-H: SD 2.x uses the penultimate layer, so the 24th is left out (diffusers skips it).
OPEN_CLIP_H = {
    **TEXT_COMMON,
    "architectures": ["CLIPTextModel"],
    "hidden_size": 1024,
    "intermediate_size": 4096,
    "num_attention_heads": 16,
    "num_hidden_layers": 23,
    "hidden_act": "gelu",
    "projection_dim": 512,
}
OPEN_CLIP_BIGG = {
    **TEXT_COMMON,
    "architectures": ["CLIPTextModelWithProjection"],
    "hidden_size": 1280,
    "intermediate_size": 5120,
    "num_attention_heads": 20,
    "num_hidden_layers": 32,
    "hidden_act": "gelu",
    "projection_dim": 1280,
}

NONE = [None, None]
SD_INDEX = {
    "scheduler": ["diffusers", "DDIMScheduler"],
    "text_encoder": ["transformers", "CLIPTextModel"],
    "tokenizer": ["transformers", "CLIPTokenizer"],
    "unet": ["diffusers", "UNet2DConditionModel"],
    "vae": ["diffusers", "AutoencoderKL"],
    "safety_checker": NONE,
    "feature_extractor": NONE,
    "image_encoder": NONE,
    "requires_safety_checker": False,
}
SDXL_INDEX = {
    "scheduler": ["diffusers", "EulerDiscreteScheduler"],
    "text_encoder": ["transformers", "CLIPTextModel"],
    "text_encoder_2": ["transformers", "CLIPTextModelWithProjection"],
    "tokenizer": ["transformers", "CLIPTokenizer"],
    "tokenizer_2": ["transformers", "CLIPTokenizer"],
    "unet": ["diffusers", "UNet2DConditionModel"],
    "vae": ["diffusers", "AutoencoderKL"],
    "feature_extractor": NONE,
    "image_encoder": NONE,
    "force_zeros_for_empty_prompt": True,
}
EULER = {**SCHEDULER, "interpolation_type": "linear", "use_karras_sigmas": False}

VARIANTS = {
    "sd15": (
        "StableDiffusionPipeline",
        SD_INDEX,
        SD1_UNET,
        VAE,
        {"text_encoder": CLIP_L},
        ("DDIMScheduler", SCHEDULER),
    ),
    "sd15-inpaint": (
        "StableDiffusionInpaintPipeline",
        SD_INDEX,
        {**SD1_UNET, "in_channels": 9},
        VAE,
        {"text_encoder": CLIP_L},
        ("DDIMScheduler", SCHEDULER),
    ),
    "sd2": (
        "StableDiffusionPipeline",
        SD_INDEX,
        SD2_UNET,
        VAE,
        {"text_encoder": OPEN_CLIP_H},
        ("DDIMScheduler", SCHEDULER),
    ),
    "sd2-v": (
        "StableDiffusionPipeline",
        SD_INDEX,
        {**SD2_UNET, "sample_size": 96, "upcast_attention": True},
        {**VAE, "sample_size": 768},
        {"text_encoder": OPEN_CLIP_H},
        ("DDIMScheduler", {**SCHEDULER, "prediction_type": "v_prediction"}),
    ),
    "sd2-inpaint": (
        "StableDiffusionInpaintPipeline",
        SD_INDEX,
        {**SD2_UNET, "in_channels": 9},
        VAE,
        {"text_encoder": OPEN_CLIP_H},
        ("DDIMScheduler", SCHEDULER),
    ),
    "sdxl": (
        "StableDiffusionXLPipeline",
        SDXL_INDEX,
        SDXL_UNET,
        SDXL_VAE,
        {"text_encoder": CLIP_L, "text_encoder_2": OPEN_CLIP_BIGG},
        ("EulerDiscreteScheduler", EULER),
    ),
    "sdxl-inpaint": (
        "StableDiffusionXLInpaintPipeline",
        {**SDXL_INDEX, "requires_aesthetics_score": False},
        {**SDXL_UNET, "in_channels": 9},
        SDXL_VAE,
        {"text_encoder": CLIP_L, "text_encoder_2": OPEN_CLIP_BIGG},
        ("EulerDiscreteScheduler", EULER),
    ),
}


def write(folder: Path, name: str, data: dict) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def main() -> None:
    for variant, (pipeline, index, unet, vae, encoders, (scheduler_class, scheduler)) in VARIANTS.items():
        root = OUT / variant
        if root.exists():
            shutil.rmtree(root)
        write(root, "model_index.json", {"_class_name": pipeline, "_diffusers_version": "0.32.0", **index})
        write(root / "unet", "config.json", {"_class_name": "UNet2DConditionModel", **unet})
        write(root / "vae", "config.json", {"_class_name": "AutoencoderKL", **vae})
        write(root / "scheduler", "scheduler_config.json", {"_class_name": scheduler_class, **scheduler})
        for name, config in encoders.items():
            write(root / name, "config.json", config)
        print(f"wrote {root.relative_to(OUT.parents[2])}")


if __name__ == "__main__":
    main()
