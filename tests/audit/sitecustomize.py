"""Loaded at start-up by a Python whose PYTHONPATH holds this folder (the servers the security
tests start): with SPATIORA_AUDIT_OPEN_LOG set, every file the process opens through Python is
appended to that log, one path a line, by an audit hook (sys.addaudithook on "open"). The tests
then check that no hostile request made a server open a file outside its own folders."""

from __future__ import annotations

import os
import sys
import threading

_LOG = os.environ.get("SPATIORA_AUDIT_OPEN_LOG")


def _install(log: str) -> None:
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    inside = threading.local()

    def hook(event: str, args: tuple[object, ...]) -> None:
        if event != "open" or getattr(inside, "busy", False) or not args:
            return
        path = args[0]
        if isinstance(path, bytes):
            path = os.fsdecode(path)
        if not isinstance(path, str):
            return  # a file descriptor, already open
        inside.busy = True
        try:
            line = f"{os.getpid()}\t{os.path.abspath(path)}".replace("\n", "\\n") + "\n"
            os.write(fd, line.encode("utf-8", "surrogateescape"))
        finally:
            inside.busy = False

    sys.addaudithook(hook)


if _LOG:
    _install(_LOG)
