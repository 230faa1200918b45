"""Hardware sampling into immutable snapshots: NVML for the GPU, torch's CUDA counters, psutil.

Backends are a seam: each is an object with `read()` returning a partial reading, so tests feed
recorded readings instead of patching libraries. A GPU field the device does not support
(NVMLError_NotSupported) is simply absent (None); no NVML at all is a normal state with its
reason kept for the UI ("no NVIDIA GPU — NVML unavailable").

This module never imports torch: CUDA counters are read only when the engine has already
imported torch in this process, so the UI's hardware pane costs nothing on a CPU machine.
"""

from __future__ import annotations

import importlib
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

import psutil

from spatiora_tui.hw.memory import cuda_torch
from spatiora_tui.units import MB


@dataclass(frozen=True)
class GpuReading:
    """One GPU as NVML sees it. Unsupported fields are None."""

    index: int
    name: str
    memory_used_mb: float | None = None
    memory_total_mb: float | None = None
    process_memory_mb: float | None = None  # this process's share, from the running-process list
    utilization_pct: float | None = None
    temperature_c: float | None = None
    power_w: float | None = None
    power_limit_w: float | None = None
    graphics_clock_mhz: float | None = None
    memory_clock_mhz: float | None = None


@dataclass(frozen=True)
class CudaReading:
    """torch's view of this process on the current CUDA device."""

    allocated_mb: float
    reserved_mb: float
    max_allocated_mb: float


@dataclass(frozen=True)
class HostReading:
    cpu_percent: float  # the whole machine, all cores
    process_rss_mb: float
    ram_used_mb: float
    ram_total_mb: float
    process_cpu_percent: float | None = None  # this process; 100 = one core busy


@dataclass(frozen=True)
class HardwareSnapshot:
    """Everything sampled at one instant (time.monotonic())."""

    time: float
    host: HostReading
    gpus: tuple[GpuReading, ...] = ()
    nvml_error: str | None = None  # why there are no GPU readings, when there are none
    cuda: CudaReading | None = None
    #: What the engine was doing (telemetry stage, e.g. "denoise") and for which task mode.
    stage: str | None = None
    task: str | None = None
    #: The link to the engine's machine when it is another (remote/telemetry.py): round trip
    #: and bytes per second, e.g. "3 ms · 41 KB/s"; None when the engine runs here.
    link: str | None = None

    @property
    def gpu(self) -> GpuReading | None:
        """The GPU the engine uses (the first visible one)."""
        return self.gpus[0] if self.gpus else None

    @property
    def vram_mb(self) -> float | None:
        """This process's GPU memory: NVML's per-process figure, else torch's reserved memory."""
        gpu = self.gpu
        if gpu is not None and gpu.process_memory_mb is not None:
            return gpu.process_memory_mb
        return self.cuda.reserved_mb if self.cuda is not None else None


class GpuBackend(Protocol):
    def read(self) -> tuple[tuple[GpuReading, ...], str | None]:
        """GPU readings, and the reason when there are none."""
        ...


class HostBackend(Protocol):
    def read(self) -> HostReading: ...


class CudaBackend(Protocol):
    def read(self) -> CudaReading | None: ...


class NvmlBackend:
    """GPU readings through pynvml (the nvidia-ml-py distribution). Initialised on first read.

    `nvml` is the seam for tests: any object with pynvml's functions, constants and NVMLError
    (a recorded device, one that lacks fields, one that fails mid-run); None imports pynvml.
    """

    def __init__(self, nvml: Any = None) -> None:
        self._module = nvml
        self._nvml: Any = None
        self._handles: list[Any] = []
        self._error: str | None = None
        self._pid = os.getpid()

    def read(self) -> tuple[tuple[GpuReading, ...], str | None]:
        if self._nvml is None and self._error is None:
            self._init()
        if self._error is not None:
            return (), self._error
        readings = []
        for index, handle in enumerate(self._handles):
            try:
                readings.append(self._read_one(index, handle))
            except Exception as exc:  # a GPU that vanished or a driver hiccup: report, keep going
                readings.append(GpuReading(index=index, name=f"GPU {index} (read failed: {type(exc).__name__})"))
        return tuple(readings), None

    def _init(self) -> None:
        try:
            pynvml = self._module if self._module is not None else importlib.import_module("pynvml")
            pynvml.nvmlInit()
            self._handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(pynvml.nvmlDeviceGetCount())]
            self._nvml = pynvml
            if not self._handles:
                self._error = "NVML sees no GPU"
        except Exception as exc:
            self._error = f"no NVIDIA GPU — NVML unavailable ({type(exc).__name__})"

    def _read_one(self, index: int, handle: Any) -> GpuReading:
        nv = self._nvml

        def opt(fn: Any, *args: Any) -> Any:
            try:
                return fn(*args)
            except nv.NVMLError:  # NotSupported and friends: the field is absent
                return None

        name = opt(nv.nvmlDeviceGetName, handle) or f"GPU {index}"
        mem = opt(nv.nvmlDeviceGetMemoryInfo, handle)
        util = opt(nv.nvmlDeviceGetUtilizationRates, handle)
        temp = opt(nv.nvmlDeviceGetTemperature, handle, nv.NVML_TEMPERATURE_GPU)
        power = opt(nv.nvmlDeviceGetPowerUsage, handle)
        limit = opt(nv.nvmlDeviceGetEnforcedPowerLimit, handle)
        graphics_clock = opt(nv.nvmlDeviceGetClockInfo, handle, nv.NVML_CLOCK_GRAPHICS)
        memory_clock = opt(nv.nvmlDeviceGetClockInfo, handle, nv.NVML_CLOCK_MEM)
        procs = opt(nv.nvmlDeviceGetComputeRunningProcesses, handle)
        mine = None
        if procs is not None:
            used = [p.usedGpuMemory for p in procs if p.pid == self._pid and p.usedGpuMemory is not None]
            mine = sum(used) / MB if used else 0.0
        return GpuReading(
            index=index,
            name=name.decode() if isinstance(name, bytes) else str(name),
            memory_used_mb=mem.used / MB if mem is not None else None,
            memory_total_mb=mem.total / MB if mem is not None else None,
            process_memory_mb=mine,
            utilization_pct=float(util.gpu) if util is not None else None,
            temperature_c=float(temp) if temp is not None else None,
            power_w=power / 1000.0 if power is not None else None,
            power_limit_w=limit / 1000.0 if limit is not None else None,
            graphics_clock_mhz=float(graphics_clock) if graphics_clock is not None else None,
            memory_clock_mhz=float(memory_clock) if memory_clock is not None else None,
        )


class PsutilBackend:
    """CPU %, process RSS and system RAM."""

    def __init__(self) -> None:
        self._process = psutil.Process()
        self._process.cpu_percent(None)  # the first call only sets the reference point

    def read(self) -> HostReading:
        vm = psutil.virtual_memory()
        return HostReading(
            cpu_percent=psutil.cpu_percent(None),
            process_rss_mb=self._process.memory_info().rss / MB,
            ram_used_mb=(vm.total - vm.available) / MB,
            ram_total_mb=vm.total / MB,
            process_cpu_percent=self._process.cpu_percent(None),
        )


class TorchCudaBackend:
    """torch.cuda memory counters, read only if torch is already imported and CUDA initialised."""

    def read(self) -> CudaReading | None:
        torch = cuda_torch()
        if torch is None:
            return None
        try:
            return CudaReading(
                allocated_mb=torch.cuda.memory_allocated() / MB,
                reserved_mb=torch.cuda.memory_reserved() / MB,
                max_allocated_mb=torch.cuda.max_memory_allocated() / MB,
            )
        except Exception:
            return None


@dataclass
class HardwareSampler:
    """Takes snapshots from its backends. `sample()` is serialised: calls never overlap."""

    gpu: GpuBackend = field(default_factory=NvmlBackend)
    host: HostBackend = field(default_factory=PsutilBackend)
    cuda: CudaBackend = field(default_factory=TorchCudaBackend)
    clock: Any = time.monotonic
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def sample(self) -> HardwareSnapshot:
        with self._lock:
            gpus, error = self.gpu.read()
            return HardwareSnapshot(
                time=self.clock(), host=self.host.read(), gpus=gpus, nvml_error=error, cuda=self.cuda.read()
            )
