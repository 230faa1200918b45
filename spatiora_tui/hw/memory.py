"""Process memory figures, in MiB."""

from __future__ import annotations

import sys

import psutil

_PROCESS: psutil.Process | None = None


def _process() -> psutil.Process:
    global _PROCESS
    if _PROCESS is None:  # created on first use, not at import
        _PROCESS = psutil.Process()
    return _PROCESS


def process_rss_mb() -> float:
    """Resident set size of this process now."""
    return _process().memory_info().rss / 2**20


def process_peak_rss_mb() -> float:
    """Peak resident set size over this process's life (the kernel's high-water mark)."""
    try:
        import resource
    except ImportError:  # Windows has no getrusage
        return process_rss_mb()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports KiB, macOS bytes.
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024
