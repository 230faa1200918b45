"""The init image of an image-to-image request: what is refused, what is converted, the size it
runs at. Engine-independent (Pillow only); the engines' use of it is in the contract suite."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from spatiora_tui.engine import init_image
from spatiora_tui.engine.api import EngineError
from spatiora_tui.engine.init_image import (
    check_strength,
    fit,
    peek_init_image,
    prepare_init_image,
    read_init_image,
    size_for,
)


def saved(tmp_path: Path, image: Image.Image, name: str = "in.png", **save: Any) -> Path:
    path = tmp_path / name
    image.save(path, **save)
    return path


@pytest.mark.parametrize(
    ("original", "task", "expected"),
    [
        ((4000, 3000), (512, 512), (584, 440)),  # a big photo: the task's pixel count, its 4:3
        ((300, 200), (512, 512), (624, 416)),  # a small sketch is scaled up to it
        ((512, 512), (512, 512), (512, 512)),
        ((2000, 100), (512, 512), (2288, 112)),  # a strip keeps its shape
        ((3000, 40), (512, 512), (4096, 64)),  # up to the longest side; 64 at least on the short one
        ((1023, 769), (1024, 1024), (1176, 880)),
    ],
)
def test_with_no_size_asked_an_init_image_keeps_its_shape_at_the_tasks_pixel_count(
    original: tuple[int, int], task: tuple[int, int], expected: tuple[int, int]
) -> None:
    size = size_for(original, task)
    assert size == expected
    assert all(side % 8 == 0 and 64 <= side <= 4096 for side in size)


def test_an_init_image_of_another_shape_is_cropped_never_stretched_and_said() -> None:
    wide = Image.new("RGB", (200, 100), "white")
    wide.paste((0, 0, 0), (95, 0, 105, 100))  # a black bar in the middle
    fitted, note = fit(wide, (64, 64))
    assert fitted.size == (64, 64) and note is not None and "sides were cropped" in note
    assert fitted.getpixel((32, 32)) == (0, 0, 0), "centre-cropped: the middle stays in the middle"
    same, none = fit(Image.new("RGB", (128, 96)), (64, 48))
    assert same.size == (64, 48) and none is None


def test_alpha_and_a_transparent_palette_are_flattened_onto_white(tmp_path: Path) -> None:
    layer = Image.new("RGBA", (8, 8), (0, 0, 0, 0))
    layer.putpixel((1, 1), (0, 0, 0, 255))
    rgb, _, notes = read_init_image(saved(tmp_path, layer))
    assert rgb.mode == "RGB" and rgb.getpixel((0, 0)) == (255, 255, 255) and rgb.getpixel((1, 1)) == (0, 0, 0)
    assert notes == ("its transparency was flattened onto white",)
    palette = layer.convert("P")
    palette.info["transparency"] = palette.getpixel((0, 0))
    rgb, _, notes = read_init_image(saved(tmp_path, palette, "p.png", transparency=palette.getpixel((0, 0))))
    assert rgb.getpixel((0, 0)) == (255, 255, 255) and notes


def test_a_phone_photo_is_turned_the_way_its_exif_says(tmp_path: Path) -> None:
    photo = Image.new("RGB", (80, 40), "white")
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise to view
    path = saved(tmp_path, photo, "photo.jpg", exif=exif)
    rgb, _, _ = read_init_image(path)
    assert rgb.size == (40, 80)


def test_a_16_bit_scan_is_scaled_to_8_bits_not_clipped(tmp_path: Path) -> None:
    scan = Image.new("I;16", (8, 8), 65535)
    scan.putpixel((0, 0), 32768)
    rgb, _, _ = read_init_image(saved(tmp_path, scan))
    assert rgb.getpixel((1, 1)) == (255, 255, 255) and rgb.getpixel((0, 0)) == (128, 128, 128)


def test_an_animation_runs_from_its_first_frame_and_says_so(tmp_path: Path) -> None:
    frames = [Image.new("RGB", (16, 16), colour) for colour in ("red", "blue")]
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:])
    rgb, _, notes = read_init_image(path)
    assert rgb.getpixel((0, 0))[0] > 200 and "first is used" in notes[0]


def test_the_hash_is_the_files_sha256(tmp_path: Path) -> None:
    import hashlib

    path = saved(tmp_path, Image.new("RGB", (8, 8), "white"))
    _, sha256, _ = read_init_image(path)
    assert sha256 == hashlib.sha256(path.read_bytes()).hexdigest()


def test_an_image_over_the_pixel_limit_is_refused_before_it_is_decoded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(init_image, "MAX_PIXELS", 100 * 100)
    path = saved(tmp_path, Image.new("RGB", (200, 100)))
    decoded: list[bool] = []
    monkeypatch.setattr(Image.Image, "load", lambda self: decoded.append(True))
    for call in (peek_init_image, read_init_image):
        with pytest.raises(EngineError, match=r"is 200x100 .* scale it down"):
            call(path)
    assert decoded == []


def test_a_truncated_file_is_called_damaged(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    Image.effect_noise((256, 256), 60).convert("RGB").save(buffer, "PNG")
    path = tmp_path / "cut.png"
    path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    assert peek_init_image(path) == (256, 256)  # the header is whole
    with pytest.raises(EngineError, match="damaged or truncated"):
        read_init_image(path)


def test_a_size_asked_is_the_size_run_and_none_follows_the_image(tmp_path: Path) -> None:
    path = saved(tmp_path, Image.new("RGB", (300, 200), "white"))
    assert prepare_init_image(path, (64, 64), (512, 512)).size == (64, 64)
    assert prepare_init_image(path, (None, None), (512, 512)).size == (624, 416)
    prepared = prepare_init_image(str(path).replace(str(Path.home()), "~", 1), (None, None), (64, 64))
    assert prepared.path == str(path.resolve()) and prepared.original_size == (300, 200)


@pytest.mark.parametrize(
    ("strength", "steps", "words"),
    [
        (0.0, 20, "above 0"),
        (-0.5, 20, "above 0"),
        (1.01, 20, "at most 1"),
        (float("nan"), 20, "above 0"),
        (0.04, 20, "use at least 25 steps"),
    ],
)
def test_a_strength_that_cannot_run_is_refused(strength: float, steps: int, words: str) -> None:
    with pytest.raises(EngineError, match=words):
        check_strength(strength, steps)


def test_a_strength_that_leaves_one_step_is_fine() -> None:
    check_strength(0.05, 20)
    check_strength(1.0, 1)
