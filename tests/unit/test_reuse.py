"""Settings read back from an image, to make it again: Spatiora's own and AUTOMATIC1111's."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image, PngImagePlugin

from spatiora_tui.outputs import OutputError, request_from_image, save_result
from tests.helpers import make_result


def a1111_png(path: Path, parameters: str) -> Path:
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", parameters)
    Image.new("RGB", (8, 8)).save(path, pnginfo=info)
    return path


def test_an_own_image_gives_back_the_request_it_was_made_with(tmp_path: Path) -> None:
    result = make_result()
    path = save_result(result, tmp_path)
    request, notes = request_from_image(path, "other")
    p = result.params
    assert notes == []
    assert (request.task, request.prompt, request.negative_prompt) == (p.task, p.prompt, p.negative_prompt)
    assert (request.seed, request.steps, request.guidance, request.scheduler) == (
        p.seed,
        p.steps,
        p.guidance,
        p.scheduler,
    )
    assert (request.width, request.height) == (p.width, p.height)


def test_an_automatic1111_png_gives_its_settings_and_says_what_differs(tmp_path: Path) -> None:
    text = (
        "a loft <lora:oak_floor:0.7>, (sunlight:1.2)\n"
        "Negative prompt: blurry, lowres\n"
        "Steps: 20, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 6.5, Seed: 42, Size: 512x768, "
        "Model hash: 6ce0161689, Model: dreamshaper_8, Version: v1.10.1"
    )
    request, notes = request_from_image(a1111_png(tmp_path / "a.png", text), "interior")
    assert request.prompt == "a loft <lora:oak_floor:0.7>, (sunlight:1.2)"
    assert request.negative_prompt == "blurry, lowres" and request.task == "interior"
    assert (request.steps, request.guidance, request.seed) == (20, 6.5, 42)
    assert (request.width, request.height, request.scheduler) == (512, 768, "dpmpp_2m_karras")
    assert any("dreamshaper_8" in note for note in notes)


def test_a_sampler_spatiora_lacks_and_bad_numbers_fall_back_to_the_task(tmp_path: Path) -> None:
    text = "x\nSteps: many, Sampler: LMS, CFG scale: 7, Seed: 1, Size: big"
    request, notes = request_from_image(a1111_png(tmp_path / "b.png", text), "interior")
    assert request.steps is None and request.scheduler is None and request.width is None
    assert request.seed == 1 and len(notes) == 3
    assert any("'LMS'" in n for n in notes) and any("'many'" in n for n in notes) and any("'big'" in n for n in notes)


def test_an_image_without_settings_is_refused_by_name(tmp_path: Path) -> None:
    path = tmp_path / "plain.png"
    Image.new("RGB", (8, 8)).save(path)
    with pytest.raises(OutputError, match="plain.png holds no generation settings"):
        request_from_image(path, "interior")
    (tmp_path / "broken.png").write_bytes(b"not a png")
    with pytest.raises(OutputError, match="cannot read broken.png"):
        request_from_image(tmp_path / "broken.png", "interior")


def test_an_image_to_image_result_gives_back_its_init_image_and_strength(tmp_path: Path) -> None:
    import dataclasses

    init = tmp_path / "sketch.png"
    Image.new("RGB", (8, 8), "white").save(init)
    result = make_result()
    img2img = dataclasses.replace(
        result,
        params=dataclasses.replace(result.params, init_image=str(init), init_image_sha256="f" * 64, strength=0.4),
    )
    path = save_result(img2img, tmp_path)
    request, notes = request_from_image(path, "other")
    assert (request.init_image, request.strength, notes) == (str(init), 0.4, [])
    init.unlink()
    request, notes = request_from_image(path, "other")
    assert request.init_image == str(init) and "is no longer there" in notes[0]
    # A text-to-image result carries neither.
    plain, _ = request_from_image(save_result(result, tmp_path), "other")
    assert (plain.init_image, plain.strength) == (None, None)


def test_an_automatic1111_img2img_png_gives_its_strength_and_says_the_init_image_is_not_in_it(tmp_path: Path) -> None:
    text = (
        "a loft\n"
        "Steps: 20, Sampler: Euler a, CFG scale: 7, Seed: 42, Size: 512x512, "
        "Denoising strength: 0.55, Init image hash: 0123456789abcdef0123456789abcdef"
    )
    request, notes = request_from_image(a1111_png(tmp_path / "a.png", text), "base")
    assert request.strength == 0.55 and request.init_image is None
    assert any("init image" in note for note in notes)


def test_own_settings_of_the_wrong_type_are_refused_naming_the_field(tmp_path: Path) -> None:
    """The image's JSON goes through the same codec as the queue file and the wire: "steps": "20"
    (a hand-edited or foreign file) is refused when read, not when the job runs."""
    import json

    from spatiora_tui.outputs import SPATIORA_KEY

    info = PngImagePlugin.PngInfo()
    info.add_text(SPATIORA_KEY, json.dumps({"request": {"prompt": "a loft", "task": "interior", "steps": "20"}}))
    path = tmp_path / "edited.png"
    Image.new("RGB", (8, 8)).save(path, pnginfo=info)
    with pytest.raises(OutputError, match=r"edited.png: .*GenerationRequest.steps: expected int, got str"):
        request_from_image(path, "interior")
