"""`[model] compile`: the UNet compiled with torch.compile, and what compiling costs and when.

torch.compile traces lazily: the first image (and the first at each new size, batch or prompt
length) traces and compiles, later ones run the compiled code. Adapter switches must not trace
again; the lanes (adapters/lanes.py) see to that, and `graphs()` (Dynamo's own counter of
compiled graphs) is how tests, the GPU check and the engine's notices tell that they did not.
A set that does not fit the lanes runs the UNet uncompiled (`use(False)`), never a silent
recompile on the way to the image.
"""

from __future__ import annotations

import os
from typing import Any

#: The backend torch.compile uses: inductor. SPATIORA_COMPILE_BACKEND=eager keeps Dynamo's
#: tracing and guards (so recompiles count the same) without generating kernels, for tests and
#: the GPU check's CPU dry run.
BACKEND_ENV = "SPATIORA_COMPILE_BACKEND"
#: Traces Dynamo keeps per compiled function before it gives up and runs it uncompiled, without
#: a word (its default is 8): one per image size, batch and prompt length met. The engine's
#: notices report each new trace instead.
RECOMPILE_LIMIT = 64


def graphs() -> int:
    """Graphs Dynamo has compiled in this process so far (a new one = a trace and compile)."""
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"])


class CompiledUNet:
    """The pipeline's UNet, compiled in place (nn.Module.compile: the module and its layers stay
    the same objects, so adapters and offload hooks still find them)."""

    def __init__(self, unet: Any, mode: str) -> None:
        import torch._dynamo

        config = torch._dynamo.config
        config.recompile_limit = max(config.recompile_limit, RECOMPILE_LIMIT)
        backend = os.environ.get(BACKEND_ENV, "inductor")
        self.mode = mode if backend == "inductor" else f"{backend} backend"
        self._unet = unet
        if backend == "inductor":
            unet.compile(mode=mode)
        else:
            unet.compile(backend=backend)
        traced = unet._compiled_call_impl

        def call(*args: Any, **kwargs: Any) -> Any:
            # Schedulers give integer (DPM++, DDIM) or float (Euler) timesteps; as they are,
            # each switch between such tasks would trace again. The UNet embeds timesteps as
            # floats anyway, and integers this size are exact in float32.
            if len(args) > 1:
                args = (args[0], _as_float(args[1]), *args[2:])
            elif "timestep" in kwargs:
                kwargs["timestep"] = _as_float(kwargs["timestep"])
            return traced(*args, **kwargs)

        self._compiled = call
        unet._compiled_call_impl = call
        self.on = True

    def use(self, on: bool) -> None:
        """Run the UNet compiled, or as it is (eager)."""
        self._unet._compiled_call_impl = self._compiled if on else None
        self.on = on

    def release(self) -> None:
        """Before the model goes away: drop Dynamo's traces of it (they hold its code and guards,
        and count towards the limit of traces of the one forward every UNet shares)."""
        import torch._dynamo

        self.use(False)
        torch._dynamo.reset()


def _as_float(timestep: Any) -> Any:
    import torch

    if isinstance(timestep, torch.Tensor):
        return timestep if timestep.is_floating_point() else timestep.to(torch.float32)
    return torch.tensor(float(timestep))
