"""When to draw the next step preview: at most `max_fps`, and only while the UI's CPU share of
the generation so far is within `budget`.

Drawing a preview takes CPU on the UI thread, and on a machine with few cores that time comes
straight out of denoising (docs/performance.md). The pacer keeps a running account: CPU the UI
thread has used since the generation started, against `budget` times the wall time. The first
preview is always drawn (time to first preview is what a user watches for); after that an image
is drawn when the account allows it, so an expensive frame, a slow terminal or a busy hardware
pane lowers the frame rate instead of slowing the generation; a preview that has waited
MIN_PREVIEW_S is drawn anyway. Repaints of progress and hardware figures are paced the same way,
with one a second always allowed.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from spatiora_tui.engine.api import StepPreview
from spatiora_tui.jobs.events import JobStepped

if TYPE_CHECKING:
    from PIL import Image

#: The CPU budget `[ui] preview_cpu_budget = "auto"` gives: while the engine computes on the CPU
#: (every millisecond the UI draws comes out of denoising on a machine with few cores) or in the
#: app's process (the UI's drawing holds the GIL its thread needs)...
CPU_BUDGET = 0.01
#: ...and while it runs in its own process on a GPU, where drawing takes nothing from it: enough
#: for a sixel frame at every repaint of a one-second image.
APART_GPU_BUDGET = 0.25


def auto_budget(apart: bool, device: str) -> float:
    """The CPU budget of `preview_cpu_budget = "auto"` for an engine in its own process (`apart`)
    or in the app's, computing on `device` ("cuda", "mps", "cpu", …)."""
    return APART_GPU_BUDGET if apart and device != "cpu" else CPU_BUDGET


#: Longest the screen goes without a repaint while generating, budget or not (seconds).
MIN_REPAINT_S = 1.0
#: Longest a waiting step preview waits, budget or not (seconds). With steps seconds apart (a
#: real model on a CPU) the once-a-second repaints alone can use a 1% budget, and every preview
#: after the first would wait for ever; one every few seconds costs little beside such steps.
MIN_PREVIEW_S = 5.0


class PreviewPacer:
    def __init__(
        self,
        max_fps: float,
        budget: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        cpu_clock: Callable[[], float] = time.thread_time,
    ) -> None:
        if max_fps <= 0 or not 0 < budget <= 1:
            raise ValueError(f"need max_fps > 0 and 0 < budget <= 1, got {max_fps}, {budget}")
        self._min_interval = 1.0 / max_fps
        self.budget = budget
        self._clock, self._cpu_clock = clock, cpu_clock
        self._t0 = self._cpu0 = 0.0
        self._last_draw: float | None = None
        self._last_repaint: float | None = None
        self.drawn = self.skipped = 0

    def start(self) -> None:
        """A generation starts (call on the UI thread: the CPU clock is that thread's)."""
        self._t0, self._cpu0 = self._clock(), self._cpu_clock()
        self._last_draw = self._last_repaint = None
        self.drawn = self.skipped = 0

    def may_repaint(self, image_waiting: bool = False) -> bool:
        """Whether a repaint of progress and figures fits the budget now. One a second is always
        allowed, so the screen never looks frozen however slow the machine; so is the one that
        would draw the first preview (`image_waiting` and none drawn yet)."""
        now = self._clock()
        first_image = image_waiting and self._last_draw is None
        recent = self._last_repaint is not None and now - self._last_repaint < MIN_REPAINT_S
        if not first_image and recent and self._cpu_clock() - self._cpu0 > self.budget * (now - self._t0):
            return False
        self._last_repaint = now
        return True

    def should_draw(self) -> bool:
        """Whether to draw the waiting preview now; counts it as drawn if so, as skipped if not
        (the app asks again on later frames until a newer preview replaces it)."""
        now = self._clock()
        if self._last_draw is not None and now - self._last_draw < MIN_PREVIEW_S:
            too_soon = now - self._last_draw < self._min_interval
            over_budget = self._cpu_clock() - self._cpu0 > self.budget * (now - self._t0)
            if too_soon or over_budget:
                self.skipped += 1
                return False
        self._last_draw = now
        self.drawn += 1
        return True

    def drawn_per_s(self) -> float:
        """Previews drawn since start() per second of wall time (0 before any time passes)."""
        elapsed = self._clock() - self._t0
        return self.drawn / elapsed if elapsed > 0 else 0.0

    def cpu_share(self) -> float:
        """The UI thread's CPU time since start() over the wall time (0 before any time passes)."""
        elapsed = self._clock() - self._t0
        return (self._cpu_clock() - self._cpu0) / elapsed if elapsed > 0 else 0.0


class StepThrottle:
    """Which step events a runner posts to the UI: at most one per `period` seconds, always the
    last step of a job, each carrying the newest preview image made since the last one posted
    (converted to RGB here, on the runner's thread, not on the UI's). Runs on the runner thread."""

    def __init__(self, period: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._period = period
        self._clock = clock
        self._last_post = float("-inf")
        self._newest: Any = None  # the newest preview image not yet posted
        self._job = 0

    def offer(self, event: JobStepped) -> JobStepped | None:
        if event.job_id != self._job:  # a new job: nothing of the last one carries over
            self._job, self._newest, self._last_post = event.job_id, None, float("-inf")
        preview = event.preview
        if preview.image is not None:
            self._newest = preview.image
        now = self._clock()
        if preview.step < preview.total and now - self._last_post < self._period:
            return None
        self._last_post = now
        image, self._newest = self._newest, None
        if image is not None and image.mode != "RGB":
            image = image.convert("RGB")
        return dataclasses.replace(event, preview=dataclasses.replace(preview, image=image))


class PacedStep(Protocol):
    """A step of the running job, as the frame clock holds it (ui.messages.JobStepped)."""

    @property
    def preview(self) -> StepPreview: ...


class FrameClock:
    """What waits for the next repaint while a job runs: the newest step, the newest hardware
    sample, and the newest step image the pacer has not let through yet (drawn on a later frame
    unless a newer one replaces it; with slow steps every image is drawn, however tight the
    budget). The app's interval timer calls `tick` `preview_fps` times a second.

    Each repaint has a fixed cost on the UI thread, so progress, the newest preview (when the
    pacer's CPU budget allows) and the hardware figures share one, instead of one each."""

    def __init__(
        self,
        pacer: PreviewPacer,
        draw_step: Callable[[Any], object],
        draw_image: Callable[[Image.Image], object],
        draw_sample: Callable[[Any], object],
    ) -> None:
        self.pacer = pacer
        self._draw_step, self._draw_image, self._draw_sample = draw_step, draw_image, draw_sample
        self._step: PacedStep | None = None
        self._sample: object | None = None
        self._image: Image.Image | None = None
        self.running = False

    def start(self) -> None:
        """A job's first step is about to come (on the UI thread: the pacer's CPU clock is its)."""
        self.pacer.start()
        self.running = True

    def offer_step(self, step: PacedStep) -> None:
        self._step = step

    def offer_sample(self, sample: object) -> None:
        """Held for the next frame while a job runs; drawn at once otherwise."""
        if self.running:
            self._sample = sample
        else:
            self._draw_sample(sample)

    def tick(self) -> None:
        """One repaint of what changed, when the pacer's budget allows one now."""
        step = self._step
        if not self.pacer.may_repaint(image_waiting=step is not None and step.preview.image is not None):
            return  # over the CPU budget: what waits is drawn on a later tick
        self._repaint(step, self.pacer.should_draw)

    def flush(self) -> None:
        """Draw everything that waits now, whatever the budget."""
        self._repaint(self._step, lambda: True)

    def stop(self) -> None:
        """The job ended: its waiting step and image are dropped, the waiting sample drawn."""
        self.running = False
        self._step = self._image = None
        sample, self._sample = self._sample, None
        if sample is not None:
            self._draw_sample(sample)

    def _repaint(self, step: PacedStep | None, may_draw_image: Callable[[], bool]) -> None:
        self._step = None
        sample, self._sample = self._sample, None
        if self.running:
            if step is not None:
                if step.preview.image is not None:
                    self._image = step.preview.image
                self._draw_step(step)
            if self._image is not None and may_draw_image():
                self._draw_image(self._image)
                self._image = None
        if sample is not None:
            self._draw_sample(sample)
