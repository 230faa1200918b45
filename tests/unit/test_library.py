"""The user's folders (A1111 / ComfyUI installs, [paths]), names, hashes and the CLIP tokenizer data."""

from __future__ import annotations

import gzip
import hashlib
import os
from pathlib import Path

import pytest

from spatiora_tui.config import ConfigError, PathSettings, Settings
from spatiora_tui.library.catalog import detect_install, library_folders, resolve_source, scan
from spatiora_tui.library.hashing import HashCache, addnet_hash_of_bytes
from tests import fake_files
from tests.fake_files import checkpoint

LORA = {"lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k.lora_down.weight": (4, 768)}


def a1111_install(root: Path) -> Path:
    fake_files.write(root / "models/Stable-diffusion/realistic_v6.safetensors", checkpoint("sd1"))
    fake_files.write(root / "models/Stable-diffusion/xl/juggernaut.safetensors", checkpoint("sdxl"))
    fake_files.write(root / "models/Lora/styles/oak_floor.safetensors", LORA)
    fake_files.write(root / "models/LyCORIS/detail.safetensors", LORA)
    fake_files.write(root / "embeddings/easynegative.safetensors", {"emb_params": (8, 768)})
    return root


def comfy_install(root: Path) -> Path:
    fake_files.write(root / "models/checkpoints/dreamshaper.safetensors", checkpoint("sd1"))
    fake_files.write(root / "models/loras/brick.safetensors", LORA)
    fake_files.write(root / "models/embeddings/badhands.safetensors", {"emb_params": (2, 768)})
    return root


def test_an_a1111_install_is_one_line(tmp_path: Path) -> None:
    root = a1111_install(tmp_path / "stable-diffusion-webui")
    settings = Settings(paths=PathSettings(installs=(str(root),)), base_dir=tmp_path)
    folders = library_folders(settings)
    assert folders.installs[0].kind == "AUTOMATIC1111/Forge/SD.Next"
    assert root / "models/Stable-diffusion" in folders.checkpoints
    assert folders.loras[-2:] == (root / "models/Lora", root / "models/LyCORIS")
    assert root / "embeddings" in folders.embeddings
    checkpoints = scan(folders.checkpoints)
    assert set(checkpoints.entries) == {"realistic_v6", "juggernaut"}
    assert checkpoints.find("xl/juggernaut").path.name == "juggernaut.safetensors"
    assert checkpoints.find("Realistic_V6.safetensors").name == "realistic_v6"  # case and suffix forgiven
    assert set(scan(folders.loras).entries) == {"oak_floor", "detail"}  # sub-folders searched
    assert set(scan(folders.embeddings).entries) == {"easynegative"}


def test_a_comfyui_install_and_a_portable_one(tmp_path: Path) -> None:
    for root in (comfy_install(tmp_path / "ComfyUI"), comfy_install(tmp_path / "portable" / "ComfyUI").parent):
        install = detect_install(root)
        assert install.kind.startswith("ComfyUI")
        assert [p.name for p in install.checkpoints] == ["checkpoints"]
        assert [p.name for p in install.loras] == ["loras"] and [p.name for p in install.embeddings] == ["embeddings"]


def test_a_folder_that_is_no_install_is_refused_with_what_was_looked_for(tmp_path: Path) -> None:
    (tmp_path / "random").mkdir()
    with pytest.raises(ConfigError, match="not an AUTOMATIC1111, Forge, SD.Next or ComfyUI folder.*models/checkpoints"):
        detect_install(tmp_path / "random")
    with pytest.raises(ConfigError, match="does not exist"):
        detect_install(tmp_path / "nowhere")


def test_named_folders_that_do_not_exist_are_reported_defaults_are_not(tmp_path: Path) -> None:
    settings = Settings(paths=PathSettings(models=("models", "/no/such/models"), loras=("gone",)), base_dir=tmp_path)
    assert library_folders(settings).missing == (Path("/no/such/models"), tmp_path / "gone")


def test_a_safetensors_file_wins_over_a_pickle_of_the_same_name_and_links_are_followed(tmp_path: Path) -> None:
    folder = tmp_path / "models"
    fake_files.write(folder / "same.safetensors", checkpoint("sd1"))
    (folder / "same.ckpt").write_bytes(b"pickle")
    (folder / "old.ckpt").write_bytes(b"pickle")
    elsewhere = fake_files.write(tmp_path / "elsewhere" / "linked.safetensors", checkpoint("sd1")).parent
    os.symlink(elsewhere, folder / "link")
    os.symlink(folder, folder / "link" / "loop")  # a cycle is walked once
    listing = scan((folder,))
    assert not listing.entries["same"].pickle and listing.entries["old"].pickle
    assert listing.entries["linked"].path == folder / "link" / "linked.safetensors"
    assert [e.path.name for e in listing.shadowed] == ["same.ckpt"]


def test_model_source_by_name_path_or_hub_id(tmp_path: Path) -> None:
    root = a1111_install(tmp_path / "webui")
    settings = Settings(paths=PathSettings(installs=(str(root),)), base_dir=tmp_path)
    found = root / "models/Stable-diffusion/realistic_v6.safetensors"
    assert resolve_source(settings, "realistic_v6") == str(found)
    assert resolve_source(settings, "realistic_v6.safetensors") == str(found)
    assert resolve_source(settings, "webui/models/Stable-diffusion/realistic_v6.safetensors") == str(found)
    assert resolve_source(settings, "demo") == "demo"
    assert resolve_source(settings, "stabilityai/sdxl-turbo") == "stabilityai/sdxl-turbo"


def test_hashes_are_a1111s_and_computed_once_per_file_version(tmp_path: Path) -> None:
    lora = fake_files.write(tmp_path / "l.safetensors", LORA, metadata={"ss_output_name": "l"})
    data = lora.read_bytes()
    header_end = 8 + int.from_bytes(data[:8], "little")
    assert addnet_hash_of_bytes(data) == hashlib.sha256(data[header_end:]).hexdigest()
    cache = HashCache(tmp_path / "cache" / "hashes.json")
    calls: list[tuple[int, int]] = []
    assert (
        cache.get(lora, "sha256", lambda done, total: calls.append((done, total))) == hashlib.sha256(data).hexdigest()
    )
    assert calls[-1] == (len(data), len(data))
    assert cache.get(lora, "addnet") == addnet_hash_of_bytes(data)
    again = HashCache(tmp_path / "cache" / "hashes.json")  # a new process: read from the file
    assert again.cached(lora, "sha256") == hashlib.sha256(data).hexdigest()
    lora.write_bytes(data + b"\0")  # changed: not reused
    assert again.cached(lora, "sha256") is None
    assert again.get(lora) == hashlib.sha256(data + b"\0").hexdigest()


def test_the_shipped_clip_merges_derive_openais_tokenizer_files_byte_for_byte() -> None:
    from spatiora_tui.engine.clip_tokenizer import (
        MERGES_FILE,
        MERGES_SHA256,
        VOCAB_SHA256,
        merges_text,
        shipped_merges,
        vocab_text,
    )

    merges = shipped_merges()
    assert len(merges) == 48_894
    assert hashlib.sha256(merges_text(merges).encode()).hexdigest() == MERGES_SHA256
    assert hashlib.sha256(vocab_text(merges).encode()).hexdigest() == VOCAB_SHA256
    assert gzip.decompress(MERGES_FILE.read_bytes()).decode() == merges_text(merges)
