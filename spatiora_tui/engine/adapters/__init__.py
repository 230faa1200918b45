"""LoRA adapters: find the files, keep them in tiers, switch the active set in milliseconds.

Tiers, each bounded and least recently used first: disk (`catalog`: find, read, check; needs no
model) -> RAM (`ram`: parsed tensors up to `ram_cache_mb`, filled ahead by a prefetch thread) ->
resident on the device as named peft adapters (`slots`: up to `resident_max`, in-place swaps)
-> the active set, optionally merged into the base weights (`fuse`). `layouts` converts a file's
layout for the model; `manager.LoraManager` composes the tiers into one switch, and a task with
no adapters disables LoRA entirely, giving the exact base model.
"""

from spatiora_tui.engine.adapters.catalog import AdapterCatalog, AdapterFile
from spatiora_tui.engine.adapters.manager import ActivationReport, LoraManager
from spatiora_tui.engine.adapters.phases import PHASES

__all__ = ["PHASES", "ActivationReport", "AdapterCatalog", "AdapterFile", "LoraManager"]
