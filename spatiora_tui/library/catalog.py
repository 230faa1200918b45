"""Where the user's checkpoints, LoRAs and embeddings are, and finding one by name.

The folders come from config.toml: `[paths] models / loras / embeddings`, `[adapters] dir`, and
each install in `[paths] installs`, an existing AUTOMATIC1111 / Forge / SD.Next or ComfyUI folder
recognised by its layout. Folders are searched with their sub-folders (following links, once
each), and a file is named by its stem, as AUTOMATIC1111 names them: `<lora:detail_tweaker:0.5>`
finds `models/Lora/styles/detail_tweaker.safetensors`.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from spatiora_tui.config import ConfigError, Settings

#: Weight files Spatiora looks at. Pickle files are listed (and refused when used) so that a
#: user sees why one of theirs is not offered.
SAFE_SUFFIX = ".safetensors"
PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin")

#: Longest name a file may be asked for by (a file name is at most 255 bytes on Linux and macOS,
#: and the name gains a suffix).
MAX_NAME_BYTES = 240


def name_problem(name: str, what: str = "adapter") -> str | None:
    """Why `name` cannot name a file of the user's folders, or None. A name is a file's stem,
    or its path relative to its folder ("styles/detail"): never an absolute path, never `..`,
    so that a name in a prompt (which a served engine takes from its clients) can only reach
    the files the folders list."""
    shown = repr(name[:60] + ("…" if len(name) > 60 else ""))
    if not name.strip():
        return f"an {what} needs a name" if what[0] in "aeiou" else f"a {what} needs a name"
    if len(name.encode("utf-8", "surrogateescape")) > MAX_NAME_BYTES:
        return (
            f"{what} name {shown} is too long ({len(name)} characters; a file name is at most {MAX_NAME_BYTES} bytes)"
        )
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        return f"{what} name {shown} holds a control character"
    parts = name.replace("\\", "/").split("/")
    if (
        name.startswith(("/", "\\", "~"))
        or (len(name) > 1 and name[1] == ":")
        or any(p in ("", ".", "..") for p in parts)
    ):
        return (
            f"{what} name {shown} is a path; name a file by its name as `spatiora models` lists it "
            "(a folder of yours belongs in [paths] in config.toml)"
        )
    return None


#: Install layouts: (what it is, the folder that identifies it, checkpoint, LoRA, embedding folders).
LAYOUTS = (
    (
        "AUTOMATIC1111/Forge/SD.Next",
        "models/Stable-diffusion",
        ("models/Stable-diffusion",),
        ("models/Lora", "models/LyCORIS"),
        ("embeddings", "models/embeddings"),
    ),
    ("ComfyUI", "models/checkpoints", ("models/checkpoints",), ("models/loras",), ("models/embeddings",)),
    (
        "ComfyUI (portable)",
        "ComfyUI/models/checkpoints",
        ("ComfyUI/models/checkpoints",),
        ("ComfyUI/models/loras",),
        ("ComfyUI/models/embeddings",),
    ),
)


@dataclass(frozen=True)
class Install:
    root: Path
    kind: str
    checkpoints: tuple[Path, ...]
    loras: tuple[Path, ...]
    embeddings: tuple[Path, ...]


def detect_install(root: Path) -> Install:
    """The model folders of the install at `root`, by its layout; ConfigError if it has none."""
    for kind, marker, checkpoints, loras, embeddings in LAYOUTS:
        if (root / marker).is_dir():

            def existing(names: tuple[str, ...]) -> tuple[Path, ...]:
                return tuple(root / n for n in names if (root / n).is_dir())

            return Install(root, kind, existing(checkpoints), existing(loras), existing(embeddings))
    if not root.is_dir():
        raise ConfigError(f"[paths] installs: {root} does not exist; fix the path in config.toml")
    raise ConfigError(
        f"[paths] installs: {root} is not an AUTOMATIC1111, Forge, SD.Next or ComfyUI folder (it has no "
        "models/Stable-diffusion or models/checkpoints); name the install's top folder, or list its folders "
        "in [paths] models / loras / embeddings"
    )


@dataclass(frozen=True)
class Folders:
    """Every folder Spatiora reads model files from, in the order names are looked up."""

    checkpoints: tuple[Path, ...]
    loras: tuple[Path, ...]  # searched after [adapters] dir
    embeddings: tuple[Path, ...]
    installs: tuple[Install, ...] = ()
    #: Folders named in config.toml that do not exist (the defaults may be absent silently).
    missing: tuple[Path, ...] = ()


def library_folders(settings: Settings) -> Folders:
    """The folders `settings` names, installs expanded. Raises ConfigError for a bad install."""
    installs = tuple(detect_install(settings.resolve_path(root)) for root in settings.paths.installs)
    defaults = type(settings.paths)()
    missing: list[Path] = []

    def own(values: tuple[str, ...], default: tuple[str, ...]) -> list[Path]:
        paths = [settings.resolve_path(v) for v in values]
        missing.extend(p for p, v in zip(paths, values) if not p.is_dir() and v not in default)
        return paths

    checkpoints = own(settings.paths.models, defaults.models)
    loras = own(settings.paths.loras, defaults.loras)  # after [adapters] dir, which LoraManager reads
    embeddings = own(settings.paths.embeddings, defaults.embeddings)
    for install in installs:
        checkpoints += install.checkpoints
        loras += install.loras
        embeddings += install.embeddings

    def unique(paths: list[Path]) -> tuple[Path, ...]:
        return tuple(dict.fromkeys(paths))  # the first of each, in order

    return Folders(unique(checkpoints), unique(loras), unique(embeddings), installs, tuple(missing))


@dataclass(frozen=True)
class Entry:
    """One model file found in a folder."""

    name: str  # the file stem: what a prompt, a task or model.source calls it
    path: Path
    folder: Path  # the configured folder it was found under
    size: int
    pickle: bool = False

    @property
    def relative(self) -> str:
        return str(self.path.relative_to(self.folder))


@dataclass
class Listing:
    """The files of one kind, by name (the first found wins; later ones are `shadowed`)."""

    entries: dict[str, Entry] = field(default_factory=dict)
    shadowed: list[Entry] = field(default_factory=list)

    def find(self, name: str) -> Entry | None:
        """By stem, file name or path relative to its folder; case-insensitive as a fallback."""
        key = name.strip()
        for suffix in (SAFE_SUFFIX, *PICKLE_SUFFIXES):
            if key.lower().endswith(suffix):
                key = key[: -len(suffix)]
                break
        if key in self.entries:
            return self.entries[key]
        for entry in self.entries.values():
            if str(Path(entry.relative).with_suffix("")) == key:
                return entry
        folded = {n.lower(): e for n, e in self.entries.items()}
        return folded.get(key.lower())


def scan(folders: tuple[Path, ...]) -> Listing:
    """The model files under `folders` (sub-folders included, hidden ones skipped)."""
    listing = Listing()
    seen_dirs: set[str] = set()
    for folder in folders:
        if not folder.is_dir():
            continue
        for directory, subdirs, files in os.walk(folder, followlinks=True):
            real = os.path.realpath(directory)
            if real in seen_dirs:
                subdirs[:] = []
                continue
            seen_dirs.add(real)
            subdirs[:] = sorted(d for d in subdirs if not d.startswith("."))
            for name in sorted(files):
                suffix = os.path.splitext(name)[1].lower()
                if name.startswith(".") or suffix not in (SAFE_SUFFIX, *PICKLE_SUFFIXES):
                    continue
                path = Path(directory) / name
                try:
                    info = path.stat()
                except OSError:
                    continue
                if not stat.S_ISREG(info.st_mode):
                    continue  # a FIFO or device named like a model: opening it would block or worse
                size = info.st_size
                entry = Entry(path.stem, path, folder, size, suffix != SAFE_SUFFIX)
                earlier = listing.entries.get(entry.name)
                if earlier is None or (earlier.pickle and not entry.pickle and earlier.folder == folder):
                    listing.entries[entry.name] = entry  # beside a pickle, the .safetensors is the one
                    entry = earlier  # type: ignore[assignment]
                if entry is not None:
                    listing.shadowed.append(entry)
    return listing


def resolve_source(settings: Settings, source: str | None = None) -> str:
    """`model.source` (or a task's `model`) as what the loader takes: "demo", a hub id, or an
    absolute path. A bare name is looked up among the checkpoints in the model folders, and a
    relative path is taken from the config file's folder; anything else is returned as it is,
    for the loader to explain."""
    value = (source if source is not None else settings.model.source).strip()
    if value in ("demo", "demo-random") or not value:
        return value
    path = Path(value).expanduser()
    if path.is_absolute():
        return str(path)
    beside_config = settings.resolve_path(value)
    if beside_config.exists():
        return str(beside_config)
    try:
        entry = scan(library_folders(settings).checkpoints).find(value)
    except ConfigError:
        entry = None  # a broken [paths] entry is reported where folders are listed
    if entry is not None:
        return str(entry.path)
    return value
