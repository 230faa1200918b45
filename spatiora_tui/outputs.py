"""Save images with full metadata, atomically and never over an earlier image.

Two PNG text chunks:
- `parameters`: the AUTOMATIC1111 text that the wider ecosystem (A1111, Forge, Civitai, image
  browsers) already reads: prompt with <lora:name:weight> tags, negative prompt, then
  "Steps: 20, Sampler: Euler a, CFG scale: 7, Seed: 42, Size: 512x512, Model: ..., Lora hashes: ...".
- `spatiora`: JSON with the full resolved request, model, adapter sha256 sums, timings, memory,
  and the time and peak memory of each stage (adapter switch, text encode, denoise, VAE decode).

A file appears under its final name only once completely written (temp file + hard link), so a
crash never leaves a truncated PNG and a name collision never overwrites anything.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image, PngImagePlugin

from spatiora_tui import __version__
from spatiora_tui.config import SCHEDULERS
from spatiora_tui.engine.api import GenerationResult

PARAMETERS_KEY = "parameters"
SPATIORA_KEY = "spatiora"
_SAFE = re.compile(r"[^A-Za-z0-9_-]+")


class OutputError(Exception):
    """Saving failed; the image is still in memory and saving can be retried."""


def a1111_parameters(result: GenerationResult) -> str:
    """The AUTOMATIC1111 `parameters` text for a result."""
    p = result.params
    lora_tags = "".join(f" <lora:{a.name}:{a.weight:g}>" for a in p.adapters)
    fields: list[tuple[str, str]] = [
        ("Steps", str(p.steps)),
        ("Sampler", SCHEDULERS.get(p.scheduler, p.scheduler)),
        ("CFG scale", f"{p.guidance:g}"),
        ("Seed", str(p.seed)),
        ("Size", f"{p.width}x{p.height}"),
        ("Model", result.model.name),
        ("Task", p.task),
    ]
    if p.adapters:
        fields.append(("Lora hashes", ", ".join(f"{a.name}: {a.short_hash}" for a in p.adapters)))
    fields.append(("Version", f"spatiora {__version__}"))
    line = ", ".join(f"{k}: {_quote(v)}" for k, v in fields)
    text = p.full_prompt + lora_tags
    if p.negative_prompt:
        text += f"\nNegative prompt: {p.negative_prompt}"
    return f"{text}\n{line}"


def _quote(value: str) -> str:
    return json.dumps(value) if ("," in value or ":" in value or '"' in value) else value


_FIELD = re.compile(r'\s*([\w ]+):\s*("(?:\\.|[^"\\])*"|[^,]*)(?:,|$)')


def parse_a1111(text: str) -> dict[str, Any]:
    """Parse an AUTOMATIC1111 `parameters` text into prompt, negative prompt and fields."""
    lines = text.split("\n")
    settings_line = lines.pop() if lines and _FIELD.match(lines[-1]) and "Steps:" in lines[-1] else ""
    prompt_lines, negative_lines, in_negative = [], [], False
    for line in lines:
        if line.startswith("Negative prompt:"):
            in_negative = True
            line = line[len("Negative prompt:"):].lstrip()
        (negative_lines if in_negative else prompt_lines).append(line)
    fields: dict[str, str] = {}
    for key, value in _FIELD.findall(settings_line):
        value = value.strip()
        fields[key.strip()] = json.loads(value) if value.startswith('"') else value
    return {"prompt": "\n".join(prompt_lines), "negative_prompt": "\n".join(negative_lines), "fields": fields}


def metadata_record(result: GenerationResult) -> dict[str, Any]:
    """The JSON metadata: everything needed to understand and reproduce the image."""
    return {
        "format": 1,
        "generator": f"spatiora {__version__}",
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "request": {k: v for k, v in dataclasses.asdict(result.params).items() if k != "adapters"},
        "adapters": [
            {"name": a.name, "weight": a.weight, "sha256": a.sha256} for a in result.params.adapters
        ],
        "model": dataclasses.asdict(result.model),
        "timings_ms": dataclasses.asdict(result.timings),
        "memory_mb": dataclasses.asdict(result.memory),
        # Time and peak memory of each stage up to the decoded image (saving is still running
        # while this is written, so its own figures are in the telemetry, not here).
        "stages": [
            {k: round(v, 1) if isinstance(v, float) else v for k, v in dataclasses.asdict(record).items()}
            for record in result.stages
        ],
        "warnings": list(result.warnings),
    }


def save_result(result: GenerationResult, out_dir: Path, name: str | None = None) -> Path:
    """Write the result's image as PNG with both metadata chunks. Returns the new file's path."""
    if result.image is None:
        raise OutputError("a cancelled generation has no image to save")
    info = PngImagePlugin.PngInfo()
    info.add_text(PARAMETERS_KEY, a1111_parameters(result))
    info.add_itxt(SPATIORA_KEY, json.dumps(metadata_record(result), separators=(",", ":")))
    stem = name or f"{time.strftime('%Y%m%d-%H%M%S')}-{_SAFE.sub('_', result.params.task)}-{result.params.seed}"
    return _write_png_atomically(result.image, info, out_dir, stem)


def _write_png_atomically(image: Image.Image, info: PngImagePlugin.PngInfo, out_dir: Path, stem: str) -> Path:
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        tmp = out_dir / f".{stem}.{os.getpid()}.partial"
        with tmp.open("wb") as fh:
            image.save(fh, format="PNG", pnginfo=info)
            fh.flush()
            os.fsync(fh.fileno())
    except OSError as exc:
        raise OutputError(f"could not write to {out_dir}: {exc.strerror or exc}") from None
    try:
        for n in range(10_000):
            final = out_dir / (f"{stem}.png" if n == 0 else f"{stem}-{n}.png")
            try:
                os.link(tmp, final)  # fails if the name exists: no overwrite, no race
                return final
            except FileExistsError:
                continue
            except OSError:
                # Filesystems without hard links: best effort, still never over an existing file.
                if not final.exists():
                    os.replace(tmp, final)
                    return final
        raise OutputError(f"no free file name for {stem} in {out_dir}")
    finally:
        tmp.unlink(missing_ok=True)


@dataclass(frozen=True)
class ImageMetadata:
    """What read_metadata found in a PNG."""

    parameters: str | None
    a1111: dict[str, Any]
    spatiora: dict[str, Any] | None


def read_metadata(path: Path) -> ImageMetadata:
    """Read both metadata chunks back from a PNG Spatiora (or AUTOMATIC1111) wrote."""
    with Image.open(path) as image:
        text = dict(getattr(image, "text", {}) or image.info)
    parameters = text.get(PARAMETERS_KEY)
    raw = text.get(SPATIORA_KEY)
    try:
        record = json.loads(raw) if raw else None
    except ValueError:
        record = None
    return ImageMetadata(
        parameters=parameters,
        a1111=parse_a1111(parameters) if parameters else {},
        spatiora=record,
    )
