"""The memory leak watchdog: memory now against the baseline taken after the base model loaded.

Holding adapters costs memory on purpose (the RAM cache, the resident adapters, the copy of base
weights fused mode keeps), so the check is against the baseline *plus what is accounted for*: a
leak is memory that nothing the manager holds explains. RSS moves by a few MB with the allocator's
moods, hence the tolerance. CUDA's allocated counter is exact, so on a GPU the same tolerance is a
loose bound there.
"""

from __future__ import annotations

from dataclasses import dataclass

from spatiora_tui.hw.memory import cuda_torch, process_rss_mb
from spatiora_tui.notices import Notice, NoticeKind
from spatiora_tui.units import MB


@dataclass(frozen=True)
class MemoryReading:
    """This process's memory at one instant: RSS, and CUDA allocated memory when CUDA is in use."""

    rss_mb: float
    vram_mb: float | None = None


def read_memory() -> MemoryReading:
    return MemoryReading(process_rss_mb(), cuda_allocated_mb())


def cuda_allocated_mb() -> float | None:
    """torch's allocated CUDA memory, if torch is imported and CUDA initialised (never imports it)."""
    torch = cuda_torch()
    if torch is None:
        return None
    try:
        return float(torch.cuda.memory_allocated()) / MB
    except Exception:
        return None


class LeakWatchdog:
    """Warns when memory stays above baseline + accounted holdings by more than the tolerance."""

    def __init__(self, tolerance_mb: float) -> None:
        self.tolerance_mb = tolerance_mb
        self.baseline: MemoryReading | None = None

    def set_baseline(self, reading: MemoryReading | None = None) -> MemoryReading:
        self.baseline = reading or read_memory()
        return self.baseline

    def excess(
        self, now: MemoryReading, held_ram_mb: float = 0.0, held_vram_mb: float = 0.0
    ) -> tuple[float, float | None]:
        """MB above baseline + holdings: (RSS, VRAM or None)."""
        if self.baseline is None:
            return 0.0, None
        rss = now.rss_mb - self.baseline.rss_mb - held_ram_mb
        vram = None
        if now.vram_mb is not None and self.baseline.vram_mb is not None:
            vram = now.vram_mb - self.baseline.vram_mb - held_vram_mb
        return rss, vram

    def check(
        self, now: MemoryReading, held_ram_mb: float = 0.0, held_vram_mb: float = 0.0, after: str = "switching adapters"
    ) -> Notice | None:
        """A warning for a person, or None when memory is within the tolerance."""
        rss, vram = self.excess(now, held_ram_mb, held_vram_mb)
        parts = []
        if rss > self.tolerance_mb:
            parts.append(f"RAM {rss:.0f} MB")
        if vram is not None and vram > self.tolerance_mb:
            parts.append(f"VRAM {vram:.0f} MB")
        if not parts:
            return None
        return Notice(
            NoticeKind.MEMORY_LEAK,
            f"memory after {after} is {' and '.join(parts)} above the baseline taken when the model "
            f"loaded, beyond what the adapters held explain (tolerance {self.tolerance_mb:.0f} MB). "
            "If it keeps growing, lower adapters.resident_max / ram_cache_mb or restart, and report it",
        )
