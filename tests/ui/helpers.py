"""Helpers for the UI tests: reading the screen, waiting for workers, settings variants."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

from spatiora_tui.config import Settings


def status(app: Any) -> str:
    """The status line's text."""
    from textual.widgets import Static

    return str(app.query_one("#status", Static).render())


def news(seen: list[Any], kind: type) -> list[Any]:
    """The session's events of `kind` among the messages a test's message hook saw."""
    from spatiora_tui.ui.messages import SessionNews

    return [m.event for m in seen if isinstance(m, SessionNews) and isinstance(m.event, kind)]


def outputs() -> list[Path]:
    """The PNGs in the output folder the test environment points at."""
    folder = Path(os.environ["SPATIORA_OUTPUT_DIR"])
    return sorted(folder.glob("*.png")) if folder.exists() else []


async def settle(app: Any, pilot: Any) -> None:
    """Wait until every worker is done, then for the UI. (The hardware is sampled by the
    telemetry's own thread, not a worker.)"""
    await pilot.pause()
    while True:
        busy = [w for w in app.workers if w.is_running]
        if not busy:
            break
        await app.workers.wait_for_complete(busy)
        await pilot.pause()
    await pilot.pause()


def with_ui(settings: Settings, **changes: Any) -> Settings:
    return dataclasses.replace(settings, ui=dataclasses.replace(settings.ui, **changes))
