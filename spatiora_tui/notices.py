"""Warnings for a person, each with a kind a program can count on.

A `Notice` is the sentence the user reads and, beside it, what it is about. Code that counts or
filters warnings (the soak counts leak warnings; the UI shows a leak in the task pane) reads
`kind`, never the wording, so a message can be rephrased without breaking anything. A Notice is a
`str`, so it prints, joins and is saved in image metadata as its text.
"""

from __future__ import annotations

from enum import Enum


class NoticeKind(str, Enum):
    MEMORY_LEAK = "memory leak"  # the leak watchdog: memory above baseline + what is held
    TILED_DECODE = "tiled decode"  # the VAE decode ran out of memory and was done in tiles
    PICKLED_EMBEDDING = "pickled embedding"  # a prompt names a .pt/.bin embedding, not loaded
    ADAPTER_FAMILY = "adapter family"  # a task's adapter is for another model family
    PREVIEW_FALLBACK = "preview fallback"  # the configured preview method cannot run; latent2rgb does
    INIT_IMAGE = "init image"  # the init image was converted (alpha flattened, cropped...)
    OFFLOAD = "offload"  # a setting the offload mode turned off (fused adapters)
    OVERLAP = "overlapped load"  # an adapter read from disk while the first steps ran without it
    SIZE = "size"  # an image size far below what the loaded model was trained at
    COMPILE = "compile"  # the compiled UNet: compiled for a new shape, or a set run uncompiled


class Notice(str):
    """A warning's text, with its `kind`."""

    kind: NoticeKind

    def __new__(cls, kind: NoticeKind, text: str) -> Notice:
        notice = super().__new__(cls, text)
        notice.kind = NoticeKind(kind)
        return notice

    def __getnewargs__(self) -> tuple[NoticeKind, str]:  # type: ignore[override]
        return self.kind, str(self)

    def __repr__(self) -> str:
        return f"Notice({self.kind.value!r}, {str(self)!r})"


def of_kind(notices: object, kind: NoticeKind) -> list[Notice]:
    """The notices among `notices` (any iterable of strings) that are of `kind`."""
    return [n for n in notices if isinstance(n, Notice) and n.kind is kind]  # type: ignore[attr-defined]
