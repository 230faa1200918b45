"""Which textual-image widget draws images: detected, or pinned by config / --renderer.

textual-image queries the terminal when imported, which is only possible before Textual takes
the terminal over, so this module is imported before the app runs.
"""

from __future__ import annotations

from textual.widget import Widget

from spatiora_tui.config import RENDERERS


def image_widget_class(renderer: str) -> type[Widget]:
    """The image widget class for `renderer` (one of RENDERERS)."""
    from textual_image import widget as tiw

    classes = {
        "auto": tiw.Image,
        "sixel": tiw.SixelImage,
        "kitty": tiw.TGPImage,
        "halfcell": tiw.HalfcellImage,
        "unicode": tiw.UnicodeImage,
    }
    if renderer not in classes:
        raise ValueError(f"unknown renderer {renderer!r}; choose one of: {', '.join(RENDERERS)}")
    return classes[renderer]

