"""The adapter catalog on its own, as `spatiora doctor` and `spatiora models` use it: no model,
no torch; listing, finding, and what a missing or pickled adapter is told as."""

from __future__ import annotations

from pathlib import Path

import pytest

from spatiora_tui.engine.adapters import AdapterCatalog
from spatiora_tui.engine.api import EngineError
from tests import fake_files

LORA = {"lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": (4, 320)}


def test_lists_and_finds_adapters_in_both_folder_layouts_and_the_library(tmp_path: Path) -> None:
    own, library = tmp_path / "adapters", tmp_path / "loras"
    fake_files.write(own / "oak_floor.safetensors", LORA)
    fake_files.write(own / "plan" / "pytorch_lora_weights.safetensors", LORA)
    fake_files.write(own / "plan" / "other.safetensors", LORA)  # two files: the diffusers name wins
    fake_files.write(library / "styles" / "ink.safetensors", LORA)
    fake_files.write(library / "oak_floor.safetensors", LORA)  # shadowed by the adapter folder's
    catalog = AdapterCatalog([own], [library])
    found = catalog.available()
    assert found == {
        "oak_floor": own / "oak_floor.safetensors",
        "plan": own / "plan" / "pytorch_lora_weights.safetensors",
        "ink": library / "styles" / "ink.safetensors",
    }
    assert all(catalog.find(name) == path for name, path in found.items())


def test_a_missing_adapter_names_where_it_was_looked_for_and_the_near_names(tmp_path: Path) -> None:
    fake_files.write(tmp_path / "oak_floor.safetensors", LORA)
    with pytest.raises(EngineError, match=r"'oak_flor' not found.*" + str(tmp_path) + r".*Did you mean 'oak_floor'"):
        AdapterCatalog([tmp_path]).find("oak_flor")


def test_a_file_added_after_the_first_look_is_found(tmp_path: Path) -> None:
    catalog = AdapterCatalog([], [tmp_path])
    assert catalog.available() == {}
    fake_files.write(tmp_path / "late.safetensors", LORA)
    assert catalog.find("late") == tmp_path / "late.safetensors"


def test_pickle_adapters_are_refused_unless_allowed(tmp_path: Path) -> None:
    (tmp_path / "old.pt").write_bytes(b"not read")
    with pytest.raises(EngineError, match=r"'old' is a pickle file"):
        AdapterCatalog([tmp_path]).find("old")
    assert AdapterCatalog([tmp_path], allow_pickle=True).find("old") == tmp_path / "old.pt"
