"""Sheets: a batch's contact sheet and a sweep's labelled grid, saved beside the images.

A sheet is a PNG like any other output: written atomically, never over an existing file, with
the AUTOMATIC1111 `parameters` text of its first image (so dropping it on A1111's PNG Info, or
reloading it here, gives that image's settings) and a `spatiora` chunk naming the files it shows.
"""

from __future__ import annotations

import io
import json
import math
from pathlib import Path
from typing import TYPE_CHECKING

from PIL import Image, PngImagePlugin

from spatiora_tui import atomic
from spatiora_tui.outputs import PARAMETERS_KEY, SPATIORA_KEY, a1111_parameters, read_metadata

if TYPE_CHECKING:
    from spatiora_tui.jobs.job import Job
    from spatiora_tui.jobs.session import Group

#: Longest side of a sheet; bigger sheets have their tiles scaled down.
MAX_SHEET_SIDE = 4096
#: Space between tiles, and the background behind them (A1111's grids are white).
GAP = 4
BACKGROUND = (255, 255, 255)


class SheetError(Exception):
    """The sheet could not be made or saved; the images themselves are saved."""


def _image_of(job: Job) -> Image.Image:
    if job.result is not None and job.result.image is not None:
        return job.result.image.convert("RGB")
    if job.path is None:
        raise SheetError(f"job {job.id} has no image")
    try:
        with Image.open(job.path) as image:
            return image.convert("RGB")
    except OSError as exc:
        raise SheetError(f"could not read {job.path} for the sheet: {exc}") from None


def _parameters_of(job: Job) -> str | None:
    if job.result is not None:
        return a1111_parameters(job.result)
    if job.path is not None:
        try:
            return read_metadata(job.path).parameters
        except OSError:
            return None
    return None


def contact_sheet(images: list[Image.Image], columns: int | None = None) -> Image.Image:
    """The images in rows of `columns` (default: a near-square grid), each in a tile the size of
    the largest, scaled down as a whole when the sheet would pass MAX_SHEET_SIDE."""
    if not images:
        raise SheetError("no images for a sheet")
    columns = columns or math.ceil(math.sqrt(len(images)))
    rows = math.ceil(len(images) / columns)
    tile_w, tile_h = max(i.width for i in images), max(i.height for i in images)
    scale = min(1.0, MAX_SHEET_SIDE / (columns * (tile_w + GAP)), MAX_SHEET_SIDE / (rows * (tile_h + GAP)))
    tw, th = max(1, int(tile_w * scale)), max(1, int(tile_h * scale))
    sheet = Image.new("RGB", (columns * tw + (columns - 1) * GAP, rows * th + (rows - 1) * GAP), BACKGROUND)
    for n, image in enumerate(images):
        if image.size != (tw, th):
            image = image.resize((tw, th), Image.Resampling.LANCZOS)
        sheet.paste(image, ((n % columns) * (tw + GAP), (n // columns) * (th + GAP)))
    return sheet


def save_contact_sheet(done: list[Job], out_dir: Path, group: Group) -> Path:
    """Save the sheet of a finished group's images (in the group's order) beside them."""
    images = [_image_of(job) for job in done]
    sheet = contact_sheet(images)
    info = PngImagePlugin.PngInfo()
    parameters = _parameters_of(done[0])
    if parameters:
        info.add_text(PARAMETERS_KEY, parameters)
    record = {"sheet": group.kind.value, "group": group.id, "images": [str(j.path) if j.path else None for j in done]}
    info.add_itxt(SPATIORA_KEY, json.dumps(record, separators=(",", ":")))
    stem = f"{done[0].path.stem}-{group.kind.value}" if done[0].path is not None else f"{group.id}-sheet"
    buffer = io.BytesIO()
    sheet.save(buffer, format="PNG", pnginfo=info)
    try:
        return atomic.write_new(out_dir, stem, ".png", buffer.getvalue())
    except OSError as exc:
        raise SheetError(f"could not save the sheet in {out_dir}: {exc.strerror or exc}") from None
