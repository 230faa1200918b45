"""Adapter files: find them, read them into RAM, and check them before they touch a model.

Needs no pipeline: `spatiora doctor` and `spatiora models` list and check adapters with a catalog
alone. Reading touches nothing but the file and the catalog's manifests, so the prefetch thread
may call it.
"""

from __future__ import annotations

import difflib
import hashlib
import re
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spatiora_tui.engine.api import FAMILY_LABELS, EngineError
from spatiora_tui.engine.manifest import AdapterManifest, read_manifest
from spatiora_tui.engine.pipeline import PICKLE_REFUSED, PICKLE_SUFFIXES, unpickle_state_dict
from spatiora_tui.library.catalog import Listing, name_problem, scan
from spatiora_tui.library.hashing import addnet_hash_of_bytes
from spatiora_tui.library.identify import UNSUPPORTED_FORMATS, UNSUPPORTED_HOW, lora_base, lora_format
from spatiora_tui.library.safetensors_file import FileProblem, parse_header

#: A LoRA down-projection's key in the layouts diffusers reads (peft, Kohya, old diffusers).
_DOWN_KEY = re.compile(r"(lora_A|lora_down|lora[._]down|lora_linear_layer\.down)\.weight$")


@dataclass
class AdapterFile:
    """An adapter file read into RAM: its tensors, and what an in-place swap needs."""

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
    prefetched: bool = False  # read ahead by a prefetch and not yet used by a switch
    #: UNet module -> (down, up, alpha) once worked out (see layouts.unet_layers); {}: no in-place swap.
    unet: dict[str, tuple[Any, Any, float]] | None = field(default=None, repr=False)
    #: (layers, why not) for compiled mode's lanes once worked out (see lanes.lane_layers).
    lanes: tuple[dict[tuple[str, str], tuple[Any, Any]], str | None] | None = field(default=None, repr=False)

    def changed_on_disk(self) -> bool:
        """True when the file was replaced since it was read (a deleted one counts as unchanged:
        its content is what was checked and used before)."""
        now = file_stamp(self.path)
        return now is not None and now != self.stamp


class AdapterCatalog:
    """The adapter files Spatiora can see: the adapter folders (NAME.safetensors or NAME/), then
    the user's LoRA folders ([paths] loras, installs) with their sub-folders."""

    def __init__(
        self, search_dirs: Sequence[Path], library_dirs: Sequence[Path] = (), allow_pickle: bool = False
    ) -> None:
        self._dirs = tuple(Path(d) for d in search_dirs)
        self._library_dirs = tuple(Path(d) for d in library_dirs)
        self._allow_pickle = allow_pickle
        self._library: Listing | None = None
        self._manifests: dict[str, AdapterManifest] = {}
        self._lock = threading.Lock()

    @property
    def search_dirs(self) -> tuple[Path, ...]:
        return self._dirs

    def available(self) -> dict[str, Path]:
        """Adapter name -> file, over the search folders, then the library folders (an earlier
        folder wins)."""
        found: dict[str, Path] = {}
        for folder in self._dirs:
            if not folder.is_dir():
                continue
            for entry in sorted(folder.iterdir()):
                path = _file_of(entry)
                if path is not None:
                    found.setdefault(entry.stem if entry.is_file() else entry.name, path)
        for name, library_entry in self._library_listing(refresh=True).entries.items():
            if not library_entry.pickle or self._allow_pickle:
                found.setdefault(name, library_entry.path)
        return found

    def find(self, name: str) -> Path:
        """The file of adapter `name`, or an error saying where it was looked for. A name is
        never a path (library.catalog.name_problem): it reaches only the folders' own files."""
        problem = name_problem(name)
        if problem is not None:
            raise EngineError(problem)
        for folder in self._dirs:
            for candidate in (folder / f"{name}.safetensors", folder / name):
                path = _file_of(candidate) if candidate.exists() else None
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

    def manifest(self, name: str) -> AdapterManifest:
        """The adapter's adapter.toml (empty when it has none or has not been read yet)."""
        with self._lock:
            return self._manifests.get(name, AdapterManifest())

    def read(self, name: str, family: str) -> AdapterFile:
        """Read adapter `name`'s file and check it against a base model of `family` ("" when
        there is no model to check against): its manifest, its header, what it was made for."""
        from safetensors.torch import load as load_tensors

        path = self.find(name)
        manifest = read_manifest(name, path)
        with self._lock:
            self._manifests[name] = manifest
        if family and manifest.base is not None and manifest.base != family:
            raise EngineError(
                f"adapter {name!r} is made for {FAMILY_LABELS[manifest.base]} (its manifest {manifest.path} "
                f"says base = {manifest.base!r}) but the base model is {FAMILY_LABELS.get(family, family)}; "
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
            check_family(name, path, family, {k: tuple(v.shape) for k, v in raw.items()}, {})
            a1111_hash = sha256
        else:
            shapes, metadata = _header(name, path, data)
            check_family(name, path, family, shapes, metadata)
            a1111_hash = str(metadata.get("sshs_model_hash") or addnet_hash_of_bytes(data))
            try:
                raw = load_tensors(data)
            except Exception as exc:
                raise _invalid(name, path, exc) from None
        del data
        _check_finite(name, path, raw)
        # Counted in the file as it is: a conversion that drops layers must not hide them.
        layers = sum(1 for key in raw if _DOWN_KEY.search(key))
        return AdapterFile(
            path,
            file_stamp(path) or (0, 0),
            sha256,
            a1111_hash,
            raw,
            "lora_adapter_metadata" in metadata,
            layers,
            tensor_bytes(raw),
            manifest,
            (read_done - start) * 1000.0,
            (time.perf_counter() - read_done) * 1000.0,
        )

    def _library_listing(self, refresh: bool = False) -> Listing:
        if self._library is None or refresh:
            self._library = scan(self._library_dirs)
        return self._library

    def _pickle_allowed(self, name: str, path: Path) -> Path:
        if self._allow_pickle:
            return path
        raise EngineError(f"adapter {name!r} is a pickle file ({path}); {PICKLE_REFUSED}")


def check_family(
    name: str, path: Path, family: str, shapes: dict[str, tuple[int, ...]], metadata: dict[str, str]
) -> None:
    """Refuse, before it touches the model, an adapter made for another model family or
    architecture, or in a format that cannot be applied exactly."""
    found, foreign, recorded = lora_base(shapes, metadata)
    said = f" (its training metadata says {recorded})" if recorded else ""
    if foreign is not None:
        raise EngineError(
            f"adapter {name!r} ({path.name}) is a LoRA for {foreign}{said}; Spatiora runs "
            "Stable Diffusion 1.x, 2.x and SDXL: use a LoRA made for this base model"
        )
    if found is not None and family in FAMILY_LABELS and found != family:
        raise EngineError(
            f"adapter {name!r} ({path.name}) targets {FAMILY_LABELS[found]}{said} but the base model is "
            f"{FAMILY_LABELS[family]}; use an adapter made for this base model"
        )
    form = lora_format(shapes)
    if form in UNSUPPORTED_FORMATS:
        raise EngineError(f"adapter {name!r} ({path.name}) is a {UNSUPPORTED_FORMATS[form]}; {UNSUPPORTED_HOW}")


def _check_finite(name: str, path: Path, raw: dict[str, Any]) -> None:
    """Refuse an adapter holding NaN or infinity (a failed training run or a damaged download):
    every image made with it would come out black, saved as if nothing were wrong."""
    import torch

    for key, tensor in raw.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise EngineError(
                f"adapter {name!r} ({path.name}) holds NaN or infinite values (in {key}), so every image made "
                "with it would be black; the file is damaged or its training diverged: replace it"
            )


def tensor_bytes(tensors: dict[str, Any]) -> int:
    return sum(t.numel() * t.element_size() for t in tensors.values())


def file_stamp(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size


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
