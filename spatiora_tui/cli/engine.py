"""`spatiora engine`: the user's own engine, the one process that keeps the model warm for every
window and command (remote/userengine.py, docs/engine.md).

    status   whether it runs: its model, clients, queue, memory, how long it stays idle
    start    start it (when none runs) and load the model, showing the progress
    stop     stop it (the running image stops within a step) and free the GPU
    logs     its log (-n lines, -f to follow)
    run      the engine itself in the foreground: what `start` runs detached (or a systemd unit)
    bridge   stdin/stdout relayed to it (started when none runs): what `--engine ssh://` runs on
             the other machine, so clients over ssh share that user's warm engine
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from spatiora_tui.cli.common import EXIT_FAILED, EXIT_OK, UsageError, one_line, status_printer
from spatiora_tui.config import Settings
from spatiora_tui.units import MB

ACTIONS = ("status", "start", "stop", "logs", "run", "bridge")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser) -> None:
    parser = sub.add_parser(
        "engine",
        parents=[common],
        help="your own engine, shared by every window and command: status, start, stop, logs",
        description="Every `spatiora` window and command runs on your own engine: one process per user (and per "
        "GPU) that keeps the model warm. The first that needs it starts it; it outlives a closed terminal or a "
        "dropped ssh link, and exits by itself after [engine] idle_exit_minutes with no client and nothing "
        "queued.",
    )
    parser.add_argument("action", nargs="?", choices=ACTIONS, default="status")
    parser.add_argument("-n", "--lines", type=int, default=40, metavar="N", help="with logs: the last N lines")
    parser.add_argument("-f", "--follow", action="store_true", help="with logs: keep printing what it writes")
    parser.set_defaults(run=run)


def run(settings: Settings, args: argparse.Namespace) -> int:
    from spatiora_tui.remote import userengine

    where = userengine.place(getattr(args, "gpu", None))
    if args.action == "run":
        return _run(settings, where)
    if args.action == "bridge":
        return _bridge(settings, where)
    if args.action == "start":
        return _start(settings, args, where)
    if args.action == "stop":
        now = userengine.running(where)
        queued = len(now.get("queued") or []) if now is not None else 0
        said = userengine.stop(where)
        print(said or "no engine of yours is running", file=sys.stderr)
        if said and queued:
            print(
                f"its {queued} queued image(s) stay in its queue file: the next engine takes them up "
                "(`spatiora queue` then lists them, `spatiora queue cancel all` drops them)",
                file=sys.stderr,
            )
        return EXIT_OK
    if args.action == "logs":
        return _logs(where, args.lines, args.follow)
    return _status(where)


def _status(where: Any) -> int:
    from spatiora_tui.remote import userengine

    now = userengine.running(where)
    if now is None:
        print(f"no engine of yours is running ({where.socket})")
        ended = userengine.last_end(where)
        if ended:
            print(f"the last one: {ended}")
        print("the next `spatiora` window or command starts it; `spatiora engine start` does now")
        return EXIT_FAILED
    age = time.time() - float(now.get("started", time.time()))
    print(f"your engine: pid {now['pid']}, spatiora {now.get('version')}, up {_duration(age)}")
    if not now.get("answering"):
        print("  it does not answer on its socket; `spatiora engine logs` shows why, `spatiora engine stop` ends it")
        return EXIT_FAILED
    model = now.get("model")
    if isinstance(model, dict):
        print(f"  model: {one_line(str(model.get('name')))} · {model.get('device')} {model.get('dtype')}")
        if now.get("active"):
            print(f"  task: {one_line(str(now['active']))}")
    else:
        print("  model: none loaded yet (the first window or command loads it)")
    rss = _rss_mb(int(now["pid"]))
    if rss is not None:
        print(f"  memory: {rss:.0f} MB resident")
    print(f"  config: {now.get('config') or 'none (built-in defaults)'}")
    print(f"  clients connected: {now.get('clients', 0)}")
    queued = now.get("queued") or []
    if queued:
        running = [view for view in queued if view.get("state") == "running"]
        print(f"  queue: {len(running)} running, {len(queued) - len(running)} waiting (spatiora queue lists them)")
    jobs = now.get("jobs") or []
    if jobs:
        print(f"  calls: {len(jobs)}")
        for job in jobs:
            state = "running" if job.get("running") else "waiting"
            task = f" ({one_line(str(job['task']))})" if job.get("task") else ""
            print(f"    job {job.get('job')}: {job.get('type')}{task}, {state}, for {one_line(str(job.get('client')))}")
    idle = float(now.get("idle_exit_s") or 0)
    print(f"  exits after {idle / 60:g} min idle" if idle else "  stays up until `spatiora engine stop`")
    print(f"  socket: {now.get('socket')}\n  log: {now.get('log')}")
    return EXIT_OK


def _start(settings: Settings, args: argparse.Namespace, where: Any) -> int:
    from spatiora_tui.cli.common import quit_note
    from spatiora_tui.remote import userengine

    status = status_printer()

    def say(text: str) -> None:
        status(None)
        print(text, file=sys.stderr, flush=True)

    engine = userengine.connect(settings, where, say)
    try:
        model = engine.load(on_progress=lambda text: status(f"{text}…"))
        status(None)
        print(f"your engine holds {model.name} ({model.device} {model.dtype})", file=sys.stderr)
    finally:
        engine.close()
    quit_note(args)
    return EXIT_OK


def _logs(where: Any, lines: int, follow: bool) -> int:
    if lines < 0:
        raise UsageError(f"-n takes a number of lines, 0 or more; got {lines}")
    try:
        stream = where.log.open("rb")
    except FileNotFoundError:
        print(f"no log yet: {where.log} (written once your engine has started)", file=sys.stderr)
        return EXIT_FAILED
    with stream:
        text = stream.read().decode("utf-8", "replace").splitlines()
        for line in text[-lines:] if lines else ():
            print(one_line(line) if line.strip() else "")
        while follow:
            chunk = stream.read()
            if chunk:
                sys.stdout.write(chunk.decode("utf-8", "replace"))
                sys.stdout.flush()
            else:
                time.sleep(0.25)
    return EXIT_OK


def _run(settings: Settings, where: Any) -> int:
    from spatiora_tui.cli.serve import _engine
    from spatiora_tui.remote.server import Hub, Policy
    from spatiora_tui.remote.unix import AddressError
    from spatiora_tui.remote.userengine import run_engine

    def say(text: str) -> None:
        print(f"{time.strftime('%H:%M:%S')} {text}", file=sys.stderr, flush=True)

    engine, telemetry = _engine(settings)
    # Only its owner reaches it (remote/unix.py): it may load whatever its owner could here.
    hub = Hub(engine, telemetry, Policy("any", configured_model=settings.model.source), log=say)
    try:
        say(f"spatiora engine, config {settings.source_file or 'none (built-in defaults)'}")
        _host_queue(hub, settings, where, telemetry, say)
        why = run_engine(hub, where, settings, settings.engine.idle_exit_minutes * 60, say)
        say(why)
    except AddressError as exc:
        raise UsageError(str(exc)) from None
    finally:
        hub.close()
        telemetry.stop()
    return EXIT_OK


def _host_queue(hub: Any, settings: Settings, where: Any, telemetry: Any, say: Any) -> None:
    """The engine keeps the user's queue (remote/hosted.py), in a queue file of its own: what an
    engine that died left waiting is taken up again, the job it was running first."""
    from spatiora_tui.jobs.session import Session
    from spatiora_tui.jobs.store import QueueStore
    from spatiora_tui.remote.userengine import last_end

    session = Session(hub.engine, settings, store=QueueStore(where.queue), telemetry=telemetry)
    orphans = session.orphans()
    # A job the last engine was running when it died fails with how it died: it may be why.
    why = (last_end(where) or "the engine stopped") if orphans else None
    count, problems = session.adopt(orphans, interrupted=why, keep_ids=True)
    for problem in problems:
        say(f"queue: {problem}")
    if count:
        say(f"took up {count} job(s) the last engine left queued")
    hub.host(session)


def _bridge(settings: Settings, where: Any) -> int:
    from spatiora_tui.remote import userengine

    if sys.stdin.isatty() or sys.stdout.isatty():
        raise UsageError(
            "engine bridge relays the engine's binary protocol for `--engine ssh://`; it is not for a terminal"
        )

    def say(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    why = userengine.bridge(settings, where, say)
    if why is not None:
        say(why)  # the client's ssh hands it on: the last line the link says
        return EXIT_FAILED
    return EXIT_OK


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min" if hours else f"{minutes} min {secs} s" if minutes else f"{secs} s"


def _rss_mb(pid: int) -> float | None:
    try:
        import psutil

        return float(psutil.Process(pid).memory_info().rss) / MB
    except Exception:  # gone, or not ours to read
        return None
