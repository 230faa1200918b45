"""adapter.toml: an optional manifest beside a LoRA adapter (no torch here).

    NAME/adapter.toml             for an adapter folder NAME/ holding one .safetensors
    NAME.adapter.toml             beside a single NAME.safetensors

    base = "sd1"                       # sd1 | sd2 | sdxl (sd15, sd1.5, sd21, sd2.1 also read)
    trigger_words = ["spatiora_interior"]  # added to the prompt when the task's prompt lacks them
    default_weight = 0.8               # used when a task lists the adapter without a weight
    description = "Photoreal interiors"

A manifest with a problem is reported as such (file, key, what to do), like config.toml.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

from spatiora_tui.engine.api import EngineError

FAMILIES = {"sd1": "sd1", "sd15": "sd1", "sd1.5": "sd1", "sd2": "sd2", "sd21": "sd2", "sd2.1": "sd2", "sdxl": "sdxl"}
_KEYS = ("base", "trigger_words", "default_weight", "description")


@dataclass(frozen=True)
class AdapterManifest:
    path: Path | None = None
    base: str | None = None  # normalised family: sd1 | sd2 | sdxl
    trigger_words: tuple[str, ...] = ()
    default_weight: float | None = None
    description: str = ""


def manifest_path(adapter_file: Path) -> Path:
    """Where the manifest of the adapter stored in `adapter_file` lives."""
    folder_manifest = adapter_file.parent / "adapter.toml"
    if folder_manifest.exists():
        return folder_manifest
    return adapter_file.with_name(f"{adapter_file.stem}.adapter.toml")


def read_manifest(name: str, adapter_file: Path) -> AdapterManifest:
    """The adapter's manifest, or an empty one when there is none."""
    path = manifest_path(adapter_file)
    if not path.is_file():
        return AdapterManifest()

    def bad(problem: str) -> EngineError:
        return EngineError(f"adapter {name!r}: its manifest {path} {problem}; fix or delete that file")

    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise bad(f"is not valid TOML ({exc})") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise bad(f"could not be read ({exc})") from None
    unknown = sorted(set(data) - set(_KEYS))
    if unknown:
        raise bad(f"has unknown key(s) {', '.join(unknown)}; allowed: {', '.join(_KEYS)}")
    base = data.get("base")
    if base is not None:
        if not isinstance(base, str) or base.lower() not in FAMILIES:
            raise bad(f"has base = {base!r}; use one of sd1, sd2, sdxl")
        base = FAMILIES[base.lower()]
    words = data.get("trigger_words", [])
    if isinstance(words, str):
        words = [words]
    if not isinstance(words, list) or not all(isinstance(w, str) and w.strip() for w in words):
        raise bad("has trigger_words that are not a list of non-empty strings")
    weight = data.get("default_weight")
    if weight is not None:
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not -5 <= weight <= 5:
            raise bad(f"has default_weight = {weight!r}; use a number from -5 to 5")
        weight = float(weight)
    description = data.get("description", "")
    if not isinstance(description, str):
        raise bad("has a description that is not a string")
    return AdapterManifest(path, base, tuple(w.strip() for w in words), weight, description)


def add_trigger_words(prompt: str, words: tuple[str, ...]) -> tuple[str, tuple[str, ...]]:
    """`prompt` with the trigger words it lacks put in front (case-insensitive), and which were added."""
    lowered = prompt.lower()
    missing = tuple(dict.fromkeys(w for w in words if w.lower() not in lowered))
    if not missing:
        return prompt, ()
    return ", ".join((*missing, prompt)) if prompt else ", ".join(missing), missing
