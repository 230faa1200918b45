"""The LoRA manager: find adapter files, load each once, switch the active set in milliseconds.

Each adapter is loaded once under its own name and stays resident; a task switch is then only
`set_adapters` with that task's names and weights, which touches no base weight and reloads
nothing. A task with no adapters disables LoRA entirely, giving the exact base model.

A failed load (missing, corrupt or incompatible file) leaves the previously active set in force:
the next image is exactly what it would have been without the attempt.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from spatiora_tui.config import AdapterRef
from spatiora_tui.engine.api import AdapterUse, EngineError
from spatiora_tui.engine.files import file_sha256
from spatiora_tui.engine.pipeline import PICKLE_SUFFIXES


@dataclass(frozen=True)
class ActivationReport:
    duration_ms: float
    loaded_from_disk: tuple[str, ...]
    active: tuple[AdapterUse, ...]


class LoraManager:
    """Resident LoRA adapters on one pipeline, and which of them are active."""

    def __init__(self, pipe: Any, family: str, search_dirs: Sequence[Path]) -> None:
        self._pipe = pipe
        self._family = family
        self._dirs = [Path(d) for d in search_dirs]
        self._resident: dict[str, AdapterUse] = {}
        self._active: tuple[AdapterUse, ...] = ()
        self._lora_enabled = True

    @property
    def resident(self) -> tuple[str, ...]:
        return tuple(self._resident)

    @property
    def active(self) -> tuple[AdapterUse, ...]:
        return self._active

    @property
    def search_dirs(self) -> tuple[Path, ...]:
        return tuple(self._dirs)

    def available(self) -> dict[str, Path]:
        """Adapter name -> file, over the search folders (an earlier folder wins)."""
        found: dict[str, Path] = {}
        for folder in self._dirs:
            if not folder.is_dir():
                continue
            for entry in sorted(folder.iterdir()):
                path = self._file_of(entry)
                if path is not None:
                    found.setdefault(entry.stem if entry.is_file() else entry.name, path)
        return found

    @staticmethod
    def _file_of(entry: Path) -> Path | None:
        if entry.is_file() and entry.suffix == ".safetensors":
            return entry
        if entry.is_dir():
            files = sorted(entry.glob("*.safetensors"))
            if len(files) == 1:
                return files[0]
            preferred = entry / "pytorch_lora_weights.safetensors"
            if preferred in files:
                return preferred
        return None

    def find(self, name: str) -> Path:
        """The file of adapter `name`, or an error saying where it was looked for."""
        for folder in self._dirs:
            for candidate in (folder / f"{name}.safetensors", folder / name):
                path = self._file_of(candidate) if candidate.exists() else None
                if path is not None:
                    return path
            for suffix in PICKLE_SUFFIXES:
                if (folder / f"{name}{suffix}").exists():
                    raise EngineError(
                        f"adapter {name!r} is a pickle file ({folder / (name + suffix)}); loading one can run "
                        "arbitrary code, so only .safetensors adapters are loaded. Convert it to .safetensors"
                    )
        where = ", ".join(str(d) for d in self._dirs) or "(no adapter folder configured)"
        raise EngineError(
            f"adapter {name!r} not found; looked for {name}.safetensors or {name}/*.safetensors in {where}. "
            "Put the file there, or remove it from the task in config.toml"
        )

    def activate(self, refs: Sequence[AdapterRef]) -> ActivationReport:
        """Make exactly `refs` the active adapters (loading any not yet resident)."""
        start = time.perf_counter()
        loaded: list[str] = []
        try:
            for ref in refs:
                if ref.name not in self._resident:
                    self._load(ref.name)
                    loaded.append(ref.name)
        except EngineError:
            self._apply(self._active)  # keep what was active before the attempt
            raise
        active = tuple(
            AdapterUse(ref.name, ref.weight, self._resident[ref.name].sha256) for ref in refs
        )
        self._apply(active)
        self._active = active
        return ActivationReport((time.perf_counter() - start) * 1000.0, tuple(loaded), active)

    def _apply(self, active: Sequence[AdapterUse]) -> None:
        if not self._resident:
            return
        if not active:
            if self._lora_enabled:
                self._pipe.disable_lora()
                self._lora_enabled = False
            return
        if not self._lora_enabled:
            self._pipe.enable_lora()
            self._lora_enabled = True
        self._pipe.set_adapters([a.name for a in active], adapter_weights=[a.weight for a in active])

    def _load(self, name: str) -> None:
        path = self.find(name)
        keys = self._check_file(name, path)
        self._check_family(name, path, keys)
        try:
            self._pipe.load_lora_weights(str(path), adapter_name=name)
        except Exception as exc:
            self._forget_partial(name)
            text = str(exc)
            detail = text.splitlines()[0] if text else type(exc).__name__
            if "size mismatch" in text or "shape" in detail.lower():
                detail = "its tensor shapes do not fit this model, so it was made for another base model"
            raise EngineError(f"adapter {name!r} ({path}) could not be loaded: {detail}") from None
        self._resident[name] = AdapterUse(name, 1.0, file_sha256(path))

    def _forget_partial(self, name: str) -> None:
        try:
            self._pipe.delete_adapters(name)
        except Exception:
            pass  # nothing was injected under that name

    @staticmethod
    def _check_file(name: str, path: Path) -> list[str]:
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt") as fh:
                keys = list(fh.keys())
                for key in keys:  # touching every tensor finds a truncated file now, not mid-load
                    fh.get_slice(key)
        except Exception as exc:
            raise EngineError(
                f"adapter {name!r} ({path}) is not a valid .safetensors file ({exc}); "
                "it may be truncated or corrupt: download it again or replace it"
            ) from None
        if not keys:
            raise EngineError(f"adapter {name!r} ({path}) holds no tensors; replace the file")
        return keys

    def _check_family(self, name: str, path: Path, keys: list[str]) -> None:
        sdxl_markers = ("text_encoder_2.", "lora_te2_", "add_embedding")
        is_sdxl = any(marker in key for key in keys for marker in sdxl_markers)
        if is_sdxl and self._family != "sdxl":
            raise EngineError(
                f"adapter {name!r} ({path.name}) targets SDXL but the base model is "
                f"{'SD 1.x' if self._family == 'sd1' else 'SD 2.x'}; use an adapter made for this base model"
            )
