"""Typed settings read from config.toml.

Everything the user can change lives here as frozen dataclasses whose fields carry their own
documentation and checks. The TOML is validated strictly: an unknown key, a value of the wrong
type or out of range is reported with the file, the key path and what is allowed, because a typo
that silently falls back to a default is the worst kind of configuration bug.

This module imports neither torch nor textual, so the CLI can report a broken config instantly.
"""

from __future__ import annotations

import dataclasses
import os
import re
import sys
import textwrap
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

import tomli_w

CONFIG_ENV = "SPATIORA_CONFIG"
OUTPUT_DIR_ENV = "SPATIORA_OUTPUT_DIR"
CACHE_DIR_ENV = "SPATIORA_CACHE_DIR"
STATE_DIR_ENV = "SPATIORA_STATE_DIR"


@dataclass(frozen=True)
class Scheduler:
    """One sampler: its config name, the label AUTOMATIC1111 writes in its metadata (and reads
    back), and the diffusers class with the options that make it that sampler."""

    name: str
    a1111: str
    diffusers_class: str
    options: tuple[tuple[str, Any], ...] = ()


_DPMPP_2M = (("algorithm_type", "dpmsolver++"), ("solver_order", 2))

#: Every sampler, by config name. The one table: config checks names against it, the engine
#: builds from it, and image metadata writes its A1111 label.
SCHEDULERS: dict[str, Scheduler] = {
    s.name: s
    for s in (
        Scheduler("euler", "Euler", "EulerDiscreteScheduler"),
        Scheduler("euler_a", "Euler a", "EulerAncestralDiscreteScheduler"),
        Scheduler("dpmpp_2m", "DPM++ 2M", "DPMSolverMultistepScheduler", _DPMPP_2M),
        Scheduler(
            "dpmpp_2m_karras",
            "DPM++ 2M Karras",
            "DPMSolverMultistepScheduler",
            (*_DPMPP_2M, ("use_karras_sigmas", True)),
        ),
        Scheduler("ddim", "DDIM", "DDIMScheduler"),
        Scheduler("unipc", "UniPC", "UniPCMultistepScheduler"),
        Scheduler("heun", "Heun", "HeunDiscreteScheduler"),
    )
}

#: How images are drawn in the terminal (textual-image renderers; auto = detect).
RENDERERS = ("auto", "sixel", "kitty", "kitty-direct", "iterm", "halfcell", "unicode")


class ConfigError(Exception):
    """A configuration problem, phrased for the user: where it is and what to do."""


def _doc(text: str, check: typing.Callable[[Any], str | None] | None = None) -> dict[str, Any]:
    return {"doc": text, "check": check}


def _between(lo: float, hi: float) -> typing.Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        return None if lo <= value <= hi else f"must be between {lo:g} and {hi:g}, got {value!r}"

    return check


def _budget(value: Any) -> str | None:
    if value == "auto":
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return f'must be "auto" or a number between 0.005 and 1, got {value!r}'
    return _between(0.005, 1.0)(value)


#: The bounds of what a request may ask, checked in config.toml, on the command line, in the
#: prompt pane and by the engine.
STEPS_RANGE = (1, 500)
GUIDANCE_RANGE = (0.0, 30.0)
SIZE_RANGE = (64, 4096)
SIZE_MULTIPLE = 8  # the VAE works in 8-pixel cells
SEED_RANGE = (0, 2**32 - 1)


def random_seed() -> int:
    """A seed drawn uniformly from SEED_RANGE (what a request without one runs with)."""
    import secrets

    low, high = SEED_RANGE
    return low + secrets.randbelow(high - low + 1)


def parse_size(text: str) -> tuple[int, int]:
    """(width, height) of "WIDTHxHEIGHT" (any case, spaces around); ValueError saying the form
    when it is not one. Bounds are check_size's."""
    parts = text.strip().lower().split("x")
    if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
        raise ValueError(f"size {text.strip()!r} should be WIDTHxHEIGHT, e.g. 768x512")
    return int(parts[0]), int(parts[1])


def check_size(value: int) -> str | None:
    """Why `value` cannot be a width or height, or None when it can."""
    if not SIZE_RANGE[0] <= value <= SIZE_RANGE[1]:
        return f"must be between {SIZE_RANGE[0]} and {SIZE_RANGE[1]}, got {value}"
    if value % SIZE_MULTIPLE:
        lower = value - value % SIZE_MULTIPLE
        hints = [n for n in (lower, lower + SIZE_MULTIPLE) if SIZE_RANGE[0] <= n <= SIZE_RANGE[1]]
        return (
            f"must be a multiple of {SIZE_MULTIPLE} (the VAE works in {SIZE_MULTIPLE}-pixel cells), "
            f"got {value}; try {' or '.join(map(str, hints))}"
        )
    return None


_size = check_size


def _non_empty(value: str) -> str | None:
    return None if value.strip() else "must not be empty"


def _template(value: str) -> str | None:
    return None if "{prompt}" in value else "must contain {prompt}, where the user's prompt goes"


#: What `[model] variant` accepts: auto, or a checkpoint variant (spatiora_tui/library/identify.py).
MODEL_VARIANTS = (
    "auto",
    "sd15",
    "sd15-v",
    "sd15-inpaint",
    "sd2",
    "sd2-v",
    "sd2-inpaint",
    "sdxl",
    "sdxl-v",
    "sdxl-inpaint",
)


def _model_variant(value: str) -> str | None:
    return None if value in MODEL_VARIANTS else f"unknown variant {value!r}; choose one of: {', '.join(MODEL_VARIANTS)}"


def _preview_method(value: str) -> str | None:
    # The registry of preview methods is the engine's; its module imports nothing heavy.
    from spatiora_tui.engine.previews import method_names

    names = method_names()
    return None if value in names else f"unknown preview method {value!r}; choose one of: {', '.join(names)}"


def _scheduler(value: str) -> str | None:
    if value in SCHEDULERS:
        return None
    return f"unknown scheduler {value!r}; choose one of: {', '.join(SCHEDULERS)}"


@dataclass(frozen=True)
class ModelSettings:
    """`[model]`: which base pipeline stays loaded, and where it runs."""

    source: str = field(
        default="demo",
        metadata=_doc(
            '"demo" (the built-in model trained on procedural floor plans and interiors, 64x64 px; '
            '"demo-random": a tiny one with random weights), a diffusers folder, a single-file '
            ".safetensors checkpoint, or a Hugging Face hub id such as "
            '"stable-diffusion-v1-5/stable-diffusion-v1-5" (read from the local cache).',
            _non_empty,
        ),
    )
    device: Literal["auto", "cuda", "mps", "cpu"] = field(
        default="auto", metadata=_doc("auto picks CUDA, then Apple MPS, then the CPU.")
    )
    dtype: Literal["auto", "fp16", "bf16", "fp32"] = field(
        default="auto", metadata=_doc("auto is fp16 on a GPU and fp32 on the CPU.")
    )
    variant: str = field(
        default="auto",
        metadata=_doc(
            "What a single-file checkpoint is. auto: read from its tensors, a NAME.yaml beside it, or a "
            'v_pred marker (docs/models.md); pin it when the guess is wrong, e.g. "sd2-v" for a 768 px '
            'v-prediction SD 2.x model or "sd2" for a 512 px one. One of: ' + ", ".join(MODEL_VARIANTS) + ".",
            _model_variant,
        ),
    )
    config: str = field(
        default="",
        metadata=_doc(
            "A diffusers config folder (model_index.json, unet/, vae/, ...) to build a single-file "
            "checkpoint with, instead of the one Spatiora ships for its variant; for models of an unusual "
            "architecture. Empty: the shipped one."
        ),
    )
    offload: Literal["auto", "none", "model", "sequential", "group"] = field(
        default="auto",
        metadata=_doc(
            "Keep weights in RAM and bring them to the GPU as they are needed, for GPUs the model does "
            "not fit: model (each component in turn; small cost), group (blocks streamed in; more saved), "
            "sequential (layer by layer; least VRAM, slowest), none (all on the GPU). auto: none when "
            "the model and its working memory fit the free VRAM at load, else model, else sequential. "
            "CUDA only (none elsewhere)."
        ),
    )
    vae_tiling: bool = field(
        default=False,
        metadata=_doc(
            "Decode images in overlapping tiles: big images in little VRAM (faint seams are possible). "
            "A decode that runs out of memory is retried tiled either way."
        ),
    )
    vae_slicing: bool = field(
        default=False, metadata=_doc("Decode a batch one image at a time (less VRAM for batches).")
    )
    compile: bool = field(
        default=False,
        metadata=_doc(
            "torch.compile the UNet: faster steps on a GPU after a first image that compiles (tens of "
            "seconds; again at each new size). Task switches never recompile: adapters go into fixed "
            "LoRA lanes; a set that does not fit them runs uncompiled, and says why. Needs offload = "
            '"none" (or auto choosing it); fused adapters are off with it.'
        ),
    )
    compile_mode: Literal["reduce-overhead", "max-autotune-no-cudagraphs", "default"] = field(
        default="reduce-overhead",
        metadata=_doc(
            "torch.compile's mode: reduce-overhead (CUDA graphs: least launch cost), "
            "max-autotune-no-cudagraphs (tuned kernels; minutes to compile), default."
        ),
    )
    compile_rank: int = field(
        default=0,
        metadata=_doc(
            "The rank of the compiled LoRA lanes: adapters of a higher rank run uncompiled. 0: the "
            "highest rank among the configured tasks' adapters (read from their files at load).",
            _between(0, 1024),
        ),
    )


@dataclass(frozen=True)
class PathSettings:
    """`[paths]`: the folders your model files are already in."""

    installs: tuple[str, ...] = field(
        default=(),
        metadata=_doc(
            "AUTOMATIC1111, Forge, SD.Next or ComfyUI folders; their checkpoint, LoRA and embedding "
            "folders are used as they are (found by layout: models/Stable-diffusion, models/Lora, "
            "embeddings; or models/checkpoints, models/loras, models/embeddings)."
        ),
    )
    models: tuple[str, ...] = field(
        default=("models",),
        metadata=_doc(
            "Folders of single-file checkpoints (.safetensors), searched with their sub-folders; "
            "model.source and the model picker name a checkpoint by its file name."
        ),
    )
    loras: tuple[str, ...] = field(
        default=(),
        metadata=_doc(
            "More LoRA folders, searched with their sub-folders after [adapters] dir; a LoRA is "
            "named by its file name, as in <lora:NAME:0.8>."
        ),
    )
    embeddings: tuple[str, ...] = field(
        default=("embeddings",),
        metadata=_doc(
            "Folders of textual-inversion embeddings (.safetensors); an embedding's file name "
            "written in a prompt or negative prompt uses it."
        ),
    )


@dataclass(frozen=True)
class OutputSettings:
    """`[output]`: where images are written."""

    dir: str = field(
        default="outputs",
        metadata=_doc(
            "Output folder. Relative paths are taken from the config file's folder; "
            f"the {OUTPUT_DIR_ENV} environment variable overrides it.",
            _non_empty,
        ),
    )


@dataclass(frozen=True)
class PreviewSettings:
    """`[preview]`: the step previews streamed while denoising."""

    method: str = field(
        default="latent2rgb",
        metadata=_doc(
            "latent2rgb: linear projection of the predicted clean latent (about 40 us a frame); "
            "taesd: the tiny TAESD decoder (near-final colours; its weights must be on disk, see taesd); "
            "vae: full VAE decode of it (exact, far slower); none: no previews.",
            _preview_method,
        ),
    )
    taesd: str = field(
        default="",
        metadata=_doc(
            'Where the TAESD weights are, for method = "taesd": a diffusers folder (madebyollin/taesd, '
            "or madebyollin/taesdxl for SDXL) or a taesd_decoder.safetensors / taesdxl_decoder.safetensors "
            "file, or a folder holding them. Empty: looked for in the [paths] installs' vae_approx or "
            "VAE-approx folders, the cache folder's taesd/, then the Hugging Face cache."
        ),
    )
    every_n_steps: int = field(default=1, metadata=_doc("Emit a preview every N denoising steps.", _between(1, 1000)))


@dataclass(frozen=True)
class AdapterSettings:
    """`[adapters]`: where LoRA files are found."""

    dir: str = field(
        default="adapters",
        metadata=_doc(
            "Folder holding LoRA .safetensors files (NAME.safetensors, or NAME/ with one "
            ".safetensors inside). Relative paths are taken from the config file's folder.",
            _non_empty,
        ),
    )
    resident_max: int = field(
        default=4,
        metadata=_doc(
            "Most adapters kept on the device at once. Beyond it the least recently used one makes "
            "room: the next adapter is copied into its layers when they fit.",
            _between(1, 64),
        ),
    )
    ram_cache_mb: float = field(
        default=2048.0,
        metadata=_doc(
            "Most memory for adapters kept parsed in RAM, so that one leaving the device comes back "
            "without reading its file (least recently used first out; 0 turns it off).",
            _between(0, 1 << 20),
        ),
    )
    resident_mb: float = field(
        default=1024.0,
        metadata=_doc(
            "Most device memory for resident adapters; beyond it the least recently used ones leave "
            "the device (the adapters a task needs always stay, even if they alone exceed it).",
            _between(0, 1 << 20),
        ),
    )
    fuse: bool = field(
        default=False,
        metadata=_doc(
            "Merge the active adapters into the base weights for faster steps. A switch restores the "
            "touched base weights exactly from a copy kept in RAM (costs that much RAM, and a switch "
            "takes a merge instead of a few milliseconds).",
        ),
    )
    overlap_steps: int = field(
        default=0,
        metadata=_doc(
            "Overlapped loading (SwiftDiffusion's bounded asynchronous LoRA loading): when a task "
            "switch must read an adapter from disk, start denoising with the task's adapters already "
            "in memory while the file is read on another thread, and put it in after this many steps. "
            "0: off (the read finishes first). The first steps run without it, so the image differs "
            "from the sequential one; docs/benchmarks.md measures by how much.",
            _between(0, 1000),
        ),
    )
    leak_tolerance_mb: float = field(
        default=256.0,
        metadata=_doc(
            "The leak watchdog warns when memory after a switch exceeds the baseline taken after the "
            "model loaded, plus what the adapter tiers hold, by more than this.",
            _between(1, 1 << 20),
        ),
    )


@dataclass(frozen=True)
class UiSettings:
    """`[ui]`: the terminal application."""

    renderer: str = field(
        default="auto",
        metadata=_doc(
            "How images are drawn: auto (ask the terminal: kitty graphics, iTerm2 inline images, "
            "sixel, else half-cell blocks; `spatiora doctor` says what it chose and why), sixel, kitty, "
            "kitty-direct (kitty graphics placed directly, for kitty before 0.28), iterm, halfcell or "
            "unicode. --renderer overrides it.",
            lambda v: None if v in RENDERERS else f"unknown renderer {v!r}; choose one of: {', '.join(RENDERERS)}",
        ),
    )
    preview_fps: float = field(
        default=8.0,
        metadata=_doc("Most step previews drawn per second; only the newest is drawn.", _between(0.5, 60)),
    )
    preview_cpu_budget: float | Literal["auto"] = field(
        default="auto",
        metadata=_doc(
            "Most of a generation's time the UI may spend drawing (0.01 = 1%); a preview that would go "
            "over it waits (a newer one replaces it), so slow drawing lowers the preview rate, not the "
            'generation speed. "auto": 1% while the engine computes on this CPU or in this process, '
            "25% when it runs in its own process on a GPU (drawing then takes nothing from it).",
            _budget,
        ),
    )
    hardware_hz: float = field(default=4.0, metadata=_doc("Hardware pane samples per second.", _between(0.2, 20)))
    sparkline_minutes: float = field(
        default=5.0, metadata=_doc("Minutes of memory history in the hardware pane's sparkline.", _between(0.5, 60))
    )


@dataclass(frozen=True)
class EngineSettings:
    """`[engine]`: the user's own engine, the process that keeps the model warm for every window
    and command (docs/engine.md)."""

    idle_exit_minutes: float = field(
        default=30.0,
        metadata=_doc(
            "Minutes the engine stays up with no client and nothing queued, holding the model warm for the "
            "next window or command; then it exits and frees the GPU. 0 keeps it up until `spatiora engine stop`.",
            _between(0, 7 * 24 * 60),
        ),
    )


@dataclass(frozen=True)
class SecuritySettings:
    """`[security]`: what Spatiora refuses to load unless told otherwise."""

    allow_pickle: bool = field(
        default=False,
        metadata=_doc(
            "Load pickle-based checkpoints and adapters (.ckpt, .pt, .pth, .bin). Off by default: "
            "unpickling a file can run any code its author put in it. Turn it on only for files you "
            "trust; converting them to .safetensors is the safer fix.",
        ),
    )
    remote_model_switch: str = field(
        default="listed",
        metadata=_doc(
            "What clients of `spatiora serve` may do to the shared model: listed (switch it to a model "
            "`spatiora models` lists, by name) or off (they use the model the server loaded). A client never "
            "names a path on the server (docs/security.md).",
            lambda v: None if v in ("listed", "off") else f"{v!r} is not a choice; choose listed or off",
        ),
    )


_KEY = re.compile(r"^([a-z]+\+)*[a-z0-9_]+$|^.$")


def _keys(value: str) -> str | None:
    keys = [k.strip() for k in value.split(",")]
    if not all(keys) or any(not _KEY.match(k) for k in keys):
        return f'{value!r} is not a key; write keys as Textual names them, e.g. "ctrl+g" or "f5,ctrl+g"'
    return None


@dataclass(frozen=True)
class KeySettings:
    """`[keys]`: remap the application's keys (comma-separated alternatives allowed)."""

    generate: str = field(default="ctrl+g", metadata=_doc("Generate (Enter in the prompt does too).", _keys))
    cancel: str = field(default="escape", metadata=_doc("Cancel the running generation.", _keys))
    queue: str = field(
        default="ctrl+r", metadata=_doc("Show the queue: move, cancel, retry jobs; pause/resume it.", _keys)
    )
    next_task: str = field(default="ctrl+t", metadata=_doc("Switch to the next task mode.", _keys))
    history: str = field(default="ctrl+o", metadata=_doc("Open this session's and earlier images.", _keys))
    save: str = field(default="ctrl+s", metadata=_doc("Save again every image whose save failed.", _keys))
    models: str = field(default="ctrl+l", metadata=_doc("Pick the base model from the checkpoints found.", _keys))
    restart_engine: str = field(
        default="ctrl+n", metadata=_doc("Start your engine again after it stopped (shown while it is down).", _keys)
    )
    quit: str = field(default="ctrl+q", metadata=_doc("Quit.", _keys))


@dataclass(frozen=True)
class AdapterRef:
    """One adapter of a task, with the weight it is applied at."""

    name: str = field(metadata=_doc("Adapter name: the file stem in the adapters folder.", _non_empty))
    weight: float | None = field(
        default=None,
        metadata=_doc(
            "LoRA scale; left out: the adapter's default_weight from its adapter.toml, else 1.0.", _between(-5, 5)
        ),
    )


@dataclass(frozen=True)
class TaskSettings:
    """`[[tasks]]`: one task mode = adapter set + prompt template + inference settings."""

    name: str = field(metadata=_doc("Short name used on the command line and in the UI.", _non_empty))
    description: str = field(default="", metadata=_doc("One line shown beside the name."))
    adapters: tuple[AdapterRef, ...] = field(
        default=(), metadata=_doc('Adapters active in this mode, e.g. [{name = "interior", weight = 0.8}].')
    )
    prompt_template: str = field(
        default="{prompt}", metadata=_doc("Prompt sent to the model; {prompt} is replaced.", _template)
    )
    negative_prompt: str = field(default="", metadata=_doc("Negative prompt for this mode."))
    steps: int = field(default=25, metadata=_doc("Denoising steps.", _between(*STEPS_RANGE)))
    guidance: float = field(default=7.0, metadata=_doc("Classifier-free guidance scale.", _between(*GUIDANCE_RANGE)))
    scheduler: str = field(default="euler_a", metadata=_doc(f"One of: {', '.join(SCHEDULERS)}.", _scheduler))
    width: int = field(default=512, metadata=_doc("Image width in pixels (multiple of 8).", _size))
    height: int = field(default=512, metadata=_doc("Image height in pixels (multiple of 8).", _size))
    model: str | None = field(
        default=None,
        metadata=_doc(
            "The base model this mode runs on (a checkpoint name, path or hub id, like "
            "model.source); left out: the model loaded. Switching to the mode then loads it.",
            _non_empty,
        ),
    )

    def render_prompt(self, prompt: str) -> str:
        """The prompt sent to the model. Plain replacement, so braces in a prompt are safe."""
        return self.prompt_template.replace("{prompt}", prompt.strip())


DEFAULT_TASKS: tuple[TaskSettings, ...] = (
    TaskSettings(
        name="interior",
        description="Photoreal interior renderings",
        adapters=(AdapterRef("interior", 1.0),),
        prompt_template=(
            "interior design photograph of {prompt}, photorealistic, natural light, "
            "detailed materials, 35mm, high dynamic range"
        ),
        negative_prompt="blurry, distorted perspective, cartoon, lowres, watermark, text",
        steps=30,
        guidance=6.5,
        scheduler="dpmpp_2m",
        width=64,  # the demo model's size; 768x512 for an SD 1.5 model
        height=64,
    ),
    TaskSettings(
        name="floorplan",
        description="2D architectural floor plans",
        adapters=(AdapterRef("floorplan", 1.0),),
        prompt_template=(
            "2D architectural floor plan of {prompt}, top-down orthographic view, "
            "clean black lines on white, walls, doors, room labels"
        ),
        negative_prompt="perspective, 3d render, photo, shading, furniture clutter, blurry",
        steps=20,
        guidance=9.0,
        scheduler="euler",
        width=64,  # the demo model's size; 512x512 for an SD 1.5 model
        height=64,
    ),
)


@dataclass(frozen=True)
class Settings:
    """The whole configuration. `base_dir` and `source_file` come from where it was read."""

    model: ModelSettings = field(default_factory=ModelSettings, metadata=_doc("[model]"))
    paths: PathSettings = field(default_factory=PathSettings, metadata=_doc("[paths]"))
    output: OutputSettings = field(default_factory=OutputSettings, metadata=_doc("[output]"))
    preview: PreviewSettings = field(default_factory=PreviewSettings, metadata=_doc("[preview]"))
    adapters: AdapterSettings = field(default_factory=AdapterSettings, metadata=_doc("[adapters]"))
    ui: UiSettings = field(default_factory=UiSettings, metadata=_doc("[ui]"))
    keys: KeySettings = field(default_factory=KeySettings, metadata=_doc("[keys]"))
    security: SecuritySettings = field(default_factory=SecuritySettings, metadata=_doc("[security]"))
    engine: EngineSettings = field(default_factory=EngineSettings, metadata=_doc("[engine]"))
    tasks: tuple[TaskSettings, ...] = field(default=DEFAULT_TASKS, metadata=_doc("[[tasks]]"))
    base_dir: Path = field(default_factory=Path.cwd, metadata={"internal": True})
    source_file: Path | None = field(default=None, metadata={"internal": True})

    def task(self, name: str) -> TaskSettings:
        """The task called `name`; raises ConfigError listing the known ones."""
        for task in self.tasks:
            if task.name == name:
                return task
        known = ", ".join(t.name for t in self.tasks)
        raise ConfigError(f"unknown task {name!r}; known tasks: {known} (see `spatiora tasks`)")

    @property
    def output_dir(self) -> Path:
        override = os.environ.get(OUTPUT_DIR_ENV)
        return self._resolve(override) if override else self._resolve(self.output.dir)

    @property
    def adapter_dir(self) -> Path:
        return self._resolve(self.adapters.dir)

    def resolve_path(self, value: str) -> Path:
        """A path from the config: `~` expanded, relative ones taken from the config file's folder."""
        return self._resolve(value)

    def _resolve(self, value: str) -> Path:
        path = Path(value).expanduser()
        return path if path.is_absolute() else (self.base_dir / path)


# --- reading -------------------------------------------------------------------------------


def user_config_dir() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config"
    return Path(base) / "spatiora"


def user_cache_dir() -> Path:
    if os.environ.get(CACHE_DIR_ENV):
        return Path(os.environ[CACHE_DIR_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "spatiora"


def user_state_dir() -> Path:
    """Where the job queue is kept between runs ($SPATIORA_STATE_DIR, else XDG's state folder)."""
    if os.environ.get(STATE_DIR_ENV):
        return Path(os.environ[STATE_DIR_ENV]).expanduser()
    base = os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state"
    return Path(base) / "spatiora"


def find_config(explicit: str | os.PathLike[str] | None = None) -> Path | None:
    """The config file to read: --config, then $SPATIORA_CONFIG, ./config.toml, the user dir.

    Returns None when none exists (built-in defaults apply). A path the user named explicitly
    must exist.
    """
    for given, origin in ((explicit, "--config"), (os.environ.get(CONFIG_ENV), CONFIG_ENV)):
        if given:
            path = Path(given).expanduser()
            if not path.is_file():
                raise ConfigError(f"{origin} names {path}, which is not a file; fix the path or drop it")
            return path
    for candidate in (Path.cwd() / "config.toml", user_config_dir() / "config.toml"):
        if candidate.is_file():
            return candidate
    return None


def load_settings(explicit: str | os.PathLike[str] | None = None) -> Settings:
    """Find and read the configuration (see find_config); defaults when there is none."""
    path = find_config(explicit)
    if path is None:
        return Settings()
    return read_settings(path)


def read_settings(path: Path) -> Settings:
    """Read and validate one config file."""
    try:
        text = path.read_text(encoding="utf-8-sig")  # a BOM (Windows editors write one) is not TOML
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read it: {exc}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    return parse_settings(data, path)


def parse_settings(data: Mapping[str, Any], path: Path | None = None) -> Settings:
    """Validate a parsed TOML document into Settings; errors name `path` and the key."""
    where = str(path) if path else "config"
    settings = _build(Settings, data, "", where)
    names = [t.name for t in settings.tasks]
    if not names:
        raise ConfigError(f"{where}: tasks: at least one [[tasks]] entry is needed")
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ConfigError(f"{where}: tasks: task names must be unique; repeated: {', '.join(dupes)}")
    base_dir = path.resolve().parent if path else Path.cwd()
    built: Settings = dataclasses.replace(settings, base_dir=base_dir, source_file=path)
    return built


def _type_name(value: Any) -> str:
    names = {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "a list", dict: "a table"}
    return names.get(type(value), type(value).__name__)


def _build(cls: type, table: Any, prefix: str, where: str) -> Any:
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: {prefix or 'top level'}: expected a table, got {_type_name(table)}")
    hints = typing.get_type_hints(cls)
    public = [f for f in dataclasses.fields(cls) if not f.metadata.get("internal")]
    allowed = {f.name for f in public}
    for key in table:
        if key not in allowed:
            raise ConfigError(f"{where}: {prefix}{key}: unknown key; allowed here: {', '.join(sorted(allowed))}")
    kwargs: dict[str, Any] = {}
    for f in public:
        key = f"{prefix}{f.name}"
        if f.name not in table:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ConfigError(f"{where}: {key}: missing; {f.metadata.get('doc', '')}".rstrip("; "))
            continue
        value = _convert(hints[f.name], table[f.name], key, where)
        check = f.metadata.get("check")
        problem = check(value) if check else None
        if problem:
            raise ConfigError(f"{where}: {key}: {problem}")
        kwargs[f.name] = value
    return cls(**kwargs)


def _convert(hint: Any, value: Any, key: str, where: str) -> Any:
    origin = typing.get_origin(hint)
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return _build(hint, value, f"{key}.", where)
    if origin is Literal:
        choices = typing.get_args(hint)
        if value not in choices:
            raise ConfigError(
                f"{where}: {key}: {value!r} is not allowed; choose one of: {', '.join(map(str, choices))}"
            )
        return value
    if origin is tuple:
        item_type = typing.get_args(hint)[0]
        if not isinstance(value, list):
            raise ConfigError(f"{where}: {key}: expected a list, got {_type_name(value)}")
        return tuple(_convert(item_type, item, f"{key}[{i}]", where) for i, item in enumerate(value))
    if origin in (typing.Union, types.UnionType):
        options = [arg for arg in typing.get_args(hint) if arg is not type(None)]
        # TOML has no null, so a value given for `X | None` is an X.
        return _convert(options[0], value, key, where) if len(options) == 1 else value
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint in (str, int, float, bool) and (type(value) is not hint):
        raise ConfigError(f"{where}: {key}: expected {_type_name(hint())}, got {_type_name(value)} ({value!r})")
    return value


# --- writing -------------------------------------------------------------------------------


def settings_to_toml(settings: Settings) -> str:
    """Serialise settings as TOML (tomli-w) that read_settings accepts unchanged."""

    def plain(obj: Any) -> Any:
        if dataclasses.is_dataclass(obj):
            return {
                f.name: plain(getattr(obj, f.name))
                for f in dataclasses.fields(obj)
                if not f.metadata.get("internal") and getattr(obj, f.name) is not None  # TOML has no null
            }
        if isinstance(obj, tuple):
            return [plain(o) for o in obj]
        return obj

    header = "# Spatiora TUI configuration. Reference: docs/configuration.md\n\n"
    return header + _annotate(tomli_w.dumps(plain(settings)))


_TABLE = re.compile(r"^\[\[?([a-z_]+)\]\]?$")
_KEY_LINE = re.compile(r"^([a-z_]+) = ")


def _annotate(text: str) -> str:
    """Each table and key of `text` (written by tomli-w) preceded by its documentation as a
    comment, once per table or key (the second [[tasks]] is not annotated again)."""
    sections = {f.name: f.type for f in dataclasses.fields(Settings) if not f.metadata.get("internal")}
    hints = {name: typing.get_type_hints(Settings)[name] for name in sections}
    classes = {
        name: typing.get_args(hint)[0] if typing.get_origin(hint) is tuple else hint for name, hint in hints.items()
    }
    out: list[str] = []
    seen: set[tuple[str, str]] = set()
    table: str | None = None
    for line in text.splitlines():
        match = _TABLE.match(line)
        if match:
            table = match.group(1)
            if (table, "") not in seen and table in classes:
                seen.add((table, ""))
                doc = (classes[table].__doc__ or "").split(":", 1)[-1].strip()
                out += _comment(doc[:1].upper() + doc[1:])
        else:
            match = _KEY_LINE.match(line)
            if match and table in classes and (table, match.group(1)) not in seen:
                seen.add((table, match.group(1)))
                docs = {f.name: f.metadata.get("doc", "") for f in dataclasses.fields(classes[table])}
                out += _comment(docs.get(match.group(1), ""))
        out.append(line)
    return "\n".join(out) + "\n"


def _comment(text: str, width: int = 98) -> list[str]:
    return [f"# {line}" for line in textwrap.wrap(" ".join(text.split()), width - 2)]


def write_settings(settings: Settings, path: Path) -> None:
    """Write settings atomically: a crash mid-write never leaves a half-written config."""
    from spatiora_tui import atomic

    atomic.write_bytes(path, settings_to_toml(settings).encode("utf-8"))


def task_with_overrides(task: TaskSettings, **overrides: Any) -> TaskSettings:
    """`task` with per-run overrides (None = keep), each checked like the config file's values."""
    changes = {k: v for k, v in overrides.items() if v is not None}
    by_name = {f.name: f for f in dataclasses.fields(TaskSettings)}
    hints = typing.get_type_hints(TaskSettings)
    for key, value in changes.items():
        if key not in by_name:
            raise ConfigError(f"{key}: not a task setting")
        value = _convert(hints[key], value, key, "request")
        check = by_name[key].metadata.get("check")
        problem = check(value) if check else None
        if problem:
            raise ConfigError(f"{key} {problem}")
        changes[key] = value
    return dataclasses.replace(task, **changes)
