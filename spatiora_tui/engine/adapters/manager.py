"""LoraManager: the tiers composed into one switch of the active adapter set.

disk (catalog) -> RAM (ram) -> resident on the device (slots) -> active, optionally fused (fuse).
A failed load (missing, corrupt or incompatible file) leaves the previously active set in force:
the next image is exactly what it would have been without the attempt.

With a compiled UNet the device tier is the lanes (lanes.py) and switches trace nothing again; a
set that does not fit them runs uncompiled on peft's own layers (slots), and the report says why.
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
from spatiora_tui.engine.adapters.lanes import LaneSlots, file_rank, lane_layers, lane_rank
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
    #: With a compiled UNet, why this set runs uncompiled ("" when it runs compiled, or no compile).
    uncompiled: str = ""


@dataclass
class _Log:
    """What a switch did, for its report."""

    from_disk: list[str]
    paths: list[tuple[str, str]]
    tiers: list[tuple[str, str]]


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
        compiled: Any = None,
        lanes: tuple[int, int] | None = None,
        lane_adapters: Sequence[str] = (),
    ) -> None:
        """`search_dirs` hold adapters as NAME.safetensors or NAME/ folders; `library_dirs` are
        the user's LoRA folders ([paths] loras, installs), searched with their sub-folders.
        `compiled` (a compiled.CompiledUNet) with `lanes` = (count, rank): the device tier is
        that many lanes of that rank (0: the highest rank of the `lane_adapters` files), created
        now, before the compiled UNet first runs."""
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
        self._compiled = compiled
        self.lanes: LaneSlots | None = None
        if compiled is not None and lanes is not None:
            count, rank = lanes
            if rank == 0:
                rank = lane_rank([self._file_rank(name) for name in lane_adapters])
            self.lanes = LaneSlots(pipe, count, rank, resident_max, int(resident_mb * MB), self._clock)
        self._in_lanes = self.lanes is not None  # whether the active set is in the lanes

    @property
    def resident(self) -> tuple[str, ...]:
        return (self.lanes.names if self.lanes is not None else ()) + self.slots.names

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
        device = self.slots.nbytes() + (self.lanes.nbytes() if self.lanes is not None else 0)
        if self.slots.placement()[0].type == "cpu":
            return (host + device) / MB, 0.0
        return host / MB, device / MB

    def _file_rank(self, name: str) -> int | None:
        try:
            return file_rank(self.catalog.find(name))
        except EngineError:
            return None  # a missing adapter is reported when its task is used

    def activate(self, refs: Sequence[AdapterRef]) -> ActivationReport:
        """Make exactly `refs` the active adapters (bringing any not resident through the tiers)."""
        before = read_memory()
        start = time.perf_counter()
        self._clock.reset()
        log = _Log([], [], [])
        self._fuser.unfuse()
        uncompiled = ""
        in_lanes = self._in_lanes
        try:
            fetched: dict[str, tuple[AdapterFile, str]] = {}
            if self.lanes is not None:
                uncompiled = self._activate_lanes(refs, log, fetched) or ""
            if self.lanes is None or uncompiled:
                self._activate_peft(refs, log, fetched)
        except EngineError:
            self._restore(self._active, in_lanes)  # keep what was active before the attempt
            raise
        return ActivationReport(
            (time.perf_counter() - start) * 1000.0,
            tuple(log.from_disk),
            self._active,
            tuple(log.paths),
            tuple(log.tiers),
            self._clock.report(),
            before,
            read_memory(),
            self._fuser.fused,
            uncompiled,
        )

    def _activate_peft(
        self, refs: Sequence[AdapterRef], log: _Log, fetched: dict[str, tuple[AdapterFile, str]]
    ) -> None:
        """The active set on peft's layers (slots), fused or not; with lanes, the UNet runs
        uncompiled and the lanes are off."""
        keep = {ref.name for ref in refs}
        active_names = {use.name for use in self._active}
        if self.lanes is not None:
            self.lanes.apply(())
            self._compiled.use(False)
            self._in_lanes = False
        for ref in refs:
            if ref.name in self.slots:
                self.slots.touch(ref.name)
                log.tiers.append((ref.name, "active" if ref.name in active_names else "resident"))
                continue
            adapter, tier = fetched.pop(ref.name) if ref.name in fetched else self._fetch(ref.name)
            log.tiers.append((ref.name, tier))
            how = self._bring(ref.name, adapter, keep)
            log.paths.append((ref.name, f"{how} from {'disk' if tier == 'disk' else 'RAM'}"))
            if tier == "disk":
                log.from_disk.append(ref.name)
        self._set_active(tuple(replace(self.slots.use(ref.name), weight=self.weight_of(ref)) for ref in refs))

    def _activate_lanes(
        self, refs: Sequence[AdapterRef], log: _Log, fetched: dict[str, tuple[AdapterFile, str]]
    ) -> str | None:
        """The active set in the lanes, the UNet compiled; or why it cannot be (nothing changed
        but the RAM tier and the resident copies, and what was read is left in `fetched`)."""
        lanes = self.lanes
        assert lanes is not None
        if len(refs) > lanes.lanes:
            return (
                f"{len(refs)} adapters at once, and the compiled UNet has {lanes.lanes} lane"
                f"{'s' if lanes.lanes > 1 else ''} (as many as the largest task's adapter set)"
            )
        plan = []
        for ref in refs:
            if ref.name not in lanes:
                adapter, tier = fetched[ref.name] = self._fetch(ref.name)
                with self._clock.time("plan"):
                    layers, why = lane_layers(self._pipe, adapter)
                    why = why or lanes.misfit(layers)
                if why:
                    return f"adapter {ref.name!r} does not fit the compiled layout: {why}"
                plan.append((ref.name, adapter, tier, layers))
        keep = {ref.name for ref in refs}
        active_names = {use.name for use in self._active} if self._in_lanes else set()
        brought = {name: tier for name, _, tier, _ in plan}
        for name, adapter, _, layers in plan:
            lanes.bring(name, adapter, layers, keep)
        for ref in refs:
            if ref.name not in brought:
                lanes.touch(ref.name)
                log.tiers.append((ref.name, "active" if ref.name in active_names else "resident"))
                continue
            tier = brought[ref.name]
            log.tiers.append((ref.name, tier))
            log.paths.append((ref.name, f"in-place from {'disk' if tier == 'disk' else 'RAM'}"))
            if tier == "disk":
                log.from_disk.append(ref.name)
        if not self._in_lanes:
            # Back from an uncompiled set: its peft adapters out, so the layers are exactly
            # what the compiled UNet was traced with.
            self.slots.clear()
            lanes.restore()
            self._compiled.use(True)
            self._in_lanes = True
        active = tuple(replace(lanes.use(ref.name), weight=self.weight_of(ref)) for ref in refs)
        lanes.apply(active)
        self._active = active
        return None

    def prefetch(self, names: Sequence[str]) -> None:
        """Read adapters into the RAM cache in the background (returns at once), so that a coming
        switch does not wait for the disk. Problems are left for the switch to report."""
        self.ram.prefetch(names, self._prefetch_read, skip=lambda name: name in self.resident)

    def on_disk(self, refs: Sequence[AdapterRef]) -> tuple[str, ...]:
        """The adapters of `refs` a switch would read from disk: neither on the device nor in
        RAM (nor being read into it)."""
        return tuple(ref.name for ref in refs if ref.name not in self.resident and not self.ram.holds(ref.name))

    def text_encoder_parts(self, names: Sequence[str]) -> tuple[str, ...]:
        """Those of `names` (held in RAM) whose files have text-encoder layers."""
        found = []
        for name in names:
            held = self.ram.peek(name)
            if held is not None and any(key.startswith(("text_encoder", "lora_te")) for key in held.raw):
                found.append(name)
        return tuple(found)

    def wait_prefetch(self) -> None:
        """Block until the prefetches asked for so far are done (for tests and benchmarks)."""
        self.ram.wait()

    def evict(self, name: str) -> None:
        """Take adapter `name` off the device (it comes back from RAM or disk when next needed)."""
        if any(use.name == name for use in self._active):
            raise EngineError(f"adapter {name!r} is active; switch away from it before evicting it")
        self.slots.drop(name)
        if self.lanes is not None:
            self.lanes.drop(name)

    def release(self) -> OrderedDict[str, AdapterFile]:
        """Before the pipeline goes away: stop prefetching and hand over the RAM tier (parsed
        files, which a manager on a model of the same family can use as they are)."""
        ram = self.ram.release()
        self.slots.release()
        if self.lanes is not None:
            self.lanes.release()
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
            # An in-place swap's parse, done here rather than in the switch.
            if self.lanes is not None:
                lane_layers(self._pipe, adapter)
            else:
                unet_layers(self._pipe, adapter)
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

    def _restore(self, previous: Sequence[AdapterUse], in_lanes: bool) -> None:
        """After a failed activation: the previous active set back on the device, and in force
        (`in_lanes`: it was in the lanes). Making room for the failed one may have taken one of
        them off; it comes back from RAM."""
        if in_lanes:
            assert self.lanes is not None
            if not self._in_lanes:
                self.slots.clear()
                self.lanes.restore()
                self._compiled.use(True)
                self._in_lanes = True
            keep = {use.name for use in previous}
            for use in previous:
                if use.name not in self.lanes:
                    adapter = self._fetch(use.name)[0]
                    self.lanes.bring(use.name, adapter, lane_layers(self._pipe, adapter)[0], keep)
            self.lanes.apply(previous)
            self._active = tuple(previous)
            return
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
