"""What the TUI's hardware pane shows when the engine is on another machine: that machine's
snapshots and peaks, polled through the RemoteEngine (the server answers at once, also while it
generates). It stands in for hw.telemetry.Telemetry where the app uses one."""

from __future__ import annotations

import contextlib
import dataclasses
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from spatiora_tui.hw.sampler import HardwareSnapshot
from spatiora_tui.hw.telemetry import Listeners, Peak, StageRecord


class RemoteTelemetry:
    def __init__(self, engine: Any, hz: float = 2.0, where: str = "") -> None:
        self._engine = engine
        self.hz = hz
        self.where = where  # the other machine, for the pane's title
        #: Said after "link down" while the link is down: what brings it back.
        self.down_hint = "the next request reconnects"
        self._lock = threading.Lock()
        self._listeners: Listeners[HardwareSnapshot] = Listeners()
        self._latest: HardwareSnapshot | None = None
        self._by_task: dict[str, Peak] = {}
        self._by_stage: dict[str, dict[str, Peak]] = {}
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._last: tuple[float, int] | None = None  # (when, bytes received) at the last sample

    @property
    def latest(self) -> HardwareSnapshot | None:
        return self._latest

    def subscribe(self, listener: Callable[[HardwareSnapshot], object]) -> Callable[[], None]:
        return self._listeners.subscribe(listener)

    def sample(self) -> HardwareSnapshot | None:
        """Ask the server once; the listeners get what it says, with the link's round trip and
        the bytes per second received since the last sample."""
        snapshot: HardwareSnapshot | None
        start = time.monotonic()
        snapshot, by_task, by_stage = self._engine.hardware()
        now = time.monotonic()
        received = self._engine.bytes_received
        if snapshot is not None:
            rate = ""
            if self._last is not None and now > self._last[0]:
                rate = f" · {(received - self._last[1]) / (now - self._last[0]) / 1024:.0f} KB/s"
            snapshot = dataclasses.replace(snapshot, link=f"{(now - start) * 1000:.0f} ms{rate}{self._ahead()}")
        self._last = (now, received)
        with self._lock:
            self._latest, self._by_task, self._by_stage = snapshot, by_task, by_stage
        if snapshot is not None:
            self._listeners.tell(snapshot)
        return snapshot

    def _ahead(self) -> str:
        """On a shared server: how many jobs of other clients run or wait before this one's."""
        try:
            jobs = self._engine.queue()
        except Exception:
            return ""
        name = getattr(self._engine, "name", None)
        ahead = 0
        for job in jobs:
            if job.get("client") == name:
                break
            ahead += 1
        return f" · {ahead} job{'s' if ahead != 1 else ''} ahead" if ahead else ""

    def start(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="spatiora-remote-hw", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.sample()
            except Exception:  # the link is down: the pane says so; the next request reconnects
                latest = self._latest
                if latest is not None and not (latest.link or "").startswith("down"):
                    self._latest = dataclasses.replace(latest, link=f"down · {self.down_hint}")
                    self._listeners.tell(self._latest)
            self._stop.wait(1.0 / self.hz)

    def peaks_by_task(self) -> dict[str, Peak]:
        with self._lock:
            return dict(self._by_task)

    def peaks_by_stage(self, task: str | None = None) -> dict[str, Peak]:
        with self._lock:
            return dict(self._by_stage.get(task or "", {}))

    # Stages are marked on the server's telemetry; what runs here (saving) is not measured.
    @contextlib.contextmanager
    def stage(self, name: str, task: str | None = None) -> Iterator[None]:
        yield

    def mark(self) -> int:
        return 0

    def records_since(self, mark: int) -> tuple[StageRecord, ...]:
        return ()
