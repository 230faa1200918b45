"""`spatiora bench lora`: what an adapter switch costs, measured side by side in one run.

The UNet is the real SD 1.5 or SDXL architecture with random weights (`--arch demo`: the demo
model's tiny UNet, to check quickly that everything runs): compute and memory match the real
model, the images mean nothing, and nothing is downloaded. Three adapters of the given rank
target the attention projections (to_q, to_k, to_v, to_out.0) and the feed-forward projections
(ff.net.0.proj, ff.net.2) of every transformer block, written as diffusers .safetensors files
into a temporary folder. The other pipeline parts come from the demo model (LoRA loading needs a
pipeline; the UNet-only adapters never touch them).

Measured, as medians over the switches:
- naive: what many services do per request: load_lora_weights from the file + fuse_lora, and
  later unfuse_lora + unload_lora_weights;
- resident: Spatiora's switch between adapters already on the device (LoraManager), and the
  same switches through diffusers' set_adapters for comparison;
- ram_cache: one adapter on the device, the others parsed in RAM: each switch copies the next
  adapter into the layers of the one leaving (an in-place swap);
- cold: one adapter on the device and no RAM cache: each switch reads the file (page cache);
- fused (adapters.fuse = true): each switch restores the base weights and merges the next set;
  after the fuse/unfuse cycles the base weights are compared with a copy taken before;
- memory: RSS (and CUDA allocated memory on a GPU) after the leak phase's first round and after
  its 200 switches, with two of the three adapters resident so that every tier is exercised;
- one denoising step (UNet forward with classifier-free guidance, batch 2, 512x512 unless
  `step_side` says otherwise) with no adapter, an active unmerged adapter, and it fused.
"""

from __future__ import annotations

import gc
import json
import math
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from spatiora_tui.bench.arch import TARGET_MODULES
from spatiora_tui.units import MB

ADAPTERS = ("bench_a", "bench_b", "bench_c")


@dataclass(frozen=True)
class LoraBenchResult:
    arch: str
    rank: int
    device: str
    adapter_mb: float
    switches: int
    naive_ms: float
    resident_ms: float
    diffusers_set_adapters_ms: float
    ram_cache_ms: float
    cold_ms: float
    fused_switch_ms: float
    fuse_cycles: int
    fuse_max_abs_diff: float  # base weights after the cycles vs before; 0.0 = exact
    leak_switches: int
    rss_before_mb: float
    rss_after_mb: float
    rss_growth_pct: float
    vram_before_mb: float | None
    vram_after_mb: float | None
    vram_growth_pct: float | None
    watchdog_warnings: int  # switches the leak watchdog warned about in the leak phase
    paths: tuple[str, ...]  # how adapters reached the device in the cold and RAM phases
    cold_phases_ms: dict[str, float]  # median ms per phase of a cold switch
    ram_cache_phases_ms: dict[str, float]
    fused_phases_ms: dict[str, float]
    step_ms_no_adapter: float
    step_ms_unmerged: float
    step_ms_fused: float
    step_side: int  # the square image side (pixels) the step costs were timed at
    #: 95th percentiles of the same switches (the slow ones a person notices).
    p95_ms: dict[str, float] = field(default_factory=dict)

    def ratio(self, ms: float) -> float:
        return self.naive_ms / ms if ms > 0 else float("inf")


def run_lora_bench(
    arch: str = "sd15",
    rank: int = 64,
    switches: int = 30,
    device: str = "cpu",
    cache_dir: Path | None = None,
    say: Callable[[str], object] = print,
    leak_switches: int = 200,
    fuse_cycles: int = 100,
    step_side: int = 512,
) -> LoraBenchResult:
    from spatiora_tui.engine.pipeline import quiet_libraries

    quiet_libraries()  # before diffusers is imported: its import chatter would land on the terminal

    from spatiora_tui.bench.arch import FAMILY, build_pipeline, write_random_adapters
    from spatiora_tui.config import AdapterRef, ModelSettings, user_cache_dir
    from spatiora_tui.engine.adapters import LoraManager
    from spatiora_tui.hw.watchdog import LeakWatchdog, read_memory

    # The demo's pipeline around the architecture's UNet (random weights; `demo`: the demo's own
    # tiny UNet): the adapters are UNet-only, so the other parts never take part.
    model = ModelSettings(source="demo", device=device, dtype="fp32")  # type: ignore[arg-type]  # cpu or cuda
    pipe, _ = build_pipeline(arch, model, cache_dir or user_cache_dir(), say, unet_only=True)
    unet = pipe.unet
    family = FAMILY[arch]
    watchdog = LeakWatchdog(tolerance_mb=256)
    watchdog.set_baseline(read_memory())

    def manager_for(**kwargs: Any) -> Any:
        return LoraManager(pipe, family, [folder], **kwargs)

    with tempfile.TemporaryDirectory(prefix="spatiora-bench-lora-") as tmp:
        folder = Path(tmp)
        say(f"writing {len(ADAPTERS)} rank-{rank} adapters…")
        files = write_random_adapters(pipe, folder, ADAPTERS, rank)
        adapter_mb = files[0].stat().st_size / MB
        big = 4 * adapter_mb * len(ADAPTERS)  # MB limits that never bind

        say("naive: load + fuse, unfuse + unload…")
        naive = _naive_ms(pipe, files, max(3, switches // 10))

        def switch(manager: Any, i: int) -> Any:
            return manager.activate([AdapterRef(ADAPTERS[i % len(ADAPTERS)], 0.5 + (i % 4) * 0.25)])

        say("cold: one adapter on the device, no RAM cache: every switch reads the file…")
        manager = manager_for(resident_max=1, ram_cache_mb=0, resident_mb=big)
        cold_reports = [switch(manager, i) for i in range(max(4, switches // 5))][1:]
        _clear(manager)

        say("RAM cache: one adapter on the device, the others parsed in RAM: in-place swaps…")
        manager = manager_for(resident_max=1, ram_cache_mb=big, resident_mb=big)
        for i in range(len(ADAPTERS) + 1):
            switch(manager, i)  # first round: read from disk
        ram_reports = [switch(manager, i) for i in range(switches)]
        _clear(manager)

        say(f"resident: {switches} switches between adapters on the device…")
        manager = manager_for(resident_max=len(ADAPTERS), resident_mb=big)
        for i in range(len(ADAPTERS)):
            switch(manager, i)
        resident = [switch(manager, i).duration_ms for i in range(switches)]
        diffusers_switch = []
        for i in range(switches):  # the same switches through diffusers' own set_adapters
            start = time.perf_counter()
            pipe.set_adapters([ADAPTERS[i % len(ADAPTERS)]], adapter_weights=[0.5 + (i % 4) * 0.25])
            diffusers_switch.append((time.perf_counter() - start) * 1000.0)
        _clear(manager)

        say(f"memory: {leak_switches} switches, two of three adapters resident (RAM, in place, resident)…")
        manager = manager_for(resident_max=2, ram_cache_mb=big, resident_mb=big)
        for i in range(2 * len(ADAPTERS)):
            switch(manager, i)  # every tier filled once
        gc.collect()
        before = read_memory()
        warnings = 0
        for i in range(leak_switches):
            switch(manager, i * 2)  # a stride of 2 over 3 adapters: each switch finds another tier
            if i % 10 == 0:
                held_ram, held_vram = manager.held_mb()
                warnings += watchdog.check(read_memory(), held_ram, held_vram) is not None
        gc.collect()
        after = read_memory()
        paths = sorted({how for report in cold_reports + ram_reports for _, how in report.paths})
        _clear(manager)

        say(f"fused: {fuse_cycles} fuse/unfuse cycles, base weights compared after…")
        manager = manager_for(resident_max=len(ADAPTERS), resident_mb=big, fuse=True)
        targeted = _targeted_base_weights(unet)
        # The reference copy lives in a file, not in RAM: on SDXL the touched weights are ~7 GB,
        # and the fused manager keeps its own copy of them too.
        original = _DiskCopy(folder / "reference.bin", targeted)
        switch(manager, 0)
        # Each switch between adapters is one cycle: unfuse the previous one, fuse the next.
        fused_reports = [switch(manager, i) for i in range(1, fuse_cycles + 1)]
        manager.activate([])  # the last one unfused: the base model again
        fuse_diff = original.max_abs_diff(targeted)
        del original
        _clear(manager)

        say(f"per-step cost at {step_side}x{step_side} (UNet forward, CFG batch 2)…")
        steps = _step_costs(
            pipe,
            manager_for(resident_max=len(ADAPTERS), resident_mb=big),
            manager_for(resident_max=len(ADAPTERS), resident_mb=big, fuse=True),
            unet,
            device,
            step_side // 8,
        )

    def growth(a: float | None, b: float | None) -> float | None:
        return None if a is None or b is None or a <= 0 else (b - a) / a * 100.0

    return LoraBenchResult(
        arch=arch,
        rank=rank,
        device=device,
        adapter_mb=round(adapter_mb, 1),
        switches=switches,
        naive_ms=statistics.median(naive),
        resident_ms=statistics.median(resident),
        diffusers_set_adapters_ms=statistics.median(diffusers_switch),
        ram_cache_ms=statistics.median(r.duration_ms for r in ram_reports),
        cold_ms=statistics.median(r.duration_ms for r in cold_reports),
        fused_switch_ms=statistics.median(r.duration_ms for r in fused_reports),
        fuse_cycles=fuse_cycles,
        fuse_max_abs_diff=fuse_diff,
        leak_switches=leak_switches,
        rss_before_mb=before.rss_mb,
        rss_after_mb=after.rss_mb,
        rss_growth_pct=growth(before.rss_mb, after.rss_mb) or 0.0,
        vram_before_mb=before.vram_mb,
        vram_after_mb=after.vram_mb,
        vram_growth_pct=growth(before.vram_mb, after.vram_mb),
        watchdog_warnings=warnings,
        paths=tuple(paths),
        cold_phases_ms=_phase_medians(cold_reports),
        ram_cache_phases_ms=_phase_medians(ram_reports),
        fused_phases_ms=_phase_medians(fused_reports),
        step_ms_no_adapter=steps["none"],
        step_ms_unmerged=steps["unmerged"],
        step_ms_fused=steps["fused"],
        step_side=step_side,
        p95_ms={
            "naive": p95(naive),
            "resident": p95(resident),
            "diffusers_set_adapters": p95(diffusers_switch),
            "ram_cache": p95([r.duration_ms for r in ram_reports]),
            "cold": p95([r.duration_ms for r in cold_reports]),
            "fused": p95([r.duration_ms for r in fused_reports]),
        },
    )


def p95(values: list[float]) -> float:
    """The 95th percentile, nearest rank (the largest value when there are fewer than 20)."""
    ordered = sorted(values)
    return ordered[math.ceil(0.95 * len(ordered)) - 1]


def _phase_medians(reports: list[Any]) -> dict[str, float]:
    """Median ms per phase, in the order phases happen; phases with a zero median are left out."""
    from spatiora_tui.engine.adapters import PHASES

    medians = {name: round(statistics.median(dict(r.phases_ms).get(name, 0.0) for r in reports), 2) for name in PHASES}
    return {name: ms for name, ms in medians.items() if ms > 0}


class _DiskCopy:
    """Tensors written one after another into a file and read back from a memory map, so that
    the reference costs page cache (which the kernel can drop), not RSS."""

    def __init__(self, path: Path, tensors: dict[str, Any]) -> None:
        import numpy as np

        self.layout: dict[str, tuple[int, tuple[int, ...], Any]] = {}
        offset = 0
        with path.open("wb") as fh:
            for name, tensor in tensors.items():
                array = tensor.detach().cpu().contiguous().numpy()
                array.tofile(fh)  # straight from the tensor's memory, no second copy
                self.layout[name] = (offset, tuple(array.shape), array.dtype)
                offset += array.nbytes
        self.map = np.memmap(path, dtype=np.uint8, mode="r")

    def max_abs_diff(self, tensors: dict[str, Any]) -> float:
        import torch

        worst = 0.0
        for name, tensor in tensors.items():
            offset, shape, dtype = self.layout[name]
            saved = self.map[offset : offset + tensor.numel() * dtype.itemsize].view(dtype).reshape(shape)
            worst = max(worst, float((tensor.detach().cpu() - torch.from_numpy(saved.copy())).abs().max()))
        return worst


def _targeted_base_weights(unet: Any) -> dict[str, Any]:
    """The base weights the bench adapters touch (what fused mode merges into)."""
    return {
        name: module.weight
        for name, module in unet.named_modules()
        if name.endswith(TARGET_MODULES) and hasattr(module, "weight") and "lora" not in name
    }


def _clear(manager: Any) -> None:
    """All of a manager's adapters off the device, before the next phase's manager."""
    manager.activate([])
    for name in manager.resident:
        manager.evict(name)


def _naive_ms(pipe: Any, files: list[Path], cycles: int) -> list[float]:
    """One switch = unfuse + unload the previous adapter, load + fuse the next."""
    times = []
    pipe.load_lora_weights(str(files[0]), adapter_name="naive")
    pipe.fuse_lora()
    for i in range(cycles):
        start = time.perf_counter()
        pipe.unfuse_lora()
        pipe.unload_lora_weights()
        pipe.load_lora_weights(str(files[(i + 1) % len(files)]), adapter_name="naive")
        pipe.fuse_lora()
        times.append((time.perf_counter() - start) * 1000.0)
    pipe.unfuse_lora()
    pipe.unload_lora_weights()
    return times


def _step_costs(
    pipe: Any, manager: Any, fused: Any, unet: Any, device: str, latent_side: int, reps: int = 2
) -> dict[str, float]:
    import torch

    from spatiora_tui.config import AdapterRef

    cross = unet.config.cross_attention_dim
    side = latent_side * 8
    latents = torch.randn(2, unet.config.in_channels, latent_side, latent_side, device=device)
    text = torch.randn(2, 77, cross, device=device)
    timestep = torch.tensor(500, device=device)
    extra: dict[str, Any] = {}
    if unet.config.addition_embed_type == "text_time":  # SDXL: pooled text embeds and size ids
        extra["added_cond_kwargs"] = {
            "text_embeds": torch.randn(2, 1280, device=device),
            "time_ids": torch.tensor([[side, side, 0, 0, side, side]] * 2, device=device),
        }

    def step() -> float:
        times = []
        with torch.no_grad():
            for _ in range(reps):
                start = time.perf_counter()
                unet(latents, timestep, encoder_hidden_states=text, **extra)
                if device == "cuda":
                    torch.cuda.synchronize()
                times.append((time.perf_counter() - start) * 1000.0)
        return statistics.median(times)

    costs = {}
    with torch.no_grad():
        unet(latents, timestep, encoder_hidden_states=text, **extra)  # warm-up: first-call allocations
    costs["none"] = step()
    manager.activate([AdapterRef(ADAPTERS[0], 1.0)])
    costs["unmerged"] = step()
    _clear(manager)
    fused.activate([AdapterRef(ADAPTERS[0], 1.0)])
    costs["fused"] = step()
    _clear(fused)
    return costs


def print_lora_bench(result: LoraBenchResult) -> None:
    r = result
    print(
        f"spatiora bench lora · {r.arch} UNet (random weights) · rank {r.rank} · adapter {r.adapter_mb:.1f} MB · "
        f"{r.device} · {r.switches} switches"
    )
    rows = [
        ("naive: load+fuse / unfuse+unload", "naive", r.naive_ms, "1.0x", ""),
        (
            "resident switch (on the device)",
            "resident",
            r.resident_ms,
            f"{r.ratio(r.resident_ms):.0f}x",
            "target >= 100x",
        ),
        (
            "  same, via diffusers set_adapters",
            "diffusers_set_adapters",
            r.diffusers_set_adapters_ms,
            f"{r.ratio(r.diffusers_set_adapters_ms):.0f}x",
            "",
        ),
        (
            "RAM cache switch (in place)",
            "ram_cache",
            r.ram_cache_ms,
            f"{r.ratio(r.ram_cache_ms):.0f}x",
            "target >= 20x",
        ),
        ("cold switch (reads the file)", "cold", r.cold_ms, f"{r.ratio(r.cold_ms):.1f}x", ""),
        ("fused-mode switch (unfuse + fuse)", "fused", r.fused_switch_ms, f"{r.ratio(r.fused_switch_ms):.1f}x", ""),
    ]
    print(f"{'switch':36s} {'median ms':>10s} {'p95 ms':>8s} {'vs naive':>9s}")
    for label, key, ms, ratio, target in rows:
        tail = r.p95_ms.get(key)
        print(f"{label:36s} {ms:10.1f} {'' if tail is None else f'{tail:8.1f}':>8s} {ratio:>9s}  {target}")

    def phases(figures: dict[str, float]) -> str:
        return " · ".join(f"{name} {ms:.1f}" for name, ms in figures.items())

    print(f"phases (median ms): cold: {phases(r.cold_phases_ms)}")
    print(f"                    RAM cache: {phases(r.ram_cache_phases_ms)}")
    print(f"                    fused: {phases(r.fused_phases_ms)}")
    print(f"paths taken in the cold and RAM phases: {', '.join(r.paths)}")
    print(f"base weights after {r.fuse_cycles} fuse/unfuse cycles: max abs difference {r.fuse_max_abs_diff:g}")
    print(
        f"RSS over {r.leak_switches} switches (all tiers): {r.rss_before_mb:.0f} -> {r.rss_after_mb:.0f} MB "
        f"({r.rss_growth_pct:+.2f}%; target < 1%); leak watchdog warnings: {r.watchdog_warnings}"
    )
    if r.vram_growth_pct is not None:
        print(
            f"CUDA allocated over the same switches: {r.vram_before_mb:.0f} -> {r.vram_after_mb:.0f} MB "
            f"({r.vram_growth_pct:+.2f}%)"
        )
    print(
        f"one step at {r.step_side}x{r.step_side} (CFG): no adapter {r.step_ms_no_adapter:.0f} ms · active unmerged "
        f"{r.step_ms_unmerged:.0f} ms · fused {r.step_ms_fused:.0f} ms"
    )


def write_json(result: LoraBenchResult, path: Path) -> None:
    path.write_text(json.dumps(asdict(result), indent=1) + "\n", encoding="utf-8")
