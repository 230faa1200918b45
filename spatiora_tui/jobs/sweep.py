"""X/Y/Z sweeps: AUTOMATIC1111's "X/Y/Z plot", as axes typed on one line each.

An axis is `KIND=VALUES`, the values separated by commas (CSV quoting for a value that holds a
comma: `prompt=oak,"walnut, dark"`):

    seed=1,2,3   or a range: seed=10-13           steps=10,20,30
    guidance=3,7.5   (cfg=...)                     scheduler=euler_a,dpmpp_2m_karras  (sampler=...)
    size=512x512,768x512                           task=interior,floorplan
    weight:NAME=0.2,0.6,1.0  the weight of adapter NAME, as a <lora:NAME:W> tag in the prompt
    prompt=oak,walnut,marble  Prompt S/R: the first value is searched in the prompt and each
                              value replaces it (the first cell keeps the prompt as written)
    strength=0.4,0.6,0.8  (denoising=...)  image-to-image: how much of the init image changes

The sweep is the product of its axes (X varies fastest); each cell is one job of the queue, with
the seed fixed across cells unless seed is an axis. Nothing here imports torch or the UI.
"""

from __future__ import annotations

import csv
import dataclasses
import itertools
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from spatiora_tui.config import GUIDANCE_RANGE, SCHEDULERS, SEED_RANGE, STEPS_RANGE, check_size, parse_size
from spatiora_tui.engine.api import EngineError, GenerationRequest
from spatiora_tui.engine.init_image import check_strength, peek_init_image, strength_of
from spatiora_tui.engine.requests import task_for
from spatiora_tui.prompts import MAX_WEIGHT, with_lora_weight

if TYPE_CHECKING:
    from spatiora_tui.config import Settings

#: Most cells in one sweep (as many as a batch may have).
MAX_CELLS = 100
#: The axes' names in order, for a job's label and the grid's titles.
AXIS_NAMES = ("X", "Y", "Z")
KINDS = ("seed", "steps", "guidance", "scheduler", "size", "task", "weight:NAME", "prompt", "strength")
_ALIASES = {"cfg": "guidance", "sampler": "scheduler", "sr": "prompt", "prompt s/r": "prompt", "denoising": "strength"}


class SweepError(ValueError):
    """An axis that cannot be swept; the message names it and says what to write."""


@dataclass(frozen=True)
class Axis:
    """One axis: what varies and its values, as typed (the labels of the grid)."""

    kind: str  # seed | steps | guidance | scheduler | size | task | weight | prompt | strength
    values: tuple[str, ...]
    adapter: str = ""  # the adapter of a weight axis

    @property
    def title(self) -> str:
        """How the grid names the axis: "seed", "weight:floorplan", "prompt"."""
        return f"weight:{self.adapter}" if self.kind == "weight" else self.kind

    @property
    def spec(self) -> str:
        """The axis as it would be typed again."""
        return f"{self.title}={_join(self.values)}"

    def label(self, index: int) -> str:
        """A value's label on the grid, e.g. "seed=2", "weight:floorplan=0.6", "walnut"."""
        value = self.values[index]
        return value if self.kind == "prompt" else f"{self.title}={value}"

    def apply(self, request: GenerationRequest, index: int) -> GenerationRequest:
        value = self.values[index]
        if self.kind == "seed":
            return dataclasses.replace(request, seed=int(value))
        if self.kind == "steps":
            return dataclasses.replace(request, steps=int(value))
        if self.kind == "guidance":
            return dataclasses.replace(request, guidance=float(value))
        if self.kind == "scheduler":
            return dataclasses.replace(request, scheduler=_scheduler_name(value))
        if self.kind == "size":
            width, height = parse_size(value)
            return dataclasses.replace(request, width=width, height=height)
        if self.kind == "task":
            return dataclasses.replace(request, task=value)
        if self.kind == "weight":
            return dataclasses.replace(request, prompt=with_lora_weight(request.prompt, self.adapter, float(value)))
        if self.kind == "strength":
            return dataclasses.replace(request, strength=float(value))
        # Prompt S/R: the first value is what the prompt holds.
        return dataclasses.replace(request, prompt=request.prompt.replace(self.values[0], value))


def _join(values: tuple[str, ...]) -> str:
    return ",".join(f'"{v}"' if "," in v or '"' in v else v for v in values)


def _scheduler_name(value: str) -> str:
    """A config name, or an A1111 label ("DPM++ 2M Karras"), as the config name."""
    if value in SCHEDULERS:
        return value
    for scheduler in SCHEDULERS.values():
        if value.lower() in (scheduler.name, scheduler.a1111.lower()):
            return scheduler.name
    raise SweepError(f"scheduler={value}: no such sampler; one of {', '.join(SCHEDULERS)}")


def _split(text: str) -> list[str]:
    try:
        rows = list(csv.reader([text], skipinitialspace=True))
    except csv.Error as exc:
        raise SweepError(f"could not read the values {text!r}: {exc}") from None
    return [v.strip() for v in (rows[0] if rows else [])]


def _integers(kind: str, items: list[str], low: int, high: int) -> list[str]:
    """Integers and inclusive ranges "A-B", as text, each checked against [low, high]."""
    values: list[str] = []
    for item in items:
        first, dash, last = item.partition("-")
        try:
            start = int(first)
            stop = int(last) if dash else start
        except ValueError:
            raise SweepError(f"{kind}={item}: not a whole number or a range like 10-13") from None
        if stop < start:
            raise SweepError(f"{kind}={item}: a range goes up, e.g. {stop}-{start}")
        if stop - start >= MAX_CELLS:
            raise SweepError(f"{kind}={item}: a range of more than {MAX_CELLS} values")
        for value in range(start, stop + 1):
            if not low <= value <= high:
                raise SweepError(f"{kind}={value}: must be between {low} and {high}")
            values.append(str(value))
    return values


def _numbers(kind: str, items: list[str], low: float, high: float) -> list[str]:
    for item in items:
        try:
            value = float(item)
        except ValueError:
            raise SweepError(f"{kind}={item}: not a number") from None
        if not low <= value <= high:  # NaN fails too
            raise SweepError(f"{kind}={item}: must be between {low:g} and {high:g}")
    return items


def parse_axis(spec: str) -> Axis:
    """An axis from its text, e.g. "weight:floorplan=0.2,0.6,1.0"; SweepError naming the fault."""
    key, equals, rest = spec.partition("=")
    kind = key.strip().lower()
    kind = _ALIASES.get(kind, kind)
    if not equals or not kind:
        raise SweepError(f"{spec!r}: write an axis as KIND=VALUES, e.g. seed=1,2,3; kinds: {', '.join(KINDS)}")
    items = _split(rest)
    if not items or any(not v for v in items):
        raise SweepError(f"{key.strip()}=: give values separated by commas, with none empty")
    adapter = ""
    if kind == "seed":
        values = _integers(kind, items, *SEED_RANGE)
    elif kind == "steps":
        values = _integers(kind, items, *STEPS_RANGE)
    elif kind == "guidance":
        values = _numbers(kind, items, *GUIDANCE_RANGE)
    elif kind == "scheduler":
        for item in items:
            _scheduler_name(item)  # refuses an unknown one
        values = items
    elif kind == "size":
        for item in items:
            try:
                sides = parse_size(item)
            except ValueError as exc:
                raise SweepError(f"size={item}: {exc}") from None
            problem = next(filter(None, map(check_size, sides)), None)
            if problem:
                raise SweepError(f"size={item}: width and height {problem}")
        values = items
    elif kind == "task":
        values = items
    elif kind.startswith("weight:"):
        adapter = key.strip()[len("weight:") :].strip()
        if not adapter or any(c in adapter for c in "<>:"):
            raise SweepError(f"{key.strip()}: name the adapter, e.g. weight:floorplan=0.2,0.6,1.0")
        kind = "weight"
        values = _numbers(f"weight:{adapter}", items, -MAX_WEIGHT, MAX_WEIGHT)
    elif kind == "prompt":
        values = items
    elif kind == "strength":
        values = _numbers(kind, items, 0.0, 1.0)
        if any(float(v) == 0 for v in values):
            raise SweepError("strength=0: changes nothing; a strength is above 0 and at most 1")
    else:
        raise SweepError(f"{key.strip()}: not an axis; one of {', '.join(KINDS)}")
    if len(set(values)) != len(values):
        raise SweepError(f"{key.strip()}: a value appears twice ({_join(tuple(values))})")
    return Axis(kind, tuple(values), adapter)


def parse_axes(text: str) -> list[Axis]:
    """Up to three axes on one line, separated by "|" (outside double quotes), as the prompt
    pane's sweep field takes them: "weight:floorplan=0.2,1 | seed=1,2,3"."""
    parts: list[str] = []
    current: list[str] = []
    quoted = False
    for ch in text:
        if ch == '"':
            quoted = not quoted
        if ch == "|" and not quoted:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    parts.append("".join(current))
    specs = [p.strip() for p in parts]
    if any(not spec for spec in specs):
        raise SweepError("an empty axis between the |s; write e.g. seed=1,2,3 | steps=10,20")
    if len(specs) > len(AXIS_NAMES):
        raise SweepError(f"{len(specs)} axes; a sweep has at most {len(AXIS_NAMES)} (X | Y | Z)")
    return [parse_axis(spec) for spec in specs]


@dataclass(frozen=True)
class Cell:
    """One image of a sweep: where it sits on the grid, its label and its request."""

    index: tuple[int, ...]  # (x, y, z) positions, as many as there are axes
    label: str
    request: GenerationRequest


def expand(base: GenerationRequest, axes: list[Axis]) -> list[Cell]:
    """The cells of a sweep over `axes` (X, then Y, then Z), X varying fastest. The base request
    needs a seed (the caller draws one) so every cell shares it unless seed is an axis."""
    if not 1 <= len(axes) <= len(AXIS_NAMES):
        raise SweepError(f"a sweep has one to {len(AXIS_NAMES)} axes (X, Y, Z)")
    titles = [a.title for a in axes]
    for title in titles:
        if titles.count(title) > 1:
            raise SweepError(f"two axes vary {title}; give each its own kind")
    count = math.prod(len(a.values) for a in axes)
    if count > MAX_CELLS:
        raise SweepError(f"the sweep has {count} cells; at most {MAX_CELLS} (use fewer values)")
    for axis in axes:
        if axis.kind == "strength" and not base.init_image:
            raise SweepError("strength varies image-to-image: give an init image too")
        if axis.kind == "prompt" and axis.values[0] not in base.prompt:
            raise SweepError(
                f"prompt={axis.values[0]}: Prompt S/R searches the prompt for its first value, "
                f"and {axis.values[0]!r} is not in it"
            )
    cells = []
    # itertools.product varies its last argument fastest: give it Z, Y, X.
    for reversed_index in itertools.product(*(range(len(a.values)) for a in reversed(axes))):
        index = tuple(reversed(reversed_index))
        request = base
        for axis, i in zip(axes, index):
            request = axis.apply(request, i)
        label = " · ".join(axis.label(i) for axis, i in zip(axes, index))
        cells.append(Cell(index, label, request))
    return cells


def checked_cells(settings: Settings, base: GenerationRequest, axes: list[Axis]) -> list[Cell]:
    """expand(), with every cell checked as the engine will check it (task, steps, size, the
    init image's file and the strength): SweepError names the first cell that cannot run, so
    nothing is queued or loaded for it."""
    cells = expand(base, axes)
    for number, cell in enumerate(cells):
        try:
            task = task_for(settings, cell.request)
            if cell.request.init_image:
                if number == 0:
                    peek_init_image(cell.request.init_image)  # the header only: the UI thread calls this
                check_strength(strength_of(cell.request), task.steps)
        except EngineError as exc:
            raise SweepError(f"{cell.label}: {exc}") from None
    return cells
