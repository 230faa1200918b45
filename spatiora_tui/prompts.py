"""AUTOMATIC1111's prompt syntax, which users type from habit: LoRA tags and emphasis.

- `<lora:NAME:WEIGHT>` (or `<lyco:...>`, `<lora:NAME>` for weight 1) adds that LoRA to the request;
  the tag is taken out of the text the model reads.
- Emphasis: `(words)` x1.1, `((words))` x1.21, `[words]` /1.1, `(words:1.5)` x1.5; `\\(` `\\)` `\\[` `\\]`
  are literal brackets; `BREAK` starts a new 75-token chunk. An unclosed bracket weights the rest
  of the prompt; a stray closing one is kept as text. Prompts longer than 75 tokens are encoded
  in 75-token chunks and concatenated (engine/conditioning.py), as AUTOMATIC1111 does.

No library implements these semantics (compel has its own syntax, `word+` and `(word)1.1`, and
reads `(word:1.2)` as plain text), so they are implemented here and tested against their
definition; docs/prompts.md lists what is and is not supported. Nothing here imports torch.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from spatiora_tui.errors import EngineError

#: A1111's factor for one pair of round brackets (square brackets divide by it).
EMPHASIS = 1.1
#: A LoRA weight outside this range is refused (the same bound as a task's adapter weights).
MAX_WEIGHT = 5.0

_TAG = re.compile(r"<([A-Za-z_]+):([^<>]*)>")
_BREAK = re.compile(r"\s*\bBREAK\b\s*")
# Escapes, brackets, ":weight)", plain runs, and a lone ":".
_TOKEN = re.compile(r"\\[()\[\]\\]|\\|\(|\[|:\s*([+-]?[.\d]+)\s*\)|\)|\]|[^\\()\[\]:]+|:")


class PromptError(EngineError):
    """A prompt the user must fix; the message quotes the part that is wrong."""


@dataclass(frozen=True)
class LoraTag:
    """`<lora:name:weight>` as written in a prompt."""

    name: str
    weight: float
    text: str


def extract_lora_tags(prompt: str) -> tuple[str, tuple[LoraTag, ...]]:
    """The prompt without its `<lora:...>` tags, and the tags. Raises PromptError for a tag
    Spatiora cannot honour (no name, a weight that is not a number, per-part weights, another
    kind of extra network)."""
    tags: list[LoraTag] = []

    def take(match: re.Match[str]) -> str:
        kind, body = match.group(1).lower(), match.group(2)
        raw = _shown(match.group(0))
        if kind not in ("lora", "lyco"):
            raise PromptError(
                f"{raw}: <{kind}:...> networks are not supported; Spatiora applies LoRAs (<lora:NAME:WEIGHT>)"
            )
        parts = [p.strip() for p in body.split(":")]
        name = parts[0]
        if not name:
            raise PromptError(f"{raw}: the tag names no LoRA; write <lora:NAME:0.8>")
        if len(parts) > 2 or any("=" in p for p in parts[1:]):
            raise PromptError(
                f"{raw}: separate text-encoder and UNet weights (or te=/unet=/dyn=) are not "
                "supported; give one weight, as in <lora:NAME:0.8>"
            )
        weight = 1.0
        if len(parts) == 2:
            try:
                weight = float(parts[1])
            except ValueError:
                raise PromptError(
                    f"{raw}: the weight {parts[1]!r} is not a number; write <lora:{_shown(name, 40)}:0.8>"
                ) from None
            if not -MAX_WEIGHT <= weight <= MAX_WEIGHT or weight != weight:
                raise PromptError(f"{raw}: the weight must be between {-MAX_WEIGHT:g} and {MAX_WEIGHT:g}")
        if any(tag.name == name for tag in tags):
            raise PromptError(f"{raw}: <lora:{_shown(name, 40)}> appears twice in the prompt; write it once")
        tags.append(LoraTag(name, weight, match.group(0)))
        return " "

    text = _TAG.sub(take, prompt)
    if tags:
        text = re.sub(r"[ \t]{2,}", " ", text)
        text = re.sub(r"\s+([,.;])", r"\1", text)
        text = re.sub(r"(,\s*){2,}", ", ", text).strip(" \t,")
    return text, tuple(tags)


def _shown(text: str, width: int = 80) -> str:
    """`text` fit for a one-line message: control characters escaped, the middle elided."""
    text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
    return text if len(text) <= width else text[: width // 2 - 1] + "…" + text[-(width // 2) :]


def parse_emphasis(text: str) -> list[tuple[str, float] | None]:
    """The text as (fragment, weight) runs with AUTOMATIC1111's emphasis applied; None where a
    BREAK starts a new chunk. Consecutive runs of equal weight are merged. Never raises."""
    runs: list[list[object] | None] = []
    round_open: list[int] = []
    square_open: list[int] = []

    def scale(start: int, factor: float) -> None:
        for run in runs[start:]:
            if run is not None:
                run[1] = float(run[1]) * factor  # type: ignore[arg-type]

    for match in _TOKEN.finditer(text):
        token, number = match.group(0), match.group(1)
        if token.startswith("\\") and len(token) == 2:
            runs.append([token[1], 1.0])
        elif token == "(":
            round_open.append(len(runs))
        elif token == "[":
            square_open.append(len(runs))
        elif number is not None and round_open:
            try:
                factor = float(number)
            except ValueError:  # "1.2.3": not a number, so not a weight
                runs.append([token, 1.0])
                continue
            scale(round_open.pop(), factor)
        elif token == ")" and round_open:
            scale(round_open.pop(), EMPHASIS)
        elif token == "]" and square_open:
            scale(square_open.pop(), 1 / EMPHASIS)
        else:
            for i, part in enumerate(_BREAK.split(token)):
                if i:
                    runs.append(None)
                if part:
                    runs.append([part, 1.0])
    for start in round_open:
        scale(start, EMPHASIS)
    for start in square_open:
        scale(start, 1 / EMPHASIS)
    merged: list[tuple[str, float] | None] = []
    for run in runs:
        last = merged[-1] if merged else None
        if run is not None and last is not None and last[1] == run[1]:
            merged[-1] = (last[0] + str(run[0]), last[1])
        else:
            merged.append(None if run is None else (str(run[0]), float(run[1])))  # type: ignore[arg-type]
    return merged or [("", 1.0)]


def plain_text(text: str) -> str:
    """What the model reads of `text`, without the emphasis syntax (for messages and search)."""
    return "".join(run[0] for run in parse_emphasis(text) if run is not None)


def mentions(text: str, names: list[str] | tuple[str, ...]) -> list[str]:
    """Which of `names` (embedding names) appear in `text` as words, in the order given."""
    found = []
    for name in names:
        if re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])", text):
            found.append(name)
    return found


def with_lora_weight(prompt: str, name: str, weight: float) -> str:
    """`prompt` with `<lora:name:weight>`: the weight of its tag for `name` replaced, or the tag
    added at the end (a tag naming one of the task's adapters sets that adapter's weight)."""
    tag = f"<lora:{name}:{weight:g}>"
    found = False

    def swap(match: re.Match[str]) -> str:
        nonlocal found
        kind, body = match.group(1).lower(), match.group(2)
        if kind in ("lora", "lyco") and body.split(":")[0].strip() == name and not found:
            found = True
            return tag
        return match.group(0)

    text = _TAG.sub(swap, prompt)
    return text if found else f"{prompt.rstrip()} {tag}"
