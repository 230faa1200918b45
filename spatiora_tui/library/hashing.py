"""File hashes as AUTOMATIC1111 writes them, computed once per file and cached.

AUTOMATIC1111 puts three kinds of hash in an image's `parameters`, and Civitai and image browsers
use them to name the resources behind an image:
- `Model hash`: the first 10 hex digits of the checkpoint file's sha256;
- `Lora hashes`: the first 12 of the LoRA's "addnet" hash (Kohya's sha256 of a .safetensors
  file's tensor data, after the header), or its `sshs_model_hash` metadata when it has one;
- `TI hashes`: the first 12 of the embedding file's sha256.

Hashing a 2-7 GB checkpoint takes seconds, so each result is kept in the cache folder
(`hashes.json`) under the file's path, size and modification time, and reused until one changes.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections.abc import Callable
from pathlib import Path

from spatiora_tui import atomic

BLOCK = 1 << 20
#: (bytes hashed, bytes in all) -> None; called every few MB.
Progress = Callable[[int, int], None]


def _hash_file(path: Path, skip_header: bool, progress: Progress | None) -> str:
    digest = hashlib.sha256()
    total = os.path.getsize(path)
    with open(path, "rb") as fh:
        if skip_header:
            length = int.from_bytes(fh.read(8), "little")
            fh.seek(8 + length)
        done = fh.tell()
        last = done
        for block in iter(lambda: fh.read(BLOCK), b""):
            digest.update(block)
            done += len(block)
            if progress is not None and (done - last >= 64 * BLOCK or done == total):
                progress(done, total)
                last = done
    return digest.hexdigest()


def file_sha256(path: Path) -> str:
    """sha256 of a whole file (uncached: for small files, such as the demo build's)."""
    return _hash_file(path, skip_header=False, progress=None)


def addnet_hash_of_bytes(data: bytes) -> str:
    """Kohya's hash of a .safetensors file already in memory: sha256 of what follows the header."""
    length = int.from_bytes(data[:8], "little")
    return hashlib.sha256(memoryview(data)[8 + length :]).hexdigest()


class HashCache:
    """sha256 and addnet hashes of files, kept in `path` (a JSON file) by (path, size, mtime).

    Safe to share between threads; two processes writing at once keep the last writer's entries
    (each entry can be computed again)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._entries: dict[str, dict[str, object]] | None = None

    def _load(self) -> dict[str, dict[str, object]]:
        if self._entries is None:
            try:
                data = json.loads(self.path.read_text(encoding="utf-8"))
                files = data.get("files") if isinstance(data, dict) and data.get("format") == 1 else None
                self._entries = files if isinstance(files, dict) else {}
            except (OSError, ValueError):
                self._entries = {}
        return self._entries

    def cached(self, file: Path, kind: str) -> str | None:
        """The `kind` ("sha256" or "addnet") hash of `file` if it is cached and still current."""
        key, stamp = self._key(file)
        with self._lock:
            entry = self._load().get(key)
        if not isinstance(entry, dict) or entry.get("stamp") != stamp:
            return None
        value = entry.get(kind)
        return value if isinstance(value, str) else None

    def get(self, file: Path, kind: str = "sha256", progress: Progress | None = None) -> str:
        """The `kind` hash of `file`, from the cache or computed now (calling `progress`)."""
        value = self.cached(file, kind)
        if value is not None:
            return value
        value = _hash_file(file, kind == "addnet", progress)
        self.put(file, kind, value)
        return value

    def put(self, file: Path, kind: str, value: str) -> None:
        """Record a hash computed elsewhere (the LoRA loader hashes the bytes it has read)."""
        key, stamp = self._key(file)
        with self._lock:
            entries = self._load()
            entry = entries.get(key)
            if not isinstance(entry, dict) or entry.get("stamp") != stamp:
                entry = {"stamp": stamp}
            entry[kind] = value
            entries[key] = entry
            try:
                atomic.write_bytes(self.path, json.dumps({"format": 1, "files": entries}).encode("utf-8"))
            except OSError:
                pass  # a cache that cannot be written costs a recomputation next time, nothing more

    @staticmethod
    def _key(file: Path) -> tuple[str, list[int]]:
        resolved = Path(file).resolve()
        st = resolved.stat()
        return str(resolved), [st.st_size, st.st_mtime_ns]
