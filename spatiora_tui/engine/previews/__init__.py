"""Step previews: one module per way of turning a latent into a picture, behind one protocol.

    latent2rgb  a linear projection of the 4 latent channels (tens of microseconds a frame)
    taesd       the tiny distilled VAE decoder (TAESD / TAESDXL): near-final colours and detail,
                a few ms a frame on a GPU; its weights are found on disk, never downloaded
    vae         the model's own full VAE decoder: exact, and far slower

`METHODS` is the registry: `[preview] method` is checked against it (config.py), and `build`
makes the method's previewer for a loaded pipeline. Nothing here imports torch at import time;
each method imports it when it builds or runs. A method that cannot be built (TAESD weights
missing) falls back to latent2rgb with a one-line notice saying what to do.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from PIL.Image import Image

    from spatiora_tui.notices import Notice


class Previewer(Protocol):
    """Turns the latent of one step into a small RGB image."""

    #: What the preview pane shows as the method in use, e.g. "TAESD".
    label: str

    def __call__(self, latent: Any) -> Image: ...


@dataclass(frozen=True)
class PreviewContext:
    """What a method may need to build its previewer."""

    pipe: Any
    family: str  # sd1 | sd2 | sdxl
    #: Where to look for TAESD weights: the [preview] taesd setting first, then install folders.
    taesd_places: tuple[Any, ...] = ()
    allow_pickle: bool = False


@dataclass(frozen=True)
class Method:
    name: str
    summary: str
    #: Builds the previewer; raises PreviewUnavailable when it cannot (weights missing).
    build: Callable[[PreviewContext], Previewer]


class PreviewUnavailable(Exception):
    """A method cannot run here; the message says what to do."""


def _entry(target: str) -> Callable[[PreviewContext], Previewer]:
    """A builder named "module:function", imported when first called: registering a method
    costs nothing, and config.py can check names against the registry without importing torch."""

    def build(context: PreviewContext) -> Previewer:
        module, _, function = target.partition(":")
        builder: Callable[[PreviewContext], Previewer] = getattr(importlib.import_module(module), function)
        return builder(context)

    return build


METHODS: dict[str, Method] = {
    method.name: method
    for method in (
        Method(
            "latent2rgb",
            "linear projection of the predicted clean latent (about 40 us a frame)",
            _entry("spatiora_tui.engine.previews.latent2rgb:build"),
        ),
        Method(
            "taesd",
            "the tiny TAESD decoder: near-final colours and detail, a few ms a frame on a GPU; "
            "falls back to latent2rgb when its weights are not on disk",
            _entry("spatiora_tui.engine.previews.taesd:build"),
        ),
        Method(
            "vae",
            "full VAE decode of the predicted clean latent (exact, far slower)",
            _entry("spatiora_tui.engine.previews.vae:build"),
        ),
    )
}
NONE = "none"  # no previews; progress is still reported per step


def method_names() -> tuple[str, ...]:
    return (*METHODS, NONE)


def build(method: str, context: PreviewContext) -> tuple[Previewer | None, Notice | None]:
    """The previewer for `method` (None for "none"), and a notice when it fell back."""
    from spatiora_tui.notices import Notice, NoticeKind

    if method == NONE:
        return None, None
    try:
        return METHODS[method].build(context), None
    except PreviewUnavailable as exc:
        fallback = METHODS["latent2rgb"].build(context)
        return fallback, Notice(NoticeKind.PREVIEW_FALLBACK, f"{exc}; previews use latent2rgb meanwhile")
