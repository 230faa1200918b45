"""OneThread: every call runs on the same thread, in order, with errors handed back."""

from __future__ import annotations

import threading

import pytest

from spatiora_tui.engine.thread import OneThread


def test_calls_from_many_threads_all_run_on_one_thread_in_order() -> None:
    runner = OneThread("test-one-thread")
    seen: list[tuple[int, int]] = []
    callers = [
        threading.Thread(target=lambda i=i: runner.call(lambda: seen.append((i, threading.get_ident()))))
        for i in range(8)
    ]
    for caller in callers:
        caller.start()
    for caller in callers:
        caller.join()
    assert sorted(i for i, _ in seen) == list(range(8))
    assert {ident for _, ident in seen} == {runner.ident}
    assert runner.ident != threading.get_ident()


def test_errors_reach_the_caller_and_the_thread_keeps_serving() -> None:
    runner = OneThread("test-one-thread")
    with pytest.raises(ZeroDivisionError):
        runner.call(lambda: 1 / 0)
    assert runner.call(lambda a, b=0: a + b, 2, b=3) == 5


def test_a_call_from_the_thread_itself_runs_directly_instead_of_deadlocking() -> None:
    runner = OneThread("test-one-thread")
    assert runner.call(lambda: runner.call(lambda: threading.get_ident())) == runner.ident
