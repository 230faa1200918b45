"""The preview pane: step previews as images while denoising runs, then the final image; a
progress bar with step i/N, it/s, ETA and the time to first preview; the saved path."""

from __future__ import annotations

from PIL import Image as PILImage
from textual.app import ComposeResult
from textual.containers import Center, Vertical
from textual.widget import Widget
from textual.widgets import LoadingIndicator, ProgressBar, Static

from spatiora_tui.engine.api import GenerationResult, StepPreview
from spatiora_tui.ui.text import markup_safe


class PreviewPane(Vertical):
    DEFAULT_CSS = """
    PreviewPane #image-box { height: 1fr; align: center middle; }
    PreviewPane #placeholder { width: 100%; height: 1fr; content-align: center middle; color: $text-muted; }
    PreviewPane LoadingIndicator { height: 3; }
    PreviewPane #progress-row { height: 1; }
    PreviewPane #progress-text, PreviewPane #saved { height: auto; padding: 0 1; }
    """

    def __init__(self, image_class: type[Widget], **kwargs) -> None:
        super().__init__(**kwargs)
        self._image_class = image_class
        self._first_preview_s: float | None = None
        self._aspect: float | None = None
        self._max_cells = (0, 0)

    def compose(self) -> ComposeResult:
        with Vertical(id="image-box"):
            yield LoadingIndicator()
            yield Static("loading the model…", id="placeholder")
            yield self._image_class(id="preview-image")
        with Center(id="progress-row"):
            yield ProgressBar(total=1, show_eta=False, id="progress")
        yield Static("", id="progress-text")
        yield Static("", id="saved")

    def on_mount(self) -> None:
        self.border_title = "Preview"
        self.query_one("#preview-image").display = False
        self.query_one("#progress-row").display = False

    def model_ready(self, text: str) -> None:
        # Removed, not hidden: a hidden indicator still animates at 16 frames a second.
        for indicator in self.query(LoadingIndicator):
            indicator.remove()
        self.query_one("#placeholder", Static).update(text)

    def loading(self, text: str) -> None:
        self.query_one("#placeholder", Static).update(markup_safe(text))

    def started(self, total: int) -> None:
        self._first_preview_s = None
        self.query_one("#progress-row").display = True
        self.query_one(ProgressBar).update(total=total, progress=0)
        self.query_one("#progress-text", Static).update(f"step 0/{total} · starting…")
        self.query_one("#saved", Static).update("")

    def show_step(self, preview: StepPreview, rate: float) -> None:
        if self._first_preview_s is None:
            self._first_preview_s = preview.elapsed_s
        self._show_image(preview.image)
        self.query_one(ProgressBar).update(total=preview.total, progress=preview.step)
        eta = (preview.total - preview.step) / rate if rate > 0 else 0.0
        self.query_one("#progress-text", Static).update(
            f"step {preview.step}/{preview.total} · {rate:.1f} it/s · ETA {eta:.1f} s · "
            f"first preview {self._first_preview_s:.2f} s"
        )

    def finished(self, result: GenerationResult, saved: str) -> None:
        t = result.timings
        if result.image is not None:
            self._show_image(result.image)
            self.query_one(ProgressBar).update(progress=result.steps_done, total=result.steps_done)
        first = f"{t.first_preview_ms / 1000:.2f} s" if t.first_preview_ms is not None else "off"
        total = f"{t.image_ms / 1000:.2f} s" if t.image_ms is not None else "—"
        state = "cancelled" if result.cancelled else "done"
        self.query_one("#progress-text", Static).update(
            f"{state} · {result.steps_done} steps · image in {total} · first preview {first} · seed {result.params.seed}"
        )
        self.query_one("#saved", Static).update(saved)

    def failed(self) -> None:
        self.query_one(ProgressBar).update(total=1, progress=0)  # not None: an indeterminate bar animates
        self.query_one("#progress-text", Static).update("failed — see the status line")

    def _show_image(self, image: PILImage.Image) -> None:
        widget = self.query_one("#preview-image")
        self.query_one("#placeholder").display = False
        widget.display = True
        widget.image = image  # type: ignore[attr-defined]
        self._aspect = image.width / max(image.height, 1)
        # No more cells than the image has pixels: a 64x64 latent preview drawn over a whole pane
        # only costs render time (every cell is a styled segment) and shows nothing more.
        self._max_cells = (max(image.width, 16), max(image.height // 2, 8))
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
        widget.styles.width, widget.styles.height = width, height


def cell_aspect() -> float:
    """Width / height of a terminal cell in pixels (usually about 0.5)."""
    from textual_image._terminal import get_cell_size

    size = get_cell_size()
    return size.width / size.height if size.height else 0.5
