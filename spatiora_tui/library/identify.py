"""What a model file is, from its tensor names and shapes (never from its name), and why one
cannot be used.

Checkpoints: the family comes from the text encoder's layout (CLIP-L under `cond_stage_model.
transformer.` is SD 1.x, OpenCLIP under `cond_stage_model.model.` is SD 2.x, two encoders under
`conditioner.embedders.` is SDXL), inpainting from the UNet's 9 input channels. SD 2.x comes as a
512 px epsilon model and a 768 px v-prediction model with the same tensors; how Spatiora tells
them apart, in order (docs/models.md says more):

1. `[model] variant` pinned in config.toml;
2. a `NAME.yaml` original config beside the checkpoint, as AUTOMATIC1111 users keep one
   (`parameterization: "v"`, or sgm's VScaling);
3. a `v_pred` marker tensor, which v-prediction finetunes carry (ComfyUI's convention);
4. for SD 2.x, the weights: the v-prediction models' `output_blocks.11.1` transformer has a
   first-norm bias with a standard deviation above 0.09 (ComfyUI's test; it holds for Stability's
   own 2.0 and 2.1 releases, and a finetune may move it: pin the variant if images come out
   grey or burnt).

LoRAs, embeddings, VAEs and files of other architectures (Flux, SD3, ControlNet, ...) are named
as such, so that a file in the wrong place gets a message saying what it is and where it goes.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spatiora_tui.library.families import FAMILIES, FAMILY_LABELS, family_by_context, family_by_embedding
from spatiora_tui.library.safetensors_file import FileProblem, Header, read_floats, read_header

UNET = "model.diffusion_model."
SD1_TE = "cond_stage_model.transformer."
SD2_TE = "cond_stage_model.model."
SDXL_TE1 = "conditioner.embedders.0.transformer."
SDXL_TE2 = "conditioner.embedders.1.model."
SDXL_REFINER_TE = "conditioner.embedders.0.model."
VAE = "first_stage_model."
#: ComfyUI's v-prediction test for SD 2.x (see the module docstring).
V_PROBE = UNET + "output_blocks.11.1.transformer_blocks.0.norm1.bias"
V_PROBE_STD = 0.09


@dataclass(frozen=True)
class Variant:
    """A kind of checkpoint Spatiora loads: its family, config folder and prediction type."""

    name: str
    family: str  # sd1 | sd2 | sdxl
    config: str  # the folder under spatiora_tui/engine/configs
    prediction: str = "epsilon"  # epsilon | v_prediction
    inpaint: bool = False

    @property
    def label(self) -> str:
        parts = [FAMILY_LABELS[self.family]]
        if self.name == "sd2-v":
            parts.append("768 v-prediction")
        elif self.prediction == "v_prediction":
            parts.append("v-prediction")
        if self.inpaint:
            parts.append("inpainting")
        return " ".join(parts)


VARIANTS: dict[str, Variant] = {
    v.name: v
    for v in (
        Variant("sd15", "sd1", "sd15"),
        Variant("sd15-v", "sd1", "sd15", "v_prediction"),
        Variant("sd15-inpaint", "sd1", "sd15-inpaint", inpaint=True),
        Variant("sd2", "sd2", "sd2"),
        Variant("sd2-v", "sd2", "sd2-v", "v_prediction"),
        Variant("sd2-inpaint", "sd2", "sd2-inpaint", inpaint=True),
        Variant("sdxl", "sdxl", "sdxl"),
        Variant("sdxl-v", "sdxl", "sdxl", "v_prediction"),
        Variant("sdxl-inpaint", "sdxl", "sdxl-inpaint", inpaint=True),
    )
}
#: What `[model] variant` accepts (config.MODEL_VARIANTS names the same, without importing this).
VARIANT_CHOICES = ("auto", *VARIANTS)


@dataclass(frozen=True)
class CheckpointInfo:
    path: Path
    variant: Variant
    #: How the variant was decided, for a person ("from the tensors", "from NAME.yaml", ...).
    how: str
    #: A `ztsnr` marker: trained with zero terminal SNR (the scheduler then rescales its betas).
    zero_snr: bool = False
    header: Header | None = field(default=None, repr=False, compare=False)


@dataclass(frozen=True)
class LoraInfo:
    path: Path
    format: str  # kohya | lycoris-locon | peft | diffusers | dora-peft | dora-kohya | lycoris-loha | ...
    family: str | None  # sd1 | sd2 | sdxl, None when neither metadata nor shapes say
    base_model: str | None  # what the trainer recorded (ss_base_model_version, modelspec)
    trigger_words: tuple[str, ...] = ()
    has_text_encoder: bool = False
    #: Set for LoRAs of architectures Spatiora does not run (Flux, SD3): what they are for.
    foreign: str | None = None


@dataclass(frozen=True)
class EmbeddingInfo:
    path: Path
    family: str | None  # sd1 | sd2 | sdxl; None for a width no released model has
    vectors: int
    widths: tuple[int, ...]  # per text encoder: (768,) for SD 1.x, (768, 1280) for SDXL


# -- what a file is ---------------------------------------------------------------------------

_LORA_MARKERS = (
    ".lora_down.",
    ".lora_up.",
    ".lora_A.",
    ".lora_B.",
    "lora.down.",
    "lora.up.",
    "lora_linear_layer",
    ".hada_w1_",
    ".hada_w2_",
    ".lokr_w1",
    ".lokr_w2",
    ".oft_",
    "lora_magnitude_vector",
    ".dora_scale",
)
_FOREIGN = (  # marker key fragment -> what the file is
    ("double_blocks.", "a Flux model"),
    ("single_transformer_blocks.", "a Flux model"),
    ("joint_blocks.", "a Stable Diffusion 3 model"),
    ("transformer_blocks.0.attn.add_q_proj", "a Stable Diffusion 3 model"),
    ("x_embedder.", "a DiT/PixArt-style transformer model"),
    ("control_model.", "a ControlNet"),
    ("input_hint_block.", "a ControlNet"),
    ("controlnet_cond_embedding.", "a ControlNet"),
    ("time_stack.", "a Stable Video Diffusion model"),
    ("noise_augmentor.", "a Stable unCLIP model"),
    ("embedder.model.visual", "a Stable unCLIP model"),
    ("edm_mean", "a Playground v2.5 model"),
)


def looks_like(header: Header) -> str:
    """A short phrase naming what the tensors in `header` are."""
    keys = header.tensors
    if any(marker in key for key in keys for marker in _LORA_MARKERS):
        return "a LoRA"
    if _embedding_shape(header) is not None:
        return "a textual-inversion embedding"
    for marker, what in _FOREIGN:
        if any(marker in key for key in keys):
            return what
    if header.has_prefix(UNET):
        return "a Stable Diffusion checkpoint"
    if (
        header.has_prefix(VAE)
        or "encoder.down.0.block.0.conv1.weight" in keys
        or ("encoder.down_blocks.0.resnets.0.conv1.weight" in keys and "decoder.conv_in.weight" in keys)
    ):
        return "a VAE"
    if "conv_in.weight" in keys and any(k.startswith("down_blocks.") for k in keys):
        return "a diffusers UNet weight file"
    if any(".encoder.layers." in k or k.startswith("encoder.layers.") for k in keys):
        return "a text encoder"
    if any(k.startswith(("model.0.", "conv_first.", "body.0.")) for k in keys):
        return "an upscaler"
    return "not a Stable Diffusion file Spatiora knows"


def identify_checkpoint(path: Path, pinned: str = "auto", header: Header | None = None) -> CheckpointInfo:
    """The variant of the single-file checkpoint at `path`, or FileProblem saying why it cannot
    be loaded (what it looks like and what to do)."""
    header = header or read_header(path, "checkpoint")
    keys = header.tensors
    what = looks_like(header)
    if what != "a Stable Diffusion checkpoint":
        raise FileProblem(
            f"{path.name} is {what}, not a Stable Diffusion checkpoint (it holds no Stable Diffusion "
            f"UNet); {_where_it_goes(what)}"
        )
    in_channels = (header.shape(UNET + "input_blocks.0.0.weight") or (0, 0))[1:2]
    channels = in_channels[0] if in_channels else 0
    if header.has_prefix(SDXL_TE2) and header.has_prefix(SDXL_TE1):
        family = "sdxl"
    elif header.has_prefix(SDXL_REFINER_TE):
        raise FileProblem(
            f"{path.name} is an SDXL refiner, which only finishes images an SDXL base started "
            "(image to image); load an SDXL base checkpoint"
        )
    elif header.has_prefix(SD2_TE):
        family = "sd2"
    elif header.has_prefix(SD1_TE):
        family = "sd1"
    else:
        raise FileProblem(
            f"{path.name} holds a UNet but no text encoder (no cond_stage_model.* or "
            "conditioner.* tensors), so it is a partial export; use the full checkpoint"
        )
    if not header.has_prefix(VAE):
        raise FileProblem(
            f"{path.name} has no VAE baked in (no first_stage_model.* tensors); use a checkpoint "
            "with its VAE, as most releases ship"
        )
    if channels == 8:
        raise FileProblem(
            f"{path.name} is an InstructPix2Pix model (8 input channels), which edits an image "
            "by instruction; Spatiora makes images from text: use a text-to-image checkpoint"
        )
    if channels not in (4, 9):
        raise FileProblem(
            f"{path.name} is a {FAMILY_LABELS[family]} model with {channels} input channels "
            "(a depth, upscaler or other special model); use a text-to-image or inpainting checkpoint"
        )
    inpaint = channels == 9
    if pinned != "auto":
        return CheckpointInfo(
            path, _pinned(path, pinned, family, inpaint), "pinned in config.toml", "ztsnr" in keys, header
        )
    yaml_says = original_config_hints(path)
    v_prediction, how = False, "from its tensors"
    if yaml_says is not None:
        _check_yaml_agrees(path, yaml_says, family, inpaint)
        v_prediction = yaml_says.get("v", False)
        how = f"from {yaml_says['file']}"
    elif "v_pred" in keys:
        v_prediction, how = True, "from its v_pred marker"
    elif family == "sd2" and not inpaint:
        std = _std(read_floats(header, V_PROBE))
        if std is not None:
            v_prediction = std > V_PROBE_STD
            how = (
                f"guessed from its weights (norm std {std:.3f} {'>' if v_prediction else '<='} {V_PROBE_STD}); "
                "pin [model] variant if images look wrong"
            )
    if inpaint and v_prediction:
        raise FileProblem(
            f"{path.name} is a v-prediction inpainting model, which Spatiora has no settings for; "
            "pin [model] variant if you know it is an epsilon model"
        )
    return CheckpointInfo(path, _variant(family, inpaint, v_prediction), how, "ztsnr" in keys, header)


def _variant(family: str, inpaint: bool, v_prediction: bool) -> Variant:
    stem = FAMILIES[family].variant_stem
    return VARIANTS[f"{stem}-inpaint" if inpaint else f"{stem}-v" if v_prediction else stem]


def _pinned(path: Path, pinned: str, family: str, inpaint: bool) -> Variant:
    variant = VARIANTS.get(pinned)
    if variant is None:
        raise FileProblem(f"[model] variant {pinned!r} is unknown; use one of {', '.join(VARIANT_CHOICES)}")
    if variant.family != family or variant.inpaint != inpaint:
        actual = _variant(family, inpaint, False).label
        raise FileProblem(
            f"[model] variant = {pinned!r} ({variant.label}) but {path.name} is a {actual} "
            'checkpoint; set variant = "auto" or pin a variant of its family'
        )
    return variant


def _std(values: list[float] | None) -> float | None:
    if not values:
        return None
    mean = sum(values) / len(values)
    return math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))


def _where_it_goes(what: str) -> str:
    if what == "a LoRA":
        return (
            "put it in the adapters folder ([adapters] dir) or a [paths] loras folder and use it in a task or "
            "as <lora:NAME:1>"
        )
    if what == "a textual-inversion embedding":
        return "put it in an embeddings folder ([paths] embeddings) and write its name in a prompt"
    if what == "a VAE":
        return "Spatiora uses the VAE baked into the checkpoint; point model.source at a full checkpoint"
    if what == "a diffusers UNet weight file":
        return "point model.source at the diffusers folder that holds model_index.json"
    if what.startswith(
        ("a Flux", "a Stable Diffusion 3", "a DiT", "a Stable Video", "a Stable unCLIP", "a Playground")
    ):
        return "Spatiora runs Stable Diffusion 1.x, 2.x and SDXL checkpoints"
    return "point model.source at a Stable Diffusion 1.x, 2.x or SDXL checkpoint"


# -- the original config (NAME.yaml) -----------------------------------------------------------


def original_config_hints(checkpoint: Path) -> dict[str, Any] | None:
    """What NAME.yaml beside the checkpoint says (v-prediction, inpainting, context width), or
    None when there is none. A yaml that cannot be read is reported, not ignored."""
    for candidate in (checkpoint.with_suffix(".yaml"), checkpoint.with_suffix(".yml")):
        if candidate.is_file():
            break
    else:
        return None
    import yaml

    try:
        data = yaml.safe_load(candidate.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise FileProblem(
            f"{candidate.name} beside the checkpoint cannot be read ({detail}); fix or remove it"
        ) from None
    params = _dig(data, "model", "params")
    if not isinstance(params, dict):
        raise FileProblem(
            f"{candidate.name} beside the checkpoint is not a Stable Diffusion original config "
            "(no model.params); remove it or replace it with the model's own yaml"
        )
    network = params.get("unet_config") or params.get("network_config") or {}
    network_params = network.get("params", {}) if isinstance(network, dict) else {}
    scaling = str(_dig(params, "denoiser_config", "params", "scaling_config", "target") or "")
    hints: dict[str, Any] = {
        "file": candidate.name,
        "v": params.get("parameterization") == "v" or scaling.endswith("VScaling"),
    }
    if isinstance(network_params, dict):
        if isinstance(network_params.get("in_channels"), int):
            hints["in_channels"] = network_params["in_channels"]
        if isinstance(network_params.get("context_dim"), int):
            hints["context_dim"] = network_params["context_dim"]
    return hints


def _dig(data: Any, *keys: str) -> Any:
    for key in keys:
        if not isinstance(data, dict):
            return None
        data = data.get(key)
    return data


def _check_yaml_agrees(path: Path, hints: dict[str, Any], family: str, inpaint: bool) -> None:
    context = hints.get("context_dim")
    channels = hints.get("in_channels")
    if (context is not None and context != FAMILIES[family].context_width) or (
        channels is not None and (channels == 9) != inpaint
    ):
        raise FileProblem(
            f"{hints['file']} describes another model than {path.name} holds (a "
            f"{_variant(family, inpaint, False).label} checkpoint); remove or replace the yaml"
        )


# -- LoRAs and embeddings ----------------------------------------------------------------------

#: LoRA layouts Spatiora cannot apply exactly, by lora_format's name, as people call them.
UNSUPPORTED_FORMATS = {
    "lycoris-loha": "LyCORIS LoHa adapter (hada_w1/hada_w2 tensors)",
    "lycoris-lokr": "LyCORIS LoKr adapter (lokr_w1/lokr_w2 tensors)",
    "lycoris-oft": "LyCORIS OFT/BOFT adapter (oft_blocks tensors)",
    "dora-kohya": "Kohya/LyCORIS DoRA adapter (dora_scale tensors)",
}
UNSUPPORTED_HOW = (
    "Spatiora applies LoRA and LoCon files (Kohya, diffusers and peft layouts, peft DoRA) exactly, "
    "and this format it cannot yet; convert it to a LoRA (kohya's sd-scripts can extract one) or use "
    "another adapter"
)


def lora_format(keys: list[str] | dict[str, Any]) -> str:
    """The layout a LoRA file's tensors are in."""
    names = list(keys)
    if any(".hada_w1_" in k for k in names):
        return "lycoris-loha"
    if any(".lokr_w1" in k or ".lokr_w2" in k for k in names):
        return "lycoris-lokr"
    if any(".oft_" in k for k in names):
        return "lycoris-oft"
    if any("dora_scale" in k for k in names):
        return "dora-kohya"
    if any("lora_magnitude_vector" in k for k in names):
        return "dora-peft"
    if any(k.startswith(("lora_unet_", "lora_te_", "lora_te1_", "lora_te2_")) for k in names):
        conv = any(
            re.search(r"lora_unet_.*(resnets|_in_layers_|_out_layers_|_skip_connection|_conv)", k) for k in names
        )
        return "lycoris-locon" if conv else "kohya"
    if any(".lora_A." in k or ".lora_B." in k for k in names):
        return "peft"
    if any("lora.down." in k or "lora_linear_layer" in k for k in names):
        return "diffusers"
    return "unknown"


_BASE_VERSIONS = (
    ("sdxl", "sdxl"),
    ("stable-diffusion-xl", "sdxl"),
    ("sd_v2", "sd2"),
    ("stable-diffusion-v2", "sd2"),
    ("sd_v1", "sd1"),
    ("stable-diffusion-v1", "sd1"),
    ("flux", "Flux"),
    ("sd3", "SD3"),
    ("stable-diffusion-v3", "SD3"),
)


def identify_lora(path: Path, header: Header | None = None) -> LoraInfo:
    """A LoRA file's layout, base family and trigger words (from Kohya's training metadata)."""
    header = header or read_header(path)
    what = looks_like(header)
    if what != "a LoRA":
        raise FileProblem(f"{path.name} is {what}, not a LoRA; {_where_it_goes(what)}")
    shapes = {name: info.shape for name, info in header.tensors.items()}
    family, foreign, recorded = lora_base(shapes, header.metadata)
    te = any(k.startswith(("lora_te", "text_encoder", "te_", "te1", "te2")) for k in shapes)
    return LoraInfo(path, lora_format(shapes), family, recorded, trigger_words(header.metadata), te, foreign)


def lora_base(
    shapes: dict[str, tuple[int, ...]], metadata: dict[str, str]
) -> tuple[str | None, str | None, str | None]:
    """(family, foreign architecture, what the trainer recorded) of a LoRA's tensors: the family
    from Kohya's `ss_base_model_version` or modelspec metadata, else from its layers' widths;
    `foreign` names Flux or SD3 for LoRAs of those."""
    recorded = metadata.get("ss_base_model_version") or metadata.get("modelspec.architecture")
    if any(
        marker in key for key in shapes for marker in ("double_blocks", "single_blocks", "single_transformer_blocks")
    ):
        return None, "Flux", recorded
    if any("joint_blocks" in key or "context_block" in key for key in shapes):
        return None, "SD3", recorded
    for marker, fam in _BASE_VERSIONS:
        if recorded and marker in recorded.lower():
            if fam in FAMILY_LABELS:
                return fam, None, recorded
            return None, fam, recorded
    return _lora_family_from_shapes(shapes), None, recorded


def _lora_family_from_shapes(shapes: dict[str, tuple[int, ...]]) -> str | None:
    if any(k.startswith(("lora_te2_", "text_encoder_2.")) or "add_embedding" in k for k in shapes):
        return "sdxl"
    for key, shape in shapes.items():
        # The down (input) side of a cross-attention key/value projection reads the text
        # encoder's width: 768 (SD 1.x), 1024 (SD 2.x), 2048 (SDXL).
        if re.search(r"attn2[._]to_[kv]", key) and re.search(r"(lora_down|lora_A|lora\.down|hada_w1_b)", key):
            width = shape[1] if len(shape) >= 2 else 0
            return family_by_context(width)
    for key, shape in shapes.items():
        if re.search(r"lora_te_.*(q_proj|k_proj)", key) and "down" in key and len(shape) >= 2:
            return {768: "sd1", 1024: "sd2"}.get(shape[1])
    return None


def trigger_words(metadata: dict[str, str], limit: int = 8) -> tuple[str, ...]:
    """The tags a Kohya LoRA was trained on, most frequent first (ss_tag_frequency), or the
    trigger phrase its modelspec metadata records."""
    phrase = metadata.get("modelspec.trigger_phrase")
    if phrase:
        return tuple(p.strip() for p in phrase.split(",") if p.strip())[:limit]
    raw = metadata.get("ss_tag_frequency")
    if not raw:
        return ()
    try:
        datasets = json.loads(raw)
    except ValueError:
        return ()
    counts: dict[str, int] = {}
    if isinstance(datasets, dict):
        for tags in datasets.values():
            if isinstance(tags, dict):
                for tag, count in tags.items():
                    if isinstance(count, int) and str(tag).strip():
                        counts[str(tag).strip()] = counts.get(str(tag).strip(), 0) + count
    return tuple(sorted(counts, key=lambda t: (-counts[t], t))[:limit])


def _embedding_shape(header: Header) -> tuple[tuple[int, ...], int] | None:
    """(the width of each encoder's vectors, the number of vectors) of an embedding file, or None
    when the tensors are not laid out as one: a single matrix (`emb_params`, or one token's
    name as diffusers saves it) or, for SDXL, `clip_l` + `clip_g` with as many rows."""
    tensors = header.tensors
    if set(tensors) == {"clip_l", "clip_g"}:
        small, big = tensors["clip_l"].shape, tensors["clip_g"].shape
        if len(small) == 2 and len(big) == 2 and small[0] == big[0] and 0 < small[0] <= 75:
            return (small[1], big[1]), small[0]
        return None
    if len(tensors) == 1:
        ((name, info),) = tensors.items()
        if name == "emb_params" or (name.startswith("<") and name.endswith(">")) or len(info.shape) in (1, 2):
            rows = info.shape[0] if len(info.shape) == 2 else 1
            if info.shape and 0 < rows <= 75 and info.shape[-1] >= 8:
                return (info.shape[-1],), rows
    return None


def identify_embedding(path: Path, header: Header | None = None) -> EmbeddingInfo:
    """A textual-inversion embedding's family (None for widths of no released model), vector
    count and widths."""
    header = header or read_header(path)
    shape = _embedding_shape(header)
    if shape is None:
        what = looks_like(header)
        raise FileProblem(f"{path.name} is {what}, not a textual-inversion embedding; {_where_it_goes(what)}")
    widths, vectors = shape
    return EmbeddingInfo(path, family_by_embedding(widths), vectors, widths)
