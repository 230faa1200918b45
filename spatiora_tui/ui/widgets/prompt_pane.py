"""The prompt pane: prompt, negative prompt, seed, steps, guidance, size, batch count, sampler,
sweep axes, init image and strength, pre-filled from the active task and editable per run. Reading it yields a
GenerationRequest (and a count or sweep) or says what is wrong."""

from __future__ import annotations

import unicodedata

from textual import on
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.widgets import Input, Label

from spatiora_tui.config import SCHEDULERS, SEED_RANGE, STEPS_RANGE, TaskSettings, parse_size
from spatiora_tui.engine.api import EngineError, GenerationRequest
from spatiora_tui.engine.init_image import DEFAULT_STRENGTH, check_strength, peek_init_image
from spatiora_tui.jobs.session import MAX_BATCH
from spatiora_tui.jobs.sweep import Axis, SweepError, parse_axes

SCHEDULER_HINT = "the task's (" + ", ".join(SCHEDULERS) + ")"


class FormError(ValueError):
    """A field holds something that cannot be used; the message names the field."""


def without_controls(text: str) -> tuple[str, int]:
    """`text` with control characters removed (tabs and newlines become spaces), and how many
    were removed. A pasted ESC sequence would otherwise sit in the field, and be drawn raw."""
    out, removed = [], 0
    for ch in text:
        if ch in "\t\n\r":
            out.append(" ")
        elif unicodedata.category(ch) == "Cc":
            removed += 1
        else:
            out.append(ch)
    return "".join(out), removed


class PromptPane(Vertical):
    class ControlsRemoved(Message):
        """Control characters were taken out of a text field (pasted, usually)."""

        def __init__(self, field: str, count: int) -> None:
            super().__init__()
            self.field = field
            self.count = count

    DEFAULT_CSS = """
    PromptPane { height: auto; }
    PromptPane Horizontal { height: auto; }
    PromptPane .field { width: 1fr; height: auto; }
    PromptPane .field.wide { width: 3fr; }
    PromptPane Label { padding: 0 1; color: $text-muted; }
    PromptPane Input { height: 1; border: none; padding: 0 1; margin: 0 1 0 1; background: $boost; }
    PromptPane Input:focus { border: none; background: $primary 25%; }
    """

    def compose(self) -> ComposeResult:
        yield Label("Prompt (Enter generates)")
        yield Input(placeholder="what to draw, e.g. a sunlit loft with oak floors", id="prompt")
        yield Label("Negative prompt")
        yield Input(id="negative")
        with Horizontal():
            with Vertical(classes="field"):
                yield Label("Seed", id="seed-label")
                yield Input(placeholder="random", id="seed", restrict=r"[0-9]*")
            with Vertical(classes="field"):
                yield Label("Steps")
                yield Input(id="steps", restrict=r"[0-9]*")
        with Horizontal():
            with Vertical(classes="field"):
                yield Label("Guidance")
                yield Input(id="guidance", restrict=r"[0-9.]*")
            with Vertical(classes="field"):
                yield Label("Size WxH")
                yield Input(id="size", restrict=r"[0-9xX]*")
        with Horizontal():
            with Vertical(classes="field"):
                yield Label("Batch count")
                yield Input(value="1", id="count", restrict=r"[0-9]*")
            with Vertical(classes="field"):
                yield Label("Sampler")
                yield Input(id="scheduler", placeholder=SCHEDULER_HINT, restrict=r"[a-z0-9_]*")
        yield Label("Sweep: X | Y | Z axes (empty: none)")
        yield Input(placeholder="e.g. weight:floorplan=0.2,0.6,1 | seed=1,2,3", id="sweep")
        with Horizontal():
            with Vertical(classes="field wide"):
                yield Label("Init image (i in history)")
                yield Input(placeholder="e.g. ~/sketches/plan.png", id="init")
            with Vertical(classes="field"):
                yield Label("Strength")
                yield Input(value=f"{DEFAULT_STRENGTH:g}", id="strength", restrict=r"[0-9.]*")

    def on_mount(self) -> None:
        self.border_title = "Prompt"

    @on(Input.Changed, "#prompt, #negative, #sweep, #init")
    def _drop_controls(self, event: Input.Changed) -> None:
        clean, removed = without_controls(event.value)
        if removed or clean != event.value:
            event.input.value = clean
        if removed:
            self.post_message(self.ControlsRemoved(event.input.id or "prompt", removed))

    def fill_from_task(self, task: TaskSettings) -> None:
        """Put the task's settings in the fields; the prompt, seed and init image stay as typed,
        and an empty size stays empty while there is an init image (it follows the image)."""
        self.query_one("#negative", Input).value = task.negative_prompt
        self.query_one("#steps", Input).value = str(task.steps)
        self.query_one("#guidance", Input).value = f"{task.guidance:g}"
        size = self.query_one("#size", Input)
        if size.value.strip() or not self.query_one("#init", Input).value.strip():
            size.value = f"{task.width}x{task.height}"
        self.query_one("#scheduler", Input).value = task.scheduler

    def fill_from_request(self, request: GenerationRequest) -> None:
        """Put an earlier image's settings in the fields (those it does not name stay as they
        are: the task's, filled first)."""
        self.query_one("#prompt", Input).value = request.prompt
        if request.negative_prompt is not None:
            self.query_one("#negative", Input).value = request.negative_prompt
        self.query_one("#seed", Input).value = "" if request.seed is None else str(request.seed)
        if request.steps is not None:
            self.query_one("#steps", Input).value = str(request.steps)
        if request.guidance is not None:
            self.query_one("#guidance", Input).value = f"{request.guidance:g}"
        if request.width is not None and request.height is not None:
            self.query_one("#size", Input).value = f"{request.width}x{request.height}"
        if request.scheduler is not None:
            self.query_one("#scheduler", Input).value = request.scheduler
        self.query_one("#init", Input).value = request.init_image or ""
        if request.strength is not None:
            self.query_one("#strength", Input).value = f"{request.strength:g}"

    def start_from(self, image: str) -> None:
        """Make `image` the init image; the size is cleared, so it runs at the image's shape."""
        self.query_one("#init", Input).value = image
        self.query_one("#size", Input).value = ""

    def steady_cursor(self, steady: bool) -> None:
        """Stop the cursor blinking (while a generation runs, each blink is a repaint that takes
        CPU from denoising); typing works the same."""
        for field in self.query(Input):
            field.cursor_blink = not steady

    def show_last_seed(self, seed: int) -> None:
        """The empty (random) seed field says which seed the last image used; typing it in
        repeats that image."""
        self.query_one("#seed", Input).placeholder = f"last {seed}"

    def count(self) -> int:
        """How many images to make (seeds s, s+1, ...), or FormError."""
        text = self.query_one("#count", Input).value.strip()
        return _int("batch count", text, 1, MAX_BATCH) if text else 1

    def sweep(self) -> list[Axis]:
        """The sweep's axes ([] when the field is empty), or FormError saying what is wrong."""
        text = self.query_one("#sweep", Input).value.strip()
        if not text:
            return []
        try:
            return parse_axes(text)
        except SweepError as exc:
            raise FormError(f"sweep: {exc}") from None

    def request(self, task: str) -> GenerationRequest:
        """The request these fields describe, or FormError naming the field at fault."""
        prompt = self.query_one("#prompt", Input).value
        if not prompt.strip():
            raise FormError("the prompt is empty: type what to draw, then press Enter or ctrl+g")
        seed_text = self.query_one("#seed", Input).value.strip()
        steps_text = self.query_one("#steps", Input).value.strip()
        guidance_text = self.query_one("#guidance", Input).value.strip()
        size_text = self.query_one("#size", Input).value.strip().lower()
        seed = _int("seed", seed_text, *SEED_RANGE) if seed_text else None
        steps = _int("steps", steps_text, *STEPS_RANGE) if steps_text else None
        try:
            guidance = float(guidance_text) if guidance_text else None
        except ValueError:
            raise FormError(f"guidance {guidance_text!r} is not a number, e.g. 7 or 6.5") from None
        width = height = None
        if size_text:
            try:
                width, height = parse_size(size_text)
            except ValueError as exc:
                raise FormError(str(exc)) from None
        scheduler = self.query_one("#scheduler", Input).value.strip() or None
        if scheduler is not None and scheduler not in SCHEDULERS:
            raise FormError(f"sampler {scheduler!r} is not one of: {', '.join(SCHEDULERS)}")
        init, strength = self._init(steps)
        return GenerationRequest(
            init_image=init,
            strength=strength,
            prompt=prompt,
            scheduler=scheduler,
            task=task,
            seed=seed,
            steps=steps,
            guidance=guidance,
            width=width,
            height=height,
            negative_prompt=self.query_one("#negative", Input).value,
        )

    def _init(self, steps: int | None) -> tuple[str | None, float | None]:
        """The init image and strength (None, None: text to image). The file's header is read
        here, so a wrong path is said before the job is queued; its pixels are read by the engine."""
        init = self.query_one("#init", Input).value.strip()
        if not init:
            return None, None
        text = self.query_one("#strength", Input).value.strip()
        try:
            strength = float(text) if text else DEFAULT_STRENGTH
        except ValueError:
            raise FormError(f"strength {text!r} is not a number, e.g. 0.6") from None
        try:
            peek_init_image(init)
            check_strength(strength, steps if steps is not None else STEPS_RANGE[1])
        except EngineError as exc:
            raise FormError(str(exc)) from None
        return init, strength


def _int(name: str, text: str, lo: int, hi: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise FormError(f"{name} {text!r} is not a whole number") from None
    if not lo <= value <= hi:
        raise FormError(f"{name} must be between {lo} and {hi}, got {value}")
    return value
