"""Textual-inversion embeddings, used by name in a prompt as AUTOMATIC1111 users do.

An embedding file in an embeddings folder ([paths] embeddings, installs) is used when its name
appears as a word in the prompt or negative prompt ("easynegative, blurry"). It is loaded into
the text encoder(s) the first time it is used (diffusers' load_textual_inversion: new tokens,
one per vector, NAME NAME_1 ...) and stays there, across task switches, until the base model
changes. Only .safetensors files are read; SD 1.x/2.x files hold one matrix (`emb_params`),
SDXL files one per encoder (`clip_l`, `clip_g`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from spatiora_tui.engine.api import FAMILY_LABELS, EmbeddingUse, EngineError
from spatiora_tui.library.catalog import Listing, scan
from spatiora_tui.library.hashing import HashCache
from spatiora_tui.library.identify import identify_embedding
from spatiora_tui.library.safetensors_file import FileProblem
from spatiora_tui.notices import Notice, NoticeKind
from spatiora_tui.prompts import mentions


class EmbeddingManager:
    """The embeddings of one loaded pipeline: which exist, which are loaded."""

    def __init__(self, pipe: Any, family: str, folders: Sequence[Path], hashes: HashCache | None = None) -> None:
        self._pipe = pipe
        self._family = family
        self._folders = tuple(folders)
        self._hashes = hashes
        self._listing: Listing | None = None
        self._stamp: tuple[int, ...] = ()
        self._loaded: dict[str, EmbeddingUse] = {}

    @property
    def loaded(self) -> tuple[str, ...]:
        return tuple(self._loaded)

    def _names(self, refresh: bool = False) -> Listing:
        # Looked at again when a folder changes (a file added while the app runs is found by
        # the next prompt that names it); a stat per folder per request otherwise.
        stamp = tuple(folder.stat().st_mtime_ns if folder.is_dir() else 0 for folder in self._folders)
        if self._listing is None or refresh or stamp != self._stamp:
            self._listing, self._stamp = scan(self._folders), stamp
        return self._listing

    def use(self, *texts: str) -> tuple[EmbeddingUse, ...]:
        """The embeddings `texts` name, loading those not loaded yet. A name in a prompt is an
        embedding only if a file of that name exists; other words are just words."""
        joined = "\n".join(texts)
        listing = self._names()
        names = [n for n in listing.entries if not listing.entries[n].pickle]
        found = mentions(joined, names)
        used = []
        for name in found:
            if name not in self._loaded:
                self._load(name, listing.entries[name].path)
            used.append(self._loaded[name])
        return tuple(used)

    def pickled(self, *texts: str) -> tuple[Notice, ...]:
        """One warning per pickle embedding (.pt/.bin) the texts name: it is not used, and a
        word that does nothing should not pass in silence (A1111 users have many .pt files)."""
        listing = self._names()
        names = [n for n, entry in listing.entries.items() if entry.pickle]
        return tuple(
            Notice(
                NoticeKind.PICKLED_EMBEDDING,
                f"{name} in the prompt is a pickle embedding ({listing.entries[name].path.name}), which "
                "Spatiora does not load (unpickling can run code); it was read as a plain word. Convert "
                "it to .safetensors to use it",
            )
            for name in mentions("\n".join(texts), names)
        )

    def refresh(self) -> None:
        """Look in the folders again (files added while running)."""
        self._names(refresh=True)

    def _load(self, name: str, path: Path) -> None:
        from safetensors.torch import load_file

        try:
            info = identify_embedding(path)
        except FileProblem as exc:
            raise EngineError(f"embedding {name!r}: {exc}") from None
        pipe = self._pipe
        encoders = [pipe.text_encoder] + ([pipe.text_encoder_2] if self._family == "sdxl" else [])
        widths = tuple(encoder.config.hidden_size for encoder in encoders)
        if info.widths != widths:
            made_for = FAMILY_LABELS.get(info.family or "", f"text encoders of width {info.widths}")
            raise EngineError(
                f"embedding {name!r} ({path.name}) is for {made_for} but the base model is "
                f"{FAMILY_LABELS.get(self._family, self._family)}; remove {name} from the prompt "
                "or use an embedding made for this model"
            )
        try:
            tensors = load_file(str(path))
        except Exception as exc:
            raise EngineError(f"embedding {name!r} ({path}) could not be read ({exc}); download it again") from None
        targets = (
            [("clip_l", pipe.text_encoder, pipe.tokenizer), ("clip_g", pipe.text_encoder_2, pipe.tokenizer_2)]
            if len(widths) == 2
            else [(next(iter(tensors)), pipe.text_encoder, pipe.tokenizer)]
        )
        done: list[tuple[Any, Any]] = []
        try:
            for key, encoder, tokenizer in targets:
                vectors = tensors[key]
                vectors = vectors if vectors.ndim == 2 else vectors[None]
                pipe.load_textual_inversion(
                    vectors.to(encoder.dtype), token=name, text_encoder=encoder, tokenizer=tokenizer
                )
                done.append((encoder, tokenizer))
        except Exception as exc:
            for encoder, tokenizer in done:  # not half-loaded: the first encoder's part goes too
                self._unload(name, info.vectors, encoder, tokenizer)
            text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            if "already in tokenizer vocabulary" in text:
                text = f"{name!r} is already a word of the model's vocabulary; rename the file"
            raise EngineError(f"embedding {name!r} ({path.name}) could not be loaded: {text}") from None
        sha256 = self._hashes.get(path) if self._hashes is not None else ""
        self._loaded[name] = EmbeddingUse(name, sha256)

    def _unload(self, name: str, vectors: int, encoder: Any, tokenizer: Any) -> None:
        tokens = [name, *(f"{name}_{i}" for i in range(1, vectors))]
        try:
            self._pipe.unload_textual_inversion(tokens=tokens, text_encoder=encoder, tokenizer=tokenizer)
        except Exception:
            pass  # nothing of it was registered
