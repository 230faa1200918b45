"""Hardware readings: process memory, sampled snapshots of GPU (NVML), CUDA and host, and the
stage-aware telemetry built on them.

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
    PsutilBackend,
    TorchCudaBackend,
)
from spatiora_tui.hw.telemetry import STAGES, HardwareFeed, Peak, StageRecord, Telemetry

__all__ = [
    "STAGES",
    "CudaReading",
    "GpuReading",
    "HardwareFeed",
    "HardwareSampler",
    "HardwareSnapshot",
    "HostReading",
    "NvmlBackend",
    "Peak",
    "PsutilBackend",
    "StageRecord",
    "Telemetry",
    "TorchCudaBackend",
    "process_age_s",
    "process_peak_rss_mb",
    "process_rss_mb",
]
