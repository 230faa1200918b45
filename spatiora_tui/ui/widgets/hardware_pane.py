"""The hardware pane: VRAM gauge (device used/total, this process, CUDA allocated/reserved), GPU
load, temperature and power; CPU, process RSS and system RAM; a memory sparkline over the last
minutes; what the engine is doing (its stage); the peak of each task, and of each stage of the
task last run. Without NVML it says so plainly and shows the host figures."""

from __future__ import annotations

import time
from collections import deque
from typing import Any

from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import Sparkline

from spatiora_tui.hw import HardwareSnapshot, Peak
from spatiora_tui.ui.text import gauge, markup_safe
from spatiora_tui.ui.widgets.readout import Readout
from spatiora_tui.units import mb_text

BAR_WIDTH = 12
SPARKLINE_REDRAW_S = 1.0


def _bar(used: float, total: float) -> str:
    return gauge(used / total if total > 0 else 0.0, BAR_WIDTH)


class HardwarePane(Vertical):
    DEFAULT_CSS = """
    HardwarePane { height: auto; }
    HardwarePane Readout { height: auto; padding: 0 1; }
    HardwarePane Sparkline { height: 3; margin: 0 1; }
    """

    def __init__(self, history_samples: int, window: str, hz: float = 4.0, **kwargs: Any) -> None:
        """`history_samples` points of the sparkline at `hz` span `window`."""
        super().__init__(**kwargs)
        self._window = window
        self._hz = hz
        self._history: deque[float] = deque(maxlen=history_samples)
        self._history_label = "memory"
        self._spark_drawn = float("-inf")
        self._spark_data: tuple[float, ...] = ()
        self._last_time: float | None = None

    def compose(self) -> ComposeResult:
        yield Readout("[dim]sampling…[/]", id="hw-gpu")
        yield Readout("", id="hw-host")
        yield Readout("", id="hw-stage")
        yield Readout("", id="hw-spark-label")
        yield Sparkline([], id="hw-spark")
        yield Readout("", id="hw-peaks")

    def on_mount(self) -> None:
        self.border_title = "Hardware"

    def show(self, snap: HardwareSnapshot) -> None:
        if not self.is_attached or not self.children:
            return  # a sample that arrives while the app starts up or shuts down
        self.query_one("#hw-gpu", Readout).show(self._gpu_text(snap))
        host = snap.host
        process_cpu = (
            f" · this process {host.process_cpu_percent:.0f} %" if host.process_cpu_percent is not None else ""
        )
        self.query_one("#hw-host", Readout).show(
            f"CPU  {host.cpu_percent:4.0f} %{process_cpu}\n"
            f"RSS  {mb_text(host.process_rss_mb)} (this process)\n"
            f"RAM  {_bar(host.ram_used_mb, host.ram_total_mb)} {mb_text(host.ram_used_mb)} / {mb_text(host.ram_total_mb)}"
        )
        doing = "idle" if snap.stage is None else snap.stage + (f" · {snap.task}" if snap.task else "")
        link = f"\n[dim]link[/] {markup_safe(snap.link)}" if snap.link else ""
        self.query_one("#hw-stage", Readout).show(f"[dim]engine[/] {markup_safe(doing)}{link}")
        vram = snap.vram_mb
        label = "VRAM (this process)" if vram is not None else "RSS (no GPU)"
        if label != self._history_label:
            self._history.clear()
            self._history_label = label
        # A point per 1/hz seconds, however often samples come (slowly while the engine rests),
        # so that the line spans the minutes its label says.
        points = 1
        if self._last_time is not None and snap.time > self._last_time:
            points = min(max(1, round((snap.time - self._last_time) * self._hz)), 60)
        self._last_time = snap.time
        self._history.extend([vram if vram is not None else host.process_rss_mb] * points)
        self.query_one("#hw-spark-label", Readout).show(
            f"[dim]{label} · last {self._window}\nnow {mb_text(self._history[-1])} · max {mb_text(max(self._history))}[/]"
        )
        # The line spans minutes: redrawing it once a second is plenty, and it is the pane's
        # most expensive widget to draw.
        if time.monotonic() - self._spark_drawn >= SPARKLINE_REDRAW_S:
            self.redraw_sparkline()

    def redraw_sparkline(self) -> None:
        """Draw the sparkline from the history now (show() does so at most once a second), unless
        it would draw what is already there (a flat line at rest)."""
        self._spark_drawn = time.monotonic()
        data = tuple(self._history)
        if data == self._spark_data:
            return
        self._spark_data = data
        self.query_one("#hw-spark", Sparkline).data = list(data)

    @staticmethod
    def _gpu_text(snap: HardwareSnapshot) -> str:
        gpu = snap.gpu
        if gpu is None:
            return f"[b]{markup_safe(snap.nvml_error or 'no GPU readings')}[/]"
        lines = [f"[b]{markup_safe(gpu.name)}[/]"]
        if gpu.memory_used_mb is not None and gpu.memory_total_mb:
            lines.append(
                f"VRAM {_bar(gpu.memory_used_mb, gpu.memory_total_mb)} "
                f"{mb_text(gpu.memory_used_mb)} / {mb_text(gpu.memory_total_mb)}"
            )
        detail = []
        if gpu.process_memory_mb is not None:
            detail.append(f"this process {mb_text(gpu.process_memory_mb)}")
        if snap.cuda is not None:
            detail.append(f"CUDA alloc {mb_text(snap.cuda.allocated_mb)} · reserved {mb_text(snap.cuda.reserved_mb)}")
        if detail:
            lines.append("     " + " · ".join(detail))
        load = []
        if gpu.utilization_pct is not None:
            load.append(f"load {gpu.utilization_pct:.0f} %")
        if gpu.temperature_c is not None:
            load.append(f"{gpu.temperature_c:.0f} °C")
        if gpu.power_w is not None:
            limit = f" / {gpu.power_limit_w:.0f}" if gpu.power_limit_w else ""
            load.append(f"{gpu.power_w:.0f}{limit} W")
        if load:
            lines.append("GPU  " + " · ".join(load))
        if gpu.graphics_clock_mhz is not None:
            memory_clock = f" · mem {gpu.memory_clock_mhz:.0f}" if gpu.memory_clock_mhz is not None else ""
            lines.append(f"     clock {gpu.graphics_clock_mhz:.0f}{memory_clock} MHz")
        return "\n".join(lines)

    def show_peaks(self, by_task: dict[str, Peak], task: str | None, by_stage: dict[str, Peak]) -> None:
        """Peaks of every task, then those of each stage of `task` (the one last run)."""
        if not self.is_attached or not self.children:
            return
        if not by_task:
            self.query_one("#hw-peaks", Readout).show("[dim]task peaks appear after a generation[/]")
            return
        rows = ["[b]peaks by task[/]"]
        for name, peak in by_task.items():
            vram = f"VRAM {mb_text(peak.vram_mb)} · " if peak.vram_mb is not None else ""
            rows.append(f"{markup_safe(name):<10} {vram}RSS {mb_text(peak.rss_mb)}")
        if task and by_stage:
            rows.append(f"[b]by stage[/] [dim]({markup_safe(task)}, {by_stage_count(by_stage)})[/]")
            for stage, peak in by_stage.items():
                vram = f"VRAM {mb_text(peak.vram_mb)} · " if peak.vram_mb is not None else ""
                rows.append(f"{stage:<14} {vram}RSS {mb_text(peak.rss_mb)}")
        self.query_one("#hw-peaks", Readout).show("\n".join(rows))


def by_stage_count(by_stage: dict[str, Peak]) -> str:
    runs = max(peak.passes for peak in by_stage.values())
    return "1 run" if runs == 1 else f"over {runs} runs"
