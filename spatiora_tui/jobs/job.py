"""A job: one image to make, where it is in its life, and what came of it."""

from __future__ import annotations

import dataclasses
import enum
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spatiora_tui.engine.api import GenerationRequest, GenerationResult
from spatiora_tui.engine.codec import decode_as


class JobState(str, enum.Enum):
    QUEUED = "queued"  # waiting its turn
    PAUSED = "paused"  # waiting while the queue is paused
    RUNNING = "running"
    DONE = "done"  # an image came out (saved, or held in memory when the save failed)
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def waiting(self) -> bool:
        return self in (JobState.QUEUED, JobState.PAUSED)

    @property
    def ended(self) -> bool:
        return self in (JobState.DONE, JobState.FAILED, JobState.CANCELLED)


class JobKind(str, enum.Enum):
    IMAGE = "image"  # one image from the prompt pane or `spatiora generate`
    BATCH = "batch"  # one of N images with seeds s, s+1, ...
    SWEEP = "sweep"  # one cell of an X/Y/Z sweep


@dataclass
class Job:
    """One generation in the session's queue. Mutated only by its Session, under its lock."""

    id: int
    request: GenerationRequest
    kind: JobKind = JobKind.IMAGE
    #: The batch or sweep it belongs to ("" for a lone image); see Session.groups.
    group: str = ""
    #: Where it sits in its group, e.g. "seed 12" or "weight:floorplan=0.6 · seed=2".
    label: str = ""
    #: (x, y, z) indices of a sweep cell; () elsewhere.
    cell: tuple[int, ...] = ()
    #: A sweep cell's axes: (title, value labels) for X, Y, Z (kept so a resumed sweep still
    #: draws its grid); () elsewhere.
    axes: tuple[tuple[str, tuple[str, ...]], ...] = ()
    state: JobState = JobState.QUEUED
    created: float = field(default_factory=time.time)
    started: float | None = None
    ended: float | None = None
    steps_done: int = 0
    steps_total: int | None = None  # known once it starts (the task fills in what the request leaves out)
    result: GenerationResult | None = None  # its image is dropped once saved (the file holds it)
    path: Path | None = None  # where its image was saved
    error: str | None = None  # why it failed, or why its image is not saved
    #: The job a retry queued in its place: a failed job stays in the queue file (with its
    #: reason, to be retried) until it is retried or dismissed.
    retried_as: int | None = None
    #: A failed job the user let go (cancel on it): no longer kept in the queue file.
    dismissed: bool = False
    out_of_memory: bool = False
    #: Seconds per step it ran at (for the others' ETA).
    seconds_per_step: float | None = None
    #: Where its image is saved, when its submitter named a place (`generate --out` through the
    #: user's engine); None: the session's own output folder. `output_name`: a file name's stem
    #: (numbered in a group).
    output_dir: Path | None = None
    output_name: str | None = None
    #: Who queued it, when another client of the user's engine did: its label ("spatiora
    #: generate on /dev/pts/3"); "" for the window or command that runs the session itself.
    by: str = ""
    #: Who cancelled it, when another client of the user's engine did (its label); "" else.
    cancelled_by: str = ""

    @property
    def task(self) -> str:
        return self.request.task

    def to_record(self) -> dict[str, Any]:
        """What the queue file keeps of a job (the request and its place in a group)."""
        record: dict[str, Any] = {
            "id": self.id,
            "kind": self.kind.value,
            "group": self.group,
            "label": self.label,
            "cell": list(self.cell),
            "created": self.created,
            "request": {k: v for k, v in dataclasses.asdict(self.request).items() if v is not None},
        }
        if self.axes:
            record["axes"] = [[title, list(labels)] for title, labels in self.axes]
        if self.by:
            record["by"] = self.by
        if self.output_dir is not None:
            record["output_dir"] = str(self.output_dir)
            if self.output_name is not None:
                record["output_name"] = self.output_name
        if self.state is JobState.DONE and self.path is not None:
            record["path"] = str(self.path)  # a finished member of a group still running
        if self.state is JobState.FAILED:
            record["failed"] = self.error or "failed"
        if self.state is JobState.RUNNING:
            record["running"] = True  # it was being made when the file was written
        return record

    @classmethod
    def from_record(cls, record: dict[str, Any], new_id: int, interrupted: str | None = None) -> Job:
        """A job read back from a queue file; ValueError (a CodecError naming the field for a
        request that is not one), TypeError or KeyError when it is not one. `interrupted`: why
        the process that wrote the file ended; a job it was running then is failed, saying so
        (else it is queued to run again)."""
        req = decode_as(GenerationRequest, record["request"])  # CodecError naming the field
        path = record.get("path")
        axes = tuple((str(title), tuple(str(v) for v in labels)) for title, labels in record.get("axes", ()))
        cell = tuple(int(i) for i in record.get("cell", ()))
        if axes and (len(cell) != len(axes) or not all(0 <= i < len(a[1]) for i, a in zip(cell, axes))):
            raise ValueError(f"sweep cell {list(cell)} is not on its grid")
        failed = record.get("failed")
        if record.get("running") and interrupted and not path:
            failed = interrupted  # how the process ended: "the engine was killed by SIGKILL ..."
        output_dir, output_name = record.get("output_dir"), record.get("output_name")
        if output_dir is not None and not isinstance(output_dir, str):
            raise TypeError(f"output_dir must be a folder's path, not {type(output_dir).__name__}")
        if output_name is not None and not isinstance(output_name, str):
            raise TypeError(f"output_name must be a file name, not {type(output_name).__name__}")
        return cls(
            id=new_id,
            request=req,
            kind=JobKind(record.get("kind", "image")),
            group=str(record.get("group", "")),
            label=str(record.get("label", "")),
            cell=cell,
            axes=axes,
            created=float(record.get("created", time.time())),
            state=JobState.DONE if path else JobState.FAILED if failed else JobState.QUEUED,
            error=str(failed) if failed and not path else None,
            path=Path(path) if path else None,
            output_dir=Path(output_dir) if output_dir else None,
            output_name=output_name if output_dir else None,
            by=str(record.get("by") or ""),
        )

    def to_view(self) -> dict[str, Any]:
        """Everything a window that mirrors the session shows of a job (remote/hosted.py sends
        it): the record, and where the job is in its life."""
        return {
            **self.to_record(),
            "state": self.state.value,
            "started": self.started,
            "ended": self.ended,
            "steps_done": self.steps_done,
            "steps_total": self.steps_total,
            "path": str(self.path) if self.path is not None else None,
            "error": self.error,
            "retried_as": self.retried_as,
            "out_of_memory": self.out_of_memory,
            "seconds_per_step": self.seconds_per_step,
            "cancelled_by": self.cancelled_by,
        }

    @classmethod
    def from_view(cls, view: dict[str, Any]) -> Job:
        """A job as to_view() described it, under its own id (ValueError, TypeError or KeyError
        when it is not one)."""
        job = cls.from_record(view, int(view["id"]))
        job.state = JobState(view["state"])
        job.started, job.ended = _number(view.get("started")), _number(view.get("ended"))
        job.steps_done = int(view.get("steps_done") or 0)
        total = view.get("steps_total")
        job.steps_total = int(total) if total is not None else None
        job.path = Path(view["path"]) if view.get("path") else None
        job.error = str(view["error"]) if view.get("error") is not None else None
        retried = view.get("retried_as")
        job.retried_as = int(retried) if retried is not None else None
        job.out_of_memory = bool(view.get("out_of_memory"))
        job.seconds_per_step = _number(view.get("seconds_per_step"))
        job.cancelled_by = str(view.get("cancelled_by") or "")
        return job


def _number(value: Any) -> float | None:
    return float(value) if value is not None else None


@dataclass
class Group:
    """A batch or a sweep: jobs whose images end up on one sheet."""

    id: str
    kind: JobKind
    job_ids: list[int]
    #: For a sweep, the axes' names and their values' labels, (x, y, z) order.
    axes: tuple[tuple[str, tuple[str, ...]], ...] = ()
    sheet: Path | None = None
