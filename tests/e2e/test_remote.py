"""RemoteEngine against a real `spatiora serve --stdio` process: what the link does when it breaks
or the versions differ. (The contract suite runs it as a third engine.)"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from spatiora_tui.config import settings_to_toml
from spatiora_tui.engine.api import EngineError, GenerationRequest, StepPreview
from spatiora_tui.remote import client
from spatiora_tui.remote.client import RemoteEngine
from tests.helpers import small_settings

pytestmark = pytest.mark.slow


def server_argv(root: Path) -> list[str]:
    config = root / "config.toml"
    config.write_text(settings_to_toml(small_settings(root)), encoding="utf-8")
    return [sys.executable, "-m", "spatiora_tui", "serve", "--stdio", "--config", str(config)]


def test_a_server_that_dies_mid_generation_is_an_engine_error_not_a_hang(tmp_path: Path, cache_dir: Path) -> None:
    engine = RemoteEngine(server_argv(tmp_path))
    engine.load()

    def kill_at_step_two(preview: StepPreview) -> None:
        if preview.step == 2:
            engine._proc.kill()

    with pytest.raises(EngineError, match="engine server stopped"):
        engine.generate(GenerationRequest(prompt="a loft", task="base", seed=1, steps=6), on_step=kill_at_step_two)
    with pytest.raises(EngineError, match="engine server stopped"):
        engine.generate(GenerationRequest(prompt="again", task="base", seed=1))
    engine.close()


def test_a_server_of_another_version_is_refused_naming_both(
    tmp_path: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(client, "__version__", "0.0.1")
    with pytest.raises(EngineError, match=r"server is spatiora \S+ .* this is spatiora 0\.0\.1"):
        RemoteEngine(server_argv(tmp_path))


def test_a_server_that_cannot_start_says_why(tmp_path: Path) -> None:
    with pytest.raises(EngineError, match="cannot start the engine server"):
        RemoteEngine([str(tmp_path / "no-such-program")])
    bad = [sys.executable, "-m", "spatiora_tui", "serve", "--stdio", "--config", str(tmp_path / "missing.toml")]
    with pytest.raises(EngineError, match="engine server stopped: .*missing.toml"):
        RemoteEngine(bad)
