"""`spatiora models`: every checkpoint, LoRA and embedding in the user's folders, described.

Each file is identified from its header (family, variant, LoRA base and trigger words, what a
wrong file is) and hashed as AUTOMATIC1111 hashes it, once: the hashes are cached by path, size
and modification time, so the second listing reads no file beyond its header.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from spatiora_tui.config import Settings
from spatiora_tui.errors import EngineError
from spatiora_tui.library.catalog import Entry, Folders, Listing, library_folders, scan
from spatiora_tui.library.families import FAMILY_LABELS
from spatiora_tui.library.hashing import HashCache, Progress
from spatiora_tui.library.identify import (
    UNSUPPORTED_FORMATS,
    identify_checkpoint,
    identify_embedding,
    identify_lora,
)


@dataclass(frozen=True)
class Row:
    kind: str  # checkpoint | lora | embedding
    name: str
    path: Path
    size: int
    what: str  # "SD 1.x", "SDXL · kohya", or the problem
    short_hash: str = ""  # as AUTOMATIC1111 writes it; "" when not hashed
    details: str = ""  # trigger words, vectors, how a variant was decided
    ok: bool = True
    shadowed_by: str = ""  # a file of the same name found earlier wins


@dataclass
class Report:
    folders: Folders
    rows: list[Row] = field(default_factory=list)


def short_problem(exc: Exception, path: Path) -> str:
    """A refusal's first clause without the file name: "a Flux model, not a Stable Diffusion
    checkpoint", for a list that names the file already."""
    return str(exc).removeprefix(f"{path.name} ").split("; ")[0].split(" (")[0].removeprefix("is ")


def describe(
    entry: Entry, kind: str, hashes: HashCache | None, progress: Callable[[Entry], Progress] | None, allow_pickle: bool
) -> Row:
    """One file as a Row: identified, and hashed when `hashes` is given."""
    if entry.pickle:
        what = "pickle file" + ("" if allow_pickle else ": refused unless [security] allow_pickle = true")
        return Row(kind, entry.name, entry.path, entry.size, what, ok=allow_pickle)
    try:
        if kind == "checkpoint":
            info = identify_checkpoint(entry.path)
            what, details, hash_kind, digits = info.variant.label, info.how, "sha256", 10
        elif kind == "lora":
            lora = identify_lora(entry.path)
            if lora.foreign:
                return Row(kind, entry.name, entry.path, entry.size, f"a LoRA for {lora.foreign}", ok=False)
            if lora.format in UNSUPPORTED_FORMATS:
                return Row(
                    kind,
                    entry.name,
                    entry.path,
                    entry.size,
                    f"{UNSUPPORTED_FORMATS[lora.format].split(' (')[0]}: not supported",
                    ok=False,
                )
            base = FAMILY_LABELS.get(lora.family or "", "base unknown")
            what = f"{base} · {lora.format}" + (" + text encoder" if lora.has_text_encoder else "")
            details = ("triggers: " + ", ".join(lora.trigger_words)) if lora.trigger_words else ""
            if lora.base_model:
                details = f"trained on {lora.base_model}" + (f"; {details}" if details else "")
            hash_kind, digits = "addnet", 12
        else:
            emb = identify_embedding(entry.path)
            what = FAMILY_LABELS.get(emb.family or "", f"width {emb.widths}")
            details, hash_kind, digits = f"{emb.vectors} vector{'s' if emb.vectors != 1 else ''}", "sha256", 12
    except EngineError as exc:
        return Row(kind, entry.name, entry.path, entry.size, short_problem(exc, entry.path), ok=False)
    short = ""
    if hashes is not None:
        try:
            short = hashes.get(entry.path, hash_kind, progress(entry) if progress else None)[:digits]
        except OSError as exc:
            details = f"{details}; could not hash it ({exc.strerror or exc})".strip("; ")
    return Row(kind, entry.name, entry.path, entry.size, what, short, details)


def build_report(
    settings: Settings,
    hashes: HashCache | None,
    progress: Callable[[Entry], Progress] | None = None,
    adapter_files: dict[str, Path] | None = None,
) -> Report:
    """Every model file the settings' folders hold. `adapter_files` are the [adapters] dir's
    (named as LoraManager names them: NAME.safetensors or NAME/ folders)."""
    folders = library_folders(settings)
    report = Report(folders)
    allow = settings.security.allow_pickle
    listings: list[tuple[str, Listing]] = [("checkpoint", scan(folders.checkpoints))]
    loras = scan(folders.loras)
    for name, path in reversed(list((adapter_files or {}).items())):  # [adapters] dir comes first
        entry = Entry(name, path, path.parent, path.stat().st_size)
        earlier = loras.entries.pop(name, None)
        if earlier is not None:
            loras.shadowed.append(earlier)
        loras.entries = {name: entry, **loras.entries}
    listings += [("lora", loras), ("embedding", scan(folders.embeddings))]
    for kind, listing in listings:
        for entry in listing.entries.values():
            report.rows.append(describe(entry, kind, hashes, progress, allow))
        for entry in listing.shadowed:
            winner = listing.entries[entry.name].path
            report.rows.append(
                Row(
                    kind,
                    entry.name,
                    entry.path,
                    entry.size,
                    "same name as another file",
                    ok=False,
                    shadowed_by=str(winner),
                )
            )
    return report
