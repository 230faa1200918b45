"""LoraManager: the tiers composed into one switch of the active adapter set.

disk (catalog) -> RAM (ram) -> resident on the device (slots) -> active, optionally fused (fuse).
A failed load (missing, corrupt or incompatible file) leaves the previously active set in force:
the next image is exactly what it would have been without the attempt.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from spatiora_tui.config import AdapterRef
from spatiora_tui.engine.adapters.catalog import AdapterCatalog, AdapterFile, tensor_bytes
from spatiora_tui.engine.adapters.fuse import Fuser
from spatiora_tui.engine.adapters.layouts import normalize, unet_layers
from spatiora_tui.engine.adapters.phases import PhaseClock
from spatiora_tui.engine.adapters.ram import RamTier
from spatiora_tui.engine.adapters.slots import DeviceSlots
from spatiora_tui.engine.api import AdapterUse, EngineError
from spatiora_tui.engine.manifest import AdapterManifest
from spatiora_tui.hw.watchdog import MemoryReading, read_memory
from spatiora_tui.units import MB


@dataclass(frozen=True)
class ActivationReport:
    duration_ms: float
    loaded_from_disk: tuple[str, ...]
    active: tuple[AdapterUse, ...]
    #: (adapter, how it reached the device) for each adapter that was not resident:
    #: "in-place from RAM|disk" (copied into an evicted adapter's layers) or "loaded from RAM|disk".
    paths: tuple[tuple[str, str], ...] = ()
    #: (adapter, the tier it came from): active | resident | RAM | RAM (prefetched) | disk.
    tiers: tuple[tuple[str, str], ...] = ()
    #: (phase, ms) for the phases that took place, in PHASES order.
    phases_ms: tuple[tuple[str, float], ...] = ()
    before: MemoryReading | None = None
    after: MemoryReading | None = None
    fused: bool = False


class LoraManager:
    """Resident LoRA adapters on one pipeline, and which of them are active."""

    def __init__(
        self,
        pipe: Any,
        family: str,
        search_dirs: Sequence[Path],
        resident_max: int = 4,
        ram_cache_mb: float = 2048.0,
        resident_mb: float = 1024.0,
        fuse: bool = False,
        allow_pickle: bool = False,
        library_dirs: Sequence[Path] = (),
    ) -> None:
        """`search_dirs` hold adapters as NAME.safetensors or NAME/ folders; `library_dirs` are
        the user's LoRA folders ([paths] loras, installs), searched with their sub-folders."""
        self._pipe = pipe
        self._family = family
        #: Merge the active set into the base weights (see fuse.py); read at each switch.
        self.fuse = fuse
        self._clock = PhaseClock()
        self.catalog = AdapterCatalog(search_dirs, library_dirs, allow_pickle)
        self.ram = RamTier(int(ram_cache_mb * MB))
        self.slots = DeviceSlots(pipe, resident_max, int(resident_mb * MB), self._clock)
        self._fuser = Fuser(self._clock)
        self._active: tuple[AdapterUse, ...] = ()

    @property
    def resident(self) -> tuple[str, ...]:
        return self.slots.names

    @property
    def active(self) -> tuple[AdapterUse, ...]:
        return self._active

    @property
    def fused(self) -> bool:
        return self._fuser.fused

    @property
    def search_dirs(self) -> tuple[Path, ...]:
        return self.catalog.search_dirs

    def available(self) -> dict[str, Path]:
        return self.catalog.available()

    def find(self, name: str) -> Path:
        return self.catalog.find(name)

    def manifest(self, name: str) -> AdapterManifest:
        return self.catalog.manifest(name)

    def trigger_words(self) -> tuple[str, ...]:
        """The trigger words of the active adapters, from their manifests."""
        return tuple(w for use in self._active for w in self.manifest(use.name).trigger_words)

    def weight_of(self, ref: AdapterRef) -> float:
        """The weight `ref` is applied at (its own, else its manifest's default, else 1)."""
        if ref.weight is not None:
            return ref.weight
        default = self.manifest(ref.name).default_weight
        return 1.0 if default is None else default

    def held_mb(self) -> tuple[float, float]:
        """What the tiers hold on purpose, (host MB, device MB): the RAM cache and fused mode's
        copies of base weights on the host; the resident adapters on the device (which is the
        host too when the model runs on the CPU)."""
        host = self.ram.nbytes() + self._fuser.host_bytes()
        device = self.slots.nbytes()
        if self.slots.placement()[0].type == "cpu":
            return (host + device) / MB, 0.0
        return host / MB, device / MB

    def activate(self, refs: Sequence[AdapterRef]) -> ActivationReport:
        """Make exactly `refs` the active adapters (bringing any not resident through the tiers)."""
        before = read_memory()
        start = time.perf_counter()
        self._clock.reset()
        from_disk: list[str] = []
        paths: list[tuple[str, str]] = []
        tiers: list[tuple[str, str]] = []
        keep = {ref.name for ref in refs}
        active_names = {use.name for use in self._active}
        self._fuser.unfuse()
        try:
            for ref in refs:
                if ref.name in self.slots:
                    self.slots.touch(ref.name)
                    tiers.append((ref.name, "active" if ref.name in active_names else "resident"))
                    continue
                adapter, tier = self._fetch(ref.name)
                tiers.append((ref.name, tier))
                how = self._bring(ref.name, adapter, keep)
                paths.append((ref.name, f"{how} from {'disk' if tier == 'disk' else 'RAM'}"))
                if tier == "disk":
                    from_disk.append(ref.name)
        except EngineError:
            self._restore(self._active)  # keep what was active before the attempt
            raise
        active = tuple(replace(self.slots.use(ref.name), weight=self.weight_of(ref)) for ref in refs)
        self._set_active(active)
        return ActivationReport(
            (time.perf_counter() - start) * 1000.0,
            tuple(from_disk),
            active,
            tuple(paths),
            tuple(tiers),
            self._clock.report(),
            before,
            read_memory(),
            self._fuser.fused,
        )

    def prefetch(self, names: Sequence[str]) -> None:
        """Read adapters into the RAM cache in the background (returns at once), so that a coming
        switch does not wait for the disk. Problems are left for the switch to report."""
        self.ram.prefetch(names, self._prefetch_read, skip=self.slots.__contains__)

    def wait_prefetch(self) -> None:
        """Block until the prefetches asked for so far are done (for tests and benchmarks)."""
        self.ram.wait()

    def evict(self, name: str) -> None:
        """Take adapter `name` off the device (it comes back from RAM or disk when next needed)."""
        if any(use.name == name for use in self._active):
            raise EngineError(f"adapter {name!r} is active; switch away from it before evicting it")
        self.slots.drop(name)

    def release(self) -> OrderedDict[str, AdapterFile]:
        """Before the pipeline goes away: stop prefetching and hand over the RAM tier (parsed
        files, which a manager on a model of the same family can use as they are)."""
        ram = self.ram.release()
        self.slots.release()
        self._fuser.release()
        self._pipe = None
        return ram

    def adopt_ram_cache(self, ram: OrderedDict[str, AdapterFile]) -> None:
        """Take over another manager's RAM tier (see release); its entries count as RAM, and are
        read again from disk if their file changed since."""
        self.ram.adopt(ram)

    # -- the tiers, composed -------------------------------------------------------------------

    def _read(self, name: str) -> AdapterFile:
        """Read and check `name`'s file, then put it in the layout the model loads."""
        adapter = self.catalog.read(name, self._family)
        if not adapter.has_config and self._pipe is not None:
            adapter.raw = normalize(self._pipe, name, adapter.path, adapter.raw)
            adapter.nbytes = tensor_bytes(adapter.raw)
        return adapter

    def _prefetch_read(self, name: str) -> AdapterFile:
        adapter = self._read(name)
        if self._pipe is not None:
            unet_layers(self._pipe, adapter)  # an in-place swap's parse, done here rather than in the switch
        return adapter

    def _fetch(self, name: str) -> tuple[AdapterFile, str]:
        """The adapter's file from the RAM tier, or read (and checked) from disk and kept there.
        Returns it and the tier it came from: RAM, RAM (prefetched) or disk."""
        start = time.perf_counter()
        if self.ram.wait_for(name):  # a prefetch of it was under way: waited rather than read twice
            self._clock.add("read", (time.perf_counter() - start) * 1000.0)
        cached = self.ram.take(name)
        if cached is not None:
            return cached
        adapter = self._read(name)
        self._clock.add("read", adapter.read_ms)
        self._clock.add("parse", adapter.parse_ms)
        self.ram.put(name, adapter)
        return adapter, "disk"

    def _bring(self, name: str, adapter: AdapterFile, keep: set[str]) -> str:
        try:
            return self.slots.bring(name, adapter, keep)
        except EngineError:
            self.ram.discard(name)  # a file that does not load is not worth keeping
            raise

    def _restore(self, previous: Sequence[AdapterUse]) -> None:
        """After a failed activation: the previous active set back on the device, and in force.
        Making room for the failed one may have taken one of them off; it comes back from RAM."""
        keep = {use.name for use in previous}
        for use in previous:
            if use.name not in self.slots:
                self.slots.bring(use.name, self._fetch(use.name)[0], keep)
        self._set_active(previous)

    def _set_active(self, active: Sequence[AdapterUse]) -> None:
        # DoRA rescales each output row by a norm of the sum: not a delta added to the weight,
        # so a set with a DoRA adapter runs unfused (its layers on), exactly.
        fuse = self.fuse and bool(active) and not self.slots.any_dora(active)
        with self._clock.time("activate"):
            # In fused mode the layers stay off: the merge below puts the deltas in the base weights.
            self.slots.apply(active, enable=not fuse)
        self._active = tuple(active)
        if fuse:
            self._fuser.fuse(self.slots.tuner_layers(), [self.slots.slot(use.name) for use in active])
            self.slots.enable(False)  # the deltas are in the base weights now
