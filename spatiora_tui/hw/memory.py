"""Process memory figures, in MiB."""

from __future__ import annotations

import os
import sys
from typing import Any

import psutil

from spatiora_tui.units import MB

_PROCESS: psutil.Process | None = None
# The highest VmHWM seen before a reset of the kernel's high-water mark (see reset_peak_rss).
_LIFETIME_PEAK_MB = 0.0


def _process() -> psutil.Process:
    global _PROCESS
    if _PROCESS is None:  # created on first use, not at import
        _PROCESS = psutil.Process()
    return _PROCESS


def cuda_torch() -> Any:
    """The torch module when this process has imported it and initialised CUDA, else None.

    Never imports torch: the hardware readings must cost nothing where the engine has not
    loaded it (the UI's first frame, a CPU machine)."""
    torch = sys.modules.get("torch")
    try:
        return torch if torch is not None and torch.cuda.is_initialized() else None
    except Exception:
        return None


def process_rss_mb() -> float:
    """Resident set size of this process now."""
    return float(_process().memory_info().rss) / MB


def process_peak_rss_mb() -> float:
    """Peak resident set size over this process's life (the kernel's high-water mark, and the
    highest one seen before any reset_peak_rss())."""
    try:
        import resource
    except ImportError:  # Windows has no getrusage
        return max(_LIFETIME_PEAK_MB, process_rss_mb())
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports KiB, macOS bytes.
    peak_mb = peak / MB if sys.platform == "darwin" else peak / 1024
    return max(_LIFETIME_PEAK_MB, peak_mb)


def peak_rss_since_reset_mb() -> float | None:
    """The kernel's RSS high-water mark (VmHWM) since the last reset_peak_rss(); None where the
    kernel does not keep one (not Linux)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024  # kB
    except OSError:
        return None
    return None


def reset_peak_rss() -> bool:
    """Reset the kernel's RSS high-water mark to the current RSS, so that the next
    peak_rss_since_reset_mb() is the exact peak of what ran in between, however short.

    Linux 4.0+ (writing 5 to /proc/self/clear_refs). The lifetime peak is kept first, so
    process_peak_rss_mb() stays the peak over the process's life. False where unsupported.
    """
    global _LIFETIME_PEAK_MB
    before = peak_rss_since_reset_mb()
    if before is None:
        return False
    _LIFETIME_PEAK_MB = max(_LIFETIME_PEAK_MB, before)
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as refs:
            refs.write("5")
    except OSError:
        return False
    return True


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


def release_freed_memory() -> None:
    """Hand memory the process has freed back to the OS (glibc's malloc_trim); elsewhere nothing.

    After a VAE decode on a CPU, glibc keeps hundreds of MB of freed activations in its heap:
    RSS then says the process holds memory it does not use, and the leak watchdog would count it.
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # musl and other libcs have no malloc_trim
        pass


def release_memory(on_cuda: bool) -> None:
    """Give back what a failed run held: Python's garbage, then the CUDA cache (on a GPU) or
    the C allocator's freed pages (on the CPU)."""
    import gc

    gc.collect()
    if on_cuda:
        torch = cuda_torch()  # a run on the GPU has imported torch and started CUDA
        if torch is not None:
            torch.cuda.empty_cache()
    else:
        release_freed_memory()
