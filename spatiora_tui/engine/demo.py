"""The built-in models: "demo", the small SD 1.x model trained for this project and shipped in
demo_model/ (loaded by the single-file and Kohya loaders like a user's files), and "demo-random",
a tiny SD 1.x pipeline with random weights for the tests.

No weights can be downloaded on the machines this project is built and tested on, and a new
user should see the whole application work before fetching gigabytes. "demo-random" is built
locally, offline and deterministically: real diffusers components (UNet2DConditionModel,
AutoencoderKL, CLIP text encoder, a CLIP tokenizer whose vocabulary is generated here) in the SD
1.x layout, and two real LoRA adapters made with peft. Every mechanism is real; its images look
like coloured noise because nothing was trained (the trained "demo" draws rooms and plans).

The result is cached under the user cache dir with a manifest of sha256 sums, verified on every
load and rebuilt when missing or corrupt.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from spatiora_tui.engine.clip_tokenizer import bytes_to_unicode
from spatiora_tui.library.hashing import file_sha256

#: The trained demo model (tools/train_demo.py), shipped with the package when it is built: an
#: AUTOMATIC1111-layout checkpoint with its config folder beside it, and its task LoRAs as Kohya
#: files. `model.source = "demo"` loads it through the single-file and Kohya loaders users' own
#: files take; "demo-random" (and "demo" without it) builds the random-weight model below, which
#: the tests use for its exotic shapes and speed.
TRAINED_DIR = Path(__file__).resolve().parent / "demo_model"
TRAINED_CHECKPOINT = TRAINED_DIR / "spatiora-demo.safetensors"
TRAINED_ADAPTERS = TRAINED_DIR / "adapters"
DEMO_SOURCES = ("demo", "demo-random")

DEMO_VERSION = "1"
DEMO_ADAPTERS = ("interior", "floorplan")
MANIFEST = "manifest.json"
_SEED = 1234


def trained_demo(source: str) -> Path | None:
    """The trained demo checkpoint `source` loads ("demo" when it is shipped), else None."""
    return TRAINED_CHECKPOINT if source == "demo" and TRAINED_CHECKPOINT.is_file() else None


def demo_adapter_dir(source: str, cache_dir: Path) -> Path | None:
    """Where the demo's task adapters are for `source` (None for a model that is no demo)."""
    if source not in DEMO_SOURCES:
        return None
    return TRAINED_ADAPTERS if trained_demo(source) else demo_dir(cache_dir) / "adapters"


def demo_dir(cache_dir: Path) -> Path:
    return cache_dir / f"demo-v{DEMO_VERSION}"


# Whole-word tokens for the words design prompts use most, so the built-in task templates fit the
# 77-token window as they would with the real CLIP vocabulary; any other text still tokenizes,
# letter by letter, through the byte-level alphabet.
_WORDS = [
    "a",
    "an",
    "and",
    "the",
    "of",
    "with",
    "in",
    "on",
    "for",
    "to",
    "at",
    "by",
    "from",
    "into",
    "under",
    "over",
    "near",
    "light",
    "natural",
    "warm",
    "cool",
    "soft",
    "interior",
    "design",
    "photograph",
    "photorealistic",
    "photo",
    "detailed",
    "materials",
    "high",
    "dynamic",
    "range",
    "35mm",
    "render",
    "rendering",
    "room",
    "living",
    "bedroom",
    "kitchen",
    "bathroom",
    "dining",
    "office",
    "studio",
    "loft",
    "flat",
    "apartment",
    "house",
    "home",
    "villa",
    "cabin",
    "open",
    "plan",
    "open-plan",
    "wood",
    "wooden",
    "oak",
    "walnut",
    "marble",
    "concrete",
    "stone",
    "brick",
    "glass",
    "steel",
    "linen",
    "velvet",
    "leather",
    "wall",
    "walls",
    "floor",
    "floors",
    "ceiling",
    "window",
    "windows",
    "door",
    "doors",
    "stair",
    "stairs",
    "sofa",
    "chair",
    "table",
    "bed",
    "lamp",
    "rug",
    "plant",
    "plants",
    "shelf",
    "shelves",
    "modern",
    "minimal",
    "minimalist",
    "scandinavian",
    "industrial",
    "japanese",
    "mid-century",
    "contemporary",
    "classic",
    "cozy",
    "bright",
    "dark",
    "white",
    "black",
    "grey",
    "gray",
    "beige",
    "green",
    "blue",
    "red",
    "view",
    "sunlight",
    "morning",
    "evening",
    "night",
    "architectural",
    "2d",
    "top-down",
    "orthographic",
    "clean",
    "lines",
    "label",
    "labels",
    "labels",
    "plan",
    "floorplan",
    "blueprint",
    "layout",
    "scale",
    "section",
    "elevation",
    "perspective",
    "3d",
    "shading",
    "furniture",
    "clutter",
    "blurry",
    "distorted",
    "cartoon",
    "lowres",
    "watermark",
    "text",
    "deformed",
    "ugly",
    "noise",
    "bad",
    "quality",
    "best",
    "masterpiece",
    "large",
    "small",
    "wide",
    "tall",
    "corner",
    "balcony",
    "terrace",
    "garden",
    "pool",
    "courtyard",
    "hallway",
    "entrance",
    "lobby",
    "library",
    "gallery",
    "cafe",
    "restaurant",
    "shop",
]


def _word_merges(words: list[str]) -> list[tuple[str, str]]:
    merges: list[tuple[str, str]] = []
    seen: set[tuple[str, str]] = set()
    for word in words:
        symbols = [*word[:-1], word[-1] + "</w>"]
        left = symbols[0]
        for right in symbols[1:]:
            pair = (left, right)
            if pair not in seen:
                seen.add(pair)
                merges.append(pair)
            left += right
    return merges


def _write_tokenizer_files(folder: Path) -> None:
    """A byte-level CLIP vocabulary with whole-word merges for common design words."""
    alphabet = bytes_to_unicode()
    vocab = alphabet + [c + "</w>" for c in alphabet]
    merges = _word_merges(list(dict.fromkeys(_WORDS)))
    for left, right in merges:
        if left + right not in vocab:
            vocab.append(left + right)
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps({tok: i for i, tok in enumerate(vocab)}), encoding="utf-8")
    lines = ["#version: 0.2", *(f"{a} {b}" for a, b in merges)]
    (folder / "merges.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")


def build_demo(target: Path) -> None:
    """Build the demo pipeline and adapters into `target` (which must not exist yet)."""
    import torch
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    target.mkdir(parents=True)
    with tempfile.TemporaryDirectory() as tmp:
        _write_tokenizer_files(Path(tmp))
        tokenizer = CLIPTokenizer(
            str(Path(tmp) / "vocab.json"),
            str(Path(tmp) / "merges.txt"),
            model_max_length=77,
            pad_token="<|endoftext|>",
        )
    bos, eos = tokenizer.convert_tokens_to_ids(["<|startoftext|>", "<|endoftext|>"])

    torch.manual_seed(_SEED)
    unet = UNet2DConditionModel(
        sample_size=64,
        in_channels=4,
        out_channels=4,
        layers_per_block=1,
        block_out_channels=(16, 32, 64),
        norm_num_groups=8,
        cross_attention_dim=32,
        attention_head_dim=8,
        down_block_types=("DownBlock2D", "DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
    )
    torch.manual_seed(_SEED + 1)
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        latent_channels=4,
        layers_per_block=1,
        norm_num_groups=8,
        block_out_channels=(8, 16, 16, 16),
        sample_size=512,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
    )
    torch.manual_seed(_SEED + 2)
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=77,
            projection_dim=32,
            bos_token_id=bos,
            eos_token_id=eos,
            pad_token_id=eos,
        )
    )
    scheduler = EulerDiscreteScheduler(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        steps_offset=1,
    )
    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    pipe.save_pretrained(str(target / "pipeline"), safe_serialization=True)

    adapters = target / "adapters"
    adapters.mkdir()
    targets = {
        # Different layer sets and ranks, as real task adapters differ.
        "interior": (8, ["to_q", "to_k", "to_v", "to_out.0"]),
        "floorplan": (4, ["to_k", "to_v", "proj_in", "proj_out", "ff.net.2"]),
    }
    for index, name in enumerate(DEMO_ADAPTERS):
        rank, modules = targets[name]
        # Random B matrices are small; scale them so each adapter visibly changes the image.
        write_random_lora(unet, adapters, name, rank, modules, seed=_SEED + 10 + index, up_scale=4.0)

    files = sorted(p for p in target.rglob("*") if p.is_file())
    manifest = {
        "version": DEMO_VERSION,
        "random_weights": True,
        "files": {str(p.relative_to(target)): file_sha256(p) for p in files},
    }
    (target / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True), encoding="utf-8")


def write_random_lora(
    unet: Any, folder: Path, name: str, rank: int, modules: Sequence[str], seed: int, up_scale: float = 1.0
) -> Path:
    """A LoRA of `rank` with random weights on `modules` of `unet`, written as diffusers writes
    one (folder/NAME.safetensors); `up_scale` multiplies its up (B) matrices. The UNet is left as
    it was. What the demo's adapters and the benchmarks' are made with."""
    import torch
    from diffusers import StableDiffusionPipeline
    from peft import LoraConfig, get_peft_model_state_dict

    torch.manual_seed(seed)
    config = LoraConfig(r=rank, lora_alpha=rank, target_modules=list(modules), init_lora_weights=False)
    had_adapters = bool(getattr(unet, "peft_config", None))
    unet.add_adapter(config, adapter_name=name)
    try:
        state = get_peft_model_state_dict(unet, adapter_name=name)
        state = {
            k: (v.detach().to("cpu") * (up_scale if "lora_B" in k else 1.0)).contiguous() for k, v in state.items()
        }
    finally:
        if had_adapters:
            unet.delete_adapters(name)
        else:
            unet.unload_lora()  # the LoRA wrappers out too: the UNet's modules as they were
    StableDiffusionPipeline.save_lora_weights(
        str(folder), unet_lora_layers=state, weight_name=f"{name}.safetensors", safe_serialization=True
    )
    return folder / f"{name}.safetensors"


def verify_demo(folder: Path) -> str | None:
    """None when `folder` holds an intact demo build, else what is wrong with it."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
        files = manifest["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return "manifest missing or unreadable"
    if manifest.get("version") != DEMO_VERSION:
        return f"built by another version ({manifest.get('version')!r})"
    for rel, digest in files.items():
        path = folder / rel
        if not path.is_file():
            return f"{rel} is missing"
        if file_sha256(path) != digest:
            return f"{rel} is corrupt (checksum differs)"
    return None


def ensure_demo(cache_dir: Path, on_progress: Callable[[str], object] | None = None) -> Path:
    """The path of a verified demo build, building it first when missing or corrupt."""
    folder = demo_dir(cache_dir)
    problem = verify_demo(folder) if folder.exists() else "not built yet"
    if problem is None:
        return folder
    if on_progress:
        on_progress(f"building the demo model ({problem}) in {folder}")
    cache_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".demo-build-", dir=cache_dir))
    try:
        build_demo(staging / "demo")
        if folder.exists():
            shutil.rmtree(folder, ignore_errors=True)
        try:
            os.replace(staging / "demo", folder)
        except OSError:
            # Another process finished first; theirs is as good as ours if it verifies.
            if verify_demo(folder) is not None:
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder
