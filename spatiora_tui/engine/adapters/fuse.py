"""Fused mode: the active adapters merged into the base weights, with the LoRA layers off, so a
step costs what the base model costs. Unfusing restores each base weight from a host copy taken
at its first merge, exactly (subtracting the delta again would leave rounding errors that add up
over switches)."""

from __future__ import annotations

from typing import Any

from spatiora_tui.engine.adapters.phases import PhaseClock


class Fuser:
    """The base weights holding merged deltas, and their original values on the host."""

    def __init__(self, clock: PhaseClock) -> None:
        self._clock = clock
        self._fused: list[Any] = []
        self._originals: dict[int, tuple[Any, Any]] = {}

    @property
    def fused(self) -> bool:
        return bool(self._fused)

    def host_bytes(self) -> int:
        """Bytes of the original base weights kept on the host."""
        return sum(t.numel() * t.element_size() for _, t in self._originals.values())

    def fuse(self, layers: list[Any], slots: list[str]) -> None:
        """Merge the adapters held in `slots` (at their set scales) into the base weights of
        `layers`. The caller turns the LoRA layers off afterwards."""
        import torch

        with self._clock.time("fuse"), torch.no_grad():
            for layer in layers:
                mine = [slot for slot in slots if slot in getattr(layer, "lora_A", {})]
                if not mine:
                    continue
                base = layer.get_base_layer()
                if id(base) not in self._originals:
                    self._originals[id(base)] = (base, base.weight.detach().to("cpu", copy=True))
                if isinstance(base, torch.nn.Linear) and not getattr(layer, "fan_in_fan_out", False):
                    for slot in mine:  # W += scale * B @ A, in place: no delta tensor allocated
                        up, down = layer.lora_B[slot].weight, layer.lora_A[slot].weight
                        base.weight.addmm_(
                            up.to(base.weight.dtype), down.to(base.weight.dtype), alpha=layer.scaling[slot]
                        )
                else:  # convolutions and the rest: peft's own delta
                    for slot in mine:
                        base.weight.add_(layer.get_delta_weight(slot).to(base.weight.dtype))
                self._fused.append(base)

    def unfuse(self) -> None:
        """Every merged base weight back to its original value."""
        if not self._fused:
            return
        import torch

        with self._clock.time("unfuse"), torch.no_grad():
            for base in self._fused:
                base.weight.copy_(self._originals[id(base)][1])
        self._fused = []

    def release(self) -> None:
        self._fused, self._originals = [], {}
