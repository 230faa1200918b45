"""The phases of an adapter switch, and the clock that times them for its report."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

#: The phases of a switch, in the order they happen; a report lists those that took place.
PHASES = ("unfuse", "read", "parse", "plan", "to device", "inject", "copy", "activate", "fuse")


class PhaseClock:
    """Milliseconds per phase of the switch under way; the tiers time their own work with it."""

    def __init__(self) -> None:
        self._ms: dict[str, float] = {}

    def reset(self) -> None:
        self._ms = {}

    def add(self, name: str, ms: float) -> None:
        self._ms[name] = self._ms.get(name, 0.0) + ms

    @contextmanager
    def time(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.add(name, (time.perf_counter() - start) * 1000.0)

    def report(self) -> tuple[tuple[str, float], ...]:
        """(phase, ms) for the phases that took place, in PHASES order."""
        return tuple((p, self._ms[p]) for p in PHASES if p in self._ms)
