"""Hardware readings: process memory, and sampled snapshots of GPU (NVML), CUDA and host.

No textual, and no torch at import.
"""

from spatiora_tui.hw.memory import process_age_s, process_peak_rss_mb, process_rss_mb
from spatiora_tui.hw.sampler import (
    CudaReading,
    GpuReading,
    HardwareSampler,
    HardwareSnapshot,
    HostReading,
    NvmlBackend,
    PeakTracker,
    PsutilBackend,
    TaskPeak,
    TorchCudaBackend,
)

__all__ = [
    "CudaReading", "GpuReading", "HardwareSampler", "HardwareSnapshot", "HostReading", "NvmlBackend",
    "PeakTracker", "PsutilBackend", "TaskPeak", "TorchCudaBackend", "process_age_s", "process_peak_rss_mb",
    "process_rss_mb",
]
