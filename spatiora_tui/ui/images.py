"""Which widget draws images: detected, or pinned by config / --renderer.

textual-image queries the terminal when imported, which is only possible before Textual takes
the terminal over, so this module is imported before the app runs. Sixel, kitty and unicode
drawing come from textual-image; half-cell drawing (textual-image's choice in terminals without
graphics, and ours inside tmux) is our own HalfcellImage, which is cheap enough for step previews.
"""

from __future__ import annotations

import os

from textual.widget import Widget

from spatiora_tui.config import RENDERERS


def image_widget_class(renderer: str) -> type[Widget]:
    """The image widget class for `renderer` (one of RENDERERS)."""
    from spatiora_tui.ui.widgets.halfcell import HalfcellImage

    if renderer not in RENDERERS:
        raise ValueError(f"unknown renderer {renderer!r}; choose one of: {', '.join(RENDERERS)}")
    if renderer == "halfcell" or (renderer == "auto" and os.environ.get("TMUX")):
        # Without textual-image's detection: its kitty-graphics query (an APC sequence) ends up
        # as tmux's pane title, and tmux shows neither kitty graphics nor, before 3.4, sixel.
        from textual_image._terminal import get_cell_size

        get_cell_size()  # asked now: once Textual owns the terminal it cannot be queried
        return HalfcellImage
    from textual_image import renderable as tir
    from textual_image import widget as tiw

    from spatiora_tui.ui.widgets.sixel import SixelImage

    classes: dict[str, type[Widget]] = {
        "sixel": SixelImage,
        "kitty": tiw.TGPImage,
        "halfcell": HalfcellImage,
        "unicode": tiw.UnicodeImage,
    }
    if renderer == "auto":
        # What textual-image detected, as the concrete widget (its own AutoImage would name
        # itself, not the method, in the preview's title).
        detected = {tir.SixelImage: "sixel", tir.TGPImage: "kitty", tir.HalfcellImage: "halfcell"}
        return classes[detected.get(tir.Image, "unicode")]
    return classes[renderer]


#: The config's name for each image widget class (textual-image's and ours).
_NAMES = {"SixelImage": "sixel", "TGPImage": "kitty", "HalfcellImage": "halfcell", "UnicodeImage": "unicode"}


def renderer_name(image_class: type[Widget]) -> str:
    """How `image_class` draws, as [ui] renderer names it: what `auto` picked, for the screen
    to say (a user seeing blocks over SSH can tell the terminal answered no sixel or kitty)."""
    return _NAMES.get(image_class.__name__, image_class.__name__)
