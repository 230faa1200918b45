"""The model families Spatiora knows, and the facts that tell them apart: one table.

A family is a latent space and a text-encoder width; checkpoints, LoRAs and embeddings are
matched to one by the widths their tensors have.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Family:
    name: str  # sd1 | sd2 | sdxl
    label: str  # what a person reads
    #: The width the UNet's cross-attention reads from the text encoder(s).
    context_width: int
    #: The widths of a textual-inversion embedding's vectors, one per text encoder.
    embedding_widths: tuple[int, ...]
    #: The stem of its variants' names (sd15, sd15-v, sd15-inpaint).
    variant_stem: str
    #: The side of the square images it was trained at (it draws best near that size).
    native_side: int
    #: What a process holds on the GPU beyond the weights while generating at the native size
    #: (denoising activations, the allocator's cache, the VAE decode, the CUDA context), as NVML
    #: counts it; what the offload choice plans with. Measured on the H200 (docs/gpu.md): SD 1.x
    #: at 512², 5,186 MB held with 2,057 MB of weights; SDXL at 1024², 16,812 MB with 6,732 MB.
    #: SD 2.x (768²) is SD 1.x's scaled by pixels.
    working_mb: int

    @property
    def native_size(self) -> str:
        return f"{self.native_side}x{self.native_side}"


FAMILIES: dict[str, Family] = {
    f.name: f
    for f in (
        Family("sd1", "SD 1.x", 768, (768,), "sd15", 512, 3_100),  # CLIP-L
        Family("sd2", "SD 2.x", 1024, (1024,), "sd2", 768, 7_000),  # OpenCLIP-H
        Family("sdxl", "SDXL", 2048, (768, 1280), "sdxl", 1024, 10_100),  # CLIP-L + OpenCLIP-bigG
    )
}
FAMILY_LABELS = {name: family.label for name, family in FAMILIES.items()}


def family_by_context(width: int) -> str | None:
    return next((f.name for f in FAMILIES.values() if f.context_width == width), None)


def family_by_embedding(widths: tuple[int, ...]) -> str | None:
    return next((f.name for f in FAMILIES.values() if f.embedding_widths == widths), None)
