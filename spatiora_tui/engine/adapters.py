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
        self._layers: list[Any] | None = None  # the LoRA layers, found again after each load

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

    def evict(self, name: str) -> None:
        """Take adapter `name` off the device (it is loaded again when next needed)."""
        if any(use.name == name for use in self._active):
            raise EngineError(f"adapter {name!r} is active; switch away from it before evicting it")
        if self._resident.pop(name, None) is not None:
            self._pipe.delete_adapters(name)
            self._layers = None

    def _apply(self, active: Sequence[AdapterUse]) -> None:
        """Activate `active` with its weights, through the LoRA layers alone.

        The calls are the ones diffusers' set_adapters / enable_lora / disable_lora make on each
        layer, but those walk every module of every component to find the layers (about 19 ms on
        the SD 1.5 UNet on 2 cores); the list of layers is kept instead, so a switch between
        resident adapters costs a few milliseconds.
        """
        if not self._resident:
            return
        layers = self._tuner_layers()
        if not active:
            if self._lora_enabled:
                for layer in layers:
                    layer.enable_adapters(False)
                self._lora_enabled = False
            return
        if not self._lora_enabled:
            for layer in layers:
                layer.enable_adapters(True)
            self._lora_enabled = True
        names = [a.name for a in active]
        for layer in layers:
            layer.set_adapter(names)  # names a layer does not hold are skipped by its forward
            for use in active:
                layer.set_scale(use.name, use.weight)  # no-op where the layer lacks the adapter

    def _tuner_layers(self) -> list[Any]:
        if self._layers is None:
            from peft.tuners.tuners_utils import BaseTunerLayer

            layers = []
            for component in ("unet", "transformer", "text_encoder", "text_encoder_2"):
                model = getattr(self._pipe, component, None)
                if model is not None:
                    layers += [m for m in model.modules() if isinstance(m, BaseTunerLayer)]
            self._layers = layers
        return self._layers

    def _load(self, name: str) -> None:
        path = self.find(name)
        keys = self._check_file(name, path)
        self._check_family(name, path, keys)
        self._layers = None  # a load may add layers
        try:
            self._pipe.load_lora_weights(str(path), adapter_name=name)
        except Exception as exc:
            self._forget_partial(name)
            text = str(exc)
            detail = text.splitlines()[0] if text else type(exc).__name__
            if "size mismatch" in text or "shape" in detail.lower():
                detail = "its tensor shapes do not fit this model, so it was made for another base model"
            elif "not found in the base model" in text:
                missing = text.split("{", 1)[-1].split("}", 1)[0] if "{" in text else ""
                detail = (f"its layer names match no layer of this model ({_elide(missing, 80)}), so it was "
                          "made for another model architecture")
            elif "Invalid LoRA checkpoint" in text:
                detail = "it holds no LoRA tensors that diffusers recognises (no 'lora' in their names)"
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


def _elide(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"
