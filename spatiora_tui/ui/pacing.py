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
from typing import Any

from spatiora_tui.jobs.events import JobStepped

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
        self._budget = budget
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
        if not first_image and recent and self._cpu_clock() - self._cpu0 > self._budget * (now - self._t0):
            return False
        self._last_repaint = now
        return True

    def should_draw(self) -> bool:
        """Whether to draw the waiting preview now; counts it as drawn if so, as skipped if not
        (the app asks again on later frames until a newer preview replaces it)."""
        now = self._clock()
        if self._last_draw is not None and now - self._last_draw < MIN_PREVIEW_S:
            too_soon = now - self._last_draw < self._min_interval
            over_budget = self._cpu_clock() - self._cpu0 > self._budget * (now - self._t0)
            if too_soon or over_budget:
                self.skipped += 1
                return False
        self._last_draw = now
        self.drawn += 1
        return True

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
