"""`spatiora queue watch | cancel | retry | pause | resume`: the queue your engine keeps, from a
shell (over SSH, without the TUI). Nothing here starts an engine or loads a model: with no
engine running there is no queue to act on, and the command says so."""

from __future__ import annotations

import argparse
import sys
import threading
import time
from typing import Any

from spatiora_tui.cli.common import EXIT_FAILED, EXIT_OK, UsageError, one_line

#: Seconds `watch` waits, once the queue is empty, for the last image's news.
QUIET_S = 1.0


def _place(args: argparse.Namespace) -> Any:
    from spatiora_tui.remote import userengine

    return userengine.place(getattr(args, "gpu", None))


def _running(where: Any) -> bool:
    from spatiora_tui.remote import userengine

    if userengine.read_record(where) is not None:
        return True
    print("no engine of yours is running, so there is no queue (the next `spatiora` starts it)", file=sys.stderr)
    return False


def change(args: argparse.Namespace) -> int:
    """cancel JOB... | cancel all | retry JOB | pause | resume, on your engine's queue."""
    from spatiora_tui.engine.api import EngineError
    from spatiora_tui.remote import userengine

    asks = _requests(args)
    where = _place(args)
    if not _running(where):
        return EXIT_FAILED
    try:
        replies = userengine.ask(where, [{"type": "hello", "client": "queue"}, *asks])[1:]
    except EngineError as exc:
        print(f"spatiora: error: {one_line(str(exc))}", file=sys.stderr)
        return EXIT_FAILED
    failed = False
    for ask, reply in zip(asks, replies):
        said = _said(args.action, ask, reply)
        failed |= said.startswith("spatiora: error:") or (said.startswith("job ") and "not " in said)
        print(said, file=sys.stderr)
    return EXIT_FAILED if failed else EXIT_OK


def _requests(args: argparse.Namespace) -> list[dict[str, Any]]:
    """The session requests an action makes; UsageError for job numbers that are not."""
    action, jobs = args.action, list(args.jobs)
    if action in ("pause", "resume"):
        return [{"type": f"session.{action}"}]
    if action == "cancel" and jobs == ["all"]:
        return [{"type": "session.cancel_all"}]
    if not jobs:
        raise UsageError(
            f"queue {action} needs job numbers (spatiora queue lists them)" + (", or all" if action == "cancel" else "")
        )
    numbers = []
    for job in jobs:
        if not job.isdigit():
            raise UsageError(f"{job!r} is not a job number (spatiora queue lists them)")
        numbers.append(int(job))
    return [{"type": f"session.{action}", "job": number} for number in numbers]


def _said(action: str, ask: dict[str, Any], reply: dict[str, Any]) -> str:
    if reply.get("type") != "ok":
        return f"spatiora: error: {one_line(str(reply.get('message') or 'refused'))}"
    job = ask.get("job")
    if action == "pause":
        return "paused: the running image finishes, nothing new starts (spatiora queue resume)"
    if action == "resume":
        return "resumed"
    if ask["type"] == "session.cancel_all":
        return f"cancelled {reply.get('count', 0)} job(s)"
    if action == "cancel":
        return (
            f"job {job}: cancelled"
            if reply.get("done")
            else f"job {job}: not cancelled (it has ended, or there is none)"
        )
    again = reply.get("job")
    return (
        f"job {job}: queued again as job {again}"
        if again is not None
        else f"job {job}: not retried (only a failed or cancelled job is)"
    )


def watch(args: argparse.Namespace) -> int:
    """Follow your engine's queue until nothing runs or waits: the list, then the running
    image's progress and each image as it is saved. ctrl+c stops watching; the queue goes on."""
    import queue as queues

    from spatiora_tui.cli.generate import ProgressLine, run_cancellable
    from spatiora_tui.engine.api import EngineError
    from spatiora_tui.jobs import events
    from spatiora_tui.jobs.job import JobState
    from spatiora_tui.remote.client import RemoteEngine
    from spatiora_tui.remote.hosted import QueueShown
    from spatiora_tui.remote.unix import SocketLink

    where = _place(args)
    if not _running(where):
        return EXIT_FAILED
    news: queues.Queue[Any] = queues.Queue()
    try:
        engine = RemoteEngine(
            lambda on_frame, on_end: SocketLink(where.socket, on_frame, on_end), name="watch", resume=False
        )
    except EngineError as exc:
        print(f"spatiora: error: {one_line(str(exc))}", file=sys.stderr)
        return EXIT_FAILED
    progress = ProgressLine()

    def follow(cancel: threading.Event) -> str:
        nonlocal progress
        engine.watch_session(news.put)
        engine.watch_link(lambda why: news.put(("link", why)))
        shown, empty_since = False, 0.0
        while not cancel.is_set():
            try:
                item = news.get(timeout=0.1)
            except queues.Empty:
                # The list may say "empty" before the last image's own news: done once quiet.
                if empty_since and time.monotonic() - empty_since > QUIET_S:
                    return ""
                continue
            if isinstance(item, tuple) and item[1] is not None:
                return f"the link to your engine dropped ({one_line(item[1])})"
            if isinstance(item, QueueShown):
                live = [job for job in item.jobs if not job.state.ended]
                if not shown:
                    shown = True
                    ended = [job for job in item.jobs if job.state.ended]
                    print(f"your engine's queue: {len(live)} running or waiting, {len(ended)} ended", file=sys.stderr)
                    for job in ended[-5:]:
                        end = f"saved {job.path}" if job.path else one_line(job.error or job.state.value)
                        print(f"  job {job.id} ({job.task}): {end}", file=sys.stderr)
                    for job in live:
                        if job.state is JobState.RUNNING:
                            total = job.steps_total or "?"
                            print(f"job {job.id} ({job.task}) running, step {job.steps_done}/{total}", file=sys.stderr)
                empty_since = 0.0 if live else empty_since or time.monotonic()
            elif isinstance(item, events.JobStarted):
                progress = ProgressLine()
                print(f"job {item.job_id} ({item.task}) started", file=sys.stderr)
            elif isinstance(item, events.JobStepped):
                progress.update(item.preview)
            elif isinstance(item, events.JobFinished):
                progress.done()
                if item.path is not None:
                    print(item.path)
                    print(f"  job {item.job_id}: saved {item.path}", file=sys.stderr)
                else:
                    print(
                        f"  job {item.job_id}: {'cancelled' if item.result.cancelled else item.save_error}",
                        file=sys.stderr,
                    )
            elif isinstance(item, events.JobFailed):
                progress.done()
                print(f"  job {item.job_id}: failed: {one_line(item.error)}", file=sys.stderr)
            elif isinstance(item, events.GroupFinished) and item.path is not None:
                print(item.path)
                print(f"{item.group}: {item.path}", file=sys.stderr)
        return ""

    try:
        why, interrupted = run_cancellable(follow)
    finally:
        engine.close()
    if why:
        print(f"spatiora: error: {why}", file=sys.stderr)
        return EXIT_FAILED
    print("stopped watching; your engine's queue goes on" if interrupted else "the queue is empty", file=sys.stderr)
    return EXIT_OK
