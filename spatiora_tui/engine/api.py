"""The contract between the engine and everything that drives it (CLI, TUI, benchmarks).

Plain frozen dataclasses and a Protocol, importable without torch: the UI imports this module
and nothing else from the engine package, so a fake engine can stand in for tests.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Protocol

from spatiora_tui.hw.telemetry import StageRecord

if TYPE_CHECKING:
    from PIL.Image import Image

    from spatiora_tui.config import TaskSettings


class EngineError(Exception):
    """A failure the user can act on; the message says what went wrong and what to do."""


class EngineOOM(EngineError):
    """The device ran out of memory. Memory has been released; a smaller request can succeed."""


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether `exc` is a device running out of memory. CUDA and MPS say "out of memory"; the
    CPU allocator says "not enough memory" or "can't allocate memory" in a plain RuntimeError."""
    if not isinstance(exc, (RuntimeError, MemoryError)):
        return False
    text = str(exc).lower()
    return isinstance(exc, MemoryError) or any(
        words in text for words in ("out of memory", "not enough memory", "can't allocate memory"))


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


@dataclass(frozen=True)
class AdapterUse:
    """One adapter applied in a generation, with the hash that identifies its file."""

    name: str
    weight: float
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
    adapters: tuple[AdapterUse, ...] = ()


@dataclass(frozen=True)
class ModelInfo:
    """The loaded base model."""

    name: str
    source: str
    kind: str  # demo | folder | single_file | hub
    family: str  # sd1 | sd2 | sdxl
    device: str
    dtype: str
    random_weights: bool = False

    @property
    def family_label(self) -> str:
        return {"sd1": "SD 1.x", "sd2": "SD 2.x", "sdxl": "SDXL"}.get(self.family, self.family)


@dataclass(frozen=True)
class StepPreview:
    """One denoising step done. `image` is a small RGB preview of where denoising is heading on
    the steps that carry one ([preview] every_n_steps, and the last step), None on the others
    and when previews are off; progress is reported at every step either way."""

    step: int
    total: int
    image: "Image | None"
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
    warning: str | None = None

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
        return text


@dataclass(frozen=True)
class Timings:
    """Wall-clock figures of one generation, in milliseconds."""

    switch_ms: float = 0.0
    first_preview_ms: float | None = None
    image_ms: float | None = None  # request start to decoded final image
    decode_ms: float | None = None
    step_ms: tuple[float, ...] = ()


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
    image: "Image | None"
    cancelled: bool
    steps_done: int
    timings: Timings
    memory: MemoryPeaks
    warnings: tuple[str, ...] = field(default=())
    #: Each stage this request went through (adapter switch, text encode, denoise, VAE decode),
    #: with its time and peak memory; see hw/telemetry.py.
    stages: tuple[StageRecord, ...] = field(default=())


StepCallback = Callable[[StepPreview], None]


class Engine(Protocol):
    """What the CLI and the UI need from an engine."""

    @property
    def tasks(self) -> "tuple[TaskSettings, ...]": ...

    @property
    def active_task(self) -> str | None: ...

    def load(self, on_progress: Callable[[str], None] | None = None) -> ModelInfo:
        """Load the base pipeline (once). Heavy imports happen here, not at import time."""
        ...

    def switch_task(self, name: str) -> AdapterSwitch:
        """Activate a task's adapters without touching the base weights."""
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
