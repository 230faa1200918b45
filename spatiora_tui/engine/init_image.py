"""The init image of an image-to-image request: read, checked and fitted to the size it runs at.

Pillow only (no torch), so the CLI and the TUI can check a path before anything is queued, and
every engine refuses and converts the same things in the same words:

- a missing file, a folder, an unreadable or damaged file, or one that is not an image: refused,
  naming the path and what to do;
- more than MAX_PIXELS pixels (a scan at print resolution): refused before it is decoded;
- an alpha channel (a sketch on a transparent layer): flattened onto white, as paper;
- a phone photo's EXIF rotation: applied, so the sketch is the way up it was drawn;
- the size: with no width/height in the request the image runs at its own aspect ratio, scaled to
  the task's pixel count and rounded down to multiples of 8; with a width and height it is
  scaled to cover them and centre-cropped (AUTOMATIC1111's "Crop and resize"), never stretched.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from spatiora_tui.config import SIZE_MULTIPLE, SIZE_RANGE
from spatiora_tui.engine.api import EngineError
from spatiora_tui.library.hashing import file_sha256
from spatiora_tui.notices import Notice, NoticeKind

if TYPE_CHECKING:
    from PIL.Image import Image

    from spatiora_tui.config import TaskSettings
    from spatiora_tui.engine.api import GenerationRequest

#: A1111's default "Denoising strength" in img2img.
DEFAULT_STRENGTH = 0.75
#: The largest init image read (64 MP, e.g. 8192x8192); larger ones are refused undecoded.
MAX_PIXELS = 64 * 2**20
#: Aspect ratios closer than this are resized without a note about cropping.
_ASPECT_TOLERANCE = 0.02


@dataclass(frozen=True)
class InitImage:
    """An init image ready to run: RGB at the request's size."""

    image: Image
    path: str  # absolute
    sha256: str  # of the file's bytes
    original_size: tuple[int, int]
    #: What was converted (alpha flattened, cropped, first frame of an animation...).
    notes: tuple[str, ...] = ()

    @property
    def size(self) -> tuple[int, int]:
        return self.image.size

    @property
    def short_hash(self) -> str:
        """What the A1111 text's `Init image hash` holds here: 12 digits of the file's sha256."""
        return self.sha256[:12]


def check_strength(strength: float, steps: int) -> None:
    """EngineError unless `strength` is in (0, 1] and leaves at least one step to run
    (image-to-image runs int(steps x strength) steps, as diffusers and A1111 do)."""
    if not (isinstance(strength, (int, float)) and 0.0 < strength <= 1.0) or math.isnan(strength):
        raise EngineError(f"strength must be above 0 and at most 1 (0.75 keeps the layout), got {strength}")
    if int(steps * strength) < 1:
        need = math.ceil(1 / strength)
        raise EngineError(
            f"strength {strength:g} with {steps} steps runs no denoising step "
            f"(steps x strength < 1): raise the strength or use at least {need} steps"
        )


def steps_run(steps: int, strength: float | None) -> int:
    """How many denoising steps a request runs: all of them without an init image."""
    return steps if strength is None else min(int(steps * strength), steps)


def peek_init_image(path: str | Path) -> tuple[int, int]:
    """Check `path` without decoding its pixels (it exists, is an image, is not too large) and
    return its size: cheap enough for the UI thread. EngineError as read_init_image's."""
    with _opened(path) as image:
        return image.size


def read_init_image(path: str | Path) -> tuple[Image, str, tuple[str, ...]]:
    """The image at `path` as RGB, upright and without alpha; its file's sha256; notes on what
    was converted. EngineError naming the path and the fix when it cannot be used."""
    from PIL import ImageOps

    notes: list[str] = []
    with _opened(path) as opened:
        if getattr(opened, "n_frames", 1) > 1:
            notes.append("it has several frames: the first is used")
        image = ImageOps.exif_transpose(opened)
        image.load()
        sha256 = file_sha256(Path(opened.filename))  # type: ignore[attr-defined]
    rgb, flattened = _flatten(image)
    if flattened:
        notes.append("its transparency was flattened onto white")
    return rgb, sha256, tuple(notes)


@contextmanager
def _opened(path: str | Path) -> Iterator[Image]:
    """The image file at `path`, opened (header read, pixels not) and checked for size; what
    goes wrong inside the block (a truncated file found while decoding) says so too."""
    from PIL import Image as PILImage
    from PIL import UnidentifiedImageError

    shown = str(path)
    try:
        with PILImage.open(Path(path).expanduser()) as opened:
            width, height = opened.size
            if width * height > MAX_PIXELS:
                raise EngineError(
                    f"init image {shown} is {width}x{height} ({width * height / 1e6:.0f} MP); the largest "
                    f"read is {MAX_PIXELS / 1e6:.0f} MP: scale it down first (it runs at about the task's size anyway)"
                )
            yield opened
    except EngineError:
        raise
    except FileNotFoundError:
        raise EngineError(f"init image {shown} does not exist: check the path (PNG, JPEG or WebP)") from None
    except IsADirectoryError:
        raise EngineError(f"init image {shown} is a folder: give the path of one image file") from None
    except PermissionError as exc:
        raise EngineError(f"cannot read init image {shown}: {exc.strerror or exc}") from None
    except UnidentifiedImageError:
        raise EngineError(f"{shown} is not an image Pillow can read: use a PNG, JPEG or WebP file") from None
    except (OSError, ValueError, SyntaxError, PILImage.DecompressionBombError) as exc:
        raise EngineError(f"init image {shown} is damaged or truncated ({exc}): save it again and retry") from None


def _flatten(image: Image) -> tuple[Image, bool]:
    """RGB, with any alpha (or a palette's transparent colour) composited onto white."""
    from PIL import Image as PILImage

    has_alpha = image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info)
    if not has_alpha:
        if image.mode in ("I;16", "I;16B", "I;16L", "I"):
            # 16-bit greyscale (scanners): scale to 8 bits rather than clip.
            return image.point(lambda v: v / 256).convert("L").convert("RGB"), False
        return image.convert("RGB"), False
    rgba = image.convert("RGBA")
    paper = PILImage.new("RGBA", rgba.size, (255, 255, 255, 255))
    return PILImage.alpha_composite(paper, rgba).convert("RGB"), True


def size_for(original: tuple[int, int], task_size: tuple[int, int]) -> tuple[int, int]:
    """The size an init image runs at when the request names none: its own aspect ratio at the
    task's pixel count (so a big scan does not run at 4000x3000), sides multiples of 8."""
    width, height = original
    low, high = SIZE_RANGE
    scale = math.sqrt(task_size[0] * task_size[1] / (width * height))
    scale = max(scale, low / min(width, height))  # a long thin image keeps its shape too...
    scale = min(scale, high / max(width, height))  # ...up to the longest side there is
    out_w, out_h = _side(width * scale), _side(height * scale)
    budget = 2 * max(task_size[0] * task_size[1], low * low)  # rounding to 8 needs some room
    if out_w * out_h > budget:
        # Too thin to keep its shape at the task's pixel count (the short side stops at the
        # smallest there is): the long side is cut to fit the count; fit() crops the middle.
        if out_w >= out_h:
            out_w = _side(max(budget // out_h, low))
        else:
            out_h = _side(max(budget // out_w, low))
    return out_w, out_h


def _side(side: float) -> int:
    return min(SIZE_RANGE[1], max(SIZE_RANGE[0], int(side) // SIZE_MULTIPLE * SIZE_MULTIPLE))


def fit(image: Image, size: tuple[int, int]) -> tuple[Image, str | None]:
    """`image` scaled to cover `size` and centre-cropped to it; a note when the crop cut off a
    noticeable part (the aspect ratios differ)."""
    from PIL import Image as PILImage
    from PIL import ImageOps

    if image.size == size:
        return image, None
    fitted = ImageOps.fit(image, size, method=PILImage.Resampling.LANCZOS)
    src, dst = image.width / image.height, size[0] / size[1]
    if abs(src / dst - 1) <= _ASPECT_TOLERANCE:
        return fitted, None
    return fitted, (
        f"it is {image.width}x{image.height} and runs at {size[0]}x{size[1]}, so its "
        f"{'sides' if src > dst else 'top and bottom'} were cropped; clear the size to keep its shape"
    )


def prepare_init_image(
    path: str | Path, requested: tuple[int | None, int | None], task_size: tuple[int, int]
) -> InitImage:
    """Read `path` and fit it: to the requested (width, height) when both are given, else at its
    own aspect ratio (size_for). EngineError when the file cannot be used."""
    image, sha256, notes = read_init_image(path)
    width, height = requested
    size = (width, height) if width is not None and height is not None else size_for(image.size, task_size)
    fitted, crop_note = fit(image, size)
    return InitImage(
        image=fitted,
        path=str(Path(path).expanduser().resolve()),
        sha256=sha256,
        original_size=image.size,
        notes=(*notes, *((crop_note,) if crop_note else ())),
    )


def init_for(request: GenerationRequest, task: TaskSettings) -> InitImage | None:
    """The request's init image, prepared to run with `task` (its strength checked against the
    task's steps); None for text-to-image. Every engine calls this, so all refuse the same."""
    if not request.init_image:
        return None
    check_strength(strength_of(request), task.steps)
    return prepare_init_image(request.init_image, (request.width, request.height), (task.width, task.height))


def strength_of(request: GenerationRequest) -> float:
    return DEFAULT_STRENGTH if request.strength is None else request.strength


def init_notices(init: InitImage | None) -> tuple[Notice, ...]:
    """The conversions made to an init image, as warnings for the result."""
    if init is None:
        return ()
    name = Path(init.path).name
    return tuple(Notice(NoticeKind.INIT_IMAGE, f"init image {name}: {note}") for note in init.notes)
