"""Crash-safe file writes: a file appears under its name complete, or not at all.

Every file Spatiora writes (images, the history index, config.toml) goes through here. The data
goes to a hidden temp file in the same folder, is flushed to the disk, and only then takes the
final name in one rename or hard link, so a process killed at any moment leaves either the old
file or the new one, never a mix. A killed writer's temp file (`.NAME.TOKEN.PID.partial`) is
removed by `clean_stale_partials`, which the app and the CLI run on the output folder when they
start.

New files (`write_new`) never replace an existing one, even when several writers race for a
name: a hard link fails when the name is taken; where the filesystem has no hard links, Linux's
renameat2(RENAME_NOREPLACE) does the same, and where neither exists the name is claimed with an
exclusive create of a lock file beside it, which every Spatiora writer respects.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import re
import secrets
import sys
import time
from pathlib import Path

from spatiora_tui import failpoints

PARTIAL_SUFFIX = ".partial"
_PARTIAL = re.compile(r"^\..+\.(\d+)\.partial$")


def _partial_path(folder: Path, name: str) -> Path:
    # Unique per call: two threads of one process may write the same name at once.
    return folder / f".{name}.{secrets.token_hex(4)}.{os.getpid()}{PARTIAL_SUFFIX}"


def _write_partial(folder: Path, name: str, data: bytes) -> Path:
    """Write data to a temp file beside the target and flush it to the disk."""
    tmp = _partial_path(folder, name)
    half = len(data) // 2
    try:
        with tmp.open("wb") as fh:
            fh.write(data[:half])
            failpoints.hit("atomic write")  # a test's kill here leaves a half-written temp file
            fh.write(data[half:])
            fh.flush()
            os.fsync(fh.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)  # a full disk: give back what was written
        raise
    return tmp


def _sync_folder(folder: Path) -> None:
    """Make the new name itself durable (POSIX); best effort where folders cannot be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_bytes(path: Path, data: bytes) -> None:
    """Replace (or create) `path` with `data` atomically. Raises OSError."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _write_partial(path.parent, path.name, data)
    try:
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    _sync_folder(path.parent)


def write_new(folder: Path, stem: str, suffix: str, data: bytes, attempts: int = 10_000) -> Path:
    """Write `data` as a new file `stem+suffix` in folder (`stem-1`, `stem-2`... when taken),
    never over an existing file, atomically. Returns its path. Raises OSError or FileExistsError."""
    folder.mkdir(parents=True, exist_ok=True)
    tmp = _write_partial(folder, stem + suffix, data)
    try:
        for n in range(attempts):
            final = folder / (f"{stem}{suffix}" if n == 0 else f"{stem}-{n}{suffix}")
            try:
                os.link(tmp, final)  # fails if the name exists: no overwrite, no race
            except FileExistsError:
                continue
            except OSError:
                # Filesystems without hard links: still never over an existing file.
                if not _rename_new(tmp, final):
                    continue
            _sync_folder(folder)
            return final
        raise FileExistsError(f"no free file name for {stem}{suffix} in {folder}")
    finally:
        tmp.unlink(missing_ok=True)


_RENAME_NOREPLACE = 1
_AT_FDCWD = -100


def _renameat2() -> object | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        return libc.renameat2
    except (OSError, AttributeError):  # not glibc >= 2.28
        return None


def _rename_new(tmp: Path, final: Path) -> bool:
    """Rename `tmp` to `final` unless `final` exists, atomically. False when the name is taken."""
    renameat2 = _renameat2()
    if renameat2 is not None:
        result = renameat2(
            _AT_FDCWD,
            os.fsencode(tmp),
            _AT_FDCWD,
            os.fsencode(final),  # type: ignore[operator]
            _RENAME_NOREPLACE,
        )
        if result == 0:
            return True
        err = ctypes.get_errno()
        if err == errno.EEXIST:
            return False
        if err not in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
            raise OSError(err, os.strerror(err), str(final))
    # No atomic no-replace rename here: claim the name with an exclusive lock file first.
    lock = final.with_name(f".{final.name}.lock")
    try:
        fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except FileExistsError:
        return False  # another writer is claiming this very name
    try:
        os.close(fd)
        if os.path.lexists(final):
            return False
        os.replace(tmp, final)
        return True
    finally:
        os.unlink(lock)


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's live process
    return True


def clean_stale_partials(folder: Path, max_age_s: float = 24 * 3600.0) -> list[Path]:
    """Remove temp files that killed writers left in `folder`: those of processes that are gone
    (or older than max_age_s, in case the pid was reused). Returns what was removed."""
    removed: list[Path] = []
    try:
        entries = list(folder.iterdir())
    except OSError:
        return removed
    now = time.time()
    for entry in entries:
        match = _PARTIAL.match(entry.name)
        if not match:
            continue
        try:
            stale = not _alive(int(match.group(1))) or now - entry.stat().st_mtime > max_age_s
            if stale:
                entry.unlink()
                removed.append(entry)
        except OSError:
            continue
    return removed
