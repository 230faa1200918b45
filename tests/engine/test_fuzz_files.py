"""Damaged model files, generated: every case is a clean message or a correct result.

Hypothesis cuts real files (a tiny A1111-layout checkpoint, a Kohya LoRA, an embedding) short at
random offsets or flips random bytes in their header or data, then hands them to the code a user's
file meets. Nothing may escape but EngineError (which reaches the user as one line), and a failed
LoRA or embedding leaves nothing behind: no LoRA layer holds it, no token of it is in the
tokenizer, the active adapters are those of before. Runs are derandomized, so CI sees the same
cases each time.

Counts: 1,000 complete loads of damaged checkpoints (identification, diffusers, the checks after),
1,000 LoRA activations, 1,000 embedding loads.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from spatiora_tui.config import AdapterRef, ModelSettings
from spatiora_tui.engine.api import EngineError

FUZZ = settings(
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture, HealthCheck.data_too_large],
)


@st.composite
def damage(draw, data: bytes) -> bytes:
    """`data` cut short, or with 1-8 bytes XOR-ed in its header, its data, or anywhere."""
    header_end = 8 + int.from_bytes(data[:8], "little")
    where = draw(st.sampled_from(["cut", "header", "data", "length", "anywhere"]))
    if where == "cut":
        return data[: draw(st.integers(0, len(data) - 1))]
    span = {
        "header": (0, header_end - 1),
        "data": (header_end, len(data) - 1),
        "length": (0, 7),
        "anywhere": (0, len(data) - 1),
    }[where]
    damaged = bytearray(data)
    for offset, mask in draw(st.lists(st.tuples(st.integers(*span), st.integers(1, 255)), min_size=1, max_size=8)):
        damaged[offset] ^= mask
    return bytes(damaged)


def write_case(folder: Path, prefix: str, counter: dict[str, int], data: bytes) -> str:
    """Write one damaged file under a name no earlier case used; returns the name."""
    counter["case"] += 1
    name = f"{prefix}{counter['case']}x"
    (folder / f"{name}.safetensors").write_bytes(data)
    return name


# -- checkpoints ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def checkpoint_bytes(tiny) -> bytes:
    return tiny["sd1"].path.read_bytes()


def test_damaged_checkpoints_load_or_fail_cleanly(tiny, checkpoint_bytes, tmp_path: Path) -> None:
    """The whole load a user's file meets: identification, then diffusers, then the checks."""
    from spatiora_tui.engine.pipeline import load_pipeline

    path = tmp_path / "damaged.safetensors"
    shutil.copytree(tiny["sd1"].config, tmp_path / "damaged.config")  # its tiny architecture
    seen = {"refused": 0, "loaded": 0}

    @settings(FUZZ, max_examples=1000)
    @given(damage(checkpoint_bytes))
    def check(data: bytes) -> None:
        path.write_bytes(data)
        try:
            pipe, info, _ = load_pipeline(ModelSettings(source=str(path), device="cpu"), tmp_path)
        except EngineError as exc:
            assert "\n" not in str(exc) and str(exc)
            seen["refused"] += 1
            return
        assert info.family == "sd1" and not any(p.is_meta for p in pipe.unet.parameters())
        seen["loaded"] += 1

    check()
    assert seen["refused"] > 100 and seen["loaded"] > 100, seen


# -- LoRAs ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def lora_rig(tiny, tmp_path_factory: pytest.TempPathFactory):
    import copy

    from spatiora_tui.engine.adapters import LoraManager
    from tests import lora_files

    pipe = copy.deepcopy(tiny["sd1"].pipe)
    folder = tmp_path_factory.mktemp("fuzz-loras")
    lora_files.write_kohya(pipe, folder / "good.safetensors", components=("unet", "text_encoder"), seed=1)
    lora_files.write_kohya(
        pipe, folder / "source.safetensors", components=("unet", "text_encoder"), conv=True, varying_alphas=True, seed=2
    )
    manager = LoraManager(pipe, "sd1", [folder], ram_cache_mb=0)  # every case read from its file
    manager.activate([AdapterRef("good", 0.5)])
    return pipe, folder, manager


def holders(manager, name: str) -> int:
    return sum(1 for layer in manager.slots.tuner_layers() if name in getattr(layer, "lora_A", {}))


def test_damaged_loras_apply_whole_or_not_at_all(lora_rig) -> None:
    from tests.lora_files import conditioned_output

    pipe, folder, manager = lora_rig
    source = (folder / "source.safetensors").read_bytes()
    before_output = conditioned_output(pipe)
    before = manager.active
    counter = {"case": 0, "refused": 0, "applied": 0}

    @settings(FUZZ, max_examples=1000)
    @given(damage(source))
    def check(data: bytes) -> None:
        name = write_case(folder, "case", counter, data)
        try:
            manager.activate([AdapterRef("good", 0.5), AdapterRef(name, 0.8)])
        except EngineError as exc:
            assert "\n" not in str(exc)
            counter["refused"] += 1
            assert manager.active == before, "the previous adapters stay in force"
            assert name not in manager.resident and holders(manager, name) == 0, "nothing half-applied"
        else:
            counter["applied"] += 1
            manager.activate([AdapterRef("good", 0.5)])
            manager.evict(name)
            assert holders(manager, name) == 0
        finally:
            (folder / f"{name}.safetensors").unlink()
        if counter["case"] % 100 == 0:
            assert torch.equal(conditioned_output(pipe), before_output), "the model is as it was"

    check()
    assert counter["refused"] > 100 and counter["applied"] > 100, counter
    assert torch.equal(conditioned_output(pipe), before_output)


# -- embeddings ----------------------------------------------------------------------------------


def test_damaged_embeddings_load_whole_or_not_at_all(tiny, tmp_path: Path) -> None:
    import copy

    from safetensors.torch import save_file

    from spatiora_tui.engine.embeddings import EmbeddingManager

    pipe = copy.deepcopy(tiny["sdxl"].pipe)  # two encoders: a half-loaded embedding would show
    folder = tmp_path / "embeddings"
    folder.mkdir()
    save_file({"clip_l": torch.randn(3, 32), "clip_g": torch.randn(3, 40)}, str(tmp_path / "source.safetensors"))
    source = (tmp_path / "source.safetensors").read_bytes()
    manager = EmbeddingManager(pipe, "sdxl", [folder])
    counter = {"case": 0, "refused": 0, "loaded": 0}

    @settings(FUZZ, max_examples=1000)
    @given(damage(source))
    def check(data: bytes) -> None:
        name = write_case(folder, "emb", counter, data)
        manager.refresh()
        try:
            used = manager.use(f"a room, {name}")
        except EngineError as exc:
            assert "\n" not in str(exc)
            counter["refused"] += 1
            for tokenizer in (pipe.tokenizer, pipe.tokenizer_2):
                assert tokenizer.convert_tokens_to_ids(name) == tokenizer.unk_token_id, "no token left behind"
        else:
            assert [u.name for u in used] == [name]
            counter["loaded"] += 1
            for tokenizer in (pipe.tokenizer, pipe.tokenizer_2):
                assert tokenizer.convert_tokens_to_ids(name) != tokenizer.unk_token_id

    check()
    assert counter["refused"] > 100 and counter["loaded"] > 100, counter
