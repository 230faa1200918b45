"""`spatiora generate`'s ctrl+c handling (run_cancellable), without a model: the job is a loop
that looks at its cancel flag, as the engine does once per step."""

from __future__ import annotations

import _thread
import signal
import threading

import pytest

from spatiora_tui.cli.generate import run_cancellable
from tests.helpers import sigint_handled_by


@pytest.fixture
def sigint(request: pytest.FixtureRequest):
    """SIGINT set to `request.param` for the test (a terminal's foreground job: Python's default
    handler; a shell's background job: ignored), put back after."""
    with sigint_handled_by(request.param):
        yield


def _job(interrupt_at: int | None, seen: list[object]):
    def job(cancel: threading.Event) -> str:
        for step in range(200):
            if step == interrupt_at:
                seen.append(signal.getsignal(signal.SIGINT))
                _thread.interrupt_main()  # ctrl+c, delivered to the main thread
            if cancel.wait(0.005):
                return f"cancelled at {step}"
        return "finished"

    return job


@pytest.mark.parametrize("sigint", [signal.default_int_handler], indirect=True)
def test_ctrl_c_cancels_the_job_and_the_handler_is_put_back(sigint, capsys: pytest.CaptureFixture[str]) -> None:
    seen: list[object] = []
    value, interrupted = run_cancellable(_job(5, seen))
    assert interrupted and value.startswith("cancelled at")
    assert "cancelling" in capsys.readouterr().err
    assert seen[0] is not signal.default_int_handler, "its own handler while the job runs"
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


@pytest.mark.parametrize("sigint", [signal.default_int_handler], indirect=True)
def test_ctrl_c_after_the_jobs_last_look_still_counts(sigint) -> None:
    def job(cancel: threading.Event) -> str:
        _thread.interrupt_main()  # lands after the last look at `cancel`: the job finishes
        return "image"

    assert run_cancellable(job) == ("image", True)


@pytest.mark.parametrize("sigint", [signal.SIG_IGN], indirect=True)
def test_a_process_started_with_ctrl_c_ignored_keeps_ignoring_it(sigint) -> None:
    seen: list[object] = []
    assert run_cancellable(_job(5, seen)) == ("finished", False)
    assert seen == [signal.SIG_IGN] and signal.getsignal(signal.SIGINT) is signal.SIG_IGN


def test_the_jobs_error_reaches_the_caller() -> None:
    def job(cancel: threading.Event) -> None:
        raise OSError("disk gone")

    with pytest.raises(OSError, match="disk gone"):
        run_cancellable(job)
