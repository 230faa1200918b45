"""`--engine URL`: where the engine runs when it is not in this process.

    ssh://[user@]host[:port][/path/to/config.toml]
        `spatiora engine bridge` run on that machine through the user's own ssh (their keys,
        agent, ProxyJump and known_hosts from ~/.ssh/config): a relay to that user's own engine
        there (remote/userengine.py), started when none runs, shared with their other windows
        and commands there, and still warm when the link drops. SSH is the authentication and
        the encryption; nothing listens on the network.
    unix:///path/to/engine.sock
        a `spatiora serve --http` on this machine (or a socket forwarded with ssh -L), shared
        with its other clients in turn.
    http://127.0.0.1:PORT
        the same on loopback TCP, with the server's token: $SPATIORA_TOKEN, else the token file
        a server of this user on this machine wrote, and only when this is the address that
        server wrote beside it (a token never goes to a server that did not issue it).
        ray://HOST:PORT is a Ray Serve ingress (`spatiora serve --ray`), reached the same way.

Two environment variables adjust the ssh form, as GIT_SSH_COMMAND does for git:
    SPATIORA_SSH             the ssh command (default "ssh"), e.g. "ssh -i ~/.ssh/gpu_box"
    SPATIORA_REMOTE_COMMAND  what runs spatiora on the other machine (default "spatiora"),
                             e.g. "~/spatiora/.venv/bin/spatiora"
"""

from __future__ import annotations

import os
import shlex
from pathlib import Path
from urllib.parse import SplitResult, urlsplit

from spatiora_tui.config import user_state_dir
from spatiora_tui.engine.api import EngineError

USAGE = (
    "--engine takes ssh://[user@]host[:port][/path/to/config.toml], unix:///path/to/engine.sock "
    "or http://127.0.0.1:PORT, e.g. ssh://me@gpu-box"
)
#: The environment variable a client's token comes from.
TOKEN_ENV = "SPATIORA_TOKEN"
SCHEMES = ("ssh", "unix", "http", "ray")


class EngineUrlError(ValueError):
    """The --engine value is not an engine address; the message shows the form."""


def server_argv(url: str) -> list[str]:
    """For ssh://: the local command whose stdin/stdout are the engine server's."""
    parts = _split(url)
    ssh = shlex.split(os.environ.get("SPATIORA_SSH", "ssh"))
    if parts.port is not None:
        ssh += ["-p", str(parts.port)]
    host = f"{parts.username}@{parts.hostname}" if parts.username else parts.hostname
    remote = os.environ.get("SPATIORA_REMOTE_COMMAND", "spatiora") + " engine bridge"
    if parts.path not in ("", "/"):
        remote += f" --config {shlex.quote(parts.path)}"
    return [*ssh, str(host), remote]


def describe(url: str) -> str:
    """The other machine, for the hardware pane's title."""
    parts = urlsplit(url)
    return "this machine" if parts.scheme == "unix" else parts.hostname or url


def connect(url: str) -> object:
    """A RemoteEngine for `url` (hello and the server's state done); EngineUrlError for an
    address that is not one, EngineError when the server cannot be reached or refuses."""
    from spatiora_tui.remote.client import RemoteEngine, pipe

    parts = _split(url)
    try:
        if parts.scheme == "ssh":
            return RemoteEngine(pipe(server_argv(url)))
        from spatiora_tui.remote.websocket import websocket

        if parts.scheme == "unix":
            return RemoteEngine(websocket(f"unix:{parts.path}"))
        where = f"[{parts.hostname}]:{parts.port}" if ":" in str(parts.hostname) else f"{parts.hostname}:{parts.port}"
        return RemoteEngine(websocket(where, token(url)))
    except EngineError as exc:
        raise EngineError(f"{url}: {exc}") from None


def token(url: str) -> str | None:
    """The token for the http:// or ray:// server at `url`: $SPATIORA_TOKEN, else the token file
    of this user's own server, when that server wrote `url` as its address beside it."""
    if os.environ.get(TOKEN_ENV):
        return os.environ[TOKEN_ENV].strip()
    from spatiora_tui.remote.http import TOKEN_FILE, address_file

    token_file = user_state_dir() / TOKEN_FILE
    try:
        issued_by = address_file(token_file).read_text(encoding="utf-8").strip()
        if _same_server(issued_by, url):
            return token_file.read_text(encoding="utf-8").strip() or None
    except OSError:
        pass
    return None


def _same_server(a: str, b: str) -> bool:
    """Whether two http:// or ray:// addresses name the same server (localhost is 127.0.0.1)."""

    def key(url: str) -> tuple[str, str, int | None]:
        parts = urlsplit(url.strip())
        host = (parts.hostname or "").lower()
        try:
            port = parts.port
        except ValueError:
            port = None
        return parts.scheme, "127.0.0.1" if host == "localhost" else host, port

    return key(a) == key(b)


def _split(url: str) -> SplitResult:
    parts = urlsplit(url)
    if parts.scheme not in SCHEMES:
        raise EngineUrlError(f"{url!r}: {USAGE}")
    if parts.scheme == "unix":
        if not parts.path or parts.netloc:
            raise EngineUrlError(
                f"{url!r}: a socket address is unix:// and an absolute path, e.g. unix:///run/user/1000/spatiora.sock"
            )
        if not Path(parts.path).is_absolute():
            raise EngineUrlError(f"{url!r}: the socket path must be absolute")
        return parts
    if not parts.hostname:
        raise EngineUrlError(f"{url!r}: {USAGE}")
    try:
        port = parts.port
    except ValueError:
        raise EngineUrlError(f"{url!r}: the port is not a number; {USAGE}") from None
    if parts.password is not None:
        raise EngineUrlError(f"{url!r}: no password in the address; ssh asks for it, or use a key")
    if parts.scheme != "ssh" and port is None:
        raise EngineUrlError(f"{url!r}: give the server's port, e.g. {parts.scheme}://127.0.0.1:8765")
    return parts
