"""`spatiora queue`: the jobs that sessions which ended left queued (a dropped SSH session, a
crash, a quit with jobs waiting), listed, run headless, or cleared."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

from spatiora_tui.cli.common import (
    ENGINE_HELP,
    EXIT_CANCELLED,
    EXIT_FAILED,
    EXIT_OK,
    UsageError,
    engine_for,
    one_line,
    status_printer,
)
from spatiora_tui.config import Settings, user_state_dir

if TYPE_CHECKING:
    from spatiora_tui.jobs.store import Orphan, QueueStore

QUEUES = "queues"  # under the state folder; the TUI keeps its queue files there
#: What `spatiora queue` does; the first five act on your engine's queue.
ACTIONS = ("list", "watch", "cancel", "retry", "pause", "resume", "run", "clear")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser) -> None:
    parser = sub.add_parser(
        "queue",
        parents=[common],
        help="your engine's queue: list, watch, cancel, retry, pause, resume (and run or clear what "
        "ended in-process sessions left)",
        description="Your engine keeps the queue of every window and command: `list` shows what runs, "
        "what waits and what ended (with its file); `watch` follows it (ctrl+c stops watching, the "
        "queue goes on); `cancel JOB...` (or `cancel all`), `retry JOB`, `pause` and `resume` change "
        "it. Sessions that ran in their own process (--engine inproc) and ended leave their queued jobs "
        "in the state folder: `list` shows them too, `run` runs them, `clear` deletes them.",
        epilog="example: spatiora queue watch · spatiora queue cancel 12 13 · spatiora queue cancel all",
    )
    parser.add_argument("action", nargs="?", choices=ACTIONS, default="list")
    parser.add_argument("jobs", nargs="*", metavar="JOB", help="with cancel and retry: job numbers (cancel: or all)")
    parser.add_argument("--yes", action="store_true", help="clear without asking")
    parser.add_argument("--engine", metavar="WHERE", help="with run: " + ENGINE_HELP)
    parser.set_defaults(run=run)


def run(settings: Settings, args: argparse.Namespace) -> int:
    from spatiora_tui.jobs.store import QueueStore

    if args.jobs and args.action not in ("cancel", "retry"):
        raise UsageError(f"queue {args.action} takes no job numbers (cancel and retry do)")
    if args.action in ("watch", "cancel", "retry", "pause", "resume"):
        from spatiora_tui.cli.engine_queue import change, watch

        return watch(args) if args.action == "watch" else change(args)

    store = QueueStore(user_state_dir() / QUEUES)
    orphans = store.orphans()
    records = [(orphan, record) for orphan in orphans for record in orphan.records]
    try:
        if args.action == "list":
            _engine_list(args)
            return _list(store, orphans, records)
        if args.action == "clear":
            return _clear(orphans, records, args.yes)
        return _run(settings, args, store, orphans)
    finally:
        for orphan in orphans:
            orphan.release()


def _engine_list(args: argparse.Namespace) -> None:
    """The queue of the user's engine, when one runs (none is started for this): what runs, what
    waits, and what ended since it started (the newest 100), with where each image went."""
    from spatiora_tui.cli.common import USER_ENGINE, engine_choice
    from spatiora_tui.engine.api import EngineError
    from spatiora_tui.remote import userengine

    if engine_choice(args) != USER_ENGINE:
        return
    try:
        where = userengine.place(getattr(args, "gpu", None))
        if userengine.read_record(where) is None:
            return
        _, reply = userengine.ask(where, [{"type": "hello", "client": "queue"}, {"type": "session.jobs"}])
    except EngineError as exc:
        print(f"warning: your engine's queue could not be read: {one_line(str(exc))}", file=sys.stderr)
        return
    views = [view for view in reply.get("jobs") or () if isinstance(view, dict)]
    if reply.get("type") != "ok" or not views:
        print("your engine's queue is empty", file=sys.stderr)
        return
    paused = " (paused: nothing new starts)" if reply.get("paused") else ""
    print(f"your engine's queue{paused}:")
    for view in views:
        print("  " + _engine_line(view))


def _engine_line(view: dict[str, Any]) -> str:
    """One job of the engine's queue: number, state, task, seed, prompt, and how it ended."""
    request = view.get("request") if isinstance(view.get("request"), dict) else {}
    assert isinstance(request, dict)
    state = str(view.get("state", "?"))
    if state == "running" and view.get("steps_total"):
        state = f"running {view.get('steps_done', 0)}/{view['steps_total']}"
    end = ""
    if view.get("path"):
        end = f"  -> {one_line(str(view['path']))}"
    elif view.get("error"):
        end = f"  [{one_line(str(view['error']))}]"
    label = f" ({one_line(str(view['label']))})" if view.get("label") else ""
    return (
        f"job {view.get('id')}  {state}  {one_line(str(request.get('task', '?')))}  "
        f"seed {one_line(str(request.get('seed', 'random')))}  {one_line(str(request.get('prompt', '')))}"
        f"{label}{end}"
    )


def _list(store: QueueStore, orphans: list[Orphan], records: list[tuple[Orphan, dict[str, Any]]]) -> int:
    if not records:
        print(f"no queued jobs left by ended sessions in {store.folder}", file=sys.stderr)
    for orphan, record in records:
        request = record.get("request", {}) if isinstance(record.get("request"), dict) else {}
        seed = request.get("seed", "random")
        label = f" ({one_line(str(record['label']))})" if record.get("label") else ""
        failed = f"  [failed: {one_line(str(record['failed']))}]" if record.get("failed") else ""
        task = one_line(str(request.get("task", "?")))
        print(
            f"{one_line(orphan.path.name)}  {task}  seed {one_line(str(seed))}  "
            f"{one_line(str(request.get('prompt', '')))}{label}{failed}"
        )
    for orphan in orphans:
        for problem in orphan.problems:
            print(f"warning: {problem}", file=sys.stderr)
    return EXIT_OK


def _clear(orphans: list[Orphan], records: list[tuple[Orphan, dict[str, Any]]], yes: bool) -> int:
    if not records and not orphans:
        print("nothing to clear", file=sys.stderr)
        return EXIT_OK
    if not yes:
        if not sys.stdin.isatty():
            raise UsageError(f"this deletes {len(records)} queued job(s); add --yes to confirm")
        answer = input(f"delete {len(records)} queued job(s)? [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            print("nothing deleted", file=sys.stderr)
            return EXIT_OK
    kept = 0
    for orphan in orphans:
        if orphan.problems:
            kept += 1  # a file not fully read is never deleted unseen; it is named above
            for problem in orphan.problems:
                print(f"warning: {problem}", file=sys.stderr)
        else:
            orphan.remove()
    print(
        f"deleted {len(records)} queued job(s)" + (f"; {kept} unreadable file(s) kept" if kept else ""), file=sys.stderr
    )
    return EXIT_OK


def _run(settings: Settings, args: argparse.Namespace, store: QueueStore, orphans: list[Orphan]) -> int:
    if not any(orphan.records for orphan in orphans):
        print("no queued jobs to run", file=sys.stderr)
        return EXIT_OK
    with engine_for(settings, args) as (settings, remote):
        return _run_on(settings, remote, store, orphans)


def _run_on(settings: Settings, remote: Any, store: QueueStore, orphans: list[Orphan]) -> int:
    from spatiora_tui.cli.generate import BatchReport, run_session
    from spatiora_tui.engine.local import LocalEngine
    from spatiora_tui.hw.telemetry import Telemetry
    from spatiora_tui.jobs.session import Session

    telemetry = Telemetry.from_settings(settings)
    engine = remote or LocalEngine(settings, telemetry=telemetry)
    status = status_printer()
    engine.load(on_progress=lambda msg: status(f"{msg}…"))
    status(None)
    session = Session(engine, settings, store=store, telemetry=telemetry)
    count, problems = session.adopt(orphans)
    for problem in problems:
        print(f"warning: {problem}", file=sys.stderr)
    retried = [job for job in session.jobs() if job.state.value == "failed" and session.retry(job.id) is not None]
    if retried:
        print(f"retrying {len(retried)} job(s) that failed before", file=sys.stderr)
        count += len(retried)
    print(f"running {count} queued job(s); ctrl+c stops and keeps the rest queued", file=sys.stderr)
    try:
        _, interrupted = run_session(session, BatchReport(count), keep=True)
    finally:
        session.close()  # what is left (after ctrl+c) stays in the queue file
    jobs = session.jobs()
    failed = sum(job.state.value == "failed" and job.retried_as is None for job in jobs)
    left = len(session.waiting())
    print(f"{sum(job.path is not None for job in jobs)} saved, {failed} failed, {left} still queued", file=sys.stderr)
    if failed:
        print(
            "the failed jobs stay in the queue with their reasons: fix what they name, then `spatiora queue run` "
            "retries them (`spatiora queue clear` drops them)",
            file=sys.stderr,
        )
    if interrupted:
        return EXIT_CANCELLED
    return EXIT_FAILED if failed else EXIT_OK
