"""The contract between the engine and everything that drives it (CLI, TUI, benchmarks).

Plain frozen dataclasses and a Protocol, importable without torch: the UI reaches the engine
only through this module (and engine/init_image.py, Pillow only, to check an init image as it is
typed), so a fake engine can stand in for tests.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from spatiora_tui.hw.telemetry import StageRecord
from spatiora_tui.notices import Notice

if TYPE_CHECKING:
    from PIL.Image import Image

    from spatiora_tui.config import TaskSettings


#: The model families Spatiora runs, as people name them.
from spatiora_tui.errors import EngineError as EngineError  # the contract's errors (spatiora_tui/errors.py)
from spatiora_tui.errors import EngineOOM as EngineOOM
from spatiora_tui.library.families import FAMILY_LABELS as FAMILY_LABELS  # the contract carries the labels


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether `exc` is a device running out of memory. CUDA and MPS say "out of memory"; the
    CPU allocator says "not enough memory" or "can't allocate memory" in a plain RuntimeError."""
    if not isinstance(exc, (RuntimeError, MemoryError)):
        return False
    text = str(exc).lower()
    return isinstance(exc, MemoryError) or any(
        words in text for words in ("out of memory", "not enough memory", "can't allocate memory")
    )


@dataclass(frozen=True)
class GenerationRequest:
    """What the user asked for. Fields left as None take the task's settings."""

    prompt: str
    task: str
    seed: int | None = None
    steps: int | None = None
    guidance: float | None = None
    width: int | None = None
    height: int | None = None
    negative_prompt: str | None = None
    scheduler: str | None = None
    #: Image-to-image: the path of the image to start from, and how much to change it (0..1,
    #: A1111's "Denoising strength"; None: 0.75). Without an init image the strength is unused.
    init_image: str | None = None
    strength: float | None = None


@dataclass(frozen=True)
class AdapterUse:
    """One adapter applied in a generation, with the hash that identifies its file."""

    name: str
    weight: float
    sha256: str
    #: AUTOMATIC1111's hash of a LoRA (Kohya's "addnet" hash: sha256 of the tensor data after
    #: the .safetensors header, or the file's own sshs_model_hash); "" when unknown.
    a1111_hash: str = ""

    @property
    def short_hash(self) -> str:
        """What AUTOMATIC1111 writes in `Lora hashes`: 12 digits of its hash (the file's sha256
        where the A1111 hash is unknown)."""
        return (self.a1111_hash or self.sha256)[:12]


@dataclass(frozen=True)
class EmbeddingUse:
    """A textual-inversion embedding a prompt used, with its file's sha256 (AUTOMATIC1111's
    `TI hashes` take its first 12 digits)."""

    name: str
    sha256: str

    @property
    def short_hash(self) -> str:
        return self.sha256[:12]


@dataclass(frozen=True)
class ResolvedRequest:
    """A request with every setting filled in: exactly what was run."""

    task: str
    prompt: str
    full_prompt: str
    negative_prompt: str
    seed: int
    steps: int
    guidance: float
    scheduler: str
    width: int
    height: int
    #: Every adapter applied: the task's, then those of the prompt's <lora:...> tags.
    adapters: tuple[AdapterUse, ...] = ()
    #: The embeddings the prompt and negative prompt named.
    embeddings: tuple[EmbeddingUse, ...] = ()
    #: The names of the adapters that came from <lora:...> tags in the prompt.
    prompt_loras: tuple[str, ...] = ()
    #: Image-to-image: the init image's absolute path and file sha256, and the strength
    #: ("" and None for text-to-image). `steps` stays as asked; int(steps x strength) ran.
    init_image: str = ""
    init_image_sha256: str = ""
    strength: float | None = None


@dataclass(frozen=True)
class ModelInfo:
    """The loaded base model."""

    name: str
    source: str  # as loaded: an absolute path, a hub id or "demo"
    kind: str  # demo | folder | single_file | hub; "random" for the benchmarks' random-weight architectures
    family: str  # sd1 | sd2 | sdxl
    device: str
    dtype: str
    random_weights: bool = False
    #: What a single-file checkpoint was loaded as, e.g. "SD 2.x 768 v-prediction"; "" otherwise.
    variant: str = ""
    #: sha256 of a single-file checkpoint (AUTOMATIC1111's "Model hash" is its first 10 digits).
    sha256: str | None = None
    #: The step-preview method in use ("latent2rgb", "TAESD", "VAE"; "" when previews are off).
    preview: str = ""
    #: How the weights sit on the device: none (all there), model, group or sequential offload.
    offload: str = "none"
    #: The UNet's torch.compile mode ("" when it runs uncompiled).
    compiled: str = ""

    @property
    def short_hash(self) -> str | None:
        return self.sha256[:10] if self.sha256 else None

    @property
    def family_label(self) -> str:
        return FAMILY_LABELS.get(self.family, self.family)


@dataclass(frozen=True)
class ModelChoice:
    """A checkpoint found in the model folders, as the model picker lists it."""

    name: str
    path: str
    size_mb: float
    #: What it is ("SD 1.x", "SDXL inpainting"), or why it cannot be loaded.
    kind: str
    loadable: bool = True
    current: bool = False  # the base model loaded now


@dataclass(frozen=True)
class ModelSwitch:
    """The result of replacing the base model."""

    model: ModelInfo
    previous: str | None
    duration_ms: float
    rss_before_mb: float | None = None
    rss_after_mb: float | None = None
    vram_before_mb: float | None = None
    vram_after_mb: float | None = None
    #: One line per task adapter that does not fit the new model, and other things to know.
    notes: tuple[str, ...] = ()

    def summary(self) -> str:
        text = f"loaded {self.model.name} ({self.model.variant or self.model.family_label}) in {self.duration_ms / 1000:.1f} s"
        if self.rss_before_mb is not None and self.rss_after_mb is not None:
            text += f", RSS {self.rss_before_mb:.0f} -> {self.rss_after_mb:.0f} MB"
        return text


@dataclass(frozen=True)
class StepPreview:
    """One denoising step done. `image` is a small RGB preview of where denoising is heading on
    the steps that carry one ([preview] every_n_steps, and the last step), None on the others
    and when previews are off; progress is reported at every step either way."""

    step: int
    total: int
    image: Image | None
    elapsed_s: float


@dataclass(frozen=True)
class AdapterSwitch:
    """The result of activating a task's adapter set."""

    task: str
    adapters: tuple[tuple[str, float], ...]
    duration_ms: float
    loaded_from_disk: tuple[str, ...] = ()
    #: (adapter, how it reached the device) for adapters that were not resident, e.g.
    #: ("floorplan", "in-place from RAM"); see LoraManager.
    paths: tuple[tuple[str, str], ...] = ()
    #: (adapter, the tier it came from): active | resident | RAM | RAM (prefetched) | disk.
    tiers: tuple[tuple[str, str], ...] = ()
    #: (phase, ms) in order: unfuse, read, parse, to device, inject, copy, activate, fuse
    #: (only those that took place).
    phases_ms: tuple[tuple[str, float], ...] = ()
    rss_before_mb: float | None = None
    rss_after_mb: float | None = None
    vram_before_mb: float | None = None  # CUDA allocated; None off CUDA
    vram_after_mb: float | None = None
    fused: bool = False
    #: The leak watchdog's warning, when memory is above the baseline beyond its tolerance.
    warning: Notice | None = None
    #: Set when the task runs on another base model, which was loaded first.
    model_switch: ModelSwitch | None = None
    #: With a compiled UNet, why this task's adapters run uncompiled ("" otherwise).
    uncompiled: str = ""

    def summary(self) -> str:
        """One line for a person: time, where each adapter came from, the phases that took time."""
        text = f"switched in {self.duration_ms:.0f} ms"
        if self.paths:
            text += "".join(f", {name} {how}" for name, how in self.paths)
        slow = [(p, ms) for p, ms in self.phases_ms if ms >= 0.5]
        if slow and (self.paths or self.fused):
            text += " (" + ", ".join(f"{p} {ms:.0f}" for p, ms in slow) + " ms)"
        if self.fused:
            text += ", fused"
        if self.uncompiled:
            text += f"; runs uncompiled: {self.uncompiled}"
        return text


@dataclass(frozen=True)
class Timings:
    """Wall-clock figures of one generation, in milliseconds."""

    switch_ms: float = 0.0
    first_preview_ms: float | None = None
    image_ms: float | None = None  # request start to decoded final image
    decode_ms: float | None = None
    step_ms: tuple[float, ...] = ()
    #: An overlapped switch ([adapters] overlap_steps): how long putting the late adapters in
    #: held the denoising loop at step K (waiting for their read included); None when the
    #: image had no overlapped switch, or was cancelled before step K.
    late_patch_ms: float | None = None


@dataclass(frozen=True)
class MemoryPeaks:
    """Peak memory of one generation, in MiB. CUDA figures are None off-GPU."""

    peak_rss_mb: float
    process_peak_rss_mb: float
    cuda_max_allocated_mb: float | None = None
    cuda_max_reserved_mb: float | None = None


@dataclass(frozen=True)
class GenerationResult:
    """A finished (or cancelled) generation. A cancelled one carries no image."""

    params: ResolvedRequest
    model: ModelInfo
    image: Image | None
    cancelled: bool
    steps_done: int
    timings: Timings
    memory: MemoryPeaks
    warnings: tuple[str, ...] = field(default=())  # Notices, each with its kind
    #: Each stage this request went through (adapter switch, text encode, denoise, VAE decode),
    #: with its time and peak memory; see hw/telemetry.py.
    stages: tuple[StageRecord, ...] = field(default=())


StepCallback = Callable[[StepPreview], None]


class Engine(Protocol):
    """What the CLI and the UI need from an engine."""

    @property
    def tasks(self) -> tuple[TaskSettings, ...]: ...

    @property
    def active_task(self) -> str | None: ...

    def load(self, on_progress: Callable[[str], object] | None = None, source: str | None = None) -> ModelInfo:
        """Load the base pipeline (once): `source`, else model.source (a first task that names
        its own model loads that one directly). Heavy imports happen here, not at import time."""
        ...

    def switch_task(self, name: str, on_progress: Callable[[str], object] | None = None) -> AdapterSwitch:
        """Activate a task's adapters without touching the base weights; a task that names
        another base model (`model` in its settings) loads that first, reporting on_progress."""
        ...

    @property
    def model(self) -> ModelInfo | None:
        """The base model loaded now."""
        ...

    def models(self) -> tuple[ModelChoice, ...]:
        """The checkpoints in the model folders (read from their headers, nothing loaded)."""
        ...

    def switch_model(self, source: str, on_progress: Callable[[str], object] | None = None) -> ModelSwitch:
        """Replace the base model (a checkpoint name, path or hub id), freeing the previous one
        completely; the adapter RAM cache is kept when the family stays the same."""
        ...

    def prefetch(self, task: str) -> None:
        """Read a task's adapters into RAM in the background (returns at once; errors wait for
        the switch). Called when a task is highlighted or a switch is queued."""
        ...

    def generate(
        self,
        request: GenerationRequest,
        on_step: StepCallback | None = None,
        cancel: threading.Event | None = None,
    ) -> GenerationResult:
        """Run one generation; `cancel` stops it within one step."""
        ...
