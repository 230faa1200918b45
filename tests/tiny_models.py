"""Tiny Stable Diffusion pipelines of every family, written as the files users have.

Each is the real diffusers architecture at toy width (a few hundred KB), with the real CLIP
tokenizer Spatiora ships, so a test can write it as an AUTOMATIC1111-layout single file
(spatiora_tui/engine/ldm_layout.py) and load it as a user's checkpoint. Their config folder is written beside,
since the shipped ones describe the full-size models: NAME.config/ beside NAME.safetensors is
used for that file (as a user keeps one for a model of an unusual architecture).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from spatiora_tui.engine import ldm_layout as layouts

TINY_TE = dict(
    hidden_size=32,
    intermediate_size=37,
    num_attention_heads=4,
    num_hidden_layers=2,
    vocab_size=49408,
    max_position_embeddings=77,
    layer_norm_eps=1e-5,
    bos_token_id=0,
    eos_token_id=2,
    pad_token_id=1,
)


def tiny_pipeline(family: str = "sd1", inpaint: bool = False, seed: int = 0) -> Any:
    """A tiny pipeline of `family` (sd1 | sd2 | sdxl) with random weights, fp32, on the CPU."""
    import diffusers
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, EulerDiscreteScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    from spatiora_tui.engine.clip_tokenizer import PAD_CLIP_L, PAD_OPEN_CLIP, clip_tokenizer

    torch.manual_seed(seed)
    channels = 9 if inpaint else 4
    vae = AutoencoderKL(
        block_out_channels=(8, 16),
        in_channels=3,
        out_channels=3,
        latent_channels=4,
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        norm_num_groups=4,
        sample_size=32,
    )
    betas = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", steps_offset=1)
    if family == "sdxl":
        unet = UNet2DConditionModel(
            block_out_channels=(16, 32),
            layers_per_block=1,
            sample_size=16,
            in_channels=channels,
            out_channels=4,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
            attention_head_dim=(2, 4),
            use_linear_projection=True,
            addition_embed_type="text_time",
            addition_time_embed_dim=8,
            transformer_layers_per_block=(1, 2),
            projection_class_embeddings_input_dim=80,
            cross_attention_dim=72,
            norm_num_groups=4,
        )
        te1 = CLIPTextModel(CLIPTextConfig(**TINY_TE, hidden_act="quick_gelu", projection_dim=32))
        # Of another width than the first, as in the real models: diffusers tells the two encoders
        # apart by width, and would load the first into the second if they matched.
        te2 = CLIPTextModelWithProjection(
            CLIPTextConfig(**{**TINY_TE, "hidden_size": 40}, hidden_act="gelu", projection_dim=32)
        )
        cls = diffusers.StableDiffusionXLInpaintPipeline if inpaint else diffusers.StableDiffusionXLPipeline
        extra = {"requires_aesthetics_score": False} if inpaint else {}
        return cls(
            vae=vae,
            text_encoder=te1,
            text_encoder_2=te2,
            tokenizer=clip_tokenizer(PAD_CLIP_L),
            tokenizer_2=clip_tokenizer(PAD_OPEN_CLIP),
            unet=unet,
            scheduler=EulerDiscreteScheduler(**betas),
            **extra,
        )
    sd2 = family == "sd2"
    unet = UNet2DConditionModel(
        block_out_channels=(16, 32),
        layers_per_block=1,
        sample_size=16,
        in_channels=channels,
        out_channels=4,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32,
        attention_head_dim=(2, 4) if sd2 else 4,
        use_linear_projection=sd2,
        norm_num_groups=4,
    )
    te = CLIPTextModel(CLIPTextConfig(**TINY_TE, hidden_act="gelu" if sd2 else "quick_gelu", projection_dim=32))
    cls = diffusers.StableDiffusionInpaintPipeline if inpaint else diffusers.StableDiffusionPipeline
    return cls(
        vae=vae,
        text_encoder=te,
        tokenizer=clip_tokenizer(PAD_OPEN_CLIP if sd2 else PAD_CLIP_L),
        unet=unet,
        scheduler=DDIMScheduler(**betas, clip_sample=False, set_alpha_to_one=False),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def write_checkpoint(
    folder: Path,
    family: str = "sd1",
    inpaint: bool = False,
    name: str | None = None,
    seed: int = 0,
    extra: dict[str, Any] | None = None,
    metadata: dict[str, str] | None = None,
) -> tuple[Path, Path, Any]:
    """A tiny checkpoint in the AUTOMATIC1111 layout and its config folder. Returns (checkpoint
    path, config folder, the pipeline it was written from)."""
    pipe = tiny_pipeline(family, inpaint, seed)
    stem = name or f"tiny-{family}{'-inpaint' if inpaint else ''}"
    path = layouts.save_single_file(pipe, folder / f"{stem}.safetensors", extra, metadata)
    config = layouts.write_config_folder(pipe, folder / f"{stem}.config")  # found beside it, as a user keeps one
    return path, config, pipe
