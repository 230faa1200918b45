"""Stage-aware telemetry: which stage of a generation takes the time and the memory.

The engine marks stages (load base, adapter switch, text encode, denoise, VAE decode, save) and
the task mode in force; every hardware snapshot taken meanwhile carries both. Peaks are kept per
(task, stage) and per task, and each finished pass through a stage becomes a StageRecord, which a
generation's metadata keeps.

Samples come from whoever drives `sample()`: the TUI's hardware worker, or `start()`'s own
thread in the headless commands. Entering and leaving a stage takes a sample too, so the
shortest stage has figures. Where the platform allows, the peaks are exact rather than sampled:
the kernel's RSS high-water mark is reset when a stage begins and read when it ends (Linux), and
torch's CUDA peak counters likewise — a 4 Hz sampler would miss a text encode that takes 50 ms.

No torch import here: CUDA counters are read only when the engine has imported torch already.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field, replace
from typing import Any, Generic, Protocol, TypeVar

from spatiora_tui.hw.memory import cuda_torch, peak_rss_since_reset_mb, reset_peak_rss
from spatiora_tui.hw.sampler import HardwareSampler, HardwareSnapshot
from spatiora_tui.hw.watchdog import LeakWatchdog
from spatiora_tui.units import MB

#: The stages the engine marks, in the order a request goes through them (VAE encode: the init
#: image of an image-to-image request).
STAGES = ("load base", "adapter switch", "text encode", "VAE encode", "denoise", "VAE decode", "save")

#: Samples a second while no stage is open (the app at rest); `hz` applies while one is.
IDLE_HZ = 1.0


def _max(a: float | None, b: float | None) -> float | None:
    if a is None:
        return b
    return a if b is None else max(a, b)


@dataclass(frozen=True)
class Peak:
    """Peak memory over some samples and stage passes, and the time those passes took.

    rss_mb: process RSS. vram_mb: this process's GPU memory (NVML's per-process figure, else
    CUDA reserved). cuda_allocated_mb: torch's allocated CUDA memory (exact on CUDA).
    """

    rss_mb: float = 0.0
    vram_mb: float | None = None
    cuda_allocated_mb: float | None = None
    cuda_reserved_mb: float | None = None
    ms: float = 0.0  # time spent in the passes (not in samples alone)
    passes: int = 0

    def with_snapshot(self, snap: HardwareSnapshot) -> Peak:
        return replace(
            self,
            rss_mb=max(self.rss_mb, snap.host.process_rss_mb),
            vram_mb=_max(self.vram_mb, snap.vram_mb),
            cuda_allocated_mb=_max(self.cuda_allocated_mb, snap.cuda.allocated_mb if snap.cuda else None),
            cuda_reserved_mb=_max(self.cuda_reserved_mb, snap.cuda.reserved_mb if snap.cuda else None),
        )

    def with_record(self, record: StageRecord) -> Peak:
        return Peak(
            rss_mb=max(self.rss_mb, record.peak_rss_mb),
            vram_mb=_max(self.vram_mb, record.peak_vram_mb),
            cuda_allocated_mb=_max(self.cuda_allocated_mb, record.peak_cuda_allocated_mb),
            cuda_reserved_mb=_max(self.cuda_reserved_mb, record.peak_cuda_reserved_mb),
            ms=self.ms + record.ms,
            passes=self.passes + 1,
        )


@dataclass(frozen=True)
class StageRecord:
    """One pass through one stage: how long it took and the most memory it held."""

    stage: str
    task: str | None
    ms: float
    peak_rss_mb: float
    peak_vram_mb: float | None = None
    peak_cuda_allocated_mb: float | None = None
    peak_cuda_reserved_mb: float | None = None
    #: True when the RSS peak is the kernel's high-water mark (exact), False when sampled.
    exact_rss: bool = False


@dataclass
class _OpenStage:
    name: str
    task: str | None
    start: float
    peak: Peak = field(default_factory=Peak)
    exact_rss: bool = False


class CudaPeaks:
    """torch's CUDA peak counters, if torch is imported and CUDA initialised (never imports it)."""

    def reset(self) -> None:
        torch = cuda_torch()
        if torch is not None:
            torch.cuda.reset_peak_memory_stats()

    def read(self) -> tuple[float, float] | None:
        """(max allocated, max reserved) in MB since the last reset."""
        torch = cuda_torch()
        if torch is None:
            return None
        return torch.cuda.max_memory_allocated() / MB, torch.cuda.max_memory_reserved() / MB


T = TypeVar("T")


class Listeners(Generic[T]):
    """Callbacks (for hardware snapshots, a link's state...), added and removed from any thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: list[Callable[[T], object]] = []

    def subscribe(self, listener: Callable[[T], object]) -> Callable[[], None]:
        """Add `listener`; returns the call that removes it."""
        with self._lock:
            self._items.append(listener)

        def unsubscribe() -> None:
            with self._lock:
                if listener in self._items:
                    self._items.remove(listener)

        return unsubscribe

    def tell(self, value: T) -> None:
        """Call every listener with `value` (outside the lock: a listener may unsubscribe)."""
        with self._lock:
            listeners = list(self._items)
        for listener in listeners:
            listener(value)


class HardwareFeed(Protocol):
    """What a view needs of the hardware: snapshots as they are taken, the peaks, and stages to
    mark. Telemetry samples this machine; remote/telemetry.py's RemoteTelemetry polls the engine
    in another process (or on another machine) for its own."""

    @property
    def latest(self) -> HardwareSnapshot | None: ...

    def subscribe(self, listener: Callable[[HardwareSnapshot], object]) -> Callable[[], None]: ...

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def peaks_by_task(self) -> dict[str, Peak]: ...

    def peaks_by_stage(self, task: str | None = None) -> dict[str, Peak]: ...

    def stage(self, name: str, task: str | None = None) -> AbstractContextManager[None]: ...


class Telemetry:
    """The sampler, the stage and task in force, and the peaks they add up to. Thread-safe.

    Args:
        sampler: where snapshots come from (tests pass one with recorded backends).
        hz: the rate of `start()`'s thread.
        leak_tolerance_mb: the watchdog's tolerance (see hw/watchdog.py).
        exact_peaks: reset and read the kernel's and CUDA's peak counters at stage boundaries;
            off in tests that feed recorded readings, where only sampled peaks are wanted.
        history: how many stage records to keep.
    """

    def __init__(
        self,
        sampler: HardwareSampler | None = None,
        *,
        hz: float = 4.0,
        leak_tolerance_mb: float = 256.0,
        exact_peaks: bool = True,
        history: int = 4096,
    ) -> None:
        self.sampler = sampler or HardwareSampler()
        self.hz = hz
        self.idle_hz = min(hz, IDLE_HZ)
        self.watchdog = LeakWatchdog(leak_tolerance_mb)
        self._exact = exact_peaks
        self._cuda = CudaPeaks()
        self._lock = threading.RLock()
        self._task: str | None = None
        self._stack: list[_OpenStage] = []
        self._by_stage: dict[tuple[str | None, str], Peak] = {}
        self._by_task: dict[str, Peak] = {}
        self._records: deque[tuple[int, StageRecord]] = deque(maxlen=history)
        self._seq = 0
        self._listeners: Listeners[HardwareSnapshot] = Listeners()
        self._latest: HardwareSnapshot | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._wake = threading.Event()  # a stage began: sample at full rate from now

    @classmethod
    def from_settings(cls, settings: Any) -> Telemetry:
        """The telemetry a Settings asks for: [ui] hardware_hz, [adapters] leak_tolerance_mb."""
        return cls(hz=settings.ui.hardware_hz, leak_tolerance_mb=settings.adapters.leak_tolerance_mb)

    # -- state ---------------------------------------------------------------------------------

    @property
    def current_stage(self) -> str | None:
        """The innermost stage in force, None when the engine is idle."""
        with self._lock:
            return self._stack[-1].name if self._stack else None

    @property
    def task(self) -> str | None:
        with self._lock:
            return self._task

    def set_task(self, task: str | None) -> None:
        """The task mode that following samples and stages belong to."""
        with self._lock:
            self._task = task

    @property
    def latest(self) -> HardwareSnapshot | None:
        return self._latest

    # -- sampling ------------------------------------------------------------------------------

    def sample(self) -> HardwareSnapshot:
        """Take one snapshot, tag it with the stage and task in force, fold it into the peaks and
        hand it to the listeners. Calls never overlap (the sampler serialises them)."""
        raw = self.sampler.sample()
        with self._lock:
            stage = self._stack[-1].name if self._stack else None
            snap = replace(raw, stage=stage, task=self._task)
            for open_stage in self._stack:
                open_stage.peak = open_stage.peak.with_snapshot(snap)
            if self._task is not None and stage is not None:
                # Idle samples are not a task's peak: the pane shows what work on a task took.
                self._by_task[self._task] = self._by_task.get(self._task, Peak()).with_snapshot(snap)
            self._latest = snap
        self._listeners.tell(snap)
        return snap

    def subscribe(self, listener: Callable[[HardwareSnapshot], object]) -> Callable[[], None]:
        """Call `listener` with every snapshot (on the sampling thread). Returns an unsubscribe."""
        return self._listeners.subscribe(listener)

    def start(self) -> None:
        """Sample in a daemon thread until stop(); one loop, so samples never overlap. The rate
        is `hz` while a stage is open (the engine works) and `idle_hz` while none is: at rest the
        figures hardly move, and every sample costs the listeners a redraw."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="spatiora-telemetry", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                self.sample()
            except Exception:  # a backend that fails is reported in its reading; never stop sampling
                pass
            self._wake.wait(max(0.0, self.period() - (time.monotonic() - started)))
            self._wake.clear()

    def period(self) -> float:
        """Seconds to the next sample: 1/hz while the engine works, 1/IDLE_HZ at rest."""
        with self._lock:
            busy = bool(self._stack)
        return 1.0 / (self.hz if busy else min(self.hz, self.idle_hz))

    # -- stages --------------------------------------------------------------------------------

    def enter(self, name: str, task: str | None = None) -> None:
        """Begin stage `name` (nested stages are allowed; the outer one keeps counting)."""
        with self._lock:
            if task is not None:
                self._task = task
            exact = False
            if self._exact:
                self._fold_exact_peaks()  # into the stages already open, before the reset
                exact = reset_peak_rss()
                self._cuda.reset()
            self._stack.append(_OpenStage(name=name, task=self._task, start=time.perf_counter(), exact_rss=exact))
        self._sample_quietly()
        self._wake.set()  # the sampling thread, if idle-slow, takes up the full rate now

    def exit(self) -> StageRecord | None:
        """End the innermost stage and record it."""
        self._sample_quietly()
        with self._lock:
            if not self._stack:
                return None
            if self._exact:
                self._fold_exact_peaks()
            done = self._stack.pop()
            record = StageRecord(
                stage=done.name,
                task=done.task,
                ms=(time.perf_counter() - done.start) * 1000.0,
                peak_rss_mb=done.peak.rss_mb,
                peak_vram_mb=done.peak.vram_mb,
                peak_cuda_allocated_mb=done.peak.cuda_allocated_mb,
                peak_cuda_reserved_mb=done.peak.cuda_reserved_mb,
                exact_rss=done.exact_rss,
            )
            key = (record.task, record.stage)
            self._by_stage[key] = self._by_stage.get(key, Peak()).with_record(record)
            if record.task is not None:
                self._by_task[record.task] = self._by_task.get(record.task, Peak()).with_record(record)
            self._seq += 1
            self._records.append((self._seq, record))
            return record

    @contextmanager
    def stage(self, name: str, task: str | None = None) -> Iterator[None]:
        self.enter(name, task)
        depth = len(self._stack)
        try:
            yield
        finally:
            self.close_to(depth - 1)

    def close_to(self, depth: int) -> None:
        """Exit stages until `depth` remain (after an error or a cancel left some open)."""
        while len(self._stack) > depth:
            self.exit()

    @property
    def depth(self) -> int:
        with self._lock:
            return len(self._stack)

    def _fold_exact_peaks(self) -> None:
        """The kernel's RSS high-water mark and torch's CUDA peaks since the last reset, into
        every open stage."""
        hwm = peak_rss_since_reset_mb()
        if hwm is not None:
            for open_stage in self._stack:
                open_stage.peak = replace(open_stage.peak, rss_mb=max(open_stage.peak.rss_mb, hwm))
        peaks = self._cuda.read()
        if peaks is None:
            return
        allocated, reserved = peaks
        for open_stage in self._stack:
            p = open_stage.peak
            open_stage.peak = replace(
                p,
                cuda_allocated_mb=_max(p.cuda_allocated_mb, allocated),
                cuda_reserved_mb=_max(p.cuda_reserved_mb, reserved),
                vram_mb=_max(p.vram_mb, reserved),
            )

    def _sample_quietly(self) -> None:
        try:
            self.sample()
        except Exception:
            pass

    # -- results -------------------------------------------------------------------------------

    def mark(self) -> int:
        """A bookmark for records_since()."""
        with self._lock:
            return self._seq

    def records_since(self, mark: int) -> tuple[StageRecord, ...]:
        with self._lock:
            return tuple(record for seq, record in self._records if seq > mark)

    def peaks_by_task(self) -> dict[str, Peak]:
        with self._lock:
            return dict(self._by_task)

    def peaks_by_stage(self, task: str | None = None) -> dict[str, Peak]:
        """Peaks per stage for one task (None: the stages outside any task, like load base)."""
        with self._lock:
            found = {stage: peak for (t, stage), peak in self._by_stage.items() if t == task}
        return {stage: found[stage] for stage in sorted(found, key=_stage_order)}


def _stage_order(stage: str) -> tuple[int, str]:
    return (STAGES.index(stage) if stage in STAGES else len(STAGES), stage)


def format_ms(ms: float) -> str:
    return f"{ms:.0f} ms" if ms < 1000 else f"{ms / 1000:.2f} s"


def format_mb(mb: float) -> str:
    return f"{mb / 1024:.2f} GB" if mb >= 1024 else f"{mb:.0f} MB"


def stage_summary(records: tuple[StageRecord, ...] | list[StageRecord]) -> str:
    """One line for a person: each stage's time and peak memory, in order."""
    parts = []
    for r in records:
        memory = f"RSS {format_mb(r.peak_rss_mb)}"
        if r.peak_vram_mb is not None:
            memory += f", VRAM {format_mb(r.peak_vram_mb)}"
        parts.append(f"{r.stage} {format_ms(r.ms)} ({memory})")
    return " · ".join(parts) if parts else "none recorded"
