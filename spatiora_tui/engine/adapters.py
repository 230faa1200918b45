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

import difflib
import hashlib
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from spatiora_tui.config import AdapterRef
from spatiora_tui.engine.api import FAMILY_LABELS, AdapterUse, EngineError
from spatiora_tui.engine.manifest import AdapterManifest, read_manifest
from spatiora_tui.engine.pipeline import PICKLE_REFUSED, PICKLE_SUFFIXES, unpickle_state_dict
from spatiora_tui.hw.watchdog import MemoryReading, read_memory
from spatiora_tui.library.catalog import Listing, scan
from spatiora_tui.library.hashing import addnet_hash_of_bytes
from spatiora_tui.library.identify import UNSUPPORTED_FORMATS, UNSUPPORTED_HOW, lora_base, lora_format
from spatiora_tui.library.safetensors_file import FileProblem, parse_header
from spatiora_tui.units import MB

#: A LoRA down-projection's key in the layouts diffusers reads (peft, Kohya, old diffusers).
_DOWN_KEY = re.compile(r"(lora_A|lora_down|lora[._]down|lora_linear_layer\.down)\.weight$")
#: The phases of a switch, in the order they happen; a report lists those that took place.
PHASES = ("unfuse", "read", "parse", "plan", "to device", "inject", "copy", "activate", "fuse")


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


@dataclass
class _Parsed:
    """An adapter file read into RAM: its tensors as stored, and what an in-place swap needs."""

    path: Path
    stamp: tuple[int, int]  # the file's (mtime_ns, size) when read
    sha256: str
    a1111_hash: str  # AUTOMATIC1111's LoRA hash (see AdapterUse)
    raw: dict[str, Any]
    has_config: bool  # diffusers LoRA metadata in the file (alphas we do not reproduce in place)
    layers: int  # LoRA layers the file holds (down projections), before any conversion
    nbytes: int
    manifest: AdapterManifest
    read_ms: float = 0.0
    parse_ms: float = 0.0
    prefetched: bool = False  # read ahead by prefetch() and not yet used by a switch
    _unet: dict[str, tuple[Any, Any, float]] | None = field(default=None, repr=False)


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
        self._library_dirs = tuple(Path(d) for d in library_dirs)
        self._library: Listing | None = None
        self._allow_pickle = allow_pickle
        self._family = family
        # Kept once read: diffusers' `unet.dtype` / `.device` walk every parameter (about 14 ms
        # on SD 1.5).
        self._where: tuple[Any, Any] | None = None
        self._dirs = [Path(d) for d in search_dirs]
        self._resident_max = resident_max
        self._resident_limit = int(resident_mb * MB)
        self._ram_limit = int(ram_cache_mb * MB)
        self._fuse = fuse
        # Least recently used first: adapter name -> its use; which peft adapter (slot) holds it,
        # and that slot's bytes on the device.
        self._resident: OrderedDict[str, AdapterUse] = OrderedDict()
        self._slot: dict[str, str] = {}
        self._bytes: dict[str, int] = {}
        # The RAM tier, shared with the prefetch thread (guarded by _lock).
        self._ram: OrderedDict[str, _Parsed] = OrderedDict()
        self._pending: dict[str, Future[None]] = {}
        self._lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None
        self._active: tuple[AdapterUse, ...] = ()
        self._manifests: dict[str, AdapterManifest] = {}
        self._lora_enabled = True
        self._layers: list[Any] | None = None  # the LoRA layers, found again after each load
        self._unet_modules: dict[str, Any] | None = None
        # Fused mode: base modules holding merged deltas, and the original weights (host copies).
        self._fused: list[Any] = []
        self._originals: dict[int, tuple[Any, Any]] = {}
        self._phases: dict[str, float] = {}

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
        """Adapter name -> file, over the search folders, then the library folders (an earlier
        folder wins)."""
        found: dict[str, Path] = {}
        for folder in self._dirs:
            if not folder.is_dir():
                continue
            for entry in sorted(folder.iterdir()):
                path = self._file_of(entry)
                if path is not None:
                    found.setdefault(entry.stem if entry.is_file() else entry.name, path)
        for name, library_entry in self._library_listing(refresh=True).entries.items():
            if not library_entry.pickle or self._allow_pickle:
                found.setdefault(name, library_entry.path)
        return found

    def _library_listing(self, refresh: bool = False) -> Listing:
        if self._library is None or refresh:
            self._library = scan(self._library_dirs)
        return self._library

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
                pickled = folder / f"{name}{suffix}"
                if pickled.is_file():
                    return self._pickle_allowed(name, pickled)
        # The user's LoRA folders: a file added since the last look is found by looking again.
        entry = self._library_listing().find(name) or self._library_listing(refresh=True).find(name)
        if entry is not None:
            return self._pickle_allowed(name, entry.path) if entry.pickle else entry.path
        where = ", ".join(str(d) for d in (*self._dirs, *self._library_dirs)) or "(no adapter folder configured)"
        close = difflib.get_close_matches(name, list(self.available()), n=3, cutoff=0.6)
        hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        raise EngineError(
            f"adapter {name!r} not found; looked for {name}.safetensors or {name}/*.safetensors in {where}.{hint} "
            "Put the file there, or remove it from the task in config.toml (or the <lora:...> tag from the prompt)"
        )

    def _pickle_allowed(self, name: str, path: Path) -> Path:
        if self._allow_pickle:
            return path
        raise EngineError(f"adapter {name!r} is a pickle file ({path}); {PICKLE_REFUSED}")

    @property
    def fused(self) -> bool:
        return bool(self._fused)

    def manifest(self, name: str) -> AdapterManifest:
        """The adapter's adapter.toml (empty when it has none or has not been read yet)."""
        return self._manifests.get(name, AdapterManifest())

    def trigger_words(self) -> tuple[str, ...]:
        """The trigger words of the active adapters, from their manifests."""
        return tuple(w for use in self._active for w in self.manifest(use.name).trigger_words)

    def held_mb(self) -> tuple[float, float]:
        """What the tiers hold on purpose, (host MB, device MB): the RAM cache and fused mode's
        copies of base weights on the host; the resident adapters on the device (which is the
        host too when the model runs on the CPU)."""
        with self._lock:
            ram = sum(p.nbytes for p in self._ram.values())
        ram += sum(t.numel() * t.element_size() for _, t in self._originals.values())
        device = sum(self._bytes.get(n, 0) for n in self._resident)
        if self._device().type == "cpu":
            return (ram + device) / MB, 0.0
        return ram / MB, device / MB

    def activate(self, refs: Sequence[AdapterRef]) -> ActivationReport:
        """Make exactly `refs` the active adapters (bringing any not resident through the tiers)."""
        before = read_memory()
        start = time.perf_counter()
        self._phases = {}
        from_disk: list[str] = []
        paths: list[tuple[str, str]] = []
        tiers: list[tuple[str, str]] = []
        keep = {ref.name for ref in refs}
        active_names = {use.name for use in self._active}
        self._unfuse()
        try:
            for ref in refs:
                if ref.name in self._resident:
                    self._resident.move_to_end(ref.name)
                    tiers.append((ref.name, "active" if ref.name in active_names else "resident"))
                    continue
                parsed, tier = self._parsed(ref.name)
                tiers.append((ref.name, tier))
                how = self._bring(ref.name, parsed, keep)
                paths.append((ref.name, f"{how} from {'disk' if tier == 'disk' else 'RAM'}"))
                if tier == "disk":
                    from_disk.append(ref.name)
        except EngineError:
            self._restore(self._active)  # keep what was active before the attempt
            raise
        active = tuple(replace(self._resident[ref.name], weight=self._weight(ref)) for ref in refs)
        self._set_active(active)
        duration = (time.perf_counter() - start) * 1000.0
        phases = tuple((p, self._phases[p]) for p in PHASES if p in self._phases)
        return ActivationReport(
            duration,
            tuple(from_disk),
            active,
            tuple(paths),
            tuple(tiers),
            phases,
            before,
            read_memory(),
            bool(self._fused),
        )

    def prefetch(self, names: Sequence[str]) -> None:
        """Read adapters into the RAM cache in the background (returns at once), so that a coming
        switch does not wait for the disk. Problems are left for the switch to report."""
        if self._ram_limit <= 0:
            return
        with self._lock:
            for name in dict.fromkeys(names):
                if name in self._resident or name in self._ram or name in self._pending:
                    continue
                if self._pool is None:
                    self._pool = ThreadPoolExecutor(1, thread_name_prefix="spatiora-prefetch")
                self._pending[name] = self._pool.submit(self._prefetch_one, name)

    def wait_prefetch(self) -> None:
        """Block until the prefetches asked for so far are done (for tests and benchmarks)."""
        with self._lock:
            pending = list(self._pending.values())
        for future in pending:
            future.result()

    def evict(self, name: str) -> None:
        """Take adapter `name` off the device (it comes back from RAM or disk when next needed)."""
        if any(use.name == name for use in self._active):
            raise EngineError(f"adapter {name!r} is active; switch away from it before evicting it")
        self._drop(name)

    def weight_of(self, ref: AdapterRef) -> float:
        """The weight `ref` is applied at (its own, else its manifest's default, else 1)."""
        return self._weight(ref)

    def release(self) -> OrderedDict[str, Any]:
        """Before the pipeline goes away: stop prefetching and hand over the RAM tier (parsed
        files, which a manager on a model of the same family can use as they are)."""
        self.wait_prefetch()
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        with self._lock:
            ram, self._ram = self._ram, OrderedDict()
        self._resident.clear()
        self._slot.clear()
        self._bytes.clear()
        self._layers = self._unet_modules = None
        self._fused, self._originals = [], {}
        self._pipe = None
        return ram

    def adopt_ram_cache(self, ram: OrderedDict[str, Any]) -> None:
        """Take over another manager's RAM tier (see release); its entries count as RAM, and are
        read again from disk if their file changed since."""
        with self._lock:
            for name, parsed in ram.items():
                parsed.prefetched = False
                self._ram[name] = parsed
        self._cache_trim()

    def _weight(self, ref: AdapterRef) -> float:
        if ref.weight is not None:
            return ref.weight
        default = self.manifest(ref.name).default_weight
        return 1.0 if default is None else default

    def _drop(self, name: str) -> None:
        if self._resident.pop(name, None) is not None:
            self._pipe.delete_adapters(self._slot.pop(name))
            self._bytes.pop(name, None)
            self._layers = self._unet_modules = None

    def _restore(self, previous: Sequence[AdapterUse]) -> None:
        """After a failed activation: the previous active set back on the device, and in force.
        Making room for the failed one may have taken one of them off; it comes back from RAM."""
        keep = {use.name for use in previous}
        for use in previous:
            if use.name not in self._resident:
                self._bring(use.name, self._parsed(use.name)[0], keep)
        self._set_active(previous)

    @contextmanager
    def _phase(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self._phases[name] = self._phases.get(name, 0.0) + (time.perf_counter() - start) * 1000.0

    def _device(self) -> Any:
        return self._placement()[0]

    def _placement(self) -> tuple[Any, Any]:
        """The UNet's (device, dtype)."""
        if self._where is None:
            self._where = (self._pipe.unet.device, self._pipe.unet.dtype)
        return self._where

    # -- tiers: disk -> RAM -> device ---------------------------------------------------------

    def _parsed(self, name: str) -> tuple[_Parsed, str]:
        """The adapter's tensors from the RAM cache, or read (and checked) from its file.
        Returns them and the tier they came from: RAM, RAM (prefetched) or disk."""
        with self._lock:
            pending = self._pending.get(name)
        if pending is not None:
            with self._phase("read"):  # a prefetch of it is under way: wait rather than read twice
                pending.result()
        with self._lock:
            cached = self._ram.get(name)
            if cached is not None:
                # A file replaced since it was read is read again; one deleted since is still
                # served from RAM (its content is what was checked and used before).
                stamp = _stamp(cached.path)
                if stamp is None or stamp == cached.stamp:
                    self._ram.move_to_end(name)
                    tier = "RAM (prefetched)" if cached.prefetched else "RAM"
                    cached.prefetched = False
                    return cached, tier
                del self._ram[name]
        parsed = self._read(name)
        self._phases["read"] = self._phases.get("read", 0.0) + parsed.read_ms
        self._phases["parse"] = self._phases.get("parse", 0.0) + parsed.parse_ms
        self._cache(name, parsed)
        return parsed, "disk"

    def _read(self, name: str) -> _Parsed:
        """Read and check adapter `name`'s file. Touches nothing but its arguments and the
        manifests, so the prefetch thread may call it."""
        from safetensors.torch import load as load_tensors

        path = self.find(name)
        manifest = read_manifest(name, path)
        self._manifests[name] = manifest
        if manifest.base is not None and manifest.base != self._family:
            raise EngineError(
                f"adapter {name!r} is made for {FAMILY_LABELS[manifest.base]} (its manifest {manifest.path} "
                f"says base = {manifest.base!r}) but the base model is {FAMILY_LABELS.get(self._family, self._family)}; "
                "use an adapter made for this base model"
            )
        start = time.perf_counter()
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise EngineError(
                f"adapter {name!r} ({path}) could not be read: {exc.strerror or exc}; check that the file is readable"
            ) from None
        sha256 = hashlib.sha256(data).hexdigest()
        read_done = time.perf_counter()
        if path.suffix.lower() in PICKLE_SUFFIXES:  # only found with allow_pickle on
            raw, metadata = _unpickle(name, path, data), dict[str, str]()
            self._check_family(name, path, {k: tuple(v.shape) for k, v in raw.items()}, {})
            a1111_hash = sha256
        else:
            shapes, metadata = _header(name, path, data)
            self._check_family(name, path, shapes, metadata)
            a1111_hash = str(metadata.get("sshs_model_hash") or addnet_hash_of_bytes(data))
            try:
                raw = load_tensors(data)
            except Exception as exc:
                raise _invalid(name, path, exc) from None
        del data
        has_config = "lora_adapter_metadata" in metadata
        # Counted in the file as it is: a conversion that drops layers must not hide them.
        layers = sum(1 for key in raw if _DOWN_KEY.search(key))
        if not has_config and self._pipe is not None:
            raw = self._normalize(name, path, raw)
        nbytes = sum(t.numel() * t.element_size() for t in raw.values())
        return _Parsed(
            path,
            _stamp(path) or (0, 0),
            sha256,
            a1111_hash,
            raw,
            has_config,
            layers,
            nbytes,
            manifest,
            (read_done - start) * 1000.0,
            (time.perf_counter() - read_done) * 1000.0,
        )

    def _normalize(self, name: str, path: Path, raw: dict[str, Any]) -> dict[str, Any]:
        """The adapter in the one layout diffusers loads without guessing: its own conversion of
        whatever layout the file is in (Kohya, LoCon, old diffusers, peft), with each module's
        alpha multiplied into its up weight. diffusers 0.42 turns per-module alphas into a
        pattern that matches no module and drops them (peft warns "alpha_pattern keys did not
        match any targeted module"), so a Kohya file whose alphas differ between layers drew at
        the wrong strength; baked in, every layer has scale 1 and nothing depends on alphas."""
        import torch

        try:
            # The UNet's config lets diffusers map SDXL's original block names (input_blocks_4_1)
            # to its own (down_blocks.1.attentions.0); load_lora_weights passes it the same way.
            state, alphas = self._pipe.lora_state_dict(dict(raw), unet_config=self._pipe.unet.config)[:2]
        except Exception as exc:
            raise EngineError(f"adapter {name!r} ({path}) could not be read: {_load_error(exc)}") from None
        if not alphas:
            return dict(state)
        baked = dict(state)
        for key, alpha in alphas.items():
            base = key[: -len(".alpha")] if key.endswith(".alpha") else key
            pairs = (
                (base, base[: -len("down.weight")] + "up.weight")
                if base.endswith(".down.weight")
                else (base + ".lora.down.weight", base + ".lora.up.weight"),
                (base + ".lora_A.weight", base + ".lora_B.weight"),
            )
            for down_key, up_key in pairs:
                if down_key in baked and up_key in baked:
                    up = baked[up_key]
                    scale = float(alpha) / baked[down_key].shape[0]
                    baked[up_key] = (up.to(torch.float32) * scale).to(up.dtype)
                    break
            else:
                raise EngineError(
                    f"adapter {name!r} ({path}) has an alpha for {base}, a layer it holds no weights "
                    "for; the file is damaged or in a layout Spatiora does not know: replace it"
                )
        return baked

    def _cache(self, name: str, parsed: _Parsed) -> None:
        with self._lock:
            if parsed.nbytes > self._ram_limit:
                return
            self._ram[name] = parsed
            self._ram.move_to_end(name)
        self._cache_trim()

    def _cache_trim(self) -> None:
        with self._lock:
            while self._ram and sum(p.nbytes for p in self._ram.values()) > self._ram_limit:
                self._ram.popitem(last=False)

    def _prefetch_one(self, name: str) -> None:
        try:
            parsed = self._read(name)
            parsed.prefetched = True
            self._unet_layers(parsed)  # an in-place swap's parse, done here rather than in the switch
            self._cache(name, parsed)
        except Exception:
            pass  # the switch reads the file itself and reports what is wrong with it
        finally:
            with self._lock:
                self._pending.pop(name, None)

    def _bring(self, name: str, parsed: _Parsed, keep: set[str]) -> str:
        """Put `name` on the device, making room first if a resident limit (count or MB) is reached:
        the least recently used adapter not needed now leaves, its layers taking `name` in place
        when they fit."""
        need = self._device_bytes(parsed)
        victims = [n for n in self._resident if n not in keep]

        def over() -> bool:
            held = sum(self._bytes.get(n, 0) for n in self._resident)
            return len(self._resident) >= self._resident_max or held + need > self._resident_limit

        if victims and over():
            victim = victims.pop(0)
            if self._swap_in_place(name, parsed, victim):
                return "in-place"
            self._drop(victim)
            while victims and over():
                self._drop(victims.pop(0))
        self._inject(name, parsed, need)
        return "loaded"

    def _device_bytes(self, parsed: _Parsed) -> int:
        import torch

        itemsize = torch.empty((), dtype=self._placement()[1]).element_size()
        return int(sum(t.numel() for t in parsed.raw.values() if t.ndim >= 2)) * itemsize

    def _inject(self, name: str, parsed: _Parsed, nbytes: int) -> None:
        self._layers = self._unet_modules = None  # a load may add layers
        # From RAM, unless the file carries diffusers' LoRA config (alphas), which only a load
        # from the file applies. Copies: the loader may adopt the tensors it is given as the
        # layers' weights, and an in-place swap into those layers would then overwrite the cache.
        if parsed.has_config:
            source: Any = str(parsed.path)
        else:
            device, dtype = self._placement()
            with self._phase("to device"):
                source = {
                    k: v.to(device=device, dtype=dtype if v.is_floating_point() else None, copy=True)
                    for k, v in parsed.raw.items()
                }
        try:
            with self._phase("inject"):
                self._pipe.load_lora_weights(source, adapter_name=name)
        except Exception as exc:
            self._forget_partial(name)
            with self._lock:
                self._ram.pop(name, None)  # a file that does not load is not worth keeping
            raise EngineError(f"adapter {name!r} ({parsed.path}) could not be loaded: {_load_error(exc)}") from None
        self._layers = self._unet_modules = None
        applied = sum(1 for layer in self._tuner_layers() if name in getattr(layer, "lora_A", {}))
        expected = parsed.layers
        if applied < expected:
            # diffusers can drop layers without a word (it guesses a Kohya text encoder's layout
            # from whether out_proj is present); half an adapter draws wrong images silently.
            self._forget_partial(name)
            with self._lock:
                self._ram.pop(name, None)
            raise EngineError(
                f"adapter {name!r} ({parsed.path}): only {applied} of its {expected} LoRA layers could be "
                "applied, so it would not draw what it was trained to; convert it to the diffusers/peft "
                "format, or report the file's layout"
            )
        self._resident[name] = AdapterUse(name, 1.0, parsed.sha256, parsed.a1111_hash)
        self._slot[name] = name
        self._bytes[name] = nbytes

    def _swap_in_place(self, name: str, parsed: _Parsed, victim: str) -> bool:
        """Copy `name`'s weights into the LoRA layers holding `victim`, if they fit: every layer
        it targets holds the victim, with a rank at least its own (the rest is zero-padded).
        The mechanism behind diffusers' and peft's hotswap. False (nothing touched) if not."""
        with self._phase("parse"):
            unet_layers = self._unet_layers(parsed)
        slot = self._slot[victim]
        with self._phase("plan"):
            modules = self._unet_lora_modules()
            plan = []
            for module_name, (down, up, alpha) in unet_layers.items():
                layer = modules.get(module_name)
                if layer is None or slot not in layer.lora_A:
                    return False
                slot_down, slot_up = layer.lora_A[slot].weight, layer.lora_B[slot].weight
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

        with self._phase("to device"):
            plan = [
                (layer, sd, su, down.to(sd.device, sd.dtype), up.to(su.device, su.dtype), alpha)
                for layer, sd, su, down, up, alpha in plan
            ]
        with self._phase("copy"), torch.no_grad():
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
        self._bytes[name] = self._bytes.pop(victim, 0)
        self._resident[name] = AdapterUse(name, 1.0, parsed.sha256, parsed.a1111_hash)
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
            if any(not key.startswith("unet.") or "lora_magnitude_vector" in key for key in state):
                return parsed._unet  # text-encoder parts, or DoRA (its magnitudes are no A/B copy)
            values = set((alphas or {}).values())
            if len(values) > 1:
                return parsed._unet
            uniform_alpha = float(next(iter(values))) if values else None  # None: alpha = rank
            peft = convert_unet_state_dict_to_peft({k[len("unet.") :]: v for k, v in state.items()})
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

    def _set_active(self, active: Sequence[AdapterUse]) -> None:
        # DoRA rescales each output row by a norm of the sum: not a delta added to the weight,
        # so a set with a DoRA adapter runs unfused (its layers on), exactly.
        fuse = self._fuse and bool(active) and not self._any_dora(active)
        with self._phase("activate"):
            # In fused mode the layers stay off: the merge below puts the deltas in the base weights.
            self._apply(active, enable=not fuse)
        self._active = tuple(active)
        if fuse:
            self._fuse_active(active)

    def _any_dora(self, active: Sequence[AdapterUse]) -> bool:
        slots = {self._slot[use.name] for use in active}
        for component in ("unet", "text_encoder", "text_encoder_2"):
            configs = getattr(getattr(self._pipe, component, None), "peft_config", None) or {}
            if any(getattr(configs.get(slot), "use_dora", False) for slot in slots):
                return True
        return False

    def _fuse_active(self, active: Sequence[AdapterUse]) -> None:
        """Merge the active adapters (at their weights) into the base weights, and turn the LoRA
        layers off. The first merge into a base weight keeps a host copy of it, so that unfusing
        restores it exactly (subtracting the delta again would leave rounding errors that add
        up over switches)."""
        import torch

        slots = [self._slot[use.name] for use in active]
        with self._phase("fuse"), torch.no_grad():
            layers = self._tuner_layers()
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
            for layer in layers:
                layer.enable_adapters(False)  # the deltas are in the base weights now
            self._lora_enabled = False

    def _unfuse(self) -> None:
        if not self._fused:
            return
        import torch

        with self._phase("unfuse"), torch.no_grad():
            for base in self._fused:
                base.weight.copy_(self._originals[id(base)][1])
        self._fused = []

    def _apply(self, active: Sequence[AdapterUse], enable: bool = True) -> None:
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
        if enable and not self._lora_enabled:
            for layer in layers:
                layer.enable_adapters(True)
            self._lora_enabled = True
        slots = [self._slot[a.name] for a in active]
        for layer in layers:
            layer.set_adapter(slots)  # names a layer does not hold are skipped by its forward
            for slot, use in zip(slots, active):
                layer.set_scale(slot, use.weight)  # no-op where the layer lacks the adapter

    def _unet_lora_modules(self) -> dict[str, Any]:
        """UNet module name -> its LoRA layer (kept, like the layer list, until the next load)."""
        if self._unet_modules is None:
            from peft.tuners.tuners_utils import BaseTunerLayer

            self._unet_modules = {
                name: module for name, module in self._pipe.unet.named_modules() if isinstance(module, BaseTunerLayer)
            }
        return self._unet_modules

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

    def _check_family(
        self, name: str, path: Path, shapes: dict[str, tuple[int, ...]], metadata: dict[str, str]
    ) -> None:
        """Refuse, before it touches the model, an adapter made for another model family or
        architecture, or in a format that cannot be applied exactly."""
        family, foreign, recorded = lora_base(shapes, metadata)
        said = f" (its training metadata says {recorded})" if recorded else ""
        if foreign is not None:
            raise EngineError(
                f"adapter {name!r} ({path.name}) is a LoRA for {foreign}{said}; Spatiora runs "
                "Stable Diffusion 1.x, 2.x and SDXL: use a LoRA made for this base model"
            )
        if family is not None and self._family in FAMILY_LABELS and family != self._family:
            raise EngineError(
                f"adapter {name!r} ({path.name}) targets {FAMILY_LABELS[family]}{said} but the base model is "
                f"{FAMILY_LABELS[self._family]}; use an adapter made for this base model"
            )
        form = lora_format(shapes)
        if form in UNSUPPORTED_FORMATS:
            raise EngineError(f"adapter {name!r} ({path.name}) is a {UNSUPPORTED_FORMATS[form]}; {UNSUPPORTED_HOW}")


def _header(name: str, path: Path, data: bytes) -> tuple[dict[str, tuple[int, ...]], dict[str, str]]:
    """The tensor shapes and metadata of a .safetensors file's bytes, checked before parsing:
    a truncated or foreign file is reported here, before anything touches the model."""
    try:
        header = parse_header(data, path)
    except FileProblem as exc:
        if "holds no tensors" in str(exc):
            raise EngineError(f"adapter {name!r} ({path}) holds no tensors; replace the file") from None
        detail = str(exc).split(" (", 1)[-1].split("); ", 1)[0]
        raise _invalid(name, path, detail) from None
    return {key: info.shape for key, info in header.tensors.items()}, header.metadata


def _unpickle(name: str, path: Path, data: bytes) -> dict[str, Any]:
    """A pickle adapter's tensors (allow_pickle is on); see unpickle_state_dict."""
    try:
        return unpickle_state_dict(data)
    except ValueError as exc:
        raise EngineError(
            f"adapter {name!r} ({path}) {exc}; it may be truncated or corrupt: download it again or replace it"
        ) from None


def _invalid(name: str, path: Path, detail: object) -> EngineError:
    return EngineError(
        f"adapter {name!r} ({path}) is not a valid .safetensors file ({detail}); "
        "it may be truncated or corrupt: download it again or replace it"
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
        return (
            f"its layer names match no layer of this model ({_elide(missing, 80)}), so it was "
            "made for another model architecture"
        )
    if "Invalid LoRA checkpoint" in text:
        return "it holds no LoRA tensors that diffusers recognises (no 'lora' in their names)"
    return detail


def _elide(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"
