"""What the repository tracks: source and small data, never build outputs, wheels or weights."""

from __future__ import annotations

import subprocess

import pytest

from tests.helpers import REPO

#: Files that are data on purpose, each with why it is as big as it is.
LARGE_ALLOWED = {
    "spatiora_tui/engine/configs/clip/merges.txt.gz": "CLIP's BPE merges, for offline single-file loading",
    "spatiora_tui/engine/demo_model/spatiora-demo.safetensors": "the demo model, trained by tools/train_demo.py",
}
#: Weights shipped on purpose: the demo model and its task LoRAs, made by tools/train_demo.py
#: (docs/demo.md), in the layouts users' own files have.
WEIGHTS_SHIPPED = (
    "spatiora_tui/engine/demo_model/spatiora-demo.safetensors",
    "spatiora_tui/engine/demo_model/adapters/interior.safetensors",
    "spatiora_tui/engine/demo_model/adapters/floorplan.safetensors",
)
MAX_BYTES = 300_000
BINARY_SUFFIXES = (
    ".whl",
    ".egg",
    ".tar.gz",
    ".zip",
    ".safetensors",
    ".ckpt",
    ".pt",
    ".pth",
    ".bin",
    ".so",
    ".pyc",
    ".onnx",
    ".gguf",
)


def tracked() -> list[str]:
    try:
        out = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    return [name for name in out.decode().split("\0") if name]


def test_no_large_file_is_tracked_outside_the_data_paths() -> None:
    too_big = []
    for name in tracked():
        path = REPO / name
        if path.is_file() and path.stat().st_size > MAX_BYTES and name not in LARGE_ALLOWED:
            too_big.append(f"{name} ({path.stat().st_size // 1024} KB)")
    assert not too_big, f"large files tracked (add to LARGE_ALLOWED with a reason, or untrack): {too_big}"


def test_no_build_output_or_weights_are_tracked() -> None:
    found = [name for name in tracked() if name.endswith(BINARY_SUFFIXES) and name not in WEIGHTS_SHIPPED]
    assert not found, f"build outputs, wheels or weights are tracked: {found}"


def test_wheels_and_build_outputs_are_ignored() -> None:
    probe = ["pyflakes-4.1.0-py2.py3-none-any.whl", ".whl/torch.whl", "build/lib/x.py", "x.egg-info/PKG-INFO"]
    out = subprocess.run(["git", "check-ignore", "--no-index", *probe], cwd=REPO, capture_output=True, text=True)
    assert sorted(out.stdout.split()) == sorted(probe)


def test_a_mebibyte_is_written_in_one_place() -> None:
    """units.MB is the one table for the fact; `/ 2**20` written inline drifts from it."""
    inline = [
        f"{path.relative_to(REPO)}:{number}"
        for path in sorted((REPO / "spatiora_tui").rglob("*.py"))
        if path.name != "units.py"
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if "/2**20" in line.replace(" ", "")
    ]
    assert not inline, f"use spatiora_tui.units.MB: {inline}"


def test_a_random_seed_is_drawn_in_one_place() -> None:
    """config.random_seed() is the one draw from SEED_RANGE; the session and the engine drew
    their own copies of it."""
    draws = [
        str(path.relative_to(REPO))
        for path in sorted((REPO / "spatiora_tui").rglob("*.py"))
        if "randbelow(" in path.read_text(encoding="utf-8")
    ]
    assert draws == ["spatiora_tui/config.py"]
