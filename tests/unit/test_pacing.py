"""PreviewPacer: the first preview always, then at most max_fps and only within the CPU budget;
FrameClock: one repaint a frame of the newest step, image and sample."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from spatiora_tui.engine.api import StepPreview
from spatiora_tui.ui.pacing import FrameClock, PreviewPacer


class Clocks:
    def __init__(self) -> None:
        self.wall = 100.0
        self.cpu = 5.0

    def advance(self, wall: float, cpu: float = 0.0) -> None:
        self.wall += wall
        self.cpu += cpu


def pacer(clocks: Clocks, max_fps: float = 10, budget: float = 0.05) -> PreviewPacer:
    p = PreviewPacer(max_fps, budget, clock=lambda: clocks.wall, cpu_clock=lambda: clocks.cpu)
    p.start()
    return p


def test_the_first_preview_is_drawn_even_when_it_is_expensive() -> None:
    clocks = Clocks()
    p = pacer(clocks)
    clocks.advance(0.01, cpu=0.5)  # already far over budget
    assert p.should_draw() and p.drawn == 1


def test_cheap_frames_are_capped_by_max_fps() -> None:
    clocks = Clocks()
    p = pacer(clocks, max_fps=10)
    drawn = 0
    for _ in range(100):  # 100 step messages over 1 s, drawing costs nothing
        clocks.advance(0.01)
        drawn += p.should_draw()
    assert drawn == 10 and p.skipped == 90


def test_expensive_frames_are_spaced_to_stay_within_the_budget() -> None:
    clocks = Clocks()
    p = pacer(clocks, max_fps=60, budget=0.05)
    for _ in range(1000):  # 10 s of step messages; each drawn frame costs 50 ms of UI CPU
        clocks.advance(0.01)
        if p.should_draw():
            clocks.advance(0.0, cpu=0.05)
    assert p.cpu_share() == pytest.approx(0.05, abs=0.006)
    assert 9 <= p.drawn <= 11, "about one 50 ms frame per second fits a 5% budget"


def test_a_preview_that_waited_long_enough_is_drawn_over_the_budget() -> None:
    # Steps seconds apart: the once-a-second repaints keep the UI over a 1% budget, so without
    # this every preview after the first would wait until the image is done.
    from spatiora_tui.ui.pacing import MIN_PREVIEW_S

    clocks = Clocks()
    p = pacer(clocks, budget=0.01)
    assert p.should_draw()
    clocks.advance(MIN_PREVIEW_S - 0.1, cpu=0.5)  # 10% of the time: far over the budget
    assert not p.should_draw()
    clocks.advance(0.2, cpu=0.02)
    assert p.should_draw() and p.drawn == 2
    assert not p.should_draw(), "and then it waits again"


def test_the_repaint_that_draws_the_first_preview_is_never_held_back() -> None:
    # Starting a generation can put the UI over a 1% budget at once; the first preview would
    # then wait for the once-a-second repaint (seen: drawn at 1.2 s, made at 0.3 s).
    clocks = Clocks()
    p = pacer(clocks, budget=0.01)
    assert p.may_repaint()
    clocks.advance(0.1, cpu=0.05)
    assert not p.may_repaint(), "over the budget, within the second"
    assert p.may_repaint(image_waiting=True) and p.should_draw()
    clocks.advance(0.1)
    assert not p.may_repaint(image_waiting=True), "only the first preview jumps the queue"


def test_start_resets_the_account() -> None:
    clocks = Clocks()
    p = pacer(clocks, budget=0.05)
    clocks.advance(0.1, cpu=1.0)
    p.should_draw()
    assert not p.should_draw()
    clocks.advance(0.5)
    p.start()
    assert p.should_draw() and p.drawn == 1 and p.skipped == 0


@pytest.mark.parametrize("fps, budget", [(0, 0.1), (5, 0), (5, 1.5)])
def test_bad_settings_are_refused(fps: float, budget: float) -> None:
    with pytest.raises(ValueError):
        PreviewPacer(fps, budget)


def frame_clock(clocks: Clocks) -> tuple[FrameClock, list[tuple[str, object]]]:
    drawn: list[tuple[str, object]] = []
    clock = FrameClock(
        PreviewPacer(10, 0.05, clock=lambda: clocks.wall, cpu_clock=lambda: clocks.cpu),
        draw_step=lambda step: drawn.append(("step", step.preview.step)),
        draw_image=lambda image: drawn.append(("image", image)),
        draw_sample=lambda sample: drawn.append(("sample", sample)),
    )
    return clock, drawn


def step(number: int, image: object = None) -> SimpleNamespace:
    return SimpleNamespace(preview=StepPreview(number, 10, image, 0.1))  # type: ignore[arg-type]


def test_the_frame_clock_draws_only_the_newest_step_and_sample_and_holds_an_image_over_budget() -> None:
    clocks = Clocks()
    clock, drawn = frame_clock(clocks)
    clock.offer_sample("at rest")
    assert drawn == [("sample", "at rest")]  # no job: drawn at once
    clock.start()
    first, second = object(), object()
    clock.offer_step(step(1, first))
    clock.offer_sample("s1")
    clock.offer_sample("s2")
    assert drawn == [("sample", "at rest")]  # held for the frame
    clock.tick()
    assert drawn[1:] == [("step", 1), ("image", first), ("sample", "s2")]
    clocks.advance(1.1, cpu=0.5)  # far over a 5 % budget, a second after the last repaint
    clock.offer_step(step(2, second))
    clock.tick()
    assert drawn[4:] == [("step", 2)]  # progress (the once-a-second repaint), not the image
    clock.flush()
    assert drawn[5:] == [("image", second)]  # a flush draws what waits, budget or not


def test_a_job_that_ends_drops_its_waiting_step_and_image_and_draws_the_waiting_sample() -> None:
    clocks = Clocks()
    clock, drawn = frame_clock(clocks)
    clock.start()
    clock.offer_step(step(3, object()))
    clock.offer_sample("last")
    clock.stop()
    assert drawn == [("sample", "last")]
    clock.tick()
    clock.flush()
    assert drawn == [("sample", "last")]


def test_the_rate_of_previews_drawn_is_counted_over_the_jobs_wall_time() -> None:
    clocks = Clocks()
    p = pacer(clocks, max_fps=10, budget=1.0)
    assert p.drawn_per_s() == 0.0
    for _ in range(20):  # 20 steps, one every 60 ms: the 10-fps cap lets every second one through
        clocks.advance(0.06)
        p.should_draw()
    assert p.drawn == 10 and p.skipped == 10
    assert p.drawn_per_s() == pytest.approx(10 / 1.2)
    p.start()
    assert p.drawn == 0, "a new job counts afresh"


def test_the_auto_budget_is_wide_only_for_an_engine_apart_on_a_gpu() -> None:
    from spatiora_tui.ui.pacing import APART_GPU_BUDGET, CPU_BUDGET, auto_budget

    assert auto_budget(apart=True, device="cuda") == APART_GPU_BUDGET == 0.25
    assert auto_budget(apart=True, device="mps") == APART_GPU_BUDGET
    assert auto_budget(apart=True, device="cpu") == CPU_BUDGET == 0.01, "torch's threads use every core"
    assert auto_budget(apart=False, device="cuda") == CPU_BUDGET, "in one process the drawing holds the GIL"
