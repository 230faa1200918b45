"""The LoRA manager: find adapter files, keep them in tiers, switch the active set in milliseconds.

Tiers, each bounded and least recently used first: disk -> RAM cache (the parsed tensors, up to
`ram_cache_mb`) -> resident on the device as named peft adapters (up to `resident_max`) -> the
active set. A switch between resident adapters only re-points the kept list of LoRA layers
(`set_adapter` / `set_scale`), touching no base weight. An adapter that is not resident takes the
place of the least recently used one: its weights are copied into that one's LoRA layers when the
targeted modules and ranks fit (zero-padding smaller ranks), else the old one is deleted and the
new one loaded. A task with no adapters disables LoRA entirely, giving the exact base model.

A failed load (missing, corrupt or incompatible file) leaves the previously active set in force:
the next image is exactly what it would have been without the attempt.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass, field
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
    #: (adapter, how it reached the device) for each adapter that was not resident:
    #: "in-place from RAM|disk" (copied into an evicted adapter's layers) or "loaded from RAM|disk".
    paths: tuple[tuple[str, str], ...] = ()


@dataclass
class _Parsed:
    """An adapter file read into RAM: its tensors as stored, and what an in-place swap needs."""

    path: Path
    stamp: tuple[int, int]  # the file's (mtime_ns, size) when read
    sha256: str
    raw: dict[str, Any]
    has_config: bool  # diffusers LoRA metadata in the file (alphas we do not reproduce in place)
    nbytes: int
    _unet: dict[str, tuple[Any, Any, float]] | None = field(default=None, repr=False)


class LoraManager:
    """Resident LoRA adapters on one pipeline, and which of them are active."""

    def __init__(
        self, pipe: Any, family: str, search_dirs: Sequence[Path], resident_max: int = 4,
        ram_cache_mb: float = 2048.0,
    ) -> None:
        self._pipe = pipe
        self._family = family
        self._dirs = [Path(d) for d in search_dirs]
        self._resident_max = resident_max
        self._ram_limit = int(ram_cache_mb * 2**20)
        # Least recently used first: adapter name -> its use; and which peft adapter (slot) holds it.
        self._resident: OrderedDict[str, AdapterUse] = OrderedDict()
        self._slot: dict[str, str] = {}
        self._ram: OrderedDict[str, _Parsed] = OrderedDict()
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
        from_disk: list[str] = []
        paths: list[tuple[str, str]] = []
        keep = {ref.name for ref in refs}
        try:
            for ref in refs:
                if ref.name in self._resident:
                    self._resident.move_to_end(ref.name)
                    continue
                parsed, read = self._parsed(ref.name)
                how = self._bring(ref.name, parsed, keep)
                paths.append((ref.name, f"{how} from {'disk' if read else 'RAM'}"))
                if read:
                    from_disk.append(ref.name)
        except EngineError:
            self._restore(self._active)  # keep what was active before the attempt
            raise
        active = tuple(
            AdapterUse(ref.name, ref.weight, self._resident[ref.name].sha256) for ref in refs
        )
        self._apply(active)
        self._active = active
        return ActivationReport((time.perf_counter() - start) * 1000.0, tuple(from_disk), active, tuple(paths))

    def evict(self, name: str) -> None:
        """Take adapter `name` off the device (it comes back from RAM or disk when next needed)."""
        if any(use.name == name for use in self._active):
            raise EngineError(f"adapter {name!r} is active; switch away from it before evicting it")
        self._drop(name)

    def _drop(self, name: str) -> None:
        if self._resident.pop(name, None) is not None:
            self._pipe.delete_adapters(self._slot.pop(name))
            self._layers = None

    def _restore(self, previous: Sequence[AdapterUse]) -> None:
        """After a failed activation: the previous active set back on the device, and in force.
        Making room for the failed one may have taken one of them off; it comes back from RAM."""
        keep = {use.name for use in previous}
        for use in previous:
            if use.name not in self._resident:
                self._bring(use.name, self._parsed(use.name)[0], keep)
        self._apply(previous)

    # -- tiers: disk -> RAM -> device ---------------------------------------------------------

    def _parsed(self, name: str) -> tuple[_Parsed, bool]:
        """The adapter's tensors from the RAM cache, or read (and checked) from its file.
        Returns them and whether the file was read."""
        cached = self._ram.get(name)
        if cached is not None:
            # A file replaced since it was read is read again; one deleted since is still served
            # from RAM (its content is what was checked and used before).
            stamp = _stamp(cached.path)
            if stamp is None or stamp == cached.stamp:
                self._ram.move_to_end(name)
                return cached, False
            del self._ram[name]
        from safetensors import safe_open
        from safetensors.torch import load_file

        path = self.find(name)
        keys = self._check_file(name, path)
        self._check_family(name, path, keys)
        with safe_open(str(path), framework="pt") as fh:
            has_config = "lora_adapter_metadata" in (fh.metadata() or {})
        raw = load_file(str(path))
        parsed = _Parsed(path, _stamp(path) or (0, 0), file_sha256(path), raw, has_config,
                         sum(t.numel() * t.element_size() for t in raw.values()))
        if parsed.nbytes <= self._ram_limit:
            self._ram[name] = parsed
            while sum(p.nbytes for p in self._ram.values()) > self._ram_limit:
                self._ram.popitem(last=False)
        return parsed, True

    def _bring(self, name: str, parsed: _Parsed, keep: set[str]) -> str:
        """Put `name` on the device, making room first if the resident limit is reached."""
        if len(self._resident) >= self._resident_max:
            victim = next((n for n in self._resident if n not in keep), None)
            if victim is not None:
                if self._swap_in_place(name, parsed, victim):
                    return "in-place"
                self._drop(victim)
        self._inject(name, parsed)
        return "loaded"

    def _inject(self, name: str, parsed: _Parsed) -> None:
        self._layers = None  # a load may add layers
        # From RAM, unless the file carries diffusers' LoRA config (alphas), which only a load
        # from the file applies. Copies: the loader may adopt the tensors it is given as the
        # layers' weights, and an in-place swap into those layers would then overwrite the cache.
        source = str(parsed.path) if parsed.has_config else {k: v.clone() for k, v in parsed.raw.items()}
        try:
            self._pipe.load_lora_weights(source, adapter_name=name)
        except Exception as exc:
            self._forget_partial(name)
            self._ram.pop(name, None)  # a file that does not load is not worth keeping
            raise EngineError(f"adapter {name!r} ({parsed.path}) could not be loaded: {_load_error(exc)}") from None
        self._resident[name] = AdapterUse(name, 1.0, parsed.sha256)
        self._slot[name] = name

    def _swap_in_place(self, name: str, parsed: _Parsed, victim: str) -> bool:
        """Copy `name`'s weights into the LoRA layers holding `victim`, if they fit: every layer
        it targets holds the victim, with a rank at least its own (the rest is zero-padded).
        The mechanism behind diffusers' and peft's hotswap. False (nothing touched) if not."""
        unet_layers = self._unet_layers(parsed)
        slot = self._slot[victim]
        modules = dict(self._pipe.unet.named_modules())
        plan = []
        for module_name, (down, up, alpha) in unet_layers.items():
            layer = modules.get(module_name)
            if layer is None or slot not in getattr(layer, "lora_A", {}):
                return False
            slot_down, slot_up = layer.lora_A[slot].weight, layer.lora_B[slot].weight
            rank = down.shape[0]
            if (rank > slot_down.shape[0] or down.shape[1:] != slot_down.shape[1:]
                    or up.shape[0] != slot_up.shape[0] or up.shape[2:] != slot_up.shape[2:]):
                return False
            plan.append((layer, slot_down, slot_up, down, up, alpha))
        if not plan or getattr(self._pipe.unet, "peft_config", {}).get(slot, None) is None:
            return False
        import torch

        with torch.no_grad():
            targeted = {id(entry[0]) for entry in plan}
            for layer in self._tuner_layers():
                if slot in getattr(layer, "lora_B", {}) and id(layer) not in targeted:
                    layer.lora_B[slot].weight.zero_()  # a layer the new adapter leaves alone
            for layer, slot_down, slot_up, down, up, alpha in plan:
                rank, slot_rank = down.shape[0], slot_down.shape[0]
                slot_down[:rank].copy_(down)
                slot_down[rank:].zero_()
                slot_up[:, :rank].copy_(up)
                slot_up[:, rank:].zero_()
                # peft scales by lora_alpha / r; keep the adapter's own alpha / rank.
                layer.lora_alpha[slot] = alpha * slot_rank / rank
        del self._resident[victim]
        self._slot[name] = self._slot.pop(victim)
        self._resident[name] = AdapterUse(name, 1.0, parsed.sha256)
        return True

    def _unet_layers(self, parsed: _Parsed) -> dict[str, tuple[Any, Any, float]]:
        """UNet module name -> (down, up, alpha) of a UNet-only adapter; {} when in-place swaps
        do not apply (text-encoder parts, a LoRA config in the file, alphas that vary)."""
        if parsed._unet is None:
            parsed._unet = {}
            if parsed.has_config:
                return parsed._unet
            from diffusers.utils import convert_unet_state_dict_to_peft

            state, alphas = self._pipe.lora_state_dict(dict(parsed.raw))[:2]
            if any(not key.startswith("unet.") for key in state):
                return parsed._unet
            values = set((alphas or {}).values())
            if len(values) > 1:
                return parsed._unet
            uniform_alpha = float(next(iter(values))) if values else None  # None: alpha = rank
            peft = convert_unet_state_dict_to_peft({k[len("unet."):]: v for k, v in state.items()})
            for key, down in peft.items():
                if not key.endswith(".lora_A.weight"):
                    continue
                module = key[: -len(".lora_A.weight")]
                up = peft.get(f"{module}.lora_B.weight")
                if up is None:
                    parsed._unet = {}
                    return parsed._unet
                parsed._unet[module] = (down, up, uniform_alpha if uniform_alpha is not None else float(down.shape[0]))
        return parsed._unet

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
        slots = [self._slot[a.name] for a in active]
        for layer in layers:
            layer.set_adapter(slots)  # names a layer does not hold are skipped by its forward
            for slot, use in zip(slots, active):
                layer.set_scale(slot, use.weight)  # no-op where the layer lacks the adapter

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


def _stamp(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size


def _load_error(exc: Exception) -> str:
    """What went wrong in diffusers' LoRA loading, said for a person."""
    text = str(exc)
    detail = text.splitlines()[0] if text else type(exc).__name__
    if "size mismatch" in text or "shape" in detail.lower():
        return "its tensor shapes do not fit this model, so it was made for another base model"
    if "not found in the base model" in text:
        missing = text.split("{", 1)[-1].split("}", 1)[0] if "{" in text else ""
        return (f"its layer names match no layer of this model ({_elide(missing, 80)}), so it was "
                "made for another model architecture")
    if "Invalid LoRA checkpoint" in text:
        return "it holds no LoRA tensors that diffusers recognises (no 'lora' in their names)"
    return detail


def _elide(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"
