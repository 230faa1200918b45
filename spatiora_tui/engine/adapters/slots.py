"""The device tier: adapters resident on the model as named peft adapters ("slots"), bounded in
count and bytes, least recently used first; which of them are active, and at what weights.

A switch between resident adapters only re-points the kept list of LoRA layers (`set_adapter` /
`set_scale`), touching no base weight. An adapter that is not resident takes the place of the
least recently used one: its weights are copied into that one's LoRA layers when the targeted
modules and ranks fit (zero-padding smaller ranks), else the old one is deleted and the new one
loaded. The mechanism is the one behind diffusers' and peft's hotswap.
"""

from __future__ import annotations

import hashlib
import re
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

from spatiora_tui.engine.adapters.catalog import AdapterFile
from spatiora_tui.engine.adapters.layouts import load_error, unet_layers
from spatiora_tui.engine.adapters.phases import PhaseClock
from spatiora_tui.engine.api import AdapterUse, EngineError


def peft_name(name: str) -> str:
    """The name an adapter has inside peft, which takes module-name characters only: a file named
    detail_v1.5 keeps that name for the user while peft gets "a_detail_v1_5_" and a hash of the
    original, so two names that differ only in the replaced characters never share a slot."""
    if name.isidentifier() and name.isascii():
        return name
    safe = re.sub(r"[^A-Za-z0-9_]", "_", name)[:60]
    return f"a_{safe}_{hashlib.sha1(name.encode('utf-8', 'surrogateescape')).hexdigest()[:8]}"


class ResidentSet:
    """Adapters resident on the device, least recently used first: adapter name -> its use."""

    _resident: OrderedDict[str, AdapterUse]

    @property
    def names(self) -> tuple[str, ...]:
        """The resident adapters, least recently used first."""
        return tuple(self._resident)

    def __contains__(self, name: object) -> bool:
        return name in self._resident

    def use(self, name: str) -> AdapterUse:
        return self._resident[name]

    def touch(self, name: str) -> None:
        self._resident.move_to_end(name)


class DeviceSlots(ResidentSet):
    """Resident adapters on one pipeline, and the LoRA layers that hold them."""

    def __init__(self, pipe: Any, resident_max: int, resident_limit: int, clock: PhaseClock) -> None:
        self._pipe = pipe
        self._max = resident_max
        self._limit = resident_limit
        self._clock = clock
        # Least recently used first: adapter name -> its use; which peft adapter (slot) holds it,
        # and that slot's bytes on the device.
        self._resident: OrderedDict[str, AdapterUse] = OrderedDict()
        self._slot: dict[str, str] = {}
        self._bytes: dict[str, int] = {}
        # Whether the LoRA layers are on; None after a load, whose new layers come on.
        self._lora_enabled: bool | None = True
        self._layers: list[Any] | None = None  # the LoRA layers, found again after each load
        self._unet_modules: dict[str, Any] | None = None
        # Kept once read: diffusers' `unet.dtype` / `.device` walk every parameter (about 14 ms
        # on SD 1.5).
        self._where: tuple[Any, Any] | None = None

    def slot(self, name: str) -> str:
        """The peft adapter name holding resident adapter `name`."""
        return self._slot[name]

    def nbytes(self) -> int:
        return sum(self._bytes.get(n, 0) for n in self._resident)

    def placement(self) -> tuple[Any, Any]:
        """The UNet's (device, dtype)."""
        if self._where is None:
            import torch

            device = self._pipe.unet.device
            # Offloaded layer by layer, the UNet's parameters are placeholders ("meta"): an
            # adapter is given to the loader in RAM, which the offload hooks then manage.
            self._where = (torch.device("cpu") if device.type == "meta" else device, self._pipe.unet.dtype)
        return self._where

    def bring(self, name: str, adapter: AdapterFile, keep: set[str]) -> str:
        """Put `name` on the device, making room first if a resident limit (count or bytes) is
        reached: the least recently used adapter not in `keep` leaves, its layers taking `name`
        in place when they fit. Returns how: "in-place" or "loaded"."""
        need = self._device_bytes(adapter)
        victims = [n for n in self._resident if n not in keep]

        def over() -> bool:
            return len(self._resident) >= self._max or self.nbytes() + need > self._limit

        if victims and over():
            victim = victims.pop(0)
            if self._swap_in_place(name, adapter, victim):
                return "in-place"
            self.drop(victim)
            while victims and over():
                self.drop(victims.pop(0))
        self._inject(name, adapter, need)
        return "loaded"

    def drop(self, name: str) -> None:
        """Delete resident adapter `name` from the model (nothing when it is not resident)."""
        if self._resident.pop(name, None) is not None:
            self._pipe.delete_adapters(self._slot.pop(name))
            self._bytes.pop(name, None)
            self._layers = self._unet_modules = None

    def clear(self) -> None:
        """Delete every resident adapter from the model."""
        for name in list(self._resident):
            self.drop(name)
        self._lora_enabled = None  # the layers left (compiled mode's lanes) are set by their owner

    def apply(self, active: Sequence[AdapterUse], enable: bool = True) -> None:
        """Activate `active` with its weights, through the LoRA layers alone; with `enable` off
        the layers stay off (fused mode holds the deltas in the base weights).

        The calls are the ones diffusers' set_adapters / enable_lora / disable_lora make on each
        layer, but those walk every module of every component to find the layers (about 19 ms on
        the SD 1.5 UNet on 2 cores); the list of layers is kept instead, so a switch between
        resident adapters costs a few milliseconds.
        """
        if not self._resident:
            return
        layers = self.tuner_layers()
        if not active:
            self.enable(False)
            return
        if enable:
            self.enable(True)
        slots = [self._slot[a.name] for a in active]
        for layer in layers:
            layer.set_adapter(slots)  # names a layer does not hold are skipped by its forward
            for slot, use in zip(slots, active):
                layer.set_scale(slot, use.weight)  # no-op where the layer lacks the adapter

    def enable(self, on: bool) -> None:
        """Turn every LoRA layer on or off (skipped when they already are)."""
        if on != self._lora_enabled:
            for layer in self.tuner_layers():
                layer.enable_adapters(on)
            self._lora_enabled = on

    def any_dora(self, active: Sequence[AdapterUse]) -> bool:
        """Whether an adapter of `active` is DoRA (which rescales rows: not a delta to fuse)."""
        slots = {self._slot[use.name] for use in active}
        for component in ("unet", "text_encoder", "text_encoder_2"):
            configs = getattr(getattr(self._pipe, component, None), "peft_config", None) or {}
            if any(getattr(configs.get(slot), "use_dora", False) for slot in slots):
                return True
        return False

    def tuner_layers(self) -> list[Any]:
        """Every LoRA layer of the model's components (kept until the next load)."""
        if self._layers is None:
            from peft.tuners.tuners_utils import BaseTunerLayer

            layers = []
            for component in ("unet", "transformer", "text_encoder", "text_encoder_2"):
                model = getattr(self._pipe, component, None)
                if model is not None:
                    layers += [m for m in model.modules() if isinstance(m, BaseTunerLayer)]
            self._layers = layers
        return self._layers

    def release(self) -> None:
        """Forget the pipeline (it is going away with its adapters)."""
        self._resident.clear()
        self._slot.clear()
        self._bytes.clear()
        self._layers = self._unet_modules = None
        self._pipe = None

    def _device_bytes(self, adapter: AdapterFile) -> int:
        import torch

        itemsize = torch.empty((), dtype=self.placement()[1]).element_size()
        return int(sum(t.numel() for t in adapter.raw.values() if t.ndim >= 2)) * itemsize

    def _inject(self, name: str, adapter: AdapterFile, nbytes: int) -> None:
        self._layers = self._unet_modules = None  # a load may add layers, switched on
        self._lora_enabled = None
        # From RAM, unless the file carries diffusers' LoRA config (alphas), which only a load
        # from the file applies. Copies: the loader may adopt the tensors it is given as the
        # layers' weights, and an in-place swap into those layers would then overwrite the cache.
        if adapter.has_config:
            source: Any = str(adapter.path)
        else:
            device, dtype = self.placement()
            with self._clock.time("to device"):
                source = {
                    k: v.to(device=device, dtype=dtype if v.is_floating_point() else None, copy=True)
                    for k, v in adapter.raw.items()
                }
        slot = peft_name(name)
        try:
            with self._clock.time("inject"):
                self._pipe.load_lora_weights(source, adapter_name=slot)
        except Exception as exc:
            self._forget_partial(slot)
            raise EngineError(f"adapter {name!r} ({adapter.path}) could not be loaded: {load_error(exc)}") from None
        self._layers = self._unet_modules = None
        applied = sum(1 for layer in self.tuner_layers() if slot in getattr(layer, "lora_A", {}))
        if applied < adapter.layers:
            # diffusers can drop layers without a word (it guesses a Kohya text encoder's layout
            # from whether out_proj is present); half an adapter draws wrong images silently.
            self._forget_partial(slot)
            raise EngineError(
                f"adapter {name!r} ({adapter.path}): only {applied} of its {adapter.layers} LoRA layers could "
                "be applied, so it would not draw what it was trained to; convert it to the diffusers/peft "
                "format, or report the file's layout"
            )
        self._resident[name] = AdapterUse(name, 1.0, adapter.sha256, adapter.a1111_hash)
        self._slot[name] = slot
        self._bytes[name] = nbytes

    def _swap_in_place(self, name: str, adapter: AdapterFile, victim: str) -> bool:
        """Copy `name`'s weights into the LoRA layers holding `victim`, if they fit: every layer
        it targets holds the victim, with a rank at least its own (the rest is zero-padded).
        False (nothing touched) if not."""
        with self._clock.time("parse"):
            layers = unet_layers(self._pipe, adapter)
        slot = self._slot[victim]
        with self._clock.time("plan"):
            modules = self._unet_lora_modules()
            plan = []
            for module_name, (down, up, alpha) in layers.items():
                layer = modules.get(module_name)
                if layer is None or slot not in layer.lora_A:
                    return False
                slot_down, slot_up = layer.lora_A[slot].weight, layer.lora_B[slot].weight
                if slot_down.device.type == "meta":
                    return False  # offloaded layer by layer: the weights live in the offload hooks
                rank = down.shape[0]
                if (
                    rank > slot_down.shape[0]
                    or down.shape[1:] != slot_down.shape[1:]
                    or up.shape[0] != slot_up.shape[0]
                    or up.shape[2:] != slot_up.shape[2:]
                ):
                    return False
                plan.append((layer, slot_down, slot_up, down, up, alpha))
            config = getattr(self._pipe.unet, "peft_config", {}).get(slot, None)
            if not plan or config is None or getattr(config, "use_dora", False):
                return False  # a DoRA slot keeps magnitudes an A/B copy would not replace
        import torch

        with self._clock.time("to device"):
            plan = [
                (layer, sd, su, down.to(sd.device, sd.dtype), up.to(su.device, su.dtype), alpha)
                for layer, sd, su, down, up, alpha in plan
            ]
        with self._clock.time("copy"), torch.no_grad():
            targeted = {id(entry[0]) for entry in plan}
            for layer in self.tuner_layers():
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
        self._bytes[name] = self._bytes.pop(victim, 0)
        self._resident[name] = AdapterUse(name, 1.0, adapter.sha256, adapter.a1111_hash)
        return True

    def _unet_lora_modules(self) -> dict[str, Any]:
        """UNet module name -> its LoRA layer (kept, like the layer list, until the next load)."""
        if self._unet_modules is None:
            from peft.tuners.tuners_utils import BaseTunerLayer

            self._unet_modules = {
                name: module for name, module in self._pipe.unet.named_modules() if isinstance(module, BaseTunerLayer)
            }
        return self._unet_modules

    def _forget_partial(self, name: str) -> None:
        try:
            self._pipe.delete_adapters(name)
        except Exception:
            pass  # nothing was injected under that name
