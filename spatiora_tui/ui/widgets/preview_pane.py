"""The preview pane: step previews as images while denoising runs, then the final image; a
progress bar with step i/N, it/s, ETA and the time to first preview; the saved path.

The lines under the image keep their height from a job's first step to its finished line (bar
and three lines of figures, two for the path): the image box keeps its shape, and the image does
not jump up when the job ends.

The progress bar is text in one Readout: one widget to repaint per step, not four (Textual's
ProgressBar is a bar, a percentage and an ETA widget in a container)."""

from __future__ import annotations

from typing import Any

from PIL import Image as PILImage
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.css.scalar import Scalar
from textual.widget import Widget
from textual.widgets import LoadingIndicator, Static

from spatiora_tui.engine.api import GenerationResult, StepPreview
from spatiora_tui.ui.images import renderer_name
from spatiora_tui.ui.text import gauge, markup_safe
from spatiora_tui.ui.widgets.halfcell import cell_aspect
from spatiora_tui.ui.widgets.readout import Readout

#: Widest the progress bar grows (cells).
PROGRESS_BAR_MAX = 60


class PreviewPane(Vertical):
    DEFAULT_CSS = """
    PreviewPane #image-box { height: 1fr; align: center middle; }
    PreviewPane #placeholder { width: 100%; height: 1fr; content-align: center middle; color: $text-muted; }
    PreviewPane LoadingIndicator { height: 3; }
    PreviewPane #progress-text, PreviewPane #saved { height: auto; padding: 0 1; }
    PreviewPane #progress-text { min-height: 4; }
    PreviewPane #saved { min-height: 2; }
    """

    def __init__(self, image_class: type[Widget], about: str = "", **kwargs: Any) -> None:
        """`about`: how images are drawn in this terminal and why (ui/images.describe), shown
        under the placeholder text and as the pane's tooltip."""
        super().__init__(**kwargs)
        self._image_class = image_class
        self._about = about
        self._first_preview_s: float | None = None
        self._aspect: float | None = None
        self._max_cells = (0, 0)

    def compose(self) -> ComposeResult:
        with Vertical(id="image-box"):
            yield LoadingIndicator()
            yield Static(self._with_about("loading the model…"), id="placeholder")
            yield self._image_class(id="preview-image")
        yield Readout("", id="progress-text")
        yield Readout("", id="saved")

    def on_mount(self) -> None:
        self.tooltip = self._about or None
        self.set_method("")
        self.query_one("#preview-image").display = False

    def set_method(self, label: str) -> None:
        """Show the preview method in use (latent2rgb, TAESD, VAE) in the title, and how images
        are drawn (sixel, kitty, halfcell or unicode)."""
        parts = ["Preview", markup_safe(label), renderer_name(self._image_class)]
        self.border_title = " · ".join(part for part in parts if part)

    def model_ready(self, text: str) -> None:
        # Removed, not hidden: a hidden indicator still animates at 16 frames a second.
        for indicator in self.query(LoadingIndicator):
            indicator.remove()
        self.query_one("#placeholder", Static).update(self._with_about(text))

    def show_loading(self, text: str) -> None:
        self.query_one("#placeholder", Static).update(self._with_about(markup_safe(text)))

    def _with_about(self, text: str) -> str:
        return f"{text}\n\n[dim]images: {markup_safe(self._about)}[/]" if self._about else text

    def started(self, total: int, width: int, height: int, note: str = "") -> None:
        """A generation of a `width` x `height` image starts: the image box takes its final shape
        now, so previews and the final image draw into it without a layout of the screen. `note`
        says why the first step may be long in coming (it shows until that step)."""
        self._first_preview_s = None
        self._set_shape(width, height)
        self.query_one("#placeholder").display = False
        image = self.query_one("#preview-image")
        image.display = True
        image.image = None  # type: ignore[attr-defined]
        self._progress(0, total, f"step 0/{total} · starting…" + (f" {note}" if note else ""))
        self.query_one("#saved", Readout).show("")

    def show_step(self, preview: StepPreview, rate: float) -> None:
        """Progress for a step that arrives; its image is the app's to draw (show_image), as the
        CPU budget allows."""
        if preview.image is not None and self._first_preview_s is None:
            self._first_preview_s = preview.elapsed_s
        eta = (preview.total - preview.step) / rate if rate > 0 else 0.0
        self._progress(
            preview.step,
            preview.total,
            f"step {preview.step}/{preview.total} · {rate:.1f} it/s · ETA {eta:.1f} s"
            + (f" · first preview {self._first_preview_s:.2f} s" if self._first_preview_s is not None else ""),
        )

    def finished(self, result: GenerationResult, saved: str, drawn: tuple[int, float] | None = None) -> None:
        """The job's end: its image, its figures, and `drawn`, the step previews drawn on this
        screen and their rate (what reached the terminal: the pacer may skip some)."""
        t = result.timings
        if result.image is not None:
            self.show_image(result.image)
        first = f"{t.first_preview_ms / 1000:.2f} s" if t.first_preview_ms is not None else "off"
        total = f"{t.image_ms / 1000:.2f} s" if t.image_ms is not None else "—"
        state = "cancelled" if result.cancelled else "done"
        self._progress(
            result.steps_done if result.image is not None else 0,
            result.steps_done or 1,
            f"{state} · {result.steps_done} steps · image in {total} · first preview {first} · seed {result.params.seed}"
            + (
                f"\npreviews drawn: {drawn[0]} of {result.steps_done} steps, {drawn[1]:.1f}/s"
                if drawn and t.first_preview_ms is not None
                else ""
            ),
        )
        self.show_saved(saved)

    def show_saved(self, text: str) -> None:
        self.query_one("#saved", Readout).show(text)

    def failed(self) -> None:
        self._progress(0, 1, "failed — see the status line")

    def _progress(self, done: int, total: int, text: str) -> None:
        readout = self.query_one("#progress-text", Readout)
        width = max(10, min(PROGRESS_BAR_MAX, readout.content_size.width - 5))
        fraction = done / total if total > 0 else 0.0
        readout.show(f"{gauge(fraction, width)} {fraction * 100:3.0f}%\n{text}")

    def show_image(self, image: PILImage.Image) -> None:
        widget = self.query_one("#preview-image")
        widget.image = image  # type: ignore[attr-defined]
        if self._aspect is None:  # an image without started(): take its shape
            self._set_shape(image.width, image.height)

    def show_sheet(self, image: PILImage.Image) -> None:
        """A grid of a batch's images: the image box takes the grid's shape."""
        self._set_shape(image.width, image.height)
        self.query_one("#preview-image").image = image  # type: ignore[attr-defined]

    def _set_shape(self, width: int, height: int) -> None:
        self._aspect = width / max(height, 1)
        # No more cells than the final image has pixels (a small image is not blown up).
        self._max_cells = (max(width, 16), max(height // 2, 8))
        self._fit()

    def on_resize(self) -> None:
        self._fit()

    def _fit(self) -> None:
        """Size the image to the largest box of its aspect ratio that fits the pane."""
        if self._aspect is None:
            return
        box = self.query_one("#image-box").content_size
        if box.width <= 0 or box.height <= 0:
            self.call_after_refresh(self._fit)
            return
        cell = cell_aspect()
        box_w, box_h = min(box.width, self._max_cells[0]), min(box.height, self._max_cells[1])
        width = min(box_w, max(1, round(box_h * self._aspect / cell)))
        height = min(box_h, max(1, round(width * cell / self._aspect)))
        widget = self.query_one("#preview-image")
        if (widget.styles.width, widget.styles.height) != (Scalar.from_number(width), Scalar.from_number(height)):
            widget.styles.width, widget.styles.height = width, height
