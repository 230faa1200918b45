"""The headless core never imports the UI toolkit; light modules never import torch.

Each check runs in a fresh interpreter, since this test process has imported everything already.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

CORE = [
    "spatiora_tui.config",
    "spatiora_tui.outputs",
    "spatiora_tui.hw",
    "spatiora_tui.hw.memory",
    "spatiora_tui.engine",
    "spatiora_tui.engine.api",
    "spatiora_tui.engine.pipeline",
    "spatiora_tui.engine.previews",
    "spatiora_tui.engine.previews.latent2rgb",
    "spatiora_tui.engine.previews.taesd",
    "spatiora_tui.engine.previews.vae",
    "spatiora_tui.engine.adapters",
    "spatiora_tui.engine.adapters.catalog",
    "spatiora_tui.engine.adapters.ram",
    "spatiora_tui.engine.adapters.slots",
    "spatiora_tui.engine.adapters.fuse",
    "spatiora_tui.engine.generate",
    "spatiora_tui.engine.demo",
    "spatiora_tui.engine.local",
    "spatiora_tui.engine.conditioning",
    "spatiora_tui.engine.embeddings",
    "spatiora_tui.engine.clip_tokenizer",
    "spatiora_tui.prompts",
    "spatiora_tui.library.catalog",
    "spatiora_tui.library.identify",
    "spatiora_tui.library.listing",
]
# Imported by the CLI before it knows what to do, and by the UI: they must stay cheap.
# The model library answers `spatiora models` and the model picker's list from file headers alone.
LIGHT = [
    "spatiora_tui.config",
    "spatiora_tui.engine.previews",
    "spatiora_tui.notices",
    "spatiora_tui.engine.api",
    "spatiora_tui.cli",
    "spatiora_tui.outputs",
    "spatiora_tui.prompts",
    "spatiora_tui.library.identify",
    "spatiora_tui.library.listing",
    "spatiora_tui.library.catalog",
    "spatiora_tui.library.hashing",
]


def modules_after_import(module: str) -> set[str]:
    code = f"import sys, {module}; print('\\n'.join(sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return {line.split(".")[0] for line in out.stdout.splitlines()}


@pytest.mark.parametrize("module", CORE)
def test_core_module_does_not_import_the_ui_toolkit(module: str) -> None:
    loaded = modules_after_import(module)
    assert not loaded & {"textual", "textual_image", "rich"}, module


@pytest.mark.parametrize("module", LIGHT)
def test_light_module_does_not_import_torch(module: str) -> None:
    loaded = modules_after_import(module)
    assert not loaded & {"torch", "diffusers", "peft", "transformers"}, module
