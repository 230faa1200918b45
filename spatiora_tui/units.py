"""Units and how sizes read: one place for MB and for "1.2 GB" / "340 MB" / "12 KB"."""

from __future__ import annotations

MB = 2**20  # bytes; every "MB" figure in Spatiora is a mebibyte
GB = 2**30


def size_text(n_bytes: float) -> str:
    """A file or memory size as a person reads it: 1.2 GB, 340 MB, 12 KB."""
    if n_bytes >= GB:
        return f"{n_bytes / GB:.1f} GB"
    if n_bytes >= MB:
        return f"{n_bytes / MB:.0f} MB"
    return f"{n_bytes / 1024:.0f} KB"


def mb_text(mb: float | None) -> str:
    """A figure already in MB: 1.2 GB from 1024 up, else whole MB; — when unknown."""
    if mb is None:
        return "—"
    return f"{mb / 1024:.1f} GB" if mb >= 1024 else f"{mb:.0f} MB"
