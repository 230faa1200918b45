"""Readout: a Static for text that changes several times a second (progress, hardware figures).

Static.update() asks for a layout of the whole screen by default, which on a busy screen costs
more than drawing the text. A readout skips an update that changes nothing, and lays out only
when its height can change: a different number of lines, or a line that may wrap.
"""

from __future__ import annotations

from typing import Any

from textual.content import Content
from textual.widgets import Static


class Readout(Static):
    def __init__(self, text: str = "", **kwargs: Any) -> None:
        super().__init__(text, **kwargs)
        self._shown = text

    @property
    def shown(self) -> str:
        """The text (markup) shown now."""
        return self._shown

    def show(self, text: str) -> None:
        if text == self._shown:
            return
        width = self.content_size.width
        # Raw length first (it counts markup too, so it can only overestimate), then the exact one.
        may_wrap = width <= 0 or any(
            len(line) > width and Content.from_markup(line).cell_length > width for line in text.split("\n")
        )
        layout = may_wrap or text.count("\n") != self._shown.count("\n")
        self._shown = text
        self.update(text, layout=layout)
