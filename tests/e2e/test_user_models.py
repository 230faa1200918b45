"""The user's own files, as they have them, through the `spatiora` command: an AUTOMATIC1111
install named in one line, an A1111-layout SD 1.x and SDXL single file, a Kohya LoRA by <lora:>
tag and a negative embedding, with an empty Hugging Face cache, HF_HUB_OFFLINE=1 and the network
guard logging every socket the process opens."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from spatiora_tui.outputs import read_metadata
from tests import fake_files, lora_files
from tests.e2e.test_cli import assert_one_line_failure, spatiora
from tests.e2e.test_no_network import guarded_env, network_attempts

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def webui(tiny, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An AUTOMATIC1111 install holding the tiny checkpoints, a LoRA per family, embeddings."""
    root = tmp_path_factory.mktemp("stable-diffusion-webui")
    models = root / "models" / "Stable-diffusion"
    for key in ("sd1", "sdxl"):
        model = tiny[key]
        target = models / model.path.name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(model.path, target)
        shutil.copytree(model.config, models / model.config.name)  # NAME.config: its tiny architecture
        base = {"ss_base_model_version": "sdxl_base_v1-0" if key == "sdxl" else "sd_v1"}
        lora_files.write_kohya(
            model.pipe,
            root / "models" / "Lora" / f"oak_{key}.safetensors",
            seed=3,
            metadata={**base, "ss_tag_frequency": json.dumps({"10_oak": {"oak floor": 9, "spz": 20}})},
        )
        lora_files.write_kohya(
            model.pipe,
            root / "models" / "Lora" / "styles" / f"detail_{key}.safetensors",
            components=("unet", "text_encoder"),
            seed=4,
            metadata=base,
        )
    (root / "embeddings").mkdir()
    save_file({"emb_params": torch.randn(2, 32)}, str(root / "embeddings" / "easynegative.safetensors"))
    save_file(
        {"clip_l": torch.randn(2, 32), "clip_g": torch.randn(2, 40)}, str(root / "embeddings" / "negxl.safetensors")
    )
    fake_files.write(models / "flux1-dev.safetensors", {"double_blocks.0.img_attn.qkv.weight": (9, 3)})
    return root


def project(tmp_path: Path, webui: Path, source: str, negative: str, adapter: str = "") -> Path:
    adapters = f'adapters = [{{name = "{adapter}", weight = 0.5}}]\n' if adapter else ""
    (tmp_path / "config.toml").write_text(
        f'[model]\nsource = "{source}"\n\n[paths]\ninstalls = ["{webui}"]\n\n'
        f'[[tasks]]\nname = "room"\n{adapters}prompt_template = "photo of {{prompt}}"\n'
        f'negative_prompt = "{negative}"\nsteps = 2\nwidth = 64\nheight = 64\nscheduler = "euler"\n'
    )
    return tmp_path


@pytest.mark.parametrize(("key", "negative"), [("sd1", "easynegative, blurry"), ("sdxl", "negxl, blurry")])
def test_generate_offline_with_a_lora_tag_and_a_negative_embedding(
    webui, tmp_path: Path, tiny, key: str, negative: str
) -> None:
    stem = tiny[key].path.stem
    folder = project(tmp_path, webui, stem, negative, adapter=f"oak_{key}")  # the task's Kohya LoRA
    log, hf_home = tmp_path / "sockets.log", tmp_path / "empty-hf-home"
    hf_home.mkdir()
    env = {**guarded_env(log, tmp_path / "cache", folder), "HF_HOME": str(hf_home)}
    proc = spatiora("generate", "--seed", "5", f"a sunlit room <lora:detail_{key}:0.7>", cwd=folder, env=env)
    assert proc.returncode == 0, proc.stderr
    assert network_attempts(log) == [], "not one network operation"
    assert not any(hf_home.rglob("*")), "nothing was written to (or fetched into) the Hugging Face cache"
    meta = read_metadata(Path(proc.stdout.strip()))
    fields = meta.a1111["fields"]
    sha = __import__("hashlib").sha256((webui / "models" / "Stable-diffusion" / f"{stem}.safetensors").read_bytes())
    assert fields["Model hash"] == sha.hexdigest()[:10] and fields["Model"] == stem
    assert list(meta.a1111["lora_hashes"]) == [f"oak_{key}", f"detail_{key}"]
    assert all(len(h) == 12 for h in meta.a1111["lora_hashes"].values())
    assert list(meta.a1111["ti_hashes"]) == [negative.split(",")[0]]
    assert meta.a1111["prompt"] == f"photo of a sunlit room <lora:oak_{key}:0.5> <lora:detail_{key}:0.7>"
    assert [a.get("from_prompt", False) for a in meta.spatiora["adapters"]] == [False, True]
    assert f"model: {stem}" in proc.stderr


def test_models_lists_the_install_with_hashes_and_problems(webui, tmp_path: Path, tiny) -> None:
    folder = project(tmp_path, webui, tiny["sd1"].path.stem, "")
    proc = spatiora("models", cwd=folder, env={"SPATIORA_CACHE_DIR": str(tmp_path / "cache")})
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert f"AUTOMATIC1111/Forge/SD.Next install: {webui}" in out
    assert "Checkpoints (3)" in out and "LoRAs (4)" in out and "Embeddings (2)" in out
    assert "SD 1.x · kohya · trained on sd_v1; triggers: spz, oak floor" in out
    assert "✗ flux1-dev" in out and "a Flux model" in out
    listed = json.loads(
        spatiora("models", "--json", cwd=folder, env={"SPATIORA_CACHE_DIR": str(tmp_path / "cache")}).stdout
    )
    by_name = {row["name"]: row for row in listed}
    assert len(by_name[tiny["sd1"].path.stem]["short_hash"]) == 10 and len(by_name["oak_sd1"]["short_hash"]) == 12
    assert by_name["negxl"]["what"] == "width (32, 40)"


def test_a_lora_as_model_source_is_refused_in_one_line(webui, tmp_path: Path) -> None:
    folder = project(tmp_path, webui, str(webui / "models" / "Lora" / "oak_sd1.safetensors"), "")
    assert_one_line_failure(
        spatiora("generate", "x", cwd=folder), 1, "oak_sd1.safetensors is a LoRA", "adapters folder"
    )
