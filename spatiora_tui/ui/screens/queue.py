"""The queue: every job of this session with its state, task, prompt, progress and ETA, and the
keys that steer it (move, cancel, retry, pause/resume the whole queue)."""

from __future__ import annotations

from collections.abc import Callable

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Static

from spatiora_tui.jobs.job import Job, JobState
from spatiora_tui.jobs.view import Queue
from spatiora_tui.ui.text import clip, markup_safe

COLUMNS = ("#", "state", "task", "prompt", "progress", "ETA")
PROMPT_WIDTH = 48

_STATE_STYLE = {
    JobState.RUNNING: "bold",
    JobState.QUEUED: "",
    JobState.PAUSED: "yellow",
    JobState.DONE: "green",
    JobState.FAILED: "bold red",
    JobState.CANCELLED: "dim",
}


def eta_text(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    if seconds < 90:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min"


class QueueScreen(Screen[None]):
    BINDINGS = [
        Binding("escape", "close", "Back", id="queue.close"),
        Binding("u,shift+up", "move(-1)", "Up", id="queue.up"),
        Binding("d,shift+down", "move(1)", "Down", id="queue.down"),
        Binding("x,delete", "cancel_job", "Cancel job", id="queue.cancel"),
        Binding("r", "retry", "Retry", id="queue.retry"),
        Binding("p,space", "pause", "Pause/resume queue", id="queue.pause"),
        Binding("X", "cancel_all", "Cancel all", id="queue.cancel_all"),
    ]
    DEFAULT_CSS = """
    QueueScreen DataTable { height: 1fr; }
    QueueScreen #queue-status { height: auto; padding: 0 1; }
    """

    def __init__(self, session: Queue, kick: Callable[[], None], close_key: str) -> None:
        super().__init__()
        self._session = session
        self._kick = kick
        self._close_key = close_key

    def compose(self) -> ComposeResult:
        yield DataTable(id="queue-table", cursor_type="row", zebra_stripes=True)
        yield Static("", id="queue-status")
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        for name in COLUMNS:
            table.add_column(name, key=name)
        self.refresh_jobs()
        table.focus()

    @property
    def table(self) -> DataTable[str | Text]:
        return self.query_one(DataTable)

    def selected(self) -> Job | None:
        table = self.table
        if table.row_count == 0:
            return None
        key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
        return self._session.job(int(key)) if key is not None else None

    def refresh_jobs(self, keep: int | None = None) -> None:
        """Redraw every row, keeping the cursor on the same job (or on `keep`)."""
        table = self.table
        current = self.selected()
        keep = keep if keep is not None else (current.id if current is not None else None)
        jobs = self._session.jobs()
        table.clear()
        for job in jobs:
            table.add_row(*self._cells(job), key=str(job.id))
        ids = [job.id for job in jobs]
        if keep in ids:
            table.move_cursor(row=ids.index(keep))
        elif self._session.running is not None:
            table.move_cursor(row=ids.index(self._session.running.id))
        self._summary(jobs)

    def show_progress(self, job_id: int) -> None:
        """The running job's progress and every waiting job's ETA (at the frame clock's pace)."""
        table = self.table
        for job in self._session.jobs():
            if job.state is JobState.RUNNING or job.state.waiting:
                try:
                    table.update_cell(str(job.id), "progress", Text(self._progress(job)))
                    table.update_cell(str(job.id), "ETA", eta_text(self._session.eta_s(job.id)))
                except Exception:  # the row went away between the two reads
                    continue

    def _cells(self, job: Job) -> tuple[str | Text, ...]:
        # Text, not markup: a prompt is the user's text, drawn as typed.
        prompt = Text(clip(job.request.prompt, PROMPT_WIDTH))
        if job.label:
            prompt.append(f" ({job.label})", style="dim")
        if job.by:  # who queued it, on the user's engine (a window, or a command in a shell)
            prompt.append(f" · {job.by}", style="dim italic")
        return (
            str(job.id),
            Text(job.state.value, style=_STATE_STYLE[job.state]),
            Text(job.task),
            prompt,
            Text(self._progress(job)),
            eta_text(self._session.eta_s(job.id)) if not job.state.ended else "",
        )

    def _progress(self, job: Job) -> str:
        if job.state is JobState.FAILED:
            return clip(job.error or "failed", 40)
        if job.state is JobState.DONE:
            return "saved" if job.path is not None else "NOT SAVED"
        total = job.steps_total or self._session.steps_of(job)
        if job.state is JobState.RUNNING:
            return f"{job.steps_done}/{total}"
        if job.state is JobState.CANCELLED:
            return f"cancelled at {job.steps_done}" if job.steps_done else "cancelled"
        return f"{total} steps"

    def _summary(self, jobs: list[Job]) -> None:
        waiting = sum(j.state.waiting for j in jobs)
        state = "[b $warning]paused[/]: nothing new starts" if self._session.paused else "running"
        self.query_one("#queue-status", Static).update(
            f"queue {state} · {waiting} waiting · {len(jobs)} in this session · "
            f"u/d move · x cancel · r retry · p pause/resume · {markup_safe(self._close_key)} or Esc back"
        )

    def say(self, text: str) -> None:
        self.app.notify(markup_safe(text), timeout=4)

    # -- keys ---------------------------------------------------------------------------------

    def action_close(self) -> None:
        self.dismiss(None)

    def action_move(self, delta: int) -> None:
        job = self.selected()
        if job is None or not job.state.waiting:
            self.say("only a waiting job moves")
            return
        if self._session.move(job.id, delta):
            self.refresh_jobs(keep=job.id)

    def action_cancel_job(self) -> None:
        job = self.selected()
        if job is None or not self._session.cancel(job.id):
            self.say("that job has already ended")
            return
        self.say(f"job {job.id} cancelled" if job.state.ended else f"cancelling job {job.id}… (within one step)")
        self.refresh_jobs(keep=job.id)

    def action_cancel_all(self) -> None:
        count = self._session.cancel_all()
        self.say(f"cancelled {count} job(s)" if count else "nothing to cancel")
        self.refresh_jobs()

    def action_retry(self) -> None:
        job = self.selected()
        again = self._session.retry(job.id) if job is not None else None
        if again is None:
            self.say("only a failed or cancelled job can be retried")
            return
        self.say(f"job {job.id if job else ''} queued again as job {again.id}")
        self.refresh_jobs(keep=again.id)
        self._kick()

    def action_pause(self) -> None:
        if self._session.paused:
            self._session.resume()
            self.say("queue resumed")
            self._kick()
        else:
            self._session.pause()
            self.say("queue paused: the running job finishes, nothing new starts")
        self.refresh_jobs()
