"""The user's own engine: one long-lived process per user (and per GPU) that keeps the model warm
for every window and command of that user (docs/engine.md).

    spatiora                 the TUI, on the user's engine (started when none runs)
    spatiora generate ...    queued on the same warm model, no second load
    spatiora engine status | start | stop | logs

Where things are (Place): the socket and the engine's record (engine.json: its pid, version and
config) in the user's runtime folder, $XDG_RUNTIME_DIR/spatiora, else a 0700 folder of the user's
own in the temp folder; the log and the record of how the last engine ended in the state folder,
where they outlive a reboot. The runtime folder is checked before anything in it is trusted: the
user's own, not a symlink, and no one else's to read or write.

A client that finds no engine starts one detached (its own session, stdin from /dev/null, output
to the log) under a small supervisor (remote/supervisor.py) that writes how it ended: a client
whose link drops says "killed by SIGKILL" or "exited with 1" and the log's last line, instead of
"the link dropped". Two clients starting at once take a lock; the second finds the first's engine.

The engine runs remote/server.py's Hub on a plain Unix socket (remote/unix.py): the same frames
as ssh and HTTP, the same fair queue, the same screening. With no client and nothing queued for
[engine] idle_exit_minutes it exits, freeing the GPU.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from spatiora_tui import __version__
from spatiora_tui.atomic import write_bytes
from spatiora_tui.config import Settings, user_state_dir
from spatiora_tui.engine.api import EngineError

if TYPE_CHECKING:
    from spatiora_tui.remote.client import RemoteEngine
    from spatiora_tui.remote.server import Hub

#: The states of a job of the engine's queue that has not ended (jobs/job.py's JobState).
LIVE_STATES = ("queued", "paused", "running")
#: Seconds a started engine has to open its socket (it imports no torch before it does).
START_S = 120.0
#: Seconds `stop` waits for the engine to finish its step and exit before it is killed.
STOP_S = 30.0
#: The log is started afresh (the old one kept as engine.log.1) when it has grown past this.
LOG_ROTATE_BYTES = 8 << 20


class UnsafeFolder(EngineError):
    """The runtime folder is not safe to hold the engine's socket; the message says why."""


@dataclass(frozen=True)
class Place:
    """Where one engine's files are: its key is "engine", or "engine-gpuN" for --gpu N."""

    key: str
    gpu: str | None
    runtime: Path
    state: Path

    @property
    def socket(self) -> Path:
        return self.runtime / f"{self.key}.sock"

    @property
    def record(self) -> Path:
        """engine.json: written by the running engine, removed when it stops."""
        return self.runtime / f"{self.key}.json"

    @property
    def lock(self) -> Path:
        return self.runtime / f"{self.key}.lock"

    @property
    def log(self) -> Path:
        return self.state / f"{self.key}.log"

    @property
    def ended(self) -> Path:
        """How the last engine ended (the supervisor writes it)."""
        return self.state / f"{self.key}.exit.json"

    @property
    def queue(self) -> Path:
        """The folder of the engine's queue file (jobs/store.py): what waits outlives the engine."""
        return self.state / f"{self.key}-queue"

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"


def runtime_dir() -> Path:
    """The user's runtime folder for Spatiora, created 0700 and checked (UnsafeFolder)."""
    base = os.environ.get("XDG_RUNTIME_DIR")
    folder = Path(base) / "spatiora" if base else Path(tempfile.gettempdir()) / f"spatiora-{os.getuid()}"
    try:
        folder.mkdir(mode=0o700, parents=bool(base), exist_ok=True)
    except OSError as exc:
        raise UnsafeFolder(f"cannot make the engine's folder {folder}: {exc.strerror or exc}") from None
    check_folder(folder)
    return folder


def check_folder(folder: Path) -> None:
    """UnsafeFolder unless `folder` is a real folder of this user's that no one else may use."""
    info = folder.lstat()
    if stat.S_ISLNK(info.st_mode) or not stat.S_ISDIR(info.st_mode):
        raise UnsafeFolder(f"{folder} is not a folder (a symlink?); remove it, and Spatiora makes its own")
    if info.st_uid != os.getuid():
        raise UnsafeFolder(
            f"{folder} belongs to another user (uid {info.st_uid}); Spatiora keeps its engine only in a folder of "
            "yours: remove it, or set XDG_RUNTIME_DIR to a folder of yours"
        )
    if info.st_mode & 0o077:
        raise UnsafeFolder(
            f"{folder} can be used by other users (mode {stat.S_IMODE(info.st_mode):03o}); make it yours alone: "
            f"chmod 700 {folder}"
        )


def place(gpu: str | None = None) -> Place:
    """Where the engine for `gpu` (--gpu, else $CUDA_VISIBLE_DEVICES, else the default) lives."""
    gpu = gpu if gpu is not None else (os.environ.get("CUDA_VISIBLE_DEVICES") or None)
    key = "engine" if gpu is None else "engine-gpu" + re.sub(r"[^A-Za-z0-9]+", "_", gpu)[:40]
    state = user_state_dir()
    return Place(key, gpu, runtime_dir(), state)


# -- the record ---------------------------------------------------------------------------------


def fingerprint(settings: Settings) -> dict[str, Any]:
    """What the engine was started with: the config file (and its contents' hash), else the
    folder its defaults resolve against."""
    source = settings.source_file
    digest = None
    if source is not None:
        with contextlib.suppress(OSError):
            digest = hashlib.sha256(source.read_bytes()).hexdigest()
    return {
        "config": None if source is None else str(source),
        "config_sha256": digest,
        "base_dir": str(settings.base_dir),
    }


def read_record(where: Place) -> dict[str, Any] | None:
    """The running engine's record, None when there is none or its process is gone."""
    try:
        record = json.loads(where.record.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict):
        return None
    pid = record.get("pid")
    if not isinstance(pid, int) or not _alive(pid):
        return None
    return dict(record)


def write_record(where: Place, record: dict[str, Any]) -> None:
    old = os.umask(0o177)
    try:
        write_bytes(where.record, (json.dumps(record, indent=1) + "\n").encode())
    finally:
        os.umask(old)


def last_end(where: Place, since: float = 0.0) -> str | None:
    """How the last engine ended, in words ("killed by SIGKILL; its last words: ..."), when the
    supervisor recorded it after `since` (a time.time())."""
    try:
        ended = json.loads(where.ended.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(ended, dict) or float(ended.get("at", 0)) < since:
        return None
    return describe_end(ended)


def describe_end(ended: dict[str, Any]) -> str:
    code = ended.get("returncode")
    if isinstance(code, int) and code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        how = f"was killed by {name}" + (" (the out-of-memory killer, or kill -9)" if name == "SIGKILL" else "")
    elif code == 0:
        how = "exited"
    else:
        how = f"exited with code {code}"
    last = str(ended.get("last_line") or "").strip()
    return f"the engine {how}" + (f"; its log's last line: {last[:200]}" if last else "")


# -- the engine's side ----------------------------------------------------------------------------


def run_engine(
    hub: Hub,
    where: Place,
    settings: Settings,
    idle_exit_s: float,
    say: Callable[[str], None],
) -> str:
    """Serve `hub` on the user's socket until SIGTERM, or until no client has been connected and
    nothing queued for `idle_exit_s` (0: never). Returns why it stopped."""
    from spatiora_tui.remote.server import pump
    from spatiora_tui.remote.unix import bound

    stop = threading.Event()
    why = ["stopped (SIGTERM)"]
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # a terminal that closes is not a reason to stop

    def serve_one(conn: Any) -> None:
        conn.settimeout(None)
        try:
            pump(hub, "local", conn.makefile("rb"), conn.makefile("wb", buffering=0))
        except OSError:
            pass
        finally:
            # Hang up now: close() alone waits for every file made from the socket, and the hub
            # may still hold the client's last call (and its writer) until the next one comes.
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            conn.close()

    def accept(sock: Any) -> None:
        sock.settimeout(0.5)
        while not stop.is_set():
            try:
                conn, _ = sock.accept()
            except TimeoutError:
                continue
            except ConnectionAbortedError as exc:  # another user's process (OwnerOnlySocket)
                say(f"refused a connection: {exc}")
                continue
            except OSError:
                break
            threading.Thread(target=serve_one, args=(conn,), name="spatiora-client", daemon=True).start()

    with bound(where.socket) as sock:
        started = time.time()
        record = {
            "pid": os.getpid(),
            "version": __version__,
            "started": started,
            "socket": str(where.socket),
            "log": str(where.log),
            "gpu": where.gpu,
            "idle_exit_s": idle_exit_s,
            **fingerprint(settings),
        }
        write_record(where, record)
        say(f"listening on {where.socket} (pid {os.getpid()})")
        acceptor = threading.Thread(target=accept, args=(sock,), name="spatiora-accept", daemon=True)
        acceptor.start()
        tick = max(0.2, min(5.0, idle_exit_s / 10)) if idle_exit_s else 5.0
        idle_since = time.monotonic()
        try:
            while not stop.wait(tick):
                if hub.busy():
                    idle_since = time.monotonic()
                elif idle_exit_s and time.monotonic() - idle_since >= idle_exit_s:
                    why[0] = f"no client and nothing queued for {_minutes(idle_exit_s)}: exiting to free the GPU"
                    break
        finally:
            stop.set()
            acceptor.join(timeout=2)
            with contextlib.suppress(OSError, ValueError):
                mine = json.loads(where.record.read_text(encoding="utf-8")).get("pid") == os.getpid()
                if mine:
                    where.record.unlink()
    return why[0]


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:g} min" if seconds >= 60 else f"{seconds:g} s"


# -- the client's side ----------------------------------------------------------------------------


@contextlib.contextmanager
def _start_lock(where: Place, timeout_s: float = START_S) -> Iterator[None]:
    """Held while one client starts the engine: a second waits, then finds it running."""
    fd = os.open(where.lock, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise EngineError(f"another client has been starting your engine for {timeout_s:.0f} s") from None
                time.sleep(0.1)
        yield
    finally:
        os.close(fd)


def ask(where: Place, messages: list[dict[str, Any]], timeout_s: float = 10.0) -> list[dict[str, Any]]:
    """Send `messages` (hello first) to the running engine and return their replies, in order.
    EngineError when it cannot be reached."""
    from spatiora_tui.remote.frames import FrameError, FrameWriter, read_frame
    from spatiora_tui.remote.unix import own_socket

    sock = own_socket(where.socket, timeout_s=timeout_s)
    try:
        sock.settimeout(timeout_s)
        out, reader = FrameWriter(sock.makefile("wb", buffering=0)), sock.makefile("rb")  # type: ignore[arg-type]
        replies: dict[int, dict[str, Any]] = {}
        for number, message in enumerate(messages, 1):
            out.send({**message, "id": number})
        while len(replies) < len(messages):
            frame, _ = read_frame(reader)
            rid = frame.get("id")
            if isinstance(rid, int) and frame.get("type") in ("ok", "error"):
                replies[rid] = frame
        return [replies[number] for number in range(1, len(messages) + 1)]
    except (OSError, FrameError) as exc:
        raise EngineError(f"your engine at {where.socket} did not answer: {exc}") from None
    finally:
        sock.close()


def _hello() -> dict[str, Any]:
    from spatiora_tui.remote.server import PROTOCOL

    return {"type": "hello", "version": __version__, "protocol": PROTOCOL, "client": "status"}


def running(where: Place) -> dict[str, Any] | None:
    """The running engine's record, with `clients` (others connected), `jobs` (the calls it
    runs and that wait) and `queued` (its own queue's jobs that have not ended, as Job.to_view
    gives them) when it answers; None when none runs."""
    record = read_record(where)
    if record is None or not where.socket.exists():
        return None
    try:
        hello, state, jobs, hosted = ask(
            where, [_hello(), {"type": "state"}, {"type": "queue"}, {"type": "session.jobs"}]
        )
    except EngineError:
        return {**record, "answering": False}
    views = hosted.get("jobs") if hosted.get("type") == "ok" else None
    queued = [view for view in views or () if isinstance(view, dict) and view.get("state") in LIVE_STATES]
    return {
        **record,
        "answering": True,
        "version": hello.get("version", record.get("version")),
        "clients": max(0, int(hello.get("clients", 1)) - 1),
        "model": state.get("model"),
        "active": state.get("active"),
        "jobs": jobs.get("jobs") or [],
        "queued": queued,
    }


def start(settings: Settings, where: Place, say: Callable[[str], None]) -> dict[str, Any]:
    """The user's engine, started when none runs (detached, under the supervisor); its record."""
    with _start_lock(where):
        record = read_record(where)
        if record is not None:
            return record
        return _spawn(settings, where, say)


def _spawn(settings: Settings, where: Place, say: Callable[[str], None]) -> dict[str, Any]:
    where.state.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(OSError):
        if where.log.stat().st_size > LOG_ROTATE_BYTES:
            where.log.replace(where.log.with_name(where.log.name + ".1"))
    engine_argv = [sys.executable, "-m", "spatiora_tui"]
    if settings.source_file is not None:
        engine_argv += ["--config", str(settings.source_file)]
    engine_argv += ["engine", "run"]
    if where.gpu is not None:
        engine_argv += ["--gpu", where.gpu]
    argv = [sys.executable, "-m", "spatiora_tui.remote.supervisor", str(where.log), str(where.ended), "--"]
    env = dict(os.environ)
    if where.gpu is not None:
        env["CUDA_VISIBLE_DEVICES"] = where.gpu
    say(f"starting your engine (log: {where.log})…")
    began = time.time()
    try:
        supervisor = subprocess.Popen(
            argv + engine_argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # its own session: a closed terminal or dropped ssh link leaves it be
            close_fds=True,
            cwd=settings.base_dir,
            env=env,
        )
    except OSError as exc:
        raise EngineError(f"cannot start your engine ({sys.executable}): {exc.strerror or exc}") from None
    deadline = time.monotonic() + START_S
    while time.monotonic() < deadline:
        record = read_record(where)
        if record is not None and where.socket.exists():
            threading.Thread(target=supervisor.wait, daemon=True).start()  # reaps it if it ends while we run
            return record
        if supervisor.poll() is not None:
            ended = last_end(where, since=began - 1) or f"the engine's supervisor exited with {supervisor.returncode}"
            raise EngineError(f"your engine did not start: {ended} (`spatiora engine logs` shows its log)")
        time.sleep(0.05)
    raise EngineError(
        f"your engine has not opened its socket after {START_S:.0f} s; `spatiora engine logs` shows what it is doing"
    )


def stop(where: Place, timeout_s: float = STOP_S) -> str | None:
    """Stop the running engine (SIGTERM: the running image stops within a step; SIGKILL after
    `timeout_s`). None when none runs, else what happened."""
    record = read_record(where)
    if record is None:
        return None
    pid = int(record["pid"])
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not _alive(pid):
            return f"stopped your engine (pid {pid})"
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    return f"your engine (pid {pid}) did not stop within {timeout_s:.0f} s and was killed"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (exited, not yet reaped by its parent) is gone for our purposes.
    with contextlib.suppress(OSError):
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return fields[0] != "Z"
    return True


def ensure(settings: Settings, where: Place, say: Callable[[str], None]) -> dict[str, Any]:
    """The user's engine running for `settings` (restarted first when idle and stale, started
    when none runs): its record."""
    _replace_if_stale(settings, where, say)
    return read_record(where) or start(settings, where, say)


def bridge(settings: Settings, where: Place, say: Callable[[str], None]) -> str | None:
    """Relay this process's stdin/stdout to the user's engine (started when none runs): what
    `--engine ssh://` runs on the other machine, so a client over ssh shares that user's warm
    engine, and finds it warm again after its link drops. Returns why the engine ended the
    relay (None when the client did)."""
    import socket as sockets

    from spatiora_tui.remote.unix import own_socket

    ensure(settings, where, say)
    opened = time.time()
    sock = own_socket(where.socket)
    client_gone = threading.Event()

    def upstream() -> None:  # the client's frames to the engine
        try:
            while chunk := os.read(0, 1 << 16):
                sock.sendall(chunk)
        except OSError:
            pass
        client_gone.set()
        with contextlib.suppress(OSError):
            sock.shutdown(sockets.SHUT_WR)

    threading.Thread(target=upstream, name="spatiora-bridge", daemon=True).start()
    try:
        while chunk := sock.recv(1 << 16):
            view = memoryview(chunk)
            while view:
                view = view[os.write(1, view) :]
    except OSError:
        pass
    finally:
        sock.close()
    return None if client_gone.wait(0.5) else _gone(where, opened)


def connect(settings: Settings, where: Place, say: Callable[[str], None]) -> RemoteEngine:
    """A RemoteEngine on the user's engine, started first when none runs. Its links reconnect
    the same way: after a crash, the next request starts a new engine."""
    from spatiora_tui.remote.client import RemoteEngine
    from spatiora_tui.remote.unix import SocketLink

    _replace_if_stale(settings, where, say)
    made: list[RemoteEngine] = []  # the engine, once made: its `say` may have moved (to a UI)

    def opener(on_frame: Any, on_end: Any) -> SocketLink:
        if read_record(where) is None:
            start(settings, where, made[0].say if made else say)  # after a crash: a new engine
        opened = time.time()
        return SocketLink(where.socket, on_frame, on_end, gone=lambda: _gone(where, opened))

    engine = RemoteEngine(
        opener,
        name="local",
        image_format="raw",
        resume=False,
        after_drop="the next request starts a new engine",
        say=say,
    )
    made.append(engine)
    return engine


def _gone(where: Place, since: float) -> str:
    """Why the engine's link ended without a word: the supervisor's record, once it is written."""
    deadline = time.monotonic() + 3  # a killed engine's supervisor writes within milliseconds
    while time.monotonic() < deadline:
        ended = last_end(where, since)
        if ended is not None:
            return ended
        time.sleep(0.05)
    return "the engine closed the link" if read_record(where) is not None else "the engine stopped"


def _replace_if_stale(settings: Settings, where: Place, say: Callable[[str], None]) -> None:
    """An engine of another version, or started with another config (or the same file since
    edited), is restarted when it is idle; when it is busy, it is used and the user is told."""
    record = read_record(where)
    if record is None:
        return
    wanted = fingerprint(settings)
    reasons = []
    if record.get("version") != __version__:
        reasons.append(f"it is spatiora {record.get('version')} and this is {__version__}")
    if record.get("config") != wanted["config"]:
        reasons.append(f"it was started with {record.get('config') or 'no config file'}")
    elif record.get("config_sha256") != wanted["config_sha256"]:
        reasons.append("its config file has changed since it started")
    if not reasons:
        return
    now = running(where)
    busy = now is not None and (now.get("clients") or now.get("jobs") or now.get("queued"))
    if busy and record.get("version") == __version__:
        say(
            f"note: your engine keeps running as it is ({'; '.join(reasons)}), since it is busy; "
            "`spatiora engine stop` when it is done, and the next command starts it afresh"
        )
        return
    if busy:
        raise EngineError(
            f"your engine is busy and {'; '.join(reasons)}: wait for its queue to finish, or `spatiora engine stop`"
        )
    say(f"restarting your engine: {'; '.join(reasons)}")
    stop(where)


def quit_note(where: Place) -> str | None:
    """What stays behind when a window or command on the user's engine ends, in one line."""
    now = running(where)
    if now is None:
        return None
    queued = now.get("queued") or []
    if queued:
        return f"your engine goes on with {len(queued)} queued image(s) and saves them; `spatiora queue` shows them"
    jobs = [job for job in now.get("jobs") or () if isinstance(job, dict)]
    if jobs:
        return f"your engine keeps running {len(jobs)} queued call(s); `spatiora engine status` shows them"
    model = now.get("model") or {}
    name = model.get("name") if isinstance(model, dict) else None
    idle = float(now.get("idle_exit_s") or 0)
    warm = f"keeps {name} warm" if name else "keeps running"
    how_long = f" for {_minutes(idle)}" if idle else ""
    return f"your engine {warm}{how_long}; `spatiora engine stop` frees it now"
