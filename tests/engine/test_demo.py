"""The built-in demo model: offline, deterministic, verified, rebuilt when damaged."""

from __future__ import annotations

import json
from pathlib import Path

from spatiora_tui.engine.demo import MANIFEST, build_demo, demo_dir, ensure_demo, verify_demo


def test_two_builds_are_byte_identical(tmp_path: Path) -> None:
    build_demo(tmp_path / "a")
    build_demo(tmp_path / "b")
    a = json.loads((tmp_path / "a" / MANIFEST).read_text())
    b = json.loads((tmp_path / "b" / MANIFEST).read_text())
    assert a == b and a["random_weights"] is True
    names = set(a["files"])
    assert {"adapters/interior.safetensors", "adapters/floorplan.safetensors"} <= names
    assert any(n.startswith("pipeline/unet/") for n in names) and any(
        n.startswith("pipeline/tokenizer/") for n in names
    )


def test_demo_adapters_are_real_lora_files(tmp_path: Path) -> None:
    from safetensors import safe_open

    build_demo(tmp_path / "d")
    for name in ("interior", "floorplan"):
        with safe_open(str(tmp_path / "d" / "adapters" / f"{name}.safetensors"), framework="pt") as fh:
            keys = list(fh.keys())
        assert keys and all(k.startswith("unet.") for k in keys)
        assert any("lora_A" in k for k in keys) and any("lora_B" in k for k in keys)


def test_ensure_rebuilds_when_missing_or_corrupt(tmp_path: Path) -> None:
    messages: list[str] = []
    folder = ensure_demo(tmp_path, messages.append)
    assert folder == demo_dir(tmp_path) and verify_demo(folder) is None
    assert "not built yet" in messages[-1]

    assert ensure_demo(tmp_path, messages.append) == folder and len(messages) == 1, "a good build is reused"

    unet = next((folder / "pipeline" / "unet").glob("*.safetensors"))
    unet.write_bytes(unet.read_bytes()[:-100])
    assert "corrupt" in (verify_demo(folder) or "")
    ensure_demo(tmp_path, messages.append)
    assert "corrupt" in messages[-1] and verify_demo(folder) is None

    (folder / "adapters" / "interior.safetensors").unlink()
    assert "missing" in (verify_demo(folder) or "")
    ensure_demo(tmp_path, messages.append)
    assert verify_demo(folder) is None
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".demo-build-")], "no staging dir left"
