"""Process memory figures, in MiB."""

from __future__ import annotations

import os
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


def process_age_s() -> float:
    """Seconds since this process started, to about 10 ms.

    psutil's create_time() adds the boot time from /proc/stat, which is whole seconds, so an age
    computed from it is off by up to a second. On Linux the start time in clock ticks since boot
    and CLOCK_BOOTTIME share one clock; elsewhere psutil's figure is the best there is.
    """
    import time

    if sys.platform.startswith("linux"):
        with open("/proc/self/stat", encoding="ascii") as stat:
            # Field 22 (starttime); the command name (field 2) may hold spaces, so count from its ")".
            start_ticks = int(stat.read().rsplit(")", 1)[1].split()[19])
        return time.clock_gettime(time.CLOCK_BOOTTIME) - start_ticks / os.sysconf("SC_CLK_TCK")
    return time.time() - _process().create_time()
