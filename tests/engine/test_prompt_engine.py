"""A1111 habits end to end on single-file models: <lora:> tags, emphasis, long prompts,
embeddings by name, and the hashes AUTOMATIC1111 writes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import save_file

from spatiora_tui.engine.api import EngineError, GenerationRequest
from spatiora_tui.engine.conditioning import encode_prompts
from spatiora_tui.library.hashing import addnet_hash_of_bytes
from spatiora_tui.outputs import read_metadata, save_result
from tests import lora_files
from tests.engine.helpers import tiny_settings


@pytest.fixture(scope="module", params=["sd1", "sdxl"])
def rig(request, tiny, tmp_path_factory: pytest.TempPathFactory):
    """A LocalEngine on a tiny single file, with a LoRA folder and an embeddings folder."""
    from spatiora_tui.engine.local import LocalEngine

    model = tiny[request.param]
    root = tmp_path_factory.mktemp(f"rig-{request.param}")
    lora_files.write_kohya(model.pipe, root / "loras" / "styles" / "oak_floor.safetensors", seed=11)
    widths = (32, 40) if request.param == "sdxl" else (32,)
    gen = torch.Generator().manual_seed(4)
    tensors = (
        {"clip_l": torch.randn(2, 32, generator=gen), "clip_g": torch.randn(2, 40, generator=gen)}
        if len(widths) == 2
        else {"emb_params": torch.randn(2, 32, generator=gen)}
    )
    (root / "embeddings").mkdir()
    save_file(tensors, str(root / "embeddings" / "badhands.safetensors"))
    other = {"emb_params": torch.randn(1, 40)} if len(widths) == 1 else {"emb_params": torch.randn(1, 32)}
    save_file(other, str(root / "embeddings" / "wrongwidth.safetensors"))
    settings = tiny_settings(model, root, loras=(str(root / "loras"),), embeddings=(str(root / "embeddings"),))
    engine = LocalEngine(settings, cache_dir=root / "cache")
    engine.load()
    return engine, root


def pixels(result) -> np.ndarray:
    return np.asarray(result.image).astype(np.int16)


def test_a_lora_tag_adds_its_adapter_for_that_request_only(rig) -> None:
    engine, root = rig
    plain = engine.generate(GenerationRequest(prompt="a room", task="plain", seed=7))
    tagged = engine.generate(GenerationRequest(prompt="a room <lora:oak_floor:0.8>", task="plain", seed=7))
    after = engine.generate(GenerationRequest(prompt="a room", task="plain", seed=7))
    assert np.abs(pixels(tagged) - pixels(plain)).max() > 0, "the tag's adapter draws"
    assert np.array_equal(pixels(after), pixels(plain)), "and is gone for the next request"
    assert tagged.params.full_prompt == "a room", "the model does not read the tag"
    assert [(a.name, a.weight) for a in tagged.params.adapters] == [("oak_floor", 0.8)]
    assert tagged.params.prompt_loras == ("oak_floor",)
    data = (root / "loras" / "styles" / "oak_floor.safetensors").read_bytes()
    assert tagged.params.adapters[0].a1111_hash == addnet_hash_of_bytes(data)


def test_an_unknown_or_bad_tag_fails_cleanly_and_changes_nothing(rig) -> None:
    engine, _ = rig
    before = engine.generate(GenerationRequest(prompt="a room", task="plain", seed=2))
    with pytest.raises(EngineError, match="adapter 'oak_flor' not found.*Did you mean 'oak_floor'"):
        engine.generate(GenerationRequest(prompt="a room <lora:oak_flor:1>", task="plain", seed=2))
    with pytest.raises(EngineError, match="is not a number"):
        engine.generate(GenerationRequest(prompt="a room <lora:oak_floor:much>", task="plain", seed=2))
    again = engine.generate(GenerationRequest(prompt="a room", task="plain", seed=2))
    assert np.array_equal(pixels(again), pixels(before))


def test_emphasis_and_long_prompts_reach_the_model(rig) -> None:
    engine, _ = rig
    pipe = engine.pipeline
    plain = encode_prompts(pipe, "a red room", "", 7.0)["prompt_embeds"]
    assert torch.equal(plain, encode_prompts(pipe, "a red room", "", 7.0)["prompt_embeds"])
    weighted = encode_prompts(pipe, "a (red:1.5) room", "", 7.0)["prompt_embeds"]
    assert weighted.shape == plain.shape and not torch.equal(weighted, plain)
    long = encode_prompts(pipe, ", ".join(["a wooden table"] * 40), "blurry", 7.0)  # 159 tokens
    assert (
        long["prompt_embeds"].shape[1] == 77 * 3 and long["negative_prompt_embeds"].shape == long["prompt_embeds"].shape
    )
    broken = encode_prompts(pipe, "a room BREAK a window", "", 7.0)["prompt_embeds"]
    assert broken.shape[1] == 77 * 2


def test_a_negative_embedding_is_used_by_name_and_hashed(rig, tmp_path: Path) -> None:
    engine, root = rig
    result = engine.generate(GenerationRequest(prompt="a room", task="neg", seed=5))
    assert [e.name for e in result.params.embeddings] == ["badhands"]
    assert "badhands" in engine._embeddings.loaded  # loaded once, kept
    without = engine.generate(GenerationRequest(prompt="a room", task="plain", seed=5, negative_prompt="blurry"))
    assert without.params.embeddings == ()
    path = save_result(result, tmp_path)
    meta = read_metadata(path)
    import hashlib

    sha = hashlib.sha256((root / "embeddings" / "badhands.safetensors").read_bytes()).hexdigest()
    assert meta.a1111["ti_hashes"] == {"badhands": sha[:12]}
    assert meta.a1111["fields"]["Model hash"] == result.model.sha256[:10]
    assert meta.spatiora["embeddings"] == [{"name": "badhands", "sha256": sha}]


def test_an_embedding_for_other_text_encoders_is_refused_by_name(rig) -> None:
    engine, _ = rig
    with pytest.raises(EngineError, match="embedding 'wrongwidth'.*remove wrongwidth from the prompt"):
        engine.generate(GenerationRequest(prompt="a room, wrongwidth", task="plain", seed=5))
    assert "wrongwidth" not in engine._embeddings.loaded
    engine.generate(GenerationRequest(prompt="a room", task="plain", seed=5))  # still works


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.sampled_from(["oak", "floor", ",", "(warm:1.3)", "[dim]", "BREAK", "living room", "window,"]), max_size=120
    ).map(" ".join)
)
def test_chunks_hold_at_most_75_tokens_and_lose_none(text: str) -> None:
    from spatiora_tui.engine.clip_tokenizer import clip_tokenizer
    from spatiora_tui.engine.conditioning import CHUNK, _chunks
    from spatiora_tui.prompts import parse_emphasis, plain_text

    tokenizer = _TOKENIZER.setdefault("clip", clip_tokenizer())
    chunks = _chunks(tokenizer, text)
    assert chunks and all(len(c.ids) <= CHUNK and len(c.ids) == len(c.weights) for c in chunks)
    pieces = [run[0] for run in parse_emphasis(text) if run is not None]
    expected = [t for piece in pieces for t in tokenizer(piece, add_special_tokens=False).input_ids]
    assert [t for c in chunks for t in c.ids] == expected
    assert plain_text(text) == "".join(pieces)


_TOKENIZER: dict[str, Any] = {}


def test_a_pickle_embedding_named_in_a_prompt_is_a_warning_not_silence(rig) -> None:
    engine, root = rig
    (root / "embeddings" / "oldneg.pt").write_bytes(b"\x80\x04junk")  # added while running: found
    result = engine.generate(GenerationRequest(prompt="a room, oldneg", task="plain", seed=5))
    assert result.image is not None and result.params.embeddings == ()
    assert any("oldneg in the prompt is a pickle embedding (oldneg.pt)" in w for w in result.warnings)
