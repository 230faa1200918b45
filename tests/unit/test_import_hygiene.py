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
    "spatiora_tui.engine.preview",
    "spatiora_tui.engine.adapters",
    "spatiora_tui.engine.generate",
    "spatiora_tui.engine.demo",
    "spatiora_tui.engine.files",
    "spatiora_tui.engine.local",
]
# Imported by the CLI before it knows what to do, and by the UI: they must stay cheap.
LIGHT = ["spatiora_tui.config", "spatiora_tui.engine.api", "spatiora_tui.cli", "spatiora_tui.outputs"]


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
