"""The engine's side of the protocol, for one client (`spatiora serve --stdio`, over ssh) or many
(`spatiora serve --http`, one websocket each): a Hub owns the engine, a Connection is one client.

Requests carry an id; the reply to each is one frame of the same id (its result or an error),
after any `queued`, `progress` and `step` frames of that id. Engine calls run one at a time on
the hub's worker thread. Each client's calls keep their order, and the clients take turns: the
worker takes the next call of the next client in a round robin, so one client's batch of 50
never runs ahead of everyone else's next image. `hello`, `state`, `hardware`, `prefetch` and
`cancel` are answered at once by the transport's thread, also while a generation runs, so a
cancel stops the running image within one step.

Every call that waits gets a job number, unique on the server (the `queued` frame says it and
how many calls of other clients wait before it). A client may cancel its own calls by their id or
job number; another client's job is refused, by name. When a client's link drops, its running
generation is cancelled (within one step; the engine frees its memory as after any cancel). Its
waiting calls are kept, in their place, for KEEP_S when the client gave a session id at hello:
a client that reconnects with the same session gets them back (hello's `resumed` lists their
ids) and they run in their turn; meanwhile the others' calls go past them. Without a session,
or after KEEP_S, they are dropped.

What changes for every client comes to the others as an `event` frame (id null): `model`, when a
call of one client left the engine with another model (the model, the active task, and `by`: the
label the switching client gave at hello, printable characters only).

A frame that cannot be read ends that connection only; a request that cannot be decoded is
answered with an error and the connection goes on. Every request gets exactly one answer, an `ok`
or an `error`: whatever the engine raises becomes an error frame with a one-line reason.

What a client may name (docs/security.md): whatever transport it came by, a client names things
only by the names the server lists (tasks, adapters, models) and never by a path on the server.
An init image is the file sent with its request; a request naming one without sending it is
refused. `<lora:NAME>` tags must be names, not paths. Switching the shared model is limited to
the listed models, or off (Policy, from `[security] remote_model_switch`). Requests are screened
when they arrive, so a refused one never waits behind others' images. Each client may keep at
most Policy.max_calls calls and Policy.max_bytes of uploads waiting; the server all of them
together at most Policy.max_total_bytes.
"""

from __future__ import annotations

import collections
import dataclasses
import itertools
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from spatiora_tui import __version__
from spatiora_tui.engine.api import Engine, EngineError, EngineOOM, GenerationRequest, StepPreview
from spatiora_tui.hw.telemetry import Telemetry
from spatiora_tui.library.catalog import name_problem
from spatiora_tui.prompts import extract_lora_tags
from spatiora_tui.remote.frames import Closed, FrameError, FrameWriter, read_frame
from spatiora_tui.remote.wire import PREVIEW_FORMATS, WireError, decode, decode_as, encode, image_bytes
from spatiora_tui.units import MB

if TYPE_CHECKING:
    from spatiora_tui.jobs.session import Session
    from spatiora_tui.remote.hosted import HostedSession

#: Bumped when a frame's meaning changes; both sides must agree.
PROTOCOL = 2

#: What a connection sends frames with: (message, binary payload); OSError once the client is gone.
Send = Callable[[dict[str, Any], bytes], None]

#: Calls that wait their turn for the engine (the rest are answered at once).
ENGINE_CALLS = frozenset({"load", "switch_task", "models", "switch_model", "generate"})
#: Seconds a client's waiting calls are kept after its link drops, for it to reconnect.
KEEP_S = 600.0
#: What `[security] remote_model_switch` may be: "listed" (the models `models` lists, and the one
#: the server was configured with) or "off" (clients use the server's model as it is). The user's
#: own engine (remote/userengine.py), which only its owner can reach, uses "any": whatever its
#: owner could load in-process.
MODEL_SWITCH = ("listed", "off")


@dataclass(frozen=True)
class Policy:
    """What a served engine lets its clients do (see the module docstring)."""

    model_switch: str = "listed"
    #: The model the server's own config names (always allowed to load again).
    configured_model: str | None = None
    #: Calls one client (by name) may have waiting, and bytes of uploads they may hold.
    max_calls: int = 64
    max_bytes: int = 256 * MB
    #: Bytes of uploads all clients' waiting calls may hold together.
    max_total_bytes: int = 1024 * MB


class Refused(Exception):
    """A request the server will not run; the message says why and what to do."""


@dataclass(eq=False)
class Call:
    """One request waiting for (or running on) the engine."""

    job: int
    connection: Connection
    message: dict[str, Any]
    blob: bytes
    cancel: threading.Event = field(default_factory=threading.Event)
    #: When its client's link dropped (the call waits for the client to come back); None while
    #: the client is connected.
    parked_at: float | None = None
    #: A generate's request, decoded once when it was screened.
    request: GenerationRequest | None = None
    #: How many calls ran before it when it was queued (its `queued` frame says so).
    ahead: int = 0

    @property
    def id(self) -> int:
        return int(self.message["id"])

    def describe(self, running: bool) -> dict[str, Any]:
        """The call as the `queue` request lists it (no prompt: other clients see this)."""
        request = self.message.get("request")
        task = request.get("task") if isinstance(request, dict) else self.message.get("name")
        return {
            "job": self.job,
            "client": self.connection.client,
            "type": self.message["type"],
            "task": task if isinstance(task, str) else None,
            "running": running,
            "parked": self.parked_at is not None,
        }


class Hub:
    """One engine shared by the connections made with connect(); see the module docstring."""

    def __init__(
        self,
        engine: Engine,
        telemetry: Telemetry | None = None,
        policy: Policy | None = None,
        log: Callable[[str], None] | None = None,
    ) -> None:
        """`log`: told a line as each call starts and ends (the user's engine's log)."""
        self.engine = engine
        self._log = log
        self.telemetry = telemetry
        self.policy = policy or Policy()
        self._lock = threading.Condition()
        self._waiting: dict[str, collections.deque[Call]] = {}  # by client, in the client's order
        self._turns: collections.deque[str] = collections.deque()  # clients with calls waiting
        self._parked: dict[str, list[Call]] = {}  # by session: calls whose client's link dropped
        self._running: Call | None = None
        self._jobs = itertools.count(1)
        self._closed = False
        self._uploads = tempfile.TemporaryDirectory(prefix="spatiora-serve-")
        #: (client, job, request type) of the last calls, in the order they ran (what fairness is
        #: measured on).
        self.ran: collections.deque[tuple[str, int, str]] = collections.deque(maxlen=10_000)
        self._connections: set[Connection] = set()  # the clients connected now
        #: The queue the user's engine keeps (host()); None on a served engine.
        self.hosted: HostedSession | None = None
        self._session_turn = False  # whether the hosted session runs the next job before a call
        self._thread = threading.Thread(target=self._work, name="spatiora-hub", daemon=True)
        self._thread.start()

    def host(self, session: Session) -> HostedSession:
        """Keep `session`'s queue here, its jobs taking turns with the clients' calls on the
        worker (remote/hosted.py). Only the user's engine does: its clients are its owner's."""
        from spatiora_tui.remote.hosted import HostedSession

        self.hosted = HostedSession(session, self.kick, self._log)
        self.kick()
        return self.hosted

    def kick(self) -> None:
        """Wake the worker: work may have come that is not a call (a job of the hosted session)."""
        with self._lock:
            self._lock.notify_all()

    def connect(self, client: str, send: Send) -> Connection:
        """A new client, named `client` (clients of one name share one turn)."""
        connection = Connection(self, client, send)
        with self._lock:
            self._connections.add(connection)
        return connection

    @property
    def clients(self) -> int:
        """Clients connected now."""
        with self._lock:
            return len(self._connections)

    def tell_others(self, sender: Connection, message: dict[str, Any]) -> None:
        """Send an `event` frame to every client but `sender` (what changed for all of them)."""
        with self._lock:
            others = [connection for connection in self._connections if connection is not sender]
        for connection in others:
            connection.answer({"type": "event", "id": None, **message})

    def busy(self) -> bool:
        """Whether a client is connected, or a call or a job runs or waits (one parked for its
        client too)."""
        with self._lock:
            if self._connections or self._running is not None or self._waiting:
                return True
        return self.hosted is not None and self.hosted.busy

    def queue(self) -> list[dict[str, Any]]:
        """The running call and the waiting ones, in the order they will run."""
        with self._lock:
            calls = ([self._running] if self._running is not None else []) + self._order()
            return [call.describe(running=call is self._running) for call in calls]

    def alive(self) -> bool:
        """Whether the worker that runs engine calls is still running."""
        return self._thread.is_alive()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            for calls in self._waiting.values():
                for call in calls:
                    call.cancel.set()
            if self._running is not None:
                self._running.cancel.set()
            self._lock.notify_all()
        if self.hosted is not None:
            self.hosted.close()  # stops the running job: it stays in the queue file, to run again
        self._thread.join(timeout=60)
        self._uploads.cleanup()

    # -- the queue (under self._lock) -----------------------------------------------------------

    def _order(self) -> list[Call]:
        """The waiting calls in the order the round robin will take them."""
        queues = {client: list(self._waiting[client]) for client in self._turns}
        order: list[Call] = []
        while any(queues.values()):
            for client in self._turns:
                if queues[client]:
                    order.append(queues[client].pop(0))
        return order

    def state(self) -> dict[str, Any]:
        """The engine's tasks, active task and model (the `state` request)."""
        engine = self.engine
        return {"tasks": encode(engine.tasks), "active": engine.active_task, "model": encode(engine.model)}

    def put(self, connection: Connection, message: dict[str, Any], blob: bytes) -> Call:
        """Queue an engine call of `connection`'s, screened first (module function screen());
        Refused when screening or the Policy's limits say no. `call.ahead` says how many run
        before it."""
        call = Call(next(self._jobs), connection, message, blob)
        call.request = screen(message, blob, self.policy)
        call.ahead = self._put(call)
        return call

    def rename(self, connection: Connection, name: str) -> None:
        """The client's own name (user@host), unless calls already wait under the old one."""
        with self._lock:
            if connection.client not in self._waiting:
                connection.client = name

    def attach(self, session: str, connection: Connection) -> list[Call]:
        """A client came back with `session`: its parked calls, which are its again."""
        with self._lock:
            calls = [call for call in self._parked.pop(session, []) if call.parked_at is not None]
            kept = [call for call in calls if call in self._waiting.get(call.connection.client, ())]
            for call in kept:
                call.connection, call.parked_at = connection, None
            self._lock.notify_all()
            return kept

    def drop(self, connection: Connection) -> None:
        """The client is gone: it watches the hosted queue no more (whose jobs go on); its
        running call stops; its waiting ones are parked (see the module docstring), or
        forgotten when it gave no session."""
        if self.hosted is not None:
            self.hosted.forget(connection)
        with self._lock:
            self._connections.discard(connection)
            mine = [call for call in self._waiting.get(connection.client, ()) if call.connection is connection]
            if connection.session is None:
                self._remove(mine)
            else:
                now = time.monotonic()
                for call in mine:
                    call.parked_at = now
                self._parked.setdefault(connection.session, []).extend(mine)
            if self._running is not None and self._running.connection is connection:
                self._running.cancel.set()
            self._lock.notify_all()

    def find(self, job: int) -> Call | None:
        """The call with job number `job`, running or waiting."""
        with self._lock:
            if self._running is not None and self._running.job == job:
                return self._running
            return next((call for calls in self._waiting.values() for call in calls if call.job == job), None)

    def allowed_source(self, source: str | None) -> None:
        """Refused unless `source` is the configured model or one `models` lists (by name or by the
        path it lists); run on the worker, since listing reads the model folders."""
        if source is None or source == self.policy.configured_model or source == "demo":
            return
        if self.policy.model_switch == "any":  # the user's own engine: its one client is its owner
            return
        if self.policy.model_switch == "off":
            raise Refused("this server does not let its clients switch the shared model")
        listed = [choice for choice in self.engine.models() if choice.loadable]
        if not any(source in (choice.name, choice.path) for choice in listed):
            names = ", ".join(choice.name for choice in listed[:8])
            choose = f"name one of its models ({names})" if names else "it lists none to switch to"
            raise Refused(
                f"{_shown(source)} is not a model this server lists; {choose} (`spatiora models` on the server "
                "lists them)"
            )

    def _limit(self, call: Call) -> None:
        """Refused when `call` would take its client (or the server) past the Policy's limits."""
        client, policy = call.connection.client, self.policy
        mine = list(self._waiting.get(client, ()))
        if len(mine) >= policy.max_calls:
            raise Refused(
                f"{client} has {len(mine)} calls waiting on this server, the most one client may; "
                "wait for some to finish"
            )
        held = sum(len(c.blob) for c in mine) + len(call.blob)
        if held > policy.max_bytes:
            raise Refused(
                f"{client}'s waiting calls would hold {held / MB:.0f} MB of uploads, over the {policy.max_bytes / MB:.0f} "
                "MB one client may; wait for some to finish"
            )
        total = sum(len(c.blob) for calls in self._waiting.values() for c in calls) + len(call.blob)
        if total > policy.max_total_bytes:
            raise Refused("the server holds as many uploads as it may; try again when some calls have run")

    def _put(self, call: Call) -> int:
        """Queue `call`; how many calls run before it (the running one included). Refused past
        the Policy's limits."""
        with self._lock:
            self._limit(call)
            client = call.connection.client
            if client not in self._waiting or not self._waiting[client]:
                self._waiting[client] = collections.deque()
                self._turns.append(client)
            self._waiting[client].append(call)
            ahead = self._order().index(call) + (self._running is not None)
            self._lock.notify_all()
            return ahead

    def _take(self) -> Call | HostedSession | None:
        """The next call to run, or the hosted session (its next job): they take turns. A call:
        the first connected call of the next client in turn (a client whose calls all wait for
        it to reconnect is passed over)."""
        with self._lock:
            while not self._closed:
                self._expire()
                hosted = self.hosted
                if hosted is not None and (self._session_turn or not self._turns) and hosted.has_work():
                    self._session_turn = False
                    return hosted
                call = self._next_call()
                if call is not None:
                    self._session_turn = True
                    return call
                if hosted is not None and hosted.has_work():
                    self._session_turn = False
                    return hosted
                self._lock.wait(timeout=KEEP_S / 10 if self._parked else None)
            return None

    def _next_call(self) -> Call | None:
        """The first connected call of the next client in turn, taken off the queue."""
        for _ in range(len(self._turns)):
            client = self._turns[0]
            calls = self._waiting[client]
            call = next((c for c in calls if c.parked_at is None), None)
            self._turns.rotate(-1)  # its next call waits for everyone else's turn
            if call is None:
                continue
            calls.remove(call)
            if not calls:
                del self._waiting[client]
                self._turns.remove(client)
            self._running = call
            return call
        return None

    def _expire(self) -> None:
        """Forget parked calls whose client has not come back within KEEP_S."""
        now = time.monotonic()
        for session, calls in list(self._parked.items()):
            old = [call for call in calls if call.parked_at is not None and now - call.parked_at > KEEP_S]
            if old:
                self._remove(old)
                self._parked[session] = [call for call in calls if call not in old]
                if not self._parked[session]:
                    del self._parked[session]

    def _remove(self, calls: list[Call]) -> None:
        for call in calls:
            client = call.connection.client
            waiting = self._waiting.get(client)
            if waiting is not None and call in waiting:
                waiting.remove(call)
                if not waiting:
                    del self._waiting[client]
                    self._turns.remove(client)

    # -- the worker -------------------------------------------------------------------------------

    def _work(self) -> None:
        while (call := self._take()) is not None:
            if not isinstance(call, Call):
                self._run_job(call)
                continue
            self.ran.append((call.connection.client, call.job, call.message["type"]))
            began = time.monotonic()
            what = call.describe(running=True)
            if self._log is not None:
                task = f" ({what['task']})" if what["task"] else ""
                self._log(f"call {call.job}: {what['type']}{task} for {what['client']}")
            model = self.engine.model
            try:
                outcome = call.connection.run(call, Path(self._uploads.name))
            finally:
                with self._lock:
                    self._running = None
            now = self.engine.model
            if now is not None and (model is None or now.source != model.source):
                # Every other window shows the model it now shares, and who chose it.
                event = {"event": "model", "model": encode(now), "active": self.engine.active_task}
                self.tell_others(call.connection, {**event, "by": call.connection.label})
            if self._log is not None:
                self._log(f"call {call.job}: {outcome} in {time.monotonic() - began:.2f} s")
            del call  # hold no finished call (its upload, its client's link) while waiting for the next

    def _run_job(self, hosted: HostedSession) -> None:
        """One turn of the hosted session: its next job (or task switch), to its end."""
        self.ran.append(("session", 0, "job"))
        try:
            hosted.run_one()
        except Exception as exc:  # a defect: said in the log; the session fails the job it ran
            if self._log is not None:
                self._log(f"the queue's runner failed: {type(exc).__name__}: {exc}")


class Connection:
    """One client of a Hub: receive() takes its frames, its replies go out through `send`."""

    def __init__(self, hub: Hub, client: str, send: Send) -> None:
        self.hub = hub
        self.client = client
        self.session: str | None = None  # given at hello: a client that comes back gets its calls back
        #: How the other clients are told of this one ("the TUI on /dev/pts/3"), given at hello.
        self.label = client
        self._send = send
        self._calls: dict[int, Call] = {}  # by request id, while waiting or running
        self._lock = threading.Lock()

    def answer(self, message: dict[str, Any], blob: bytes = b"") -> None:
        """Send, ignoring a client that is gone (its transport sees the end and closes)."""
        try:
            self._send(message, blob)
        except OSError:
            pass

    def refuse(self, reason: str) -> None:
        """The frame could not be read: say why; the transport then closes the connection."""
        self.answer({"type": "error", "id": None, "kind": "frame", "message": reason})

    def receive(self, message: dict[str, Any], blob: bytes = b"") -> None:
        """One request: answered at once (ANSWERED_AT_ONCE, `session.*`) or queued for the
        engine (ENGINE_CALLS); every request gets exactly one `ok` or `error`."""
        kind, rid = message["type"], message.get("id")
        if not isinstance(rid, int) or isinstance(rid, bool):
            self.answer({"type": "error", "id": None, "kind": "frame", "message": "a request needs an integer id"})
            return
        try:
            if kind in ENGINE_CALLS:
                self._queue(message, blob)
                return
            handler = self._handler(kind)
            if handler is None:
                raise Refused(f"unknown request type {kind!r}")
            reply, payload = handler(message, blob)
        except Refused as exc:
            self.answer({"type": "error", "id": rid, "kind": "refused", "message": str(exc)})
            return
        except Exception as exc:  # keep serving: the client gets the fault, in one line
            said = f"{type(exc).__name__}: {exc}".splitlines()[0][:500]
            self.answer({"type": "error", "id": rid, "kind": "internal", "message": said})
            return
        self.answer({"type": "ok", "id": rid, **reply}, payload)

    def _handler(self, kind: Any) -> Callable[[dict[str, Any], bytes], tuple[dict[str, Any], bytes]] | None:
        """What answers a request of `kind` at once (the table of the protocol's requests that
        do not wait for the engine); None for a kind the protocol does not know."""
        if isinstance(kind, str) and kind.startswith("session."):
            return self._session
        table: dict[str, Callable[[dict[str, Any], bytes], tuple[dict[str, Any], bytes]]] = {
            "hello": self._hello,
            "hardware": lambda message, blob: (_hardware(self.hub.telemetry), b""),
            "state": lambda message, blob: (self.hub.state(), b""),
            "queue": lambda message, blob: ({"jobs": self.hub.queue()}, b""),
            "echo": lambda message, blob: ({}, blob),  # the client times the link with it
            "prefetch": self._prefetch,
            "cancel": self._cancel,
        }
        return table.get(kind) if isinstance(kind, str) else None

    def _queue(self, message: dict[str, Any], blob: bytes) -> None:
        """An engine call: screened as it arrives, then queued (its `queued` frame says where)."""
        rid = message["id"]
        call = self.hub.put(self, message, blob)  # Refused when screening or the limits say no
        with self._lock:
            self._calls[rid] = call
        self.answer({"type": "queued", "id": rid, "job": call.job, "ahead": call.ahead, "call": message["type"]})

    def _prefetch(self, message: dict[str, Any], blob: bytes) -> tuple[dict[str, Any], bytes]:
        self.hub.engine.prefetch(str(message.get("task")))  # on the adapters' own thread
        return {}, b""

    def close(self) -> None:
        """The link is gone: see Hub.drop (the hosted session's jobs go on)."""
        self.hub.drop(self)

    def _session(self, message: dict[str, Any], blob: bytes) -> tuple[dict[str, Any], bytes]:
        """A request to the queue the user's engine keeps (remote/hosted.py)."""
        from spatiora_tui.remote.hosted import Refusal

        hosted = self.hub.hosted
        if hosted is None:
            raise Refused("this engine keeps no queue of its own: only the user's engine does (spatiora engine start)")
        try:
            return hosted.handle(self, message), b""
        except Refusal as exc:
            raise Refused(str(exc)) from None

    def _hello(self, message: dict[str, Any], blob: bytes) -> tuple[dict[str, Any], bytes]:
        """A client may name itself (user@host): connections of one name share one turn. With a
        session id it gets back the calls it left waiting when its link dropped (their ids)."""
        name = message.get("client")
        if isinstance(name, str) and name.strip():
            self.hub.rename(self, name.strip()[:100])
        label = message.get("label")
        if isinstance(label, str) and label.strip():
            self.label = "".join(ch for ch in label if ch.isprintable()).strip()[:80] or self.client
        else:
            self.label = self.client
        resumed: list[int] = []
        session = message.get("session")
        if isinstance(session, str) and session.strip():
            self.session = session.strip()[:100]
            calls = self.hub.attach(self.session, self)
            with self._lock:
                for call in calls:
                    self._calls[call.id] = call
            resumed = [call.id for call in calls]
        hello = {
            "version": __version__,
            "protocol": PROTOCOL,
            "resumed": resumed,
            "clients": self.hub.clients,
            "queue": self.hub.hosted is not None,  # session.* requests are served
        }
        return hello, b""

    def _cancel(self, message: dict[str, Any], blob: bytes) -> tuple[dict[str, Any], bytes]:
        target, job = message.get("target"), message.get("job")
        call = None
        if isinstance(target, int):
            with self._lock:
                call = self._calls.get(target)
        elif isinstance(job, int):
            call = self.hub.find(job)
            if call is not None and call.connection is not self:
                raise Refused(
                    f"job {job} is {call.connection.client}'s: only the client that asked for it can cancel it"
                )
        if call is not None:
            call.cancel.set()
        return {"cancelled": call is not None}, b""

    def run(self, call: Call, uploads: Path) -> str:
        """Run `call` on the engine (the hub's worker thread) and send its reply; what became of
        it, in a few words (for the log)."""
        rid = call.id
        try:
            reply, blob = _handle(self.hub.engine, call, self.answer, uploads)
        except EngineOOM as exc:
            kind, said = "oom", str(exc)
        except Refused as exc:
            kind, said = "refused", str(exc)
        except (EngineError, WireError, KeyError, TypeError, ValueError) as exc:
            kind, said = "engine", _say(exc)
        except OSError as exc:
            # The engine met a file it could not use (a client that is gone never raises here:
            # answer() drops its frames). The file's path stays on the server.
            kind, said = "engine", f"the server could not use a file: {exc.strerror or type(exc).__name__}"
        except Exception as exc:  # keep serving: the client gets the fault, in one line
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            kind, said = "internal", f"{type(exc).__name__}: {first}"[:500]
        else:
            self.answer({"type": "ok", "id": rid, **reply}, blob)
            result = reply.get("result")
            return "cancelled" if isinstance(result, dict) and result.get("cancelled") else "done"
        finally:
            with self._lock:
                self._calls.pop(rid, None)
        self.answer({"type": "error", "id": rid, "kind": kind, "message": said})
        return f"failed ({kind}): {said}"


def serve(
    engine: Engine,
    reader: BinaryIO,
    writer: BinaryIO,
    telemetry: Telemetry | None = None,
    policy: Policy | None = None,
) -> None:
    """Answer one client on a byte stream (stdin/stdout) until it closes it or sends what cannot
    be read. With `telemetry` (the engine's, sampling), `hardware` requests get its latest
    snapshot and peaks."""
    hub = Hub(engine, telemetry, policy)
    try:
        pump(hub, "stdio", reader, writer)
    finally:
        hub.close()


def pump(hub: Hub, client: str, reader: BinaryIO, writer: BinaryIO) -> None:
    """One client of `hub` on a byte stream: its frames in until it closes the stream or sends
    what cannot be read (said to it), the replies out; then the client is gone (Hub.drop)."""
    out = FrameWriter(writer)
    connection = hub.connect(client, out.send)
    try:
        while True:
            try:
                message, blob = read_frame(reader)
            except Closed:
                break
            except FrameError as exc:
                connection.refuse(str(exc))
                break
            connection.receive(message, blob)
    finally:
        connection.close()


def screen(message: dict[str, Any], blob: bytes, policy: Policy) -> GenerationRequest | None:
    """Refused when an engine call names what a client may not (see the module docstring);
    checked as it arrives, before it waits. Returns a generate's request, decoded."""
    kind = message["type"]
    if kind == "generate":
        try:
            request = decode_as(GenerationRequest, message.get("request"))
        except (WireError, TypeError, ValueError, RecursionError) as exc:
            raise Refused(f"bad request: {exc}") from None
        if request.init_image is not None and not blob:
            raise Refused(
                "the init image must travel with the request: the server opens no file a client names "
                "(spatiora --engine ... sends the file itself)"
            )
        if blob and not request.init_image:
            raise Refused("the request carries a file but names no init image")
        for text in (request.prompt, request.negative_prompt or ""):
            try:
                _, tags = extract_lora_tags(text)
            except EngineError as exc:
                raise Refused(str(exc)) from None
            for tag in tags:
                problem = name_problem(tag.name)
                if problem is not None:
                    raise Refused(problem)
        return request
    if kind == "switch_task":
        if not isinstance(message.get("name"), str):
            raise Refused("bad request: switch_task needs a task name")
    elif kind in ("switch_model", "load"):
        source = message.get("source")
        if kind == "load" and source is None:
            return None
        if not isinstance(source, str):
            raise Refused(f"bad request: {kind} needs a model name")
        if policy.model_switch == "off" and source != policy.configured_model:
            raise Refused(
                "this server does not let its clients switch the shared model ([security] remote_model_switch "
                '= "off" in its config.toml)'
            )
    return None


def _hardware(telemetry: Telemetry | None) -> dict[str, Any]:
    if telemetry is None:
        return {"snapshot": None, "by_task": {}, "by_stage": {}}
    snapshot = telemetry.latest or telemetry.sample()
    by_task = telemetry.peaks_by_task()
    by_stage = {task: telemetry.peaks_by_stage(task) for task in by_task}
    return {"snapshot": encode(snapshot), "by_task": encode(by_task), "by_stage": encode(by_stage)}


def _say(exc: Exception) -> str:
    return str(exc) if isinstance(exc, EngineError) else f"bad request: {exc}"


def _shown(text: str, most: int = 80) -> str:
    return repr(text if len(text) <= most else text[:most] + "…")


def _handle(engine: Engine, call: Call, send: Send, uploads: Path) -> tuple[dict[str, Any], bytes]:
    message, blob, rid = call.message, call.blob, call.id
    kind = message["type"]

    def progress(text: str) -> None:
        send({"type": "progress", "id": rid, "text": str(text)}, b"")

    if kind == "load":
        call.connection.hub.allowed_source(message.get("source"))
        return {"model": encode(engine.load(progress, message.get("source")))}, b""
    if kind == "switch_task":
        return {"switch": encode(engine.switch_task(str(message["name"]), progress))}, b""
    if kind == "models":
        return {"models": encode(engine.models())}, b""
    if kind == "switch_model":
        call.connection.hub.allowed_source(str(message["source"]))
        return {"switch": encode(engine.switch_model(str(message["source"]), progress))}, b""
    request = call.request or decode(GenerationRequest, message["request"])
    shown_name = ""
    if request.init_image and blob:
        # The client's file, sent with the request, runs from a copy named by the job alone (the
        # client's file name may be anything); errors name the client's file, not the copy.
        shown_name = Path(request.init_image).name
        copy = uploads / f"{call.job}.upload"
        copy.write_bytes(blob)
        request = dataclasses.replace(request, init_image=str(copy))
    side = message.get("preview_side")
    fmt, raw = message.get("preview_format", "png"), message.get("image_format") == "raw"
    if fmt not in PREVIEW_FORMATS:
        raise EngineError(f"unknown preview format {fmt!r}: one of {', '.join(PREVIEW_FORMATS)}")

    def on_step(preview: StepPreview) -> None:
        image = preview.image
        if image is not None and isinstance(side, int) and side > 0:
            image = image.copy()
            image.thumbnail((side, side))
        frame = {
            "type": "step",
            "id": rid,
            "step": preview.step,
            "total": preview.total,
            "elapsed_s": preview.elapsed_s,
        }
        send(frame, image_bytes(image, fmt) if image is not None else b"")

    try:
        result = engine.generate(request, on_step=on_step, cancel=call.cancel)
    except EngineError as exc:
        if not shown_name or request.init_image is None or request.init_image not in str(exc):
            raise
        raise type(exc)(str(exc).replace(request.init_image, f"the init image {shown_name}")) from None
    finally:
        if request.init_image and blob:
            Path(request.init_image).unlink(missing_ok=True)
    image = result.image
    reply: dict[str, Any] = {"result": encode(dataclasses.replace(result, image=None))}
    if image is None:
        return reply, b""
    if raw:  # a fast link carries pixels sooner than the server could encode them
        reply["raw"] = {"mode": image.mode, "size": list(image.size)}
        return reply, image.tobytes()
    return reply, image_bytes(image)
