"""Hardware readings (psutil now; NVML sampling joins it). No textual, no torch at import."""

from spatiora_tui.hw.memory import process_peak_rss_mb, process_rss_mb

__all__ = ["process_peak_rss_mb", "process_rss_mb"]
