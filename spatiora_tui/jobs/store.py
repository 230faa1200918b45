"""The queue on disk, so that a dropped SSH session or a crash loses nothing a user queued.

Each running session owns one file in the state folder, `queue-TOKEN.json`, rewritten atomically
whenever its queue changes, and holds an exclusive lock on `queue-TOKEN.lock` for as long as it
runs. The lock, not a pid, tells a live session from a dead one: the kernel releases it when the
process ends, however it ends, and a reused pid cannot fake it. A queue whose lock can be taken
is an orphan: the next start offers its jobs (`orphans`), and `adopt` moves them into the new
session's own file before the old one is removed, so a crash in between leaves them twice,
never nowhere.
"""

from __future__ import annotations

import fcntl
import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from spatiora_tui.atomic import clean_stale_partials, write_bytes
from spatiora_tui.jobs.job import Job

FORMAT = 1
PREFIX = "queue-"


class QueueFileError(Exception):
    """The queue folder cannot be written; the message says where and why."""


@dataclass
class Orphan:
    """The queue a session that is gone left behind, locked by us until adopted or released."""

    path: Path
    records: list[dict[str, Any]]
    problems: list[str]
    _lock_fd: int

    def release(self) -> None:
        """Leave it where it is (for a later start or `spatiora queue`)."""
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1

    def keep_only(self, records: list[dict[str, Any]]) -> None:
        """Leave in the file only `records` (those that could not be read: the others are in
        another session's queue now, and must not be offered twice)."""
        data = {"format": FORMAT, "jobs": records}
        write_bytes(self.path, json.dumps(data, indent=1).encode())
        self.release()

    def remove(self) -> None:
        """Delete it (after its jobs are safely in another file, or when the user clears it)."""
        self.path.unlink(missing_ok=True)
        self.path.with_suffix(".lock").unlink(missing_ok=True)
        self.release()


class QueueStore:
    """This session's queue file (created on the first write) and the orphans of others."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.path = folder / f"{PREFIX}{secrets.token_hex(6)}.json"
        self._lock_fd = -1

    def save(self, jobs: list[Job]) -> None:
        """Write the jobs that are not finished (and finished members of unfinished groups);
        with none left, remove the file."""
        if not jobs:
            self.path.unlink(missing_ok=True)
            return
        data = {"format": FORMAT, "pid": os.getpid(), "jobs": [job.to_record() for job in jobs]}
        try:
            self._hold_lock()
            write_bytes(self.path, json.dumps(data, indent=1).encode())
        except OSError as exc:
            raise QueueFileError(f"could not write the queue to {self.path}: {exc.strerror or exc}") from exc

    def close(self) -> None:
        """Stop owning the file (it stays when jobs are left in it: the next start offers them)."""
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1
        if not self.path.exists():
            self.path.with_suffix(".lock").unlink(missing_ok=True)

    def _hold_lock(self) -> None:
        if self._lock_fd >= 0:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path.with_suffix(".lock"), os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a fresh random name: nobody else holds it
        self._lock_fd = fd

    def orphans(self) -> list[Orphan]:
        """The queues of sessions that are gone, oldest first, each locked until released. What
        killed writers left (partial files, the locks of queues that are gone) is cleaned first."""
        clean_stale_partials(self.folder)
        try:
            paths = sorted(self.folder.glob(f"{PREFIX}*.json"), key=_mtime)
            locks = list(self.folder.glob(f"{PREFIX}*.lock"))
        except OSError:
            return []
        for lock in locks:
            if not lock.with_suffix(".json").exists() and lock != self.path.with_suffix(".lock"):
                fd = _try_lock(lock)
                if fd >= 0:  # nobody holds it: a session that ended before writing its queue
                    lock.unlink(missing_ok=True)
                    os.close(fd)
        found = []
        for path in paths:
            if path == self.path:
                continue
            fd = _try_lock(path.with_suffix(".lock"))
            if fd < 0:
                continue  # its session is alive (another window, another SSH session)
            records, problems = _read(path)
            found.append(Orphan(path, records, problems, fd))
        return found


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def _try_lock(path: Path) -> int:
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError:
        return -1
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return -1
    return fd


def _read(path: Path) -> tuple[list[dict[str, Any]], list[str]]:
    """The job records in a queue file, and what could not be read (never raises)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        return [], [f"{path.name}: not readable ({exc}); it is left in place"]
    jobs = data.get("jobs") if isinstance(data, dict) else None
    if not isinstance(jobs, list):
        return [], [f"{path.name}: not a Spatiora queue file; it is left in place"]
    return [job for job in jobs if isinstance(job, dict)], []
