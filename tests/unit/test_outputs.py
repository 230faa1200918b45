"""Saved images: atomic, never overwriting, with A1111 `parameters` and Spatiora JSON that read back."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from PIL import Image

from spatiora_tui.outputs import OutputError, a1111_parameters, parse_a1111, read_metadata, save_result
from tests.helpers import make_result

SHA = "ab" * 32  # the first adapter's hash in make_result()


def test_a1111_text_has_the_fields_other_tools_read() -> None:
    text = a1111_parameters(make_result())
    assert text.startswith("photo of a loft, with: colons <lora:interior:0.8> <lora:wood:0.35>\n")
    assert "\nNegative prompt: blurry\nsecond line\n" in text
    last = text.splitlines()[-1]
    for fragment in (
        "Steps: 30",
        "Sampler: DPM++ 2M",
        "CFG scale: 6.5",
        "Seed: 1234",
        "Size: 64x48",
        "Model: spatiora-demo",
        f'Lora hashes: "interior: {SHA[:12]}, wood: cdcdcdcdcdcd"',
    ):
        assert fragment in last


def test_save_and_read_back_both_chunks(tmp_path: Path) -> None:
    result = make_result()
    path = save_result(result, tmp_path / "out")
    assert path.parent == tmp_path / "out" and path.suffix == ".png" and "interior-1234" in path.name
    meta = read_metadata(path)
    assert meta.a1111["prompt"] == "photo of a loft, with: colons <lora:interior:0.8> <lora:wood:0.35>"
    assert meta.a1111["negative_prompt"] == "blurry\nsecond line"
    f = meta.a1111["fields"]
    assert f["Steps"] == "30" and f["Seed"] == "1234" and f["Sampler"] == "DPM++ 2M" and f["Size"] == "64x48"
    assert f["Lora hashes"] == f"interior: {SHA[:12]}, wood: cdcdcdcdcdcd"
    record = meta.spatiora
    assert record["request"]["prompt"] == "a loft, with: colons" and record["request"]["seed"] == 1234
    assert record["adapters"][0] == {"name": "interior", "weight": 0.8, "sha256": SHA}
    assert record["model"]["random_weights"] is True
    assert record["timings_ms"]["first_preview_ms"] == 20.0 and len(record["timings_ms"]["step_ms"]) == 30
    assert record["memory_mb"]["peak_rss_mb"] == 500.0
    with Image.open(path) as image:
        assert image.size == (64, 48) and image.getpixel((0, 0)) == (10, 200, 30)


def test_never_overwrites_and_leaves_no_temp_files(tmp_path: Path) -> None:
    result = make_result()
    paths = [save_result(result, tmp_path, name="same") for _ in range(3)]
    assert [p.name for p in paths] == ["same.png", "same-1.png", "same-2.png"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        ".spatiora-history.json",
        "same-1.png",
        "same-2.png",
        "same.png",
    ]


def test_cancelled_result_is_not_saved(tmp_path: Path) -> None:
    with pytest.raises(OutputError, match="cancelled"):
        save_result(make_result(image=None, cancelled=True), tmp_path)
    assert not any(tmp_path.iterdir())


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_unwritable_folder_is_a_clear_error(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        with pytest.raises(OutputError, match="could not write to"):
            save_result(make_result(), locked)
    finally:
        locked.chmod(0o700)


def test_output_path_that_is_a_file_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_text("x")
    with pytest.raises(OutputError, match="could not write to"):
        save_result(make_result(), blocker)


def test_parse_a1111_reads_a_foreign_text() -> None:
    text = (
        "a house\nNegative prompt: ugly\n"
        'Steps: 20, Sampler: Euler a, CFG scale: 7, Seed: 42, Size: 512x512, Model: v1-5, Lora hashes: "x: 123"'
    )
    parsed = parse_a1111(text)
    assert parsed["prompt"] == "a house" and parsed["negative_prompt"] == "ugly"
    assert parsed["fields"]["Sampler"] == "Euler a" and parsed["fields"]["Lora hashes"] == "x: 123"


def test_read_metadata_of_a_plain_png(tmp_path: Path) -> None:
    path = tmp_path / "plain.png"
    Image.new("RGB", (4, 4)).save(path)
    meta = read_metadata(path)
    assert meta.parameters is None and meta.spatiora is None and meta.a1111 == {}
