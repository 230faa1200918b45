"""The engine's frames on a plain Unix stream socket: how every window and command of one user
reaches that user's engine (remote/userengine.py). Nothing here needs an extra: the frames are
remote/frames.py's, one after another on the stream, as over `serve --stdio`.

Only the socket's owner gets in, checked on both sides:
- the server binds the socket 0600 (born so: no moment when others may connect) and checks each
  peer's uid again on accept (SO_PEERCRED), so root or a mode changed by hand cannot hand the
  engine to another user;
- a client connects only when the socket, its folder and the process listening are its own
  user's (own_socket): a socket another user planted in a shared folder would otherwise receive
  the prompts and images sent to it.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import stat
import struct
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from spatiora_tui.engine.api import EngineError
from spatiora_tui.remote.client import OnEnd, OnFrame, Opener, relay_frames
from spatiora_tui.remote.frames import FrameWriter

#: The longest path a Unix socket can have (sun_path, Linux).
MAX_SOCKET_PATH = 107


class AddressError(ValueError):
    """An address a server cannot or will not listen on; the message says what to do."""


def peer_uid(sock: socket.socket) -> int | None:
    """The user id of the process at the other end of a Unix socket (None where the system
    does not say: SO_PEERCRED is Linux's)."""
    option = getattr(socket, "SO_PEERCRED", None)
    if option is None:
        return None
    _pid, uid, _gid = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, option, struct.calcsize("3i")))
    return int(uid)


class OwnerOnlySocket(socket.socket):
    """A listening Unix socket that accepts only its owner's processes: the socket file is 0600
    already, and the peer's uid is checked again on accept."""

    def accept(self) -> tuple[socket.socket, Any]:
        conn, address = super().accept()
        uid = peer_uid(conn)
        if uid is not None and uid != os.getuid():
            conn.close()
            raise ConnectionAbortedError(f"a process of uid {uid} was refused")
        return conn, address


def own_socket(path: Path, timeout_s: float = 20) -> socket.socket:
    """A connection to the engine socket at `path`, made only when the socket, its folder and the
    process listening on it are this user's. EngineError saying which check failed."""
    me = os.getuid()
    try:
        info, folder = path.lstat(), path.parent.stat()
    except OSError as exc:
        raise EngineError(f"cannot reach the engine server at {path}: {exc.strerror or exc}") from None
    if not stat.S_ISSOCK(info.st_mode):
        raise EngineError(f"{path} is not a socket; give the path `spatiora serve --http` printed")
    if info.st_uid != me:
        raise EngineError(
            f"{path} belongs to another user (uid {info.st_uid}); Spatiora connects only to your own engine's "
            "socket: use one in a folder of yours (the default, spatiora serve --http)"
        )
    if folder.st_uid != me or folder.st_mode & 0o022:
        raise EngineError(
            f"{path} is in {path.parent}, a folder other users can write to; put the socket in a folder only you "
            "can write to (the default, spatiora serve --http, does)"
        )
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout_s)
        sock.connect(str(path))
        uid = peer_uid(sock)
    except OSError as exc:
        sock.close()
        raise EngineError(f"cannot reach the engine server at {path}: {exc.strerror or exc}") from None
    if uid is not None and uid != me:
        sock.close()
        raise EngineError(f"the process listening on {path} is another user's (uid {uid}); refused")
    sock.settimeout(None)
    return sock


def clear_stale(path: Path) -> None:
    """Remove a socket left by a server that died; AddressError when one still answers there, or
    the path is not a socket."""
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise AddressError(f"{path} exists and is not a socket; give another path")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(str(path))
    except OSError as exc:
        if exc.errno in (errno.ECONNREFUSED, errno.ENOENT):
            try:
                path.unlink(missing_ok=True)
            except OSError as gone:
                raise AddressError(
                    f"{path} is a dead socket this user may not remove ({gone.strerror}); give another path, "
                    "e.g. one in your own state folder (serve --http with no address)"
                ) from None
            return
        raise AddressError(f"cannot use {path}: {exc.strerror or exc}") from None
    finally:
        probe.close()
    raise AddressError(f"another engine server is listening on {path}; stop it first, or give another path")


@contextlib.contextmanager
def bound(path: Path) -> Iterator[socket.socket]:
    """A listening, owner-only socket at `path` (a stale one there is removed), removed after."""
    if len(os.fsencode(path)) > MAX_SOCKET_PATH:
        raise AddressError(f"{path} is longer than a socket path may be ({MAX_SOCKET_PATH} bytes); give a shorter one")
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    clear_stale(path)
    sock = OwnerOnlySocket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)  # the socket is born 0600: no moment when others may connect
    try:
        sock.bind(str(path))
    except OSError as exc:
        sock.close()
        raise AddressError(f"cannot listen on {path}: {exc.strerror or exc}") from None
    finally:
        os.umask(old)
    os.chmod(path, 0o600)
    mine = path.lstat().st_ino
    sock.listen(64)
    try:
        yield sock
    finally:
        sock.close()
        with contextlib.suppress(OSError):
            if path.lstat().st_ino == mine:  # not a newer server's socket at the same path
                path.unlink()


class SocketLink:
    """Frames both ways on one Unix stream socket; a reader thread hands them on. `gone()` says
    why the server went away when the stream ends without its last word (a killed engine says
    nothing: its supervisor's record does)."""

    def __init__(self, path: Path, on_frame: OnFrame, on_end: OnEnd, gone: Callable[[], str] | None = None) -> None:
        self._sock = own_socket(path)
        self._out = FrameWriter(self._sock.makefile("wb", buffering=0))  # type: ignore[arg-type]
        self._gone = gone or (lambda: "the engine stopped")
        self._closed = False
        reader = self._sock.makefile("rb")
        threading.Thread(target=self._read, args=(reader, on_frame, on_end), name="spatiora-unix", daemon=True).start()

    def send(self, message: dict[str, Any], blob: bytes = b"") -> None:
        self._out.send(message, blob)

    def close(self) -> None:
        self._closed = True
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        self._sock.close()

    def _read(self, stream: Any, on_frame: OnFrame, on_end: OnEnd) -> None:
        said = relay_frames(stream, on_frame)
        on_end(said or ("the link to the engine was closed" if self._closed else self._gone()))


def unix(path: Path, gone: Callable[[], str] | None = None) -> Opener:
    """Open links to the engine listening at `path`."""
    return lambda on_frame, on_end: SocketLink(path, on_frame, on_end, gone)
