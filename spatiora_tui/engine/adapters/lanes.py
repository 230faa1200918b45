"""Compiled mode's device tier: a fixed set of LoRA layers ("lanes") that the compiled UNet is
traced with once, and adapters copied into them.

torch.compile guards on what the LoRA layers' forward reads in Python: which adapters are active,
the keys of their layer dicts, each scale as a float. peft's own switches change all three, so
each new adapter set (and each new weight) would trace the UNet again (tens of seconds on a
GPU). Here nothing the trace depends on ever changes:

- the lanes are created once, at load, on the layers task adapters usually target (the
  transformer blocks' attention, feed-forward and projections; the text encoders' attention and
  MLP), at one rank (`[model] compile_rank`); every lane is always active;
- each lane's scale is one 0-dim tensor shared by all its layers, written in place: a lane not
  in use has scale 0, which adds exactly nothing;
- an adapter is resident as device copies of its (down, up) pairs, its alpha / rank already in
  the up weights (layouts.normalize); putting it in a lane copies them into the lane's layers
  (a smaller rank zero-padded), so switching costs copies, never a trace.

This is the mechanism behind diffusers' `enable_lora_hotswap` and peft's
`prepare_model_for_compiled_hotswap`, kept for several adapters at once and for adapters that
target different layers. An adapter that does not fit (a layer outside the lanes, a rank over
the lanes', DoRA, LyCORIS kinds) is not forced: `misfit` says why, and the manager runs that
set uncompiled with peft's own layers (see manager.py).
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from spatiora_tui.engine.adapters.catalog import AdapterFile
from spatiora_tui.engine.adapters.phases import PhaseClock
from spatiora_tui.engine.adapters.slots import ResidentSet
from spatiora_tui.engine.api import AdapterUse

#: The modules lanes are put on, by component (peft's suffix match on module names): what
#: Kohya's sd-scripts, diffusers' trainers and most Civitai LoRAs target.
LANE_TARGETS = {
    "unet": ("to_q", "to_k", "to_v", "to_out.0", "proj_in", "proj_out", "ff.net.0.proj", "ff.net.2"),
    "text_encoder": ("q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"),
    "text_encoder_2": ("q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"),
}
LANE_PREFIX = "spatiora_lane"
#: The smallest lane rank `compile_rank = 0` (auto) picks; ranks are rounded up to a multiple.
MIN_RANK = 8

_DOWN = re.compile(r"(lora_A|lora_down|lora[._]down|lora_linear_layer\.down)\.weight$")

#: (component, module name) -> (down [rank, ...], up [..., rank, ...]) of one adapter.
LaneLayers = dict[tuple[str, str], tuple[Any, Any]]


def file_rank(path: Path) -> int | None:
    """The largest rank among a LoRA file's down projections, from its header alone (None when
    the file cannot be read or holds none)."""
    from spatiora_tui.library.safetensors_file import FileProblem, read_header

    try:
        header = read_header(path, "adapter")
    except (FileProblem, OSError):
        return None
    downs = [key for key in header.keys() if _DOWN.search(key)]  # noqa: SIM118 (a Header is not a dict)
    ranks = [shape[0] for key in downs if (shape := header.shape(key))]
    return max(ranks) if ranks else None


def lane_rank(ranks: Sequence[int | None]) -> int:
    """compile_rank = 0's choice: the largest of `ranks`, rounded up to a multiple of MIN_RANK."""
    top = max((r for r in ranks if r), default=MIN_RANK)
    return -(-top // MIN_RANK) * MIN_RANK


def lane_layers(pipe: Any, adapter: AdapterFile) -> tuple[LaneLayers, str | None]:
    """The adapter as (component, module) -> (down, up), alphas already in the up weights; or
    {} and why it cannot go in a lane. Worked out once per file and kept on it."""
    if adapter.lanes is None:
        adapter.lanes = _lane_layers(pipe, adapter)
    return adapter.lanes


def _lane_layers(pipe: Any, adapter: AdapterFile) -> tuple[LaneLayers, str | None]:
    from diffusers.utils import convert_state_dict_to_peft, convert_unet_state_dict_to_peft

    if adapter.has_config:
        return {}, "it carries diffusers' LoRA config (per-layer alphas and ranks), which only its own loader applies"
    state = pipe.lora_state_dict(dict(adapter.raw), unet_config=pipe.unet.config)[0]
    if any("lora_magnitude_vector" in key for key in state):
        return {}, "it is a DoRA adapter (it rescales weights, not a low-rank delta)"
    parts: dict[str, dict[str, Any]] = {}
    for key, value in state.items():
        component, _, rest = key.partition(".")
        if component not in LANE_TARGETS:
            return {}, f"it holds weights for {component!r}, which has no lanes"
        parts.setdefault(component, {})[rest] = value
    layers: LaneLayers = {}
    for component, part in parts.items():
        peft = convert_unet_state_dict_to_peft(part) if component == "unet" else convert_state_dict_to_peft(part)
        for key, down in peft.items():
            if key.endswith(".lora_B.weight"):
                continue
            if not key.endswith(".lora_A.weight"):
                return {}, f"it is not a plain LoRA ({key.rsplit('.', 2)[-2]} tensors: LyCORIS or another kind)"
            module = key[: -len(".lora_A.weight")]
            up = peft.get(f"{module}.lora_B.weight")
            if up is None:
                return {}, f"{component} {module} has a down weight and no up weight"
            layers[(component, _module_key(component, module))] = (down, up)
    if not layers:
        return {}, "it holds no LoRA layers"
    return layers, None


def _module_key(component: str, name: str) -> str:
    """A module's name as lanes match it: transformers 5's CLIP text model names its layers
    without the "text_model." that LoRA files (and transformers 4) put first."""
    return name if component == "unet" else name.removeprefix("text_model.")


class LaneSlots(ResidentSet):
    """The lanes on one pipeline, and the adapters resident as copies ready to go in them."""

    def __init__(
        self, pipe: Any, lanes: int, rank: int, resident_max: int, resident_limit: int, clock: PhaseClock
    ) -> None:
        import torch
        from peft import LoraConfig, inject_adapter_in_model
        from peft.tuners.lora import LoraLayer

        self._pipe = pipe
        self.rank = rank
        self._max = resident_max
        self._limit = resident_limit
        self._clock = clock
        self.lane_names = tuple(f"{LANE_PREFIX}{i}" for i in range(lanes))
        self._device = pipe.unet.device
        self._dtype = pipe.unet.dtype
        # One scale per lane, shared by all its layers and written in place.
        self._scales = [torch.zeros((), device=self._device) for _ in self.lane_names]
        self._layers: dict[tuple[str, str], Any] = {}
        for component, targets in LANE_TARGETS.items():
            model = getattr(pipe, component, None)
            if model is None:
                continue
            for lane in self.lane_names:
                config = LoraConfig(r=rank, lora_alpha=rank, target_modules=list(targets), init_lora_weights=True)
                inject_adapter_in_model(config, model, adapter_name=lane)
            for name, module in model.named_modules():
                if isinstance(module, LoraLayer) and self.lane_names[0] in module.lora_A:
                    self._layers[(component, _module_key(component, name))] = module
        self._lane_bytes = 0
        with torch.no_grad():
            for layer in self._layers.values():
                for index, lane in enumerate(self.lane_names):
                    for weights in (layer.lora_A[lane], layer.lora_B[lane]):
                        weights.requires_grad_(False)
                        weights.weight.zero_()
                        self._lane_bytes += weights.weight.numel() * weights.weight.element_size()
                    layer.scaling[lane] = self._scales[index]
        self.restore()
        # Least recently used first: adapter -> its use, its device copies, their bytes.
        self._resident: OrderedDict[str, AdapterUse] = OrderedDict()
        self._copies: dict[str, LaneLayers] = {}
        self._bytes: dict[str, int] = {}
        self._holding: list[str | None] = [None] * lanes  # which adapter each lane holds

    @property
    def lanes(self) -> int:
        return len(self.lane_names)

    def nbytes(self) -> int:
        """The lanes and the resident copies, on the device."""
        return self._lane_bytes + sum(self._bytes.values())

    def layers(self) -> list[Any]:
        """The LoRA layers holding lanes."""
        return list(self._layers.values())

    def misfit(self, layers: LaneLayers) -> str | None:
        """Why an adapter of these layers cannot go in a lane; None when it can."""
        outside = [key for key in layers if key not in self._layers]
        if outside:
            component, module = outside[0]
            more = f" and {len(outside) - 1} more" if len(outside) > 1 else ""
            return f"it targets layers outside the compiled set ({component} {module}{more})"
        rank = max(down.shape[0] for down, _ in layers.values())
        if rank > self.rank:
            return f"its rank {rank} is over the lanes' {self.rank} ([model] compile_rank)"
        for key, (down, up) in layers.items():
            layer = self._layers[key]
            lane_down = layer.lora_A[self.lane_names[0]].weight
            lane_up = layer.lora_B[self.lane_names[0]].weight
            if (
                down.shape[1:] != lane_down.shape[1:]
                or up.shape[0] != lane_up.shape[0]
                or up.shape[2:] != lane_up.shape[2:]
            ):
                return f"its {key[0]} {key[1]} weights do not have the layer's shape"
        return None

    def bring(self, name: str, adapter: AdapterFile, layers: LaneLayers, keep: set[str]) -> None:
        """Keep `name` on the device as copies ready for a lane, making room first (least
        recently used, not in `keep`) when a resident limit (count or bytes) is reached."""
        need = sum(down.numel() * self._itemsize() + up.numel() * self._itemsize() for down, up in layers.values())
        for victim in [n for n in self._resident if n not in keep]:
            if len(self._resident) < self._max and sum(self._bytes.values()) + need <= self._limit:
                break
            self.drop(victim)
        with self._clock.time("to device"):
            self._copies[name] = {
                key: (down.to(self._device, self._dtype, copy=True), up.to(self._device, self._dtype, copy=True))
                for key, (down, up) in layers.items()
            }
        self._bytes[name] = need
        self._resident[name] = AdapterUse(name, 1.0, adapter.sha256, adapter.a1111_hash)

    def drop(self, name: str) -> None:
        """Forget resident adapter `name` (a lane holding it is emptied when next used)."""
        if self._resident.pop(name, None) is not None:
            del self._copies[name]
            self._bytes.pop(name, None)
            self._holding = [None if held == name else held for held in self._holding]

    def apply(self, active: Sequence[AdapterUse]) -> None:
        """Make `active` (all resident, at most one per lane) the lanes' content at their
        weights; the other lanes get scale 0. An adapter already in a lane stays there."""
        wanted = {use.name for use in active}
        free = [i for i, held in enumerate(self._holding) if held not in wanted]
        lane_of = {held: i for i, held in enumerate(self._holding) if held in wanted}
        for use in active:
            if use.name not in lane_of:
                lane_of[use.name] = index = free.pop(0)
                self._fill(index, use.name)
        weights = {lane_of[use.name]: use.weight for use in active}
        with self._clock.time("activate"):
            for index, scale in enumerate(self._scales):
                scale.fill_(weights.get(index, 0.0))

    def restore(self) -> None:
        """The layers exactly as the compiled UNet was traced: every lane active and on in each
        of its layers (peft's own switches, used while a set runs uncompiled, change both), and
        the LoRA wrappers an uncompiled set put on other layers (a LoCon's convolutions) taken
        off again, their original modules back in place."""
        from peft.tuners.lora import LoraLayer

        for component in LANE_TARGETS:
            model = getattr(self._pipe, component, None)
            if model is None:
                continue
            empty = [
                name
                for name, module in model.named_modules()
                if isinstance(module, LoraLayer) and not module.lora_A and not module.lora_embedding_A
            ]
            for name in empty:
                parent, _, child = name.rpartition(".")
                owner = model.get_submodule(parent) if parent else model
                setattr(owner, child, getattr(owner, child).get_base_layer())
        for layer in self._layers.values():
            layer.set_adapter(list(self.lane_names))
            layer.enable_adapters(True)
            for lane in self.lane_names:
                layer.lora_A[lane].requires_grad_(False)
                layer.lora_B[lane].requires_grad_(False)

    def release(self) -> None:
        self._resident.clear()
        self._copies.clear()
        self._bytes.clear()
        self._layers.clear()
        self._pipe = None

    def _fill(self, index: int, name: str) -> None:
        """Copy `name`'s weights into lane `index`: every layer of the lane zeroed, then the
        adapter's layers written (a smaller rank in the first rows, the rest left zero)."""
        import torch

        lane = self.lane_names[index]
        with self._clock.time("copy"), torch.no_grad():
            zero = [
                w for layer in self._layers.values() for w in (layer.lora_A[lane].weight, layer.lora_B[lane].weight)
            ]
            torch._foreach_zero_(zero)
            targets, sources = [], []
            for key, (down, up) in self._copies[name].items():
                layer = self._layers[key]
                rank = down.shape[0]
                targets += [layer.lora_A[lane].weight[:rank], layer.lora_B[lane].weight[:, :rank]]
                sources += [down, up]
            torch._foreach_copy_(targets, sources)
        self._holding[index] = name

    def _itemsize(self) -> int:
        import torch

        return torch.empty((), dtype=self._dtype).element_size()
