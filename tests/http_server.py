"""A real `spatiora serve --http` for the tests: a subprocess on a short Unix socket path (pytest's
tmp paths can pass the 107-byte limit) or on loopback TCP, started and stopped cleanly."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Server:
    proc: subprocess.Popen[str]
    url: str
    folder: Path
    lines: list[str] = field(default_factory=list)

    @property
    def state(self) -> Path:
        return self.folder / "state"

    @property
    def socket(self) -> Path:
        return self.folder / "e.sock"


@contextlib.contextmanager
def http_server(
    config: Path, address: str | None = None, timeout: float = 180, env: dict[str, str] | None = None
) -> Iterator[Server]:
    """`spatiora serve --http` on `address` (default: a socket in a fresh /tmp folder), ready;
    `env` adds to its environment."""
    folder = Path(tempfile.mkdtemp(prefix="sp-", dir="/tmp"))
    where = address or str(folder / "e.sock")
    env = {**os.environ, **(env or {}), "SPATIORA_STATE_DIR": str(folder / "state")}
    argv = [sys.executable, "-m", "spatiora_tui", "serve", "--http", where, "--config", str(config)]
    proc = subprocess.Popen(argv, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env)
    server = Server(proc, f"unix://{where}" if address is None else f"http://{where}", folder)
    assert proc.stderr is not None
    stderr = proc.stderr

    def collect() -> None:
        for line in stderr:
            server.lines.append(line.rstrip())

    threading.Thread(target=collect, daemon=True).start()
    deadline = time.monotonic() + timeout
    try:
        while not any(line.startswith("serving on") for line in server.lines):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError("serve --http did not start:\n" + "\n".join(server.lines))
            time.sleep(0.05)
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(folder, ignore_errors=True)
