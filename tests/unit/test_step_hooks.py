"""The per-step hooks a generation composes: timing, cancel, progress and previews."""

from __future__ import annotations

import threading
from types import SimpleNamespace
from typing import Any

from spatiora_tui.engine.api import StepPreview
from spatiora_tui.engine.generate import STOP, CancelCheck, StepClock, StepReporter, compose


class Tap:
    latest = "x0"


def pipeline(steps: int) -> SimpleNamespace:
    return SimpleNamespace(scheduler=SimpleNamespace(timesteps=list(range(steps))), _interrupt=False)


def test_hooks_run_in_order_and_stop_ends_the_chain() -> None:
    calls: list[str] = []
    on_step_end = compose(
        lambda p, s, t: calls.append(f"a{s}"), lambda p, s, t: STOP, lambda p, s, t: calls.append(f"c{s}")
    )
    assert on_step_end(pipeline(3), 0, None, {}) == {}
    assert calls == ["a1"]


def test_a_cancelled_step_interrupts_the_pipeline_and_reports_nothing() -> None:
    cancel = threading.Event()
    seen: list[StepPreview] = []
    previews: list[Any] = []
    clock = StepClock(4)
    tap, previewer = Tap(), lambda latent: previews.append(latent) or latent
    reporter = StepReporter(seen.append, clock, tap, previewer, every_n=2)  # type: ignore[arg-type]  # stand-ins
    on_step_end = compose(clock, CancelCheck(cancel), reporter)
    pipe = pipeline(4)
    on_step_end(pipe, 0, None, {"latents": "z"})
    on_step_end(pipe, 1, None, {"latents": "z"})
    cancel.set()
    on_step_end(pipe, 2, None, {"latents": "z"})
    assert pipe._interrupt is True
    assert [p.step for p in seen] == [1, 2] and len(clock.step_ends) == 3
    assert [p.image for p in seen] == [None, "x0"], "a preview every 2nd step, from the x0 tap"
    assert previews == ["x0"] and reporter.first_preview is not None


def test_the_last_step_always_previews_and_heun_counts_its_evaluations() -> None:
    seen: list[StepPreview] = []
    clock = StepClock(3)
    on_step_end = compose(
        clock,
        CancelCheck(threading.Event()),
        StepReporter(seen.append, clock, Tap(), lambda latent: "img", every_n=10),  # type: ignore[arg-type]  # stand-ins
    )
    pipe = pipeline(5)  # a second-order sampler: more model evaluations than steps asked
    for index in range(5):
        on_step_end(pipe, index, None, {})
    assert [p.total for p in seen] == [5] * 5
    assert [p.image for p in seen] == [None, None, None, None, "img"]
