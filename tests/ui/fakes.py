"""Recorded hardware readings for the UI tests (the fake engine is in tests/fake_engine.py)."""

from __future__ import annotations

from spatiora_tui.hw import GpuReading, HardwareSampler, HostReading, Telemetry


class RecordedGpu:
    """GPU readings played back from a list (the last one repeats)."""

    def __init__(self, readings=None, error: str | None = None) -> None:
        self.readings = list(readings or [])
        self.error = error
        self.calls = 0

    def read(self):
        self.calls += 1
        if self.error is not None:
            return (), self.error
        return (self.readings[min(self.calls - 1, len(self.readings) - 1)],), None


class FixedHost:
    def read(self) -> HostReading:
        return HostReading(cpu_percent=12.0, process_rss_mb=512.0, ram_used_mb=8192.0, ram_total_mb=24576.0)


class NoCuda:
    def read(self):
        return None


def h100(used_mb: float = 20480.0) -> GpuReading:
    return GpuReading(
        index=0,
        name="NVIDIA H100 80GB HBM3",
        memory_used_mb=used_mb,
        memory_total_mb=81559.0,
        process_memory_mb=used_mb - 512,
        utilization_pct=87.0,
        temperature_c=54.0,
        power_w=412.0,
        power_limit_w=700.0,
    )


def fake_sampler(gpu: bool) -> HardwareSampler:
    backend = RecordedGpu([h100()]) if gpu else RecordedGpu(error="no NVIDIA GPU — NVML unavailable (test)")
    return HardwareSampler(gpu=backend, host=FixedHost(), cuda=NoCuda(), clock=lambda: 0.0)


def fake_telemetry(gpu: bool) -> Telemetry:
    """Recorded readings only: the kernel's real peak counters would leak into the figures."""
    return Telemetry(fake_sampler(gpu), exact_peaks=False)
