"""Loaded by Python at start-up when this folder is first on PYTHONPATH (the no-network tests
put it there): logs every network operation the process attempts, through Python's audit hooks,
to the file named by SPATIORA_SOCKET_LOG. Unix-domain sockets (asyncio's wake-up pair) are not
network and are not logged."""

import os
import socket
import sys
import types

_LOG = os.environ.get("SPATIORA_SOCKET_LOG")
_NETWORK = (socket.AF_INET, socket.AF_INET6)


def _hook(event, args):
    if not event.startswith("socket."):
        return
    line = None
    if event == "socket.__new__" and len(args) > 1 and args[1] in _NETWORK:
        line = f"{event} family={args[1]!r}"
    elif event in ("socket.bind", "socket.connect", "socket.sendto", "socket.sendmsg"):
        family = getattr(args[0], "family", None)
        if family in _NETWORK:
            line = f"{event} {args[1:]!r}"
    elif event in ("socket.getaddrinfo", "socket.gethostbyname", "socket.gethostbyaddr"):
        line = f"{event} {args!r}"
    if line is not None and _LOG is not None:
        with open(_LOG, "a", encoding="utf-8") as fh:
            fh.write(f"{os.getpid()} {line} origin={_origin()}\n")


def _origin():
    """The module that asked for the socket operation (the first caller outside socket.py)."""
    frame: types.FrameType | None = sys._getframe(2)
    while frame is not None and frame.f_globals.get("__name__") in ("socket", __name__):
        frame = frame.f_back
    return frame.f_globals.get("__name__") if frame is not None else "?"


if _LOG:
    sys.addaudithook(_hook)
