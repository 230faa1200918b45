"""A link to `spatiora serve --http` (or the Ray Serve ingress): the same frames as over a pipe,
one per binary websocket message, on a Unix socket or TCP (with the server's token).

Needs the `websockets` package (`pip install 'spatiora-tui[http]'`); nothing else here imports it.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from spatiora_tui.engine.api import EngineError
from spatiora_tui.remote.client import OnEnd, OnFrame, Opener
from spatiora_tui.remote.frames import HEADER, MAX_BLOB, MAX_JSON, FrameError, pack, unpack
from spatiora_tui.remote.unix import own_socket

#: The path the engine's websocket answers on.
ENGINE_PATH = "/v1/engine"
#: Largest message either side accepts: one whole frame.
MAX_MESSAGE = HEADER.size + MAX_JSON + MAX_BLOB

INSTALL = "the HTTP engine link needs the websockets package: pip install 'spatiora-tui[http]'"


class WebSocketLink:
    """Frames over one websocket; a reader thread hands them on."""

    def __init__(self, where: str, on_frame: OnFrame, on_end: OnEnd, token: str | None = None) -> None:
        try:
            from websockets.exceptions import InvalidHandshake, InvalidStatus
            from websockets.sync.client import connect
        except ImportError:
            raise EngineError(INSTALL) from None
        headers = {"Authorization": f"Bearer {token}"} if token else None
        options: dict[str, Any] = dict(
            additional_headers=headers, max_size=MAX_MESSAGE, compression=None, open_timeout=20, ping_interval=None
        )
        try:
            if where.startswith("unix:"):
                path = where.removeprefix("unix:")
                self._ws = connect(f"ws://localhost{ENGINE_PATH}", sock=own_socket(Path(path)), **options)
            else:
                self._ws = connect(f"ws://{where}{ENGINE_PATH}", proxy=None, **options)
        except InvalidStatus as exc:
            status = exc.response.status_code
            why = exc.response.body.decode("utf-8", "replace").strip() if exc.response.body else ""
            if status in (401, 403):
                raise EngineError(
                    f"the engine server refused this client ({status}): the token is missing or wrong; set "
                    "SPATIORA_TOKEN to what is in the token file the server named when it started"
                ) from None
            raise EngineError(f"the engine server answered {status}: {why or 'not an engine websocket'}") from None
        except (OSError, InvalidHandshake, TimeoutError) as exc:
            target = Path(where.removeprefix("unix:")) if where.startswith("unix:") else where
            raise EngineError(f"cannot reach the engine server at {target}: {exc}") from None
        self._lock = threading.Lock()
        threading.Thread(target=self._read, args=(on_frame, on_end), name="spatiora-ws", daemon=True).start()

    def send(self, message: dict[str, Any], blob: bytes = b"") -> None:
        from websockets.exceptions import ConnectionClosed

        data = pack(message, blob)
        with self._lock:
            try:
                self._ws.send(data)
            except ConnectionClosed as exc:
                raise ConnectionError(str(exc)) from None

    def close(self) -> None:
        self._ws.close()

    def _read(self, on_frame: OnFrame, on_end: OnEnd) -> None:
        from websockets.exceptions import ConnectionClosed

        said = None
        try:
            while True:
                data = self._ws.recv()
                if isinstance(data, str):
                    raise FrameError("the server sent text where frames were expected")
                frame, payload = unpack(data)
                if frame.get("id") is None and frame.get("type") == "error":
                    said = frame.get("message")
                on_frame(frame, payload)
        except ConnectionClosed as exc:
            reason = exc.rcvd.reason if exc.rcvd is not None else ""
            said = said or reason or "the link to the engine server dropped"
        except (FrameError, OSError) as exc:
            said = said or f"the link to the engine server broke: {exc}"
        on_end(said)


def websocket(where: str, token: str | None = None) -> Opener:
    """Open links to the server at `where`: "unix:/path/to/engine.sock" or "host:port"."""
    return lambda on_frame, on_end: WebSocketLink(where, on_frame, on_end, token)
