"""`spatiora serve --http`: one engine for several clients on one box (FastAPI on uvicorn).

The engine speaks the same frames as over stdio, one per binary message on the websocket
/v1/engine; every client is a Connection of one Hub, so clients take turns (remote/server.py).
Plain GET /v1/hello (version, protocol) and /v1/queue (the jobs of every client, no prompts)
are there for scripts and monitoring.

Nothing listens on a network by default: the server binds a Unix socket that only its owner may
open (0600, in a 0700 folder). On 127.0.0.1:PORT every request needs the token the server writes
to a 0600 file at start (`Authorization: Bearer TOKEN`); other machines reach it through
`ssh -L`, which encrypts. Addresses that are not loopback are refused.

Needs the http extra (`pip install 'spatiora-tui[http]'`): fastapi, uvicorn, websockets.
"""

# No `from __future__ import annotations` here: FastAPI reads the endpoints' annotations (Request,
# WebSocket) at run time, and those classes are imported inside build_app.
import asyncio
import contextlib
import hmac
import ipaddress
import itertools
import os
import secrets
import socket
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from spatiora_tui import __version__
from spatiora_tui.atomic import write_bytes
from spatiora_tui.remote.frames import FrameError, pack, unpack
from spatiora_tui.remote.server import PROTOCOL, Hub
from spatiora_tui.remote.unix import MAX_SOCKET_PATH, clear_stale
from spatiora_tui.remote.unix import AddressError as AddressError  # its errors, where serve --http's callers look
from spatiora_tui.remote.unix import bound as unix_bound
from spatiora_tui.remote.websocket import ENGINE_PATH, MAX_MESSAGE

INSTALL = "serve --http needs FastAPI and uvicorn: pip install 'spatiora-tui[http]'"
#: The token file's name in the state folder (the address of its server beside it: address_file).
TOKEN_FILE = "serve-token"
#: Seconds a new connection has to send its first request line and headers.
HEADER_S = 10.0
#: Connections the server holds at once (more are answered 503): clients that never finish their
#: request cannot use up the process's file descriptors.
LIMIT_CONCURRENCY = 256


@dataclass(frozen=True)
class Listener:
    """Where the server listens: a Unix socket, or loopback TCP with a token."""

    socket_path: Path | None = None
    host: str = ""
    port: int = 0
    token_file: Path | None = None

    @property
    def client_url(self) -> str:
        """What a client passes to --engine."""
        return f"unix://{self.socket_path}" if self.socket_path is not None else f"http://{self.host}:{self.port}"


def listener(address: str, state_dir: Path) -> Listener:
    """Parse serve --http's address: "" (a socket in the state folder), a socket path, or
    HOST:PORT on loopback (token kept in the state folder)."""
    if not address:
        address = str(state_dir / "engine.sock")
    if "/" in address or address.endswith(".sock"):
        path = Path(address).expanduser().absolute()
        if len(os.fsencode(path)) > MAX_SOCKET_PATH:
            raise AddressError(
                f"{path}: a Unix socket's path is at most {MAX_SOCKET_PATH} bytes; give a shorter one, "
                "e.g. serve --http $XDG_RUNTIME_DIR/spatiora.sock"
            )
        return Listener(socket_path=path)
    host, _, port = address.rpartition(":")
    host = host.strip("[]") or "127.0.0.1"
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise AddressError(f"{address!r}: give a socket path or HOST:PORT, e.g. serve --http 127.0.0.1:8765")
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise AddressError(
            f"{host}: serve --http listens on this machine only (a Unix socket or 127.0.0.1), because plain "
            "HTTP is not encrypted. Reach it from another machine with ssh -L 8765:127.0.0.1:8765 HOST, "
            "or use --engine ssh://HOST"
        )
    return Listener(host=host, port=int(port), token_file=state_dir / TOKEN_FILE)


def build_app(hub: Hub, token: str | None) -> Any:
    """The FastAPI app: /v1/engine (websocket), /v1/hello, /v1/queue; `token` is needed by each
    request when it is not None."""
    try:
        from fastapi import FastAPI, HTTPException, Request, WebSocket
        from starlette.concurrency import run_in_threadpool
    except ImportError:
        raise AddressError(INSTALL) from None

    app = FastAPI(title="Spatiora engine", version=__version__, docs_url=None, redoc_url=None, openapi_url=None)
    numbers = itertools.count(1)

    def allowed(headers: Mapping[str, str]) -> bool:
        return token_ok(headers, token)

    def require(request: Request) -> None:
        if not allowed(request.headers):
            raise HTTPException(401, "a token is needed: Authorization: Bearer TOKEN (from the server's token file)")

    @app.get("/v1/hello")
    def hello(request: Request) -> dict[str, Any]:
        require(request)
        return {"version": __version__, "protocol": PROTOCOL}

    @app.get("/v1/queue")
    def jobs(request: Request) -> dict[str, Any]:
        require(request)
        return {"jobs": hub.queue()}

    @app.websocket(ENGINE_PATH)
    async def engine(ws: WebSocket) -> None:
        if not allowed(ws.headers):
            await ws.close(code=1008, reason="the token is missing or wrong")  # before accept: HTTP 403
            return
        await ws.accept()
        loop = asyncio.get_running_loop()

        def send(message: dict[str, Any], blob: bytes) -> None:
            future = asyncio.run_coroutine_threadsafe(ws.send_bytes(pack(message, blob)), loop)
            try:
                future.result()
            except Exception as exc:
                raise ConnectionError(f"the client is gone: {exc}") from None

        connection = hub.connect(f"client {next(numbers)}", send)

        async def receive(message: dict[str, Any], blob: bytes) -> None:
            await run_in_threadpool(connection.receive, message, blob)

        async def refuse(problem: str) -> None:
            await run_in_threadpool(connection.refuse, problem)

        try:
            problem = await pump(ws, receive, refuse)
        finally:
            connection.close()
        await close(ws, problem)

    return app


def token_ok(headers: Mapping[str, str], token: str | None) -> bool:
    """Whether a request carries `Authorization: Bearer TOKEN` (anything goes when token is None),
    compared in constant time."""
    if token is None:
        return True
    given = str(headers.get("authorization", "")).encode()
    return hmac.compare_digest(given, f"Bearer {token}".encode())


async def pump(
    ws: Any,
    receive: Callable[[dict[str, Any], bytes], Awaitable[None]],
    refuse: Callable[[str], Awaitable[None]],
) -> str:
    """Hand each frame a websocket brings to `receive` until the client leaves; a message that
    is not a frame goes to `refuse` and ends the connection. Returns what went wrong ("" for a
    clean end). Shared by `serve --http` and the Ray Serve ingress."""
    problem = ""
    try:
        while True:
            received = await ws.receive()
            if received["type"] == "websocket.disconnect":
                break
            data = received.get("bytes")
            try:
                if data is None:
                    raise FrameError("frames are binary messages; this one was text")
                message, blob = unpack(data)
            except FrameError as exc:
                problem = str(exc)
                await refuse(problem)
                break
            await receive(message, blob)
    except Exception as exc:  # the socket broke: the connection ends as on a disconnect
        problem = problem or f"{type(exc).__name__}: {exc}"
    return problem


async def close(ws: Any, problem: str) -> None:
    """Close a websocket, saying why when something went wrong (it may be closed already)."""
    with contextlib.suppress(Exception):
        await ws.close(code=1008 if problem else 1000, reason=problem[:120])


@contextlib.contextmanager
def bound(where: Listener) -> Iterator[tuple[socket.socket, str | None]]:
    """The listening socket and the token clients need (None on a Unix socket), removed after."""
    if where.socket_path is None:
        assert where.token_file is not None
        try:
            sock = socket.create_server((where.host, where.port), family=_family(where.host))
        except OSError as exc:
            raise AddressError(f"cannot listen on {where.host}:{where.port}: {exc.strerror or exc}") from None
        token = secrets.token_urlsafe(32)
        write_token(where.token_file, token, where.client_url)
        try:
            yield sock, token
        finally:
            sock.close()
            remove_token(where.token_file)
        return
    with unix_bound(where.socket_path) as sock:
        yield sock, None


def address_file(token_file: Path) -> Path:
    """Beside a token file: the address of the server that wrote it. A client sends the token
    only to that address (remote/connect.py), never to any server it is pointed at."""
    return token_file.with_name(token_file.name + ".address")


def write_token(token_file: Path, token: str, url: str) -> None:
    """Write the token (0600, replacing any older file whatever its mode) and its server's address."""
    token_file.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    old = os.umask(0o177)
    try:
        write_bytes(address_file(token_file), (url + "\n").encode())
        write_bytes(token_file, (token + "\n").encode())
    finally:
        os.umask(old)
    for path in (token_file, address_file(token_file)):
        os.chmod(path, 0o600)


def remove_token(token_file: Path) -> None:
    token_file.unlink(missing_ok=True)
    address_file(token_file).unlink(missing_ok=True)


def check_free(where: Listener) -> None:
    """AddressError when `where` cannot be listened on (another server's live socket, a path that
    is not a socket, a stale socket this user may not remove): said before the model loads."""
    if where.socket_path is not None:
        clear_stale(where.socket_path)


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def uvicorn_server(hub: Hub, token: str | None) -> Any:
    """A uvicorn.Server for build_app(hub, token), to run on sockets bound by bound()."""
    try:
        import uvicorn
    except ImportError:
        raise AddressError(INSTALL) from None
    app = build_app(hub, token)
    # The asyncio loop, not uvloop: asyncio accepts through OwnerOnlySocket.accept (the peer check).
    config = uvicorn.Config(
        app,
        http=_header_deadline_protocol(),
        loop="asyncio",
        log_level="warning",
        ws_max_size=MAX_MESSAGE,
        ws_ping_interval=None,
        lifespan="off",
        limit_concurrency=LIMIT_CONCURRENCY,
        timeout_keep_alive=5,
    )
    return uvicorn.Server(config)


def _header_deadline_protocol() -> Any:
    """uvicorn's h11 protocol with a deadline for a connection's first request: a client that
    opens connections and never finishes a request line and headers (slowloris) has each closed
    after HEADER_S, instead of holding it (and, past LIMIT_CONCURRENCY, everyone else's turn)
    for ever. uvicorn has no such timeout of its own."""
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class HeaderDeadline(H11Protocol):
        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            self._deadline = self.loop.call_later(HEADER_S, self._too_slow)

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if self.scope is not None:  # a whole request (or an upgrade) arrived in time
                self._deadline.cancel()

        def connection_lost(self, exc: Exception | None) -> None:
            self._deadline.cancel()
            super().connection_lost(exc)

        def _too_slow(self) -> None:
            if self.scope is None and not self.transport.is_closing():
                self.transport.close()

    return HeaderDeadline


def run(hub: Hub, where: Listener, say: Callable[[str], object]) -> None:
    """Serve until interrupted (ctrl+c or SIGTERM)."""
    with bound(where) as (sock, token):
        server = uvicorn_server(hub, token)
        if token is None:
            say(f"serving on {where.socket_path} (only this user may connect); clients: --engine {where.client_url}")
        else:
            say(
                f"serving on http://{where.host}:{where.port}, token in {where.token_file}; clients: "
                f"SPATIORA_TOKEN=$(cat {where.token_file}) spatiora --engine {where.client_url}"
            )
        server.run(sockets=[sock])
