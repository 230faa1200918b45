"""config.toml: strict validation with messages that name the file, the key and what is allowed."""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path
from typing import Any

import pytest

from spatiora_tui.config import (
    ConfigError,
    Settings,
    find_config,
    load_settings,
    read_settings,
    settings_to_toml,
    task_with_overrides,
    write_settings,
)
from tests.helpers import REPO


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text, encoding="utf-8")
    return path


def error_of(tmp_path: Path, text: str) -> str:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        read_settings(path)
    message = str(info.value)
    assert str(path) in message, "the message must name the file"
    assert "\n" not in message.strip(), "one line"
    return message


def test_shipped_config_equals_the_built_in_defaults() -> None:
    shipped = read_settings(REPO / "config.toml")
    defaults = Settings()
    for f in dataclasses.fields(Settings):
        if not f.metadata.get("internal"):
            assert getattr(shipped, f.name) == getattr(defaults, f.name), f.name


def test_shipped_tasks_differ_as_the_paper_prescribes() -> None:
    shipped = read_settings(REPO / "config.toml")
    interior, floorplan = shipped.task("interior"), shipped.task("floorplan")
    assert "photo" in interior.prompt_template and "floor plan" in floorplan.prompt_template
    assert floorplan.steps < interior.steps and floorplan.guidance > interior.guidance
    assert [a.name for a in interior.adapters] == ["interior"]
    assert [a.name for a in floorplan.adapters] == ["floorplan"]


def test_round_trip_through_tomli_w(tmp_path: Path) -> None:
    settings = read_settings(REPO / "config.toml")
    target = tmp_path / "sub" / "written.toml"
    write_settings(settings, target)
    again = read_settings(target)
    assert again.tasks == settings.tasks and again.model == settings.model and again.preview == settings.preview
    assert not list(target.parent.glob(".*.tmp")), "no temp file left behind"


def test_partial_file_keeps_defaults_elsewhere(tmp_path: Path) -> None:
    settings = read_settings(write(tmp_path, '[model]\ndevice = "cpu"\n'))
    assert settings.model.device == "cpu" and settings.model.source == "demo"
    assert settings.tasks == Settings().tasks


@pytest.mark.parametrize(
    ("text", "fragments"),
    [
        ('[model]\nsorce = "demo"\n', ["model.sorce", "unknown key", "source"]),
        ("[bogus]\nx = 1\n", ["bogus", "unknown key", "model"]),
        ('[model]\ndevice = "gpu"\n', ["model.device", "'gpu'", "auto, cuda, mps, cpu"]),
        ("[model]\ndtype = 16\n", ["model.dtype", "16", "fp16"]),
        ('[preview]\nevery_n_steps = "2"\n', ["preview.every_n_steps", "expected an integer", "a string"]),
        ("[preview]\nevery_n_steps = 0\n", ["preview.every_n_steps", "between 1 and 1000"]),
        ('[preview]\nmethod = "taesd-xl-turbo"\n', ["preview.method", "latent2rgb"]),
        ('[[tasks]]\nname = "a"\nwidth = 500\n', ["tasks[0].width", "multiple of 8", "496 or 504"]),
        ('[[tasks]]\nname = "a"\nscheduler = "dpm_fast"\n', ["tasks[0].scheduler", "dpm_fast", "euler_a", "ddim"]),
        ('[[tasks]]\nname = "a"\nprompt_template = "no slot"\n', ["tasks[0].prompt_template", "{prompt}"]),
        ('[[tasks]]\nname = "a"\nsteps = 1.5\n', ["tasks[0].steps", "expected an integer", "a number"]),
        ('[[tasks]]\nname = "a"\nguidance = 99\n', ["tasks[0].guidance", "between 0 and 30"]),
        ('[[tasks]]\ndescription = "x"\n', ["tasks[0].name", "missing"]),
        ('[[tasks]]\nname = "a"\nadapters = [{name = "x", wieght = 1}]\n', ["tasks[0].adapters[0].wieght", "weight"]),
        ('[[tasks]]\nname = "a"\nadapters = "x"\n', ["tasks[0].adapters", "expected a list"]),
        ('[[tasks]]\nname = "a"\n[[tasks]]\nname = "a"\n', ["unique", "a"]),
        ("tasks = []\n", ["at least one"]),
        ('model = "demo"\n', ["model", "expected a table"]),
        ('[ui]\npreview_cpu_budget = "fast"\n', ["ui.preview_cpu_budget", '"auto" or a number', "'fast'"]),
        ("[ui]\npreview_cpu_budget = 2\n", ["ui.preview_cpu_budget", "between 0.005 and 1"]),
        ("[ui]\npreview_cpu_budget = true\n", ["ui.preview_cpu_budget", '"auto" or a number']),
    ],
)
def test_bad_values_name_the_key_and_what_is_allowed(tmp_path: Path, text: str, fragments: list[str]) -> None:
    message = error_of(tmp_path, text)
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"


def test_the_preview_budget_is_auto_by_default_or_a_number(tmp_path: Path) -> None:
    assert Settings().ui.preview_cpu_budget == "auto"
    path = tmp_path / "config.toml"
    for given, read in (("0.05", 0.05), ("1", 1.0), ('"auto"', "auto")):
        path.write_text(f"[ui]\npreview_cpu_budget = {given}\n", encoding="utf-8")
        assert read_settings(path).ui.preview_cpu_budget == read


def test_toml_syntax_error_gives_line_and_column(tmp_path: Path) -> None:
    message = error_of(tmp_path, '[model]\nsource = "demo\n')
    assert "not valid TOML" in message and "line 2" in message and "column" in message


def test_lookup_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cwd, env_dir, user = tmp_path / "cwd", tmp_path / "env", tmp_path / "xdg-config" / "spatiora"
    for folder in (cwd, env_dir, user):
        folder.mkdir(parents=True)
        (folder / "config.toml").write_text("", encoding="utf-8")
    explicit = tmp_path / "explicit.toml"
    explicit.write_text("", encoding="utf-8")
    monkeypatch.chdir(cwd)
    monkeypatch.setenv("SPATIORA_CONFIG", str(env_dir / "config.toml"))

    assert find_config(explicit) == explicit
    assert find_config() == env_dir / "config.toml"
    monkeypatch.delenv("SPATIORA_CONFIG")
    assert find_config() == cwd / "config.toml"
    (cwd / "config.toml").unlink()
    assert find_config() == user / "config.toml"
    (user / "config.toml").unlink()
    assert find_config() is None
    assert load_settings().tasks == Settings().tasks


def test_named_config_must_exist(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match="--config names .*missing.toml"):
        find_config(tmp_path / "missing.toml")
    monkeypatch.setenv("SPATIORA_CONFIG", str(tmp_path / "gone.toml"))
    with pytest.raises(ConfigError, match="SPATIORA_CONFIG names"):
        find_config()


def test_paths_are_relative_to_the_config_file_and_env_overrides_output(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = read_settings(write(tmp_path, '[output]\ndir = "renders"\n[adapters]\ndir = "loras"\n'))
    monkeypatch.delenv("SPATIORA_OUTPUT_DIR")
    assert settings.output_dir == tmp_path.resolve() / "renders"
    assert settings.adapter_dir == tmp_path.resolve() / "loras"
    monkeypatch.setenv("SPATIORA_OUTPUT_DIR", str(tmp_path / "elsewhere"))
    assert settings.output_dir == tmp_path / "elsewhere"


def test_unknown_task_lists_the_known_ones() -> None:
    with pytest.raises(ConfigError, match="unknown task 'kitchen'; known tasks: interior, floorplan"):
        Settings().task("kitchen")


def test_overrides_are_checked_like_the_file() -> None:
    task = Settings().task("floorplan")
    assert task_with_overrides(task, steps=5, width=None).steps == 5
    assert task_with_overrides(task, guidance=3).guidance == 3.0
    with pytest.raises(ConfigError, match="width must be a multiple of 8"):
        task_with_overrides(task, width=513)
    with pytest.raises(ConfigError, match="steps must be between 1 and 500"):
        task_with_overrides(task, steps=0)


def test_prompt_template_replacement_is_literal() -> None:
    task = Settings().task("floorplan")
    rendered = task.render_prompt("  a {weird} flat  ")
    assert "a {weird} flat," in rendered and rendered.startswith("2D architectural floor plan of a {weird}")


def test_toml_text_is_readable_and_documented(tmp_path: Path) -> None:
    # `spatiora config init` writes this: every key comes with its documentation, and the file
    # reads back as the same settings.
    text = settings_to_toml(Settings())
    assert text.startswith("# Spatiora TUI configuration")
    lines = text.splitlines()
    sections = {f.name: f for f in dataclasses.fields(Settings) if not f.metadata.get("internal")}
    documented_keys = 0
    for section, f in sections.items():
        cls: Any = (
            typing.get_args(typing.get_type_hints(Settings)[section])[0] if section == "tasks" else f.default_factory
        )
        header = f"[[{section}]]" if section == "tasks" else f"[{section}]"
        at = lines.index(header)
        assert lines[at - 1].startswith("# "), f"{header} has no comment above it"
        for key in dataclasses.fields(cls):
            key_line = next((i for i in range(at + 1, len(lines)) if lines[i].startswith(f"{key.name} = ")), None)
            if key_line is None:
                continue  # None-valued keys are left out (TOML has no null)
            first_words = " ".join(key.metadata["doc"].split()[:4])
            above = " ".join(line[2:] for line in lines[at:key_line] if line.startswith("# "))
            assert first_words in above, f"{section}.{key.name} is not documented above its line"
            documented_keys += 1
    assert documented_keys >= 30
    path = tmp_path / "config.toml"
    path.write_text(text, encoding="utf-8")
    assert read_settings(path) == dataclasses.replace(Settings(), base_dir=tmp_path, source_file=path)


def test_configuration_doc_covers_every_key() -> None:
    import dataclasses as dc

    from spatiora_tui.config import AdapterRef

    doc = (REPO / "docs" / "configuration.md").read_text(encoding="utf-8")
    hints = typing.get_type_hints(Settings)
    sections = [hints[f.name] for f in dc.fields(Settings) if not f.metadata.get("internal")]
    classes = [typing.get_args(c)[0] if typing.get_origin(c) is tuple else c for c in sections] + [AdapterRef]
    assert len(classes) == 11, "every section of Settings, [security], [engine] and [paths] included"
    for cls in classes:
        for f in dc.fields(cls):
            assert f"`{f.name}`" in doc, f"{cls.__name__}.{f.name} is not documented"
    from spatiora_tui.config import SCHEDULERS

    for name in SCHEDULERS:
        assert f"`{name}`" in doc


def test_the_shipped_config_lists_every_preview_method_beside_its_key() -> None:
    """config.toml's comment on [preview] method once missed taesd, which the registry has."""
    from spatiora_tui.engine.previews import method_names

    line = next(line for line in (REPO / "config.toml").read_text().splitlines() if line.startswith("method = "))
    listed = [name.strip() for name in line.split("#", 1)[1].split("|")]
    assert sorted(listed) == sorted(method_names())


def test_the_apps_key_table_and_the_keys_section_name_the_same_actions_and_defaults() -> None:
    import dataclasses

    from spatiora_tui.config import KeySettings
    from spatiora_tui.ui.app import SpatioraApp
    from spatiora_tui.ui.keys import KEYS

    defaults = {f.name: f.default for f in dataclasses.fields(KeySettings)}
    assert {key.action: key.key for key in KEYS} == defaults
    assert all(callable(getattr(SpatioraApp, f"action_{key.action}", None)) for key in KEYS)
