"""Telemetry: NVML through its seam (present, absent, unsupported fields, failing mid-run), the
sampler thread, stage tagging and peaks with recorded readings, exact peaks, the real engine's
stages on the demo model, and GPU checks that run where CUDA is."""

from __future__ import annotations

import mmap
import os
import sys
import threading
import time

import pytest

from spatiora_tui.hw import HardwareSampler, HostReading, NvmlBackend, Telemetry
from spatiora_tui.hw.telemetry import stage_summary

MB = 2**20


class FakeNvml:
    """A pynvml stand-in: one GPU whose readings and failures a test decides."""

    NVML_TEMPERATURE_GPU = 0
    NVML_CLOCK_GRAPHICS = 0
    NVML_CLOCK_MEM = 2

    class NVMLError(Exception):
        pass

    class NVMLError_NotSupported(NVMLError):
        pass

    class _Memory:
        def __init__(self, used: int, total: int) -> None:
            self.used, self.total = used, total

    class _Util:
        gpu = 73

    class _Proc:
        def __init__(self, pid: int, used: int | None) -> None:
            self.pid, self.usedGpuMemory = pid, used

    def __init__(self, *, absent: bool = False, unsupported: tuple[str, ...] = (), fail_memory_on: int = 0) -> None:
        self.absent = absent
        self.unsupported = set(unsupported)
        self.fail_memory_on = fail_memory_on  # the nth memory read raises a non-NVML error
        self.memory_reads = 0
        self.used_mb = 10_240

    def _check(self, name: str) -> None:
        if name in self.unsupported:
            raise self.NVMLError_NotSupported(name)

    def nvmlInit(self) -> None:
        if self.absent:
            raise self.NVMLError("Driver Not Loaded")

    def nvmlDeviceGetCount(self) -> int:
        return 1

    def nvmlDeviceGetHandleByIndex(self, index: int) -> str:
        return f"gpu{index}"

    def nvmlDeviceGetName(self, handle: str) -> bytes:
        return b"NVIDIA H200"

    def nvmlDeviceGetMemoryInfo(self, handle: str):
        self.memory_reads += 1
        if self.memory_reads == self.fail_memory_on:
            raise RuntimeError("GPU has fallen off the bus")
        return self._Memory(self.used_mb * MB, 143_771 * MB)

    def nvmlDeviceGetUtilizationRates(self, handle: str):
        self._check("utilization")
        return self._Util()

    def nvmlDeviceGetTemperature(self, handle: str, sensor: int) -> int:
        self._check("temperature")
        return 41

    def nvmlDeviceGetPowerUsage(self, handle: str) -> int:
        self._check("power")
        return 311_000

    def nvmlDeviceGetEnforcedPowerLimit(self, handle: str) -> int:
        self._check("power")
        return 700_000

    def nvmlDeviceGetClockInfo(self, handle: str, clock: int) -> int:
        self._check("clocks")
        return 1980 if clock == self.NVML_CLOCK_GRAPHICS else 2619

    def nvmlDeviceGetComputeRunningProcesses(self, handle: str):
        self._check("processes")
        return [self._Proc(os.getpid(), 6_000 * MB), self._Proc(1, 2_000 * MB)]


class ScriptedHost:
    """Host readings whose RSS a test sets; can fail once on demand."""

    def __init__(self) -> None:
        self.rss_mb = 1000.0
        self.fail_next = False

    def read(self) -> HostReading:
        if self.fail_next:
            self.fail_next = False
            raise OSError("psutil could not read /proc")
        return HostReading(
            cpu_percent=50.0,
            process_rss_mb=self.rss_mb,
            ram_used_mb=8000.0,
            ram_total_mb=24000.0,
            process_cpu_percent=100.0,
        )


class NoCuda:
    def read(self):
        return None


def recorded(nvml: FakeNvml, host: ScriptedHost | None = None) -> Telemetry:
    sampler = HardwareSampler(gpu=NvmlBackend(nvml), host=host or ScriptedHost(), cuda=NoCuda())
    return Telemetry(sampler, exact_peaks=False)


# -- the sampler ---------------------------------------------------------------------------------


def test_gpu_present_gives_every_field() -> None:
    snap = recorded(FakeNvml()).sample()
    gpu = snap.gpu
    assert snap.nvml_error is None and gpu is not None
    assert gpu.name == "NVIDIA H200"
    assert gpu.memory_used_mb == 10_240 and gpu.memory_total_mb == 143_771
    assert gpu.process_memory_mb == 6_000  # only this process's entry in the running-process list
    assert (gpu.utilization_pct, gpu.temperature_c, gpu.power_w, gpu.power_limit_w) == (73, 41, 311, 700)
    assert (gpu.graphics_clock_mhz, gpu.memory_clock_mhz) == (1980, 2619)
    assert snap.vram_mb == 6_000
    assert snap.host.process_cpu_percent == 100.0


def test_no_nvml_is_a_normal_state() -> None:
    snap = recorded(FakeNvml(absent=True)).sample()
    assert snap.gpus == () and snap.gpu is None and snap.vram_mb is None
    assert snap.nvml_error.startswith("no NVIDIA GPU — NVML unavailable")
    assert snap.host.process_rss_mb == 1000.0  # the host figures are there regardless


def test_unsupported_fields_are_absent_not_errors() -> None:
    snap = recorded(FakeNvml(unsupported=("temperature", "power", "clocks", "processes"))).sample()
    gpu = snap.gpu
    assert gpu.memory_used_mb == 10_240 and gpu.utilization_pct == 73
    assert gpu.temperature_c is None and gpu.power_w is None and gpu.power_limit_w is None
    assert gpu.graphics_clock_mhz is None and gpu.memory_clock_mhz is None
    assert gpu.process_memory_mb is None


def test_a_call_failing_mid_run_is_reported_and_sampling_goes_on() -> None:
    telemetry = recorded(FakeNvml(fail_memory_on=2))
    first, second, third = telemetry.sample(), telemetry.sample(), telemetry.sample()
    assert first.gpu.memory_used_mb == 10_240
    assert "read failed: RuntimeError" in second.gpu.name and second.gpu.memory_used_mb is None
    assert third.gpu.memory_used_mb == 10_240 and third.gpu.name == "NVIDIA H200"


def test_the_sampler_thread_survives_a_failing_backend_and_never_overlaps() -> None:
    host = ScriptedHost()
    telemetry = recorded(FakeNvml(), host)
    telemetry.hz = telemetry.idle_hz = 200.0
    active, overlaps, seen = [0], [0], []
    lock = threading.Lock()
    original = telemetry.sampler.host.read

    def slow_read() -> HostReading:
        with lock:
            active[0] += 1
            overlaps[0] = max(overlaps[0], active[0])
        try:
            return original()
        finally:
            with lock:
                active[0] -= 1

    telemetry.sampler.host.read = slow_read  # type: ignore[method-assign]  # a reading that takes its time
    got_ten = threading.Event()
    telemetry.subscribe(lambda snap: (seen.append(snap), len(seen) >= 10 and got_ten.set()))
    host.fail_next = True  # the first read raises; the loop must carry on
    telemetry.start()
    try:
        assert got_ten.wait(10)
        telemetry.sample()  # a sample from another thread at the same time: serialised
    finally:
        telemetry.stop()
    assert overlaps[0] == 1
    assert all(snap.stage is None for snap in seen)


def test_the_real_backends_on_this_machine() -> None:
    """Whatever this machine has, a reading comes back: GPU readings or the plain reason."""
    snap = Telemetry(exact_peaks=False).sample()
    assert snap.host.process_rss_mb > 0 and snap.host.ram_total_mb > 0
    assert snap.gpus or snap.nvml_error


# -- stages and peaks with recorded readings ----------------------------------------------------


def test_samples_carry_the_stage_and_task_and_peaks_add_up() -> None:
    host = ScriptedHost()
    nvml = FakeNvml()
    telemetry = recorded(nvml, host)
    idle = telemetry.sample()
    assert (idle.stage, idle.task) == (None, None)

    with telemetry.stage("adapter switch", task="interior"):
        host.rss_mb = 1100.0
        tagged = telemetry.sample()
    assert (tagged.stage, tagged.task) == ("adapter switch", "interior")
    with telemetry.stage("denoise"):
        host.rss_mb = 3000.0
        telemetry.sample()
        host.rss_mb = 2000.0
    with telemetry.stage("VAE decode"):
        host.rss_mb = 2500.0
        telemetry.sample()
        host.rss_mb = 1200.0
    host.rss_mb = 9999.0
    telemetry.sample()  # idle: counts for no task

    stages = telemetry.peaks_by_stage("interior")
    assert list(stages) == ["adapter switch", "denoise", "VAE decode"]
    assert stages["adapter switch"].rss_mb == 1100.0
    assert stages["denoise"].rss_mb == 3000.0 and stages["VAE decode"].rss_mb == 2500.0
    assert stages["denoise"].vram_mb == 6_000 and stages["denoise"].passes == 1
    assert telemetry.peaks_by_task()["interior"].rss_mb == 3000.0
    records = telemetry.records_since(0)
    assert [r.stage for r in records] == ["adapter switch", "denoise", "VAE decode"]
    assert all(r.task == "interior" and r.ms >= 0 and not r.exact_rss for r in records)
    assert "denoise" in stage_summary(records) and "RSS 2.93 GB" in stage_summary(records)


def test_nested_stages_and_a_failure_inside_one() -> None:
    telemetry = recorded(FakeNvml())
    with pytest.raises(ValueError), telemetry.stage("outer", task="floorplan"):
        telemetry.enter("inner")  # never exited by its owner
        raise ValueError("boom")
    assert telemetry.depth == 0 and telemetry.current_stage is None
    assert [r.stage for r in telemetry.records_since(0)] == ["inner", "outer"]


def test_records_since_a_mark_are_one_requests_stages() -> None:
    telemetry = recorded(FakeNvml())
    with telemetry.stage("load base"):
        pass
    mark = telemetry.mark()
    with telemetry.stage("denoise", task="interior"):
        pass
    assert [r.stage for r in telemetry.records_since(mark)] == ["denoise"]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the kernel's RSS high-water mark is Linux's")
def test_exact_peaks_catch_what_no_sample_saw() -> None:
    """A 300 MB buffer that lives and dies between two samples is still in the stage's peak."""
    telemetry = Telemetry(HardwareSampler(gpu=NvmlBackend(FakeNvml(absent=True)), cuda=NoCuda()))
    with telemetry.stage("quiet"):
        pass
    quiet = telemetry.records_since(0)[-1]
    with telemetry.stage("spike"):
        # An anonymous mapping: freed, it leaves RSS whatever earlier tests left in the C heap.
        buffer = mmap.mmap(-1, 300 * MB)
        for page in range(0, len(buffer), 4096):  # touch every page so it is resident (no big temporary)
            buffer[page] = 1
        buffer.close()
    spike = telemetry.records_since(0)[-1]
    assert spike.exact_rss
    assert spike.peak_rss_mb - quiet.peak_rss_mb > 250
    assert telemetry.latest.host.process_rss_mb < spike.peak_rss_mb - 250  # the samples never saw it


def test_the_sampler_slows_down_at_rest_and_takes_up_the_full_rate_when_a_stage_begins() -> None:
    telemetry = recorded(FakeNvml())
    telemetry.hz, telemetry.idle_hz = 50.0, 2.0
    times: list[float] = []
    ten_busy = threading.Event()
    began = [float("inf")]

    def listener(_snap) -> None:
        times.append(time.monotonic())
        if sum(t > began[0] for t in times) >= 10:
            ten_busy.set()

    telemetry.subscribe(listener)
    assert telemetry.period() == 0.5
    telemetry.start()
    try:
        time.sleep(1.2)
        at_rest = len(times)
        with telemetry.stage("denoise", task="t"):
            assert telemetry.period() == 0.02
            began[0] = time.monotonic()
            assert ten_busy.wait(10)
            took = time.monotonic() - began[0]
    finally:
        telemetry.stop()
    assert at_rest <= 4, f"{at_rest} samples in 1.2 s at rest (2 Hz)"
    # At the rest rate, ten samples would take 4.5 s or more.
    assert took < 4.0, f"ten samples took {took:.1f} s once a stage began"


def test_releasing_memory_after_a_failed_run_collects_cycles_and_needs_no_torch(monkeypatch) -> None:
    """hw.memory.release_memory, what the engine calls after an out-of-memory: Python's garbage
    first (a failed run's tensors hang in reference cycles with its traceback), then the
    allocator; on a "GPU" run in a process that never started CUDA it imports nothing."""
    import gc
    import weakref

    from spatiora_tui.hw.memory import release_memory

    class Held:
        pass

    held = Held()
    held.me = held  # type: ignore[attr-defined]
    ref = weakref.ref(held)
    del held
    gc.disable()
    try:
        release_memory(on_cuda=False)
        assert ref() is None
        monkeypatch.delitem(sys.modules, "torch", raising=False)
        release_memory(on_cuda=True)
        assert "torch" not in sys.modules
    finally:
        gc.enable()
