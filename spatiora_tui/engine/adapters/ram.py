"""The RAM tier: adapter files already read and parsed, least recently used first, bounded in
bytes, and filled ahead of need by a background prefetch."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor

from spatiora_tui.engine.adapters.catalog import AdapterFile

#: Reads and prepares one adapter for the tier (runs on the prefetch thread).
Reader = Callable[[str], AdapterFile]


class RamTier:
    """Parsed adapter files up to `limit` bytes, shared with one prefetch thread."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._files: OrderedDict[str, AdapterFile] = OrderedDict()
        self._pending: dict[str, Future[None]] = {}
        self._lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None

    @property
    def pending(self) -> tuple[str, ...]:
        """The adapters a prefetch is reading now."""
        with self._lock:
            return tuple(self._pending)

    def nbytes(self) -> int:
        with self._lock:
            return sum(f.nbytes for f in self._files.values())

    def wait_for(self, name: str) -> bool:
        """Wait for a prefetch of `name` under way, rather than read it twice; True if one was."""
        with self._lock:
            pending = self._pending.get(name)
        if pending is None:
            return False
        pending.result()
        return True

    def take(self, name: str) -> tuple[AdapterFile, str] | None:
        """`name`'s file and its tier ("RAM" or "RAM (prefetched)"), marked most recently used;
        None when it is not held, or its file was replaced since it was read."""
        with self._lock:
            cached = self._files.get(name)
            if cached is None:
                return None
            if cached.changed_on_disk():
                del self._files[name]
                return None
            self._files.move_to_end(name)
            tier = "RAM (prefetched)" if cached.prefetched else "RAM"
            cached.prefetched = False
            return cached, tier

    def peek(self, name: str) -> AdapterFile | None:
        """`name`'s file if held, changing nothing (no reordering, the prefetch mark kept)."""
        with self._lock:
            return self._files.get(name)

    def holds(self, name: str) -> bool:
        """Whether `name` is held, or being read by a prefetch."""
        with self._lock:
            return name in self._files or name in self._pending

    def put(self, name: str, adapter: AdapterFile) -> None:
        """Keep `adapter` (unless it alone is over the limit), dropping the least recently used."""
        with self._lock:
            if adapter.nbytes > self._limit:
                return
            self._files[name] = adapter
            self._files.move_to_end(name)
            self._trim()

    def discard(self, name: str) -> None:
        with self._lock:
            self._files.pop(name, None)

    def prefetch(self, names: Iterable[str], reader: Reader, skip: Callable[[str], bool]) -> None:
        """Read `names` with `reader` in the background (returns at once), leaving out those
        `skip` says are not needed. Problems are left for the switch, which reads the file itself
        and says so. (The reader is passed per call, not kept: a tier holding its manager's
        method would make a reference cycle that outlives the model.)"""
        if self._limit <= 0:
            return
        with self._lock:
            for name in dict.fromkeys(names):
                if skip(name) or name in self._files or name in self._pending:
                    continue
                if self._pool is None:
                    self._pool = ThreadPoolExecutor(1, thread_name_prefix="spatiora-prefetch")
                self._pending[name] = self._pool.submit(self._prefetch_one, name, reader)

    def wait(self) -> None:
        """Block until the prefetches asked for so far are done."""
        with self._lock:
            pending = list(self._pending.values())
        for future in pending:
            future.result()

    def release(self) -> OrderedDict[str, AdapterFile]:
        """Stop prefetching and hand over what the tier holds (see adopt)."""
        self.wait()
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        with self._lock:
            files, self._files = self._files, OrderedDict()
        return files

    def adopt(self, files: OrderedDict[str, AdapterFile]) -> None:
        """Take over another tier's files; they count as RAM (not prefetched), and are read again
        if their file changed since."""
        with self._lock:
            for name, adapter in files.items():
                adapter.prefetched = False
                self._files[name] = adapter
            self._trim()

    def _trim(self) -> None:  # with the lock held
        while self._files and sum(f.nbytes for f in self._files.values()) > self._limit:
            self._files.popitem(last=False)

    def _prefetch_one(self, name: str, reader: Reader) -> None:
        try:
            adapter = reader(name)
            adapter.prefetched = True
            self.put(name, adapter)
        except Exception:
            pass  # the switch reads the file itself and reports what is wrong with it
        finally:
            with self._lock:
                self._pending.pop(name, None)
