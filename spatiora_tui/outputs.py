"""Save images with full metadata, atomically and never over an earlier image.

Two PNG text chunks:
- `parameters`: the AUTOMATIC1111 text that the wider ecosystem (A1111, Forge, Civitai, image
  browsers) already reads: prompt with <lora:name:weight> tags, negative prompt, then
  "Steps: 20, Sampler: Euler a, CFG scale: 7, Seed: 42, Size: 512x512, Model: ..., Lora hashes: ...".
- `spatiora`: JSON with the full resolved request, model, adapter sha256 sums, timings, memory,
  and the time and peak memory of each stage (adapter switch, text encode, denoise, VAE decode).

A file appears under its final name only once completely written (spatiora_tui.atomic: temp file
+ hard link), so a crash never leaves a truncated PNG and a name collision never overwrites
anything. Each saved image is also listed in the folder's history index (HistoryIndex), written
atomically too.
"""

from __future__ import annotations

import dataclasses
import errno
import io
import json
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image, PngImagePlugin

from spatiora_tui import __version__, atomic, failpoints
from spatiora_tui.config import SCHEDULERS
from spatiora_tui.engine.api import GenerationRequest, GenerationResult
from spatiora_tui.engine.codec import CodecError, decode_as

PARAMETERS_KEY = "parameters"
SPATIORA_KEY = "spatiora"
_SAFE = re.compile(r"[^A-Za-z0-9_-]+")
# A file name given by the user may hold anything but path separators and control characters
# (an ESC in a file name would reach the terminal raw wherever the name is shown).
_SAFE_NAME = re.compile(r"[\x00-\x1f\x7f-\x9f/\\]+")
HISTORY_INDEX = ".spatiora-history.json"


class OutputError(Exception):
    """Saving failed; the image is still in memory and saving can be retried."""


def a1111_parameters(result: GenerationResult) -> str:
    """The AUTOMATIC1111 `parameters` text for a result."""
    p = result.params
    lora_tags = "".join(f" <lora:{a.name}:{a.weight:g}>" for a in p.adapters)
    fields: list[tuple[str, str]] = [
        ("Steps", str(p.steps)),
        ("Sampler", SCHEDULERS[p.scheduler].a1111 if p.scheduler in SCHEDULERS else p.scheduler),
        ("CFG scale", f"{p.guidance:g}"),
        ("Seed", str(p.seed)),
        ("Size", f"{p.width}x{p.height}"),
    ]
    if result.model.short_hash:
        fields.append(("Model hash", result.model.short_hash))
    fields += [("Model", result.model.name), ("Task", p.task)]
    if p.init_image:
        # Image-to-image, in A1111's words; the hash is 12 digits of the init file's sha256
        # (the JSON chunk holds all 64 and the path).
        fields += [("Denoising strength", f"{p.strength:g}"), ("Init image hash", p.init_image_sha256[:12])]
    if p.adapters:
        fields.append(("Lora hashes", ", ".join(f"{_hash_name(a.name)}: {a.short_hash}" for a in p.adapters)))
    if p.embeddings:
        fields.append(("TI hashes", ", ".join(f"{_hash_name(e.name)}: {e.short_hash}" for e in p.embeddings)))
    fields.append(("Version", f"spatiora {__version__}"))
    line = ", ".join(f"{k}: {_quote(v)}" for k, v in fields)
    text = p.full_prompt + lora_tags
    if p.negative_prompt:
        text += f"\nNegative prompt: {p.negative_prompt}"
    return f"{text}\n{line}"


def _hash_name(name: str) -> str:
    """A resource name as AUTOMATIC1111 writes it in a hash list (no ':' or ',')."""
    return name.replace(":", "").replace(",", "")


def parse_hashes(value: str) -> dict[str, str]:
    """`Lora hashes` / `TI hashes` ("name: abc123, other: def456") as {name: hash}."""
    pairs = {}
    for item in value.split(","):
        name, sep, digest = item.rpartition(":")
        if sep and name.strip():
            pairs[name.strip()] = digest.strip()
    return pairs


def _quote(value: str) -> str:
    return json.dumps(value) if ("," in value or ":" in value or '"' in value) else value


_FIELD = re.compile(r'\s*([\w ]+):\s*("(?:\\.|[^"\\])*"|[^,]*)(?:,|$)')


def parse_a1111(text: str) -> dict[str, Any]:
    """Parse an AUTOMATIC1111 `parameters` text into prompt, negative prompt and fields."""
    lines = text.split("\n")
    settings_line = lines.pop() if lines and _FIELD.match(lines[-1]) and "Steps:" in lines[-1] else ""
    prompt_lines: list[str] = []
    negative_lines: list[str] = []
    in_negative = False
    for line in lines:
        if line.startswith("Negative prompt:"):
            in_negative = True
            line = line[len("Negative prompt:") :].lstrip()
        (negative_lines if in_negative else prompt_lines).append(line)
    fields: dict[str, str] = {}
    for key, value in _FIELD.findall(settings_line):
        value = value.strip()
        fields[key.strip()] = json.loads(value) if value.startswith('"') else value
    parsed: dict[str, Any] = {
        "prompt": "\n".join(prompt_lines),
        "negative_prompt": "\n".join(negative_lines),
        "fields": fields,
    }
    for field_name, key in (("Lora hashes", "lora_hashes"), ("TI hashes", "ti_hashes")):
        if field_name in fields:
            parsed[key] = parse_hashes(fields[field_name])
    return parsed


def metadata_record(result: GenerationResult) -> dict[str, Any]:
    """The JSON metadata: everything needed to understand and reproduce the image."""
    return {
        "format": 1,
        "generator": f"spatiora {__version__}",
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "request": {
            k: v
            for k, v in dataclasses.asdict(result.params).items()
            if k not in ("adapters", "embeddings", "prompt_loras")
        },
        "adapters": [_adapter_record(a, result.params.prompt_loras) for a in result.params.adapters],
        "embeddings": [{"name": e.name, "sha256": e.sha256} for e in result.params.embeddings],
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


def _adapter_record(adapter: Any, prompt_loras: tuple[str, ...]) -> dict[str, Any]:
    record: dict[str, Any] = {"name": adapter.name, "weight": adapter.weight, "sha256": adapter.sha256}
    if adapter.a1111_hash:
        record["a1111_hash"] = adapter.a1111_hash  # Kohya's addnet hash, as in `Lora hashes`
    if adapter.name in prompt_loras:
        record["from_prompt"] = True  # a <lora:...> tag of the prompt, not the task
    return record


def save_result(result: GenerationResult, out_dir: Path, name: str | None = None) -> Path:
    """Write the result's image as PNG with both metadata chunks. Returns the new file's path."""
    if result.image is None:
        raise OutputError("a cancelled generation has no image to save")
    record = metadata_record(result)
    info = PngImagePlugin.PngInfo()
    info.add_text(PARAMETERS_KEY, a1111_parameters(result))
    info.add_itxt(SPATIORA_KEY, json.dumps(record, separators=(",", ":")))
    stem = name or f"{time.strftime('%Y%m%d-%H%M%S')}-{_SAFE.sub('_', result.params.task)}-{result.params.seed}"
    return _write_png_atomically(result.image, info, out_dir, _SAFE_NAME.sub("_", stem), record)


def _write_png_atomically(
    image: Image.Image, info: PngImagePlugin.PngInfo, out_dir: Path, stem: str, record: dict[str, Any]
) -> Path:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=info)
    try:
        failpoints.hit("save")
        path = atomic.write_new(out_dir, stem, ".png", buffer.getvalue())
    except OSError as exc:
        raise OutputError(f"could not write to {out_dir}: {_why(exc)}") from None
    try:
        HistoryIndex(out_dir).add(path, record)
    except OSError:
        pass  # the image is saved, and the history lists it from the folder all the same
    return path


def _why(exc: OSError) -> str:
    if exc.errno == errno.ENOSPC:
        return "the disk is full; free some space (or set [output] dir to another disk) and save again"
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"{exc.strerror or 'permission denied'}; make the folder writable (or set [output] dir) and save again"
    return f"{exc.strerror or exc}; fix the folder and save again"


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


class HistoryIndex:
    """The output folder's list of saved images with what the history shows for each (task, seed,
    prompt, size, time), so the history lists thousands of images without opening each PNG.

    Written atomically after each save: a process killed while writing it leaves the previous
    index. The images' own metadata stays the source of truth: an index that cannot be read
    (edited by hand, from a newer version) is rebuilt from it, and the history lists the folder's
    images (image_files), so one the index misses (copied in, or saved while the index could not
    be written) is still listed and described from its file, only without its prompt in the list.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.path = folder / HISTORY_INDEX

    def entries(self) -> dict[str, dict[str, Any]]:
        """File name -> entry, for the images the index lists that still exist."""
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            listed = data["images"] if data.get("format") == 1 else None
        except FileNotFoundError:
            return {}
        except (OSError, ValueError, TypeError, KeyError, AttributeError):
            listed = None
        if not isinstance(listed, list):
            return self.rebuild()
        present = {p.name for p in image_files(self.folder)}  # one listing, not a stat per entry
        return {e["file"]: e for e in listed if isinstance(e, dict) and e.get("file") in present}

    def add(self, image: Path, record: dict[str, Any]) -> None:
        entries = self.entries()
        entries[image.name] = _index_entry(image.name, record)
        self._write(entries)

    def rebuild(self) -> dict[str, dict[str, Any]]:
        """Read every PNG's metadata again and write a fresh index (best effort)."""
        entries: dict[str, dict[str, Any]] = {}
        for file in sorted(image_files(self.folder)):
            try:
                record = read_metadata(file).spatiora
            except Exception:  # a damaged or foreign file: listed without details
                record = None
            entries[file.name] = _index_entry(file.name, record if isinstance(record, dict) else {})
        try:
            self._write(entries)
        except OSError:
            pass
        return entries

    def _write(self, entries: dict[str, dict[str, Any]]) -> None:
        data = {"format": 1, "images": list(entries.values())}
        atomic.write_bytes(self.path, json.dumps(data, indent=0).encode("utf-8"))


def image_files(folder: Path) -> list[Path]:
    """The PNG images in `folder` (hidden temp files excluded), in no order; [] when unreadable."""
    try:
        return [p for p in folder.iterdir() if p.suffix.lower() == ".png" and not p.name.startswith(".")]
    except OSError:
        return []


def _index_entry(name: str, record: dict[str, Any]) -> dict[str, Any]:
    request = record.get("request") or {}
    timings = record.get("timings_ms") or {}
    return {
        "file": name,
        "created": record.get("created"),
        "task": request.get("task"),
        "seed": request.get("seed"),
        "prompt": request.get("prompt"),
        "size": f"{request.get('width')}x{request.get('height')}" if request.get("width") else None,
        "image_ms": timings.get("image_ms"),
    }


def request_from_image(path: Path, default_task: str) -> tuple[GenerationRequest, list[str]]:
    """The settings an image was made with, as a request to make it again (the A1111 habit of
    "PNG Info, send to txt2img"), and notes on what could not be carried over. Spatiora's own
    JSON is read first; a PNG from AUTOMATIC1111 (or Forge, or anything writing its `parameters`
    text) gives its prompt (with its <lora:...> tags), negative prompt, steps, sampler, CFG
    scale, seed and size, and runs as `default_task`. OutputError when the file holds neither."""
    try:
        meta = read_metadata(path)
    except (OSError, ValueError) as exc:
        raise OutputError(f"cannot read {path.name}: {exc}") from None
    record = (meta.spatiora or {}).get("request")
    if isinstance(record, dict) and isinstance(record.get("prompt"), str):
        kept = {k: record.get(k) for k in ("prompt", "negative_prompt", "seed", "steps", "guidance", "scheduler")}
        kept.update({k: record.get(k) for k in ("width", "height")})
        init = record.get("init_image") or None
        kept.update(task=str(record.get("task") or default_task), init_image=init)
        kept["strength"] = record.get("strength") if init else None
        try:
            request = decode_as(GenerationRequest, kept)  # the codec the queue file and the wire use
        except CodecError as exc:
            raise OutputError(f"{path.name}: its Spatiora settings cannot be used again ({exc})") from None
        notes = []
        if init and not Path(init).is_file():
            notes.append(f"its init image {init} is no longer there: give another or clear the init field")
        return request, notes
    if not meta.parameters:
        raise OutputError(f"{path.name} holds no generation settings (no Spatiora or AUTOMATIC1111 metadata)")
    return _request_from_a1111(meta.a1111, default_task)


def _request_from_a1111(parsed: dict[str, Any], default_task: str) -> tuple[GenerationRequest, list[str]]:
    fields: dict[str, str] = parsed.get("fields", {})
    notes: list[str] = []

    def number(key: str, kind: type) -> Any:
        if key not in fields:
            return None
        try:
            return kind(fields[key])
        except ValueError:
            notes.append(f"{key} {fields[key]!r} is not a number: the task's is used")
            return None

    width = height = None
    if "Size" in fields:
        try:
            width, height = (int(v) for v in fields["Size"].lower().split("x"))
        except ValueError:
            notes.append(f"Size {fields['Size']!r} is not WIDTHxHEIGHT: the task's is used")
    sampler = fields.get("Sampler")
    if sampler and fields.get("Schedule type", "").lower() == "karras" and "karras" not in sampler.lower():
        sampler += " Karras"  # A1111 1.6+ writes the schedule apart from the sampler
    scheduler = next((s.name for s in SCHEDULERS.values() if sampler and s.a1111.lower() == sampler.lower()), None)
    if sampler and scheduler is None:
        notes.append(f"sampler {sampler!r} is not one Spatiora has: the task's is used")
    task = fields.get("Task") or default_task
    if "Model" in fields and "Task" not in fields:
        notes.append(
            f"made with {fields['Model']!r} in another program: it runs here on the loaded model, as task {task}"
        )
    request = GenerationRequest(
        prompt=parsed.get("prompt", ""),
        task=task,
        seed=number("Seed", int),
        steps=number("Steps", int),
        guidance=number("CFG scale", float),
        width=width,
        height=height,
        negative_prompt=parsed.get("negative_prompt") or None,
        scheduler=scheduler,
        strength=number("Denoising strength", float),
    )
    if "Init image hash" in fields:
        notes.append("made from an init image, which its PNG does not hold: give it in the init field")
    return request, notes
