"""Safetensors files written without torch: the right tensor names and shapes, zero data.

Identification reads names and shapes only, so the unit tests describe a checkpoint, a LoRA or
an embedding by its layout (the keys the real files carry) and write it in a moment.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Mapping
from pathlib import Path

from spatiora_tui.library.safetensors_file import DTYPE_SIZES


def write(
    path: Path,
    tensors: Mapping[str, tuple[int, ...]],
    metadata: dict[str, str] | None = None,
    dtype: str = "F16",
    values: dict[str, list[float]] | None = None,
) -> Path:
    """A .safetensors file with `tensors` (name -> shape), zeros except the `values` given (F32)."""
    header: dict[str, object] = {}
    blobs: list[bytes] = []
    offset = 0
    for name, shape in tensors.items():
        kind = "F32" if values and name in values else dtype
        size = math.prod(shape) * DTYPE_SIZES[kind]
        blob = struct.pack(f"<{len(values[name])}f", *values[name]) if values and name in values else bytes(size)
        assert len(blob) == size, name
        header[name] = {"dtype": kind, "shape": list(shape), "data_offsets": [offset, offset + size]}
        blobs.append(blob)
        offset += size
    if metadata:
        header["__metadata__"] = metadata
    raw = json.dumps(header).encode("utf-8")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(len(raw).to_bytes(8, "little") + raw + b"".join(blobs))
    return path


UNET = "model.diffusion_model."


def checkpoint(
    family: str = "sd1",
    in_channels: int = 4,
    vae: bool = True,
    te: bool = True,
    extra: dict[str, tuple[int, ...]] | None = None,
) -> dict[str, tuple[int, ...]]:
    """The keys identification looks at, in the layout of a real checkpoint of `family`."""
    width = {"sd1": 768, "sd2": 1024, "sdxl": 2048}[family]
    keys: dict[str, tuple[int, ...]] = {
        UNET + "input_blocks.0.0.weight": (320, in_channels, 3, 3),
        UNET + "input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight": (320, width),
        UNET + "output_blocks.11.1.transformer_blocks.0.norm1.bias": (320,),
        UNET + "out.2.weight": (4, 320, 3, 3),
    }
    if vae:
        keys["first_stage_model.encoder.conv_in.weight"] = (128, 3, 3, 3)
    if te:
        if family == "sd1":
            keys["cond_stage_model.transformer.text_model.embeddings.position_embedding.weight"] = (77, 768)
        elif family == "sd2":
            keys["cond_stage_model.model.token_embedding.weight"] = (49408, 1024)
        else:
            keys["conditioner.embedders.0.transformer.text_model.embeddings.position_embedding.weight"] = (77, 768)
            keys["conditioner.embedders.1.model.positional_embedding"] = (77, 1280)
    keys.update(extra or {})
    return keys
