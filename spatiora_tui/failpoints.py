"""Failpoints: named places in the code where a test can make a fault happen.

Faults that are rare and hard to provoke for real (the GPU running out of memory in the middle of
a VAE decode, a full disk, the process killed half-way through writing a file) are made to happen
here, at the exact place they would happen, so every test of them exercises the real recovery path
and no test patches library internals. Production code calls `hit(name)` at each point; with
nothing armed that is one dictionary lookup.

Points (see docs/reliability.md):
    load               after the base model is read, before it moves to its device
    denoise            each UNet call while denoising
    vae decode         before the final VAE decode
    atomic write       half-way through writing any file atomically (image, history index, config)
    save               before an image is written

Actions:
    oom     the device's out-of-memory error (torch.OutOfMemoryError)
    memory  MemoryError, as the CPU allocator raises it when the host runs out of memory
    enospc  OSError "No space left on device"
    eacces  PermissionError "Permission denied"
    kill    SIGKILL to this process: nothing after this point runs, no cleanup, no atexit

Arm them in-process with `arm()`, or for a child process through the environment:
    SPATIORA_FAILPOINTS="atomic write=kill"            the first hit
    SPATIORA_FAILPOINTS="denoise=oom@3;save=enospc*2"  the 3rd hit; the first 2 hits
"""

from __future__ import annotations

import errno
import os
import signal
import sys
import threading
from dataclasses import dataclass

ENV = "SPATIORA_FAILPOINTS"
POINTS = ("load", "denoise", "vae decode", "atomic write", "save")
ACTIONS = ("oom", "memory", "enospc", "eacces", "kill")


@dataclass
class _Armed:
    action: str
    at: int  # fire from this hit on (1 = the first)
    times: int  # fire this many times, then disarm
    seen: int = 0


_armed: dict[str, _Armed] = {}
_lock = threading.Lock()


def arm(point: str, action: str, *, at: int = 1, times: int = 1) -> None:
    """Make `point` fail with `action` on its `at`-th hit, `times` times in a row."""
    if point not in POINTS:
        raise ValueError(f"unknown failpoint {point!r}; known: {', '.join(POINTS)}")
    if action not in ACTIONS:
        raise ValueError(f"unknown failpoint action {action!r}; known: {', '.join(ACTIONS)}")
    with _lock:
        _armed[point] = _Armed(action, max(1, at), max(1, times))


def reset() -> None:
    """Disarm every point."""
    with _lock:
        _armed.clear()


def armed() -> dict[str, str]:
    """Point -> action, for what is armed now."""
    with _lock:
        return {point: a.action for point, a in _armed.items()}


def hit(point: str) -> None:
    """Called by production code at `point`: raises (or kills) when a test armed it."""
    if not _armed:
        return
    with _lock:
        armed_point = _armed.get(point)
        if armed_point is None:
            return
        armed_point.seen += 1
        if armed_point.seen < armed_point.at:
            return
        armed_point.times -= 1
        if armed_point.times <= 0:
            del _armed[point]
        action = armed_point.action
    _fire(point, action)


def _fire(point: str, action: str) -> None:
    if action == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    if action == "enospc":
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    if action == "eacces":
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))
    if action == "memory":
        raise MemoryError(f"failpoint {point!r}: cannot allocate memory")
    message = f"failpoint {point!r}: CUDA out of memory. Tried to allocate 2.00 GiB"
    # The engine's points fire with torch loaded: its own error type, as CUDA raises it. Never
    # imported here (this module sits below everything), so elsewhere the same text in the
    # RuntimeError that torch.OutOfMemoryError is.
    torch = sys.modules.get("torch")
    raise torch.OutOfMemoryError(message) if torch is not None else RuntimeError(message)


def arm_from_env(value: str | None = None) -> None:
    """Arm what SPATIORA_FAILPOINTS names (see the module docstring). Bad entries raise ValueError."""
    text = os.environ.get(ENV, "") if value is None else value
    for entry in filter(None, (part.strip() for part in text.split(";"))):
        point, _, spec = entry.partition("=")
        action, times = spec, 1
        if "*" in action:
            action, count = action.split("*", 1)
            times = int(count)
        at = 1
        if "@" in action:
            action, where = action.split("@", 1)
            at = int(where)
        arm(point.strip(), action.strip(), at=at, times=times)
