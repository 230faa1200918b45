"""`--engine ssh://[user@]host[:port][/path/to/config.toml]`: the command that starts the engine
server on another machine through the user's own ssh (their keys, agent, ProxyJump and
known_hosts from ~/.ssh/config). SSH is the authentication and the encryption; nothing listens.

Two environment variables adjust it, as GIT_SSH_COMMAND does for git:
    SPATIORA_SSH             the ssh command (default "ssh"), e.g. "ssh -i ~/.ssh/gpu_box"
    SPATIORA_REMOTE_COMMAND  what runs spatiora on the other machine (default "spatiora"),
                             e.g. "~/spatiora/.venv/bin/spatiora"
"""

from __future__ import annotations

import os
import shlex
from urllib.parse import urlsplit

from spatiora_tui.engine.api import EngineError

USAGE = "--engine takes ssh://[user@]host[:port][/path/to/config.toml], e.g. ssh://me@gpu-box"


class EngineUrlError(ValueError):
    """The --engine value is not an engine address; the message shows the form."""


def server_argv(url: str) -> list[str]:
    """The local command whose stdin/stdout are the engine server's."""
    parts = urlsplit(url)
    if parts.scheme != "ssh" or not parts.hostname:
        raise EngineUrlError(f"{url!r}: {USAGE}")
    try:
        port = parts.port
    except ValueError:
        raise EngineUrlError(f"{url!r}: the port is not a number; {USAGE}") from None
    if parts.password is not None:
        raise EngineUrlError(f"{url!r}: no password in the address; ssh asks for it, or use a key")
    ssh = shlex.split(os.environ.get("SPATIORA_SSH", "ssh"))
    if port is not None:
        ssh += ["-p", str(port)]
    host = f"{parts.username}@{parts.hostname}" if parts.username else parts.hostname
    remote = os.environ.get("SPATIORA_REMOTE_COMMAND", "spatiora") + " serve --stdio"
    if parts.path not in ("", "/"):
        remote += f" --config {shlex.quote(parts.path)}"
    return [*ssh, host, remote]


def connect(url: str) -> object:
    """A RemoteEngine through `url` (hello and the server's state done); EngineError otherwise."""
    from spatiora_tui.remote.client import RemoteEngine

    try:
        return RemoteEngine(server_argv(url))
    except EngineError as exc:
        raise EngineError(f"{url}: {exc}") from None
