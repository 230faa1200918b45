"""The UI measurement's per-thread CPU accounting: roles come from real threads' CPU times."""

from __future__ import annotations

import threading
import time

from benchmarks.ui_cost import thread_cpu_s


def test_a_busy_thread_is_counted_under_its_name_and_the_main_thread_as_the_ui() -> None:
    stop = threading.Event()

    def burn() -> None:
        while not stop.is_set():
            sum(range(1000))

    before = thread_cpu_s()
    burner = threading.Thread(target=burn, name="burner")
    burner.start()
    time.sleep(0.3)
    during = thread_cpu_s()
    stop.set()
    burner.join()

    assert "UI (main thread)" in during
    assert during["burner"] > 0.05  # it ran for 0.3 s, sharing at most 2 cores with this thread
    assert "burner" not in before
    assert not any(name.startswith("asyncio_") for name in during)  # numbered workers are grouped
