"""tools/train_demo.py, the demo model's training command, in a few steps of each stage: it runs
from one command with progress, skips what is done, is seeded (the same weights twice), and what
it writes loads as diffusers components and LoRA files."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def train(out: Path, *args: str) -> str:
    proc = subprocess.run(
        [sys.executable, str(REPO / "tools" / "train_demo.py"), "--out", str(out), "--smoke", "--every", "1", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """One smoke run, shared: the stage test reads it and the reproducibility test compares a
    second run with it (a run is most of this file's time)."""
    out = tmp_path_factory.mktemp("train") / "a"
    return out, train(out)


def test_every_stage_runs_with_progress_and_skips_what_is_done(trained: tuple[Path, str]) -> None:
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from safetensors.torch import load_file
    from transformers import CLIPTextModel

    out, printed = trained
    for stage in ("vae step 2/2", "base step 2/2", "lora interior step 2/2", "lora floorplan step 2/2"):
        assert stage in printed
    vae = AutoencoderKL.from_pretrained(out / "vae")
    assert vae.config.scaling_factor > 0 and vae.config.block_out_channels == [32, 64, 64]
    unet = UNet2DConditionModel.from_pretrained(out / "unet")
    text_encoder = CLIPTextModel.from_pretrained(out / "text_encoder")
    with torch.no_grad():
        context = text_encoder(torch.zeros(1, 77, dtype=torch.long))[0]
        assert unet(torch.zeros(1, 4, 16, 16), 10, context).sample.shape == (1, 4, 16, 16)
    for task in ("interior", "floorplan"):
        lora = load_file(out / "loras" / f"{task}.safetensors")
        assert any("lora_A" in key or "lora.down" in key for key in lora)
    again = train(out)
    assert "vae: done already" in again and "base: done already" in again


def test_the_same_command_gives_the_same_files(trained: tuple[Path, str], tmp_path: Path) -> None:
    """Every stage is seeded, the export included: two runs write byte-identical files, so the
    command reproduces the shipped weights, not just their kind (docs/demo.md)."""
    first, second = trained[0], tmp_path / "b"
    train(second)
    files = sorted(p.relative_to(first) for p in first.rglob("*") if p.is_file())
    for part in ("vae", "unet", "text_encoder", "loras", "models", "adapters"):
        assert any(f.parts[0] == part and f.suffix == ".safetensors" for f in files), part
    assert files == sorted(p.relative_to(second) for p in second.rglob("*") if p.is_file())
    assert [f for f in files if digest(first / f) != digest(second / f)] == []


def test_a_lora_batch_trains_the_negative_prompt_partly_on_the_other_kind() -> None:
    import importlib.util
    import random

    import torch

    spec = importlib.util.spec_from_file_location("train_demo", REPO / "tools" / "train_demo.py")
    assert spec is not None and spec.loader is not None
    trainer = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(trainer)
    n = 4000
    own = torch.zeros(n, 3, 2, 2)  # the task's kind: 0 after the batch's scaling
    others = torch.full((8, 3, 2, 2), 255, dtype=torch.uint8)  # the other kind: 1.0
    captions = [f"caption {i}" for i in range(n)]
    gen = torch.Generator().manual_seed(0)
    x, prompts = trainer.lora_batch(own, captions, others, "plan of {prompt}", "photo", random.Random(0), gen)
    other = x.flatten(1).eq(1.0).all(1).tolist()
    share = {
        "contrast": sum(o and p == "photo" for o, p in zip(other, prompts)) / n,
        "negative": sum(not o and p == "photo" for o, p in zip(other, prompts)) / n,
        "empty": sum(not o and p == "" for o, p in zip(other, prompts)) / n,
        "prompt": sum(not o and p == f"plan of caption {i}" for i, (o, p) in enumerate(zip(other, prompts))) / n,
    }
    expected = {"contrast": trainer.CONTRAST, "negative": trainer.NEGATIVE, "empty": trainer.UNCOND}
    for name, value in expected.items():
        assert abs(share[name] - value) < 0.02, share
    assert abs(sum(share.values()) - 1.0) < 1e-9, share  # nothing else: an other-kind image is never captioned
    # Without a negative prompt, nothing of the other kind is shown.
    x, prompts = trainer.lora_batch(own, captions, others, "plan of {prompt}", "", random.Random(0), gen)
    assert not x.eq(1.0).any() and "photo" not in prompts
