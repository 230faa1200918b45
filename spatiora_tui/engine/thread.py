"""One long-lived thread for all of an engine's torch work.

Why one thread and not "whichever thread calls": PyTorch's CPU kernels run on an OpenMP team
that belongs to the thread that calls them. A second calling thread gets a second team, and with
more OpenMP threads than cores libgomp stops spinning between parallel regions, which costs about
12% per image on a 2-core machine (measured: model loaded on the main thread and images made in a
worker, 1867 ms, against 1645 ms with everything on one thread; `docs/performance.md`). The UI
and the CLI call the engine from short-lived worker threads; those only wait here.

It also makes the engine's one-operation-at-a-time rule structural: calls queue in order.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

T = TypeVar("T")


class OneThread:
    """Runs callables one at a time, in order, on one daemon thread started on first use."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._queue: queue.SimpleQueue[tuple[Callable[[], Any], Future[Any]]] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()

    def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run fn(*args, **kwargs) on the thread and return its result (or raise its error).

        A call made from the thread itself runs directly, so engine methods may call each other.
        """
        if threading.current_thread() is self._thread:
            return fn(*args, **kwargs)
        future: Future[T] = Future()
        self._ensure_started()
        self._queue.put((lambda: fn(*args, **kwargs), future))
        return future.result()

    @property
    def ident(self) -> int | None:
        """The thread's id once started (tests check that work really runs there)."""
        return self._thread.ident if self._thread is not None else None

    def _ensure_started(self) -> None:
        with self._start_lock:
            if self._thread is None:
                # Daemon: a generation still running when the process quits must not hold it open
                # (the CLI and the UI cancel first; this is the last resort).
                self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
                self._thread.start()

    def _run(self) -> None:
        while True:
            job, future = self._queue.get()
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(job())
            except BaseException as exc:  # handed to the caller, never lost in this thread
                future.set_exception(exc)
