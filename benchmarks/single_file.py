"""Real-size single files: load them offline, time the load against a diffusers folder, and
measure what a base-model switch costs and gives back.

Builds the real SD 1.5 (and with --arch sdxl, SDXL) architecture from the config folders Spatiora
ships, with random weights in fp16, and writes it twice: as an AUTOMATIC1111-layout single file
(spatiora_tui/engine/ldm_layout.py) and as a diffusers folder (save_pretrained). Then, in one run:

1. load: the single file through Spatiora's loader (shipped config, built-in tokenizer, no
   network) and the folder through diffusers' from_pretrained, alternately, --runs times each,
   with both files in the page cache (one untimed read first). Every tensor of the single-file
   load is compared with the folder load: the real-size key layout must come back exactly.
2. switch (SD 1.5): an engine on file A generates one image, then switches to file B (another
   random SD 1.5); its RSS after the switch is compared with a fresh process that loads B.

    python benchmarks/single_file.py                      # SD 1.5, 3 runs
    python benchmarks/single_file.py --arch sd15,sdxl --runs 2 --json out.json

Needs about 2 GB of disk per SD 1.5 copy and 7 GB per SDXL copy (in --work, default a temp dir),
and for SDXL about 16 GB of RAM. Nothing is downloaded.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Literal

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def build(arch: str, seed: int):
    """The real architecture from the shipped config folders, random weights, fp16."""
    from spatiora_tui.bench.arch import build_pipeline
    from spatiora_tui.config import ModelSettings

    pipe, _ = build_pipeline(arch, ModelSettings(device="cpu", dtype="fp16"), Path(tempfile.gettempdir()), seed=seed)
    return pipe


def write(arch: str, work: Path, seed: int) -> tuple[Path, Path]:
    from spatiora_tui.engine.ldm_layout import save_single_file

    single, folder = work / f"{arch}-{seed}.safetensors", work / f"{arch}-{seed}-diffusers"
    if single.exists() and folder.exists():
        return single, folder
    t = time.perf_counter()
    pipe = build(arch, seed)
    print(f"  built {arch} (seed {seed}) in {time.perf_counter() - t:.1f} s", file=sys.stderr)
    save_single_file(pipe, single)
    pipe.save_pretrained(folder, safe_serialization=True)
    print(f"  wrote {single.name} ({single.stat().st_size / 2**30:.2f} GiB) and {folder.name}", file=sys.stderr)
    return single, folder


def page_in(*paths: Path) -> None:
    for path in paths:
        for file in [path] if path.is_file() else sorted(path.rglob("*.safetensors")):
            with open(file, "rb") as fh:
                while fh.read(1 << 24):
                    pass


DTYPE: Literal["fp16", "fp32"] = (
    "fp16"  # --dtype: fp16 maps the fp16 files as they are; fp32 converts, so every byte is read
)


def load_single(path: Path, cache: Path):
    from spatiora_tui.config import ModelSettings
    from spatiora_tui.engine.pipeline import load_pipeline

    return load_pipeline(ModelSettings(source=str(path), device="cpu", dtype=DTYPE), cache)[0]


def load_folder(folder: Path, arch: str):
    import diffusers
    import torch

    cls = diffusers.StableDiffusionXLPipeline if arch == "sdxl" else diffusers.StableDiffusionPipeline
    extra = {} if arch == "sdxl" else {"safety_checker": None}
    dtype = {"fp16": torch.float16, "fp32": torch.float32}[DTYPE]
    return cls.from_pretrained(folder, torch_dtype=dtype, local_files_only=True, **extra)


def compare(a, b) -> tuple[int, int]:
    """(tensors compared, tensors that differ) over every component."""
    import torch

    count = bad = 0
    for name in ("unet", "vae", "text_encoder", "text_encoder_2"):
        left, right = getattr(a, name, None), getattr(b, name, None)
        if left is None:
            continue
        other = right.state_dict()
        for key, tensor in left.state_dict().items():
            if key.endswith("position_ids"):
                continue
            count += 1
            bad += not torch.equal(tensor, other[key])
    return count, bad


def bench_load(arch: str, work: Path, runs: int) -> dict:
    from spatiora_tui.engine.pipeline import quiet_libraries

    quiet_libraries()
    single, folder = write(arch, work, seed=1)
    cache = work / "cache"
    t = time.perf_counter()
    load_single(single, cache)  # computes and caches the file's sha256 (the "Model hash")
    first = time.perf_counter() - t
    gc.collect()
    page_in(single, folder)
    single_s, folder_s = [], []
    checked = None
    for run in range(runs):
        t = time.perf_counter()
        a = load_single(single, cache)
        single_s.append(time.perf_counter() - t)
        t = time.perf_counter()
        b = load_folder(folder, arch)
        folder_s.append(time.perf_counter() - t)
        if checked is None:
            checked = compare(a, b)
        del a, b
        gc.collect()
        print(
            f"  {arch} run {run + 1}: single file {single_s[-1]:.2f} s, diffusers folder {folder_s[-1]:.2f} s",
            file=sys.stderr,
        )
    return {
        "arch": arch,
        "runs": runs,
        "dtype": DTYPE,
        "file_gib": single.stat().st_size / 2**30,
        "first_load_with_hash_s": first,
        "single_file_s": single_s,
        "folder_s": folder_s,
        "single_file_median_s": statistics.median(single_s),
        "folder_median_s": statistics.median(folder_s),
        "ratio_single_over_folder": statistics.median(single_s) / statistics.median(folder_s),
        "tensors_compared": checked[0],
        "tensors_different": checked[1],
    }


FRESH = """
import json, sys, gc
sys.path.insert(0, {repo!r})
from spatiora_tui.engine.local import LocalEngine
from spatiora_tui.engine.api import GenerationRequest
from spatiora_tui.hw.watchdog import read_memory
from benchmarks.single_file import engine_settings
from pathlib import Path
engine = LocalEngine(engine_settings(Path({path!r})), cache_dir=Path({cache!r}))
engine.load()
after_load = read_memory().rss_mb
engine.generate(GenerationRequest(prompt="a room", task="t", seed=1))
gc.collect()
print(json.dumps({{"after_load_mb": after_load, "after_generate_mb": read_memory().rss_mb}}))
"""


def engine_settings(path: Path):
    from spatiora_tui.config import ModelSettings, Settings, TaskSettings

    task = TaskSettings(name="t", steps=1, width=64, height=64, scheduler="euler", guidance=7.0)
    return Settings(
        model=ModelSettings(source=str(path), device="cpu", dtype="fp32"), tasks=(task,), base_dir=path.parent
    )


def bench_switch(work: Path) -> dict:
    """SD 1.5 file A -> file B in one engine, against a fresh process on B."""
    from spatiora_tui.engine.api import GenerationRequest
    from spatiora_tui.engine.local import LocalEngine
    from spatiora_tui.hw.watchdog import read_memory

    a, _ = write("sd15", work, seed=1)
    b, _ = write("sd15", work, seed=2)
    cache = work / "cache"
    page_in(a, b)
    fresh_runs = []
    for _ in range(2):
        out = subprocess.run(
            [sys.executable, "-c", FRESH.format(repo=str(REPO), path=str(b), cache=str(cache))],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )
        fresh_runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    engine = LocalEngine(engine_settings(a), cache_dir=cache)
    engine.load()
    engine.generate(GenerationRequest(prompt="a room", task="t", seed=1))
    before = read_memory().rss_mb
    switch = engine.switch_model(str(b))
    gc.collect()
    after_switch = read_memory().rss_mb
    engine.generate(GenerationRequest(prompt="a room", task="t", seed=1))
    gc.collect()
    after_generate = read_memory().rss_mb
    fresh_load = statistics.median(r["after_load_mb"] for r in fresh_runs)
    fresh_generate = statistics.median(r["after_generate_mb"] for r in fresh_runs)
    return {
        "switch_ms": switch.duration_ms,
        "rss_before_switch_mb": before,
        "rss_after_switch_mb": after_switch,
        "rss_after_switch_and_generate_mb": after_generate,
        "fresh_after_load_mb": fresh_load,
        "fresh_after_generate_mb": fresh_generate,
        "fresh_runs": fresh_runs,
        "after_switch_vs_fresh": after_switch / fresh_load,
        "after_generate_vs_fresh": after_generate / fresh_generate,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="sd15", help="comma-separated: sd15, sdxl (default sd15)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--work", type=Path, help="where the files go (default: a temp dir, removed)")
    parser.add_argument("--no-switch", action="store_true", help="skip the base-model switch measurement")
    parser.add_argument("--json", type=Path, help="also write the figures as JSON")
    parser.add_argument(
        "--dtype",
        choices=["fp16", "fp32"],
        default="fp16",
        help="load as: fp16 (the files' own dtype: mapped, read as used) or fp32 (converted: read whole)",
    )
    args = parser.parse_args()
    global DTYPE
    DTYPE = args.dtype
    tmp = None if args.work else tempfile.TemporaryDirectory(prefix="spatiora-bench-")
    work = args.work or Path(tmp.name)
    work.mkdir(parents=True, exist_ok=True)
    results: dict = {"load": []}
    for arch in args.arch.split(","):
        row = bench_load(arch.strip(), work, args.runs)
        results["load"].append(row)
        print(
            f"{row['arch']} ({row['dtype']}): single file {row['single_file_median_s']:.2f} s vs diffusers folder "
            f"{row['folder_median_s']:.2f} s (ratio {row['ratio_single_over_folder']:.2f}; median of {row['runs']}); "
            f"first load with hashing {row['first_load_with_hash_s']:.2f} s; {row['tensors_compared']} tensors "
            f"compared, {row['tensors_different']} different"
        )
    if not args.no_switch:
        s = bench_switch(work)
        results["switch"] = s
        print(
            f"switch SD 1.5 A -> B: {s['switch_ms'] / 1000:.2f} s; RSS {s['rss_before_switch_mb']:.0f} -> "
            f"{s['rss_after_switch_mb']:.0f} MB after the switch, a fresh process on B {s['fresh_after_load_mb']:.0f} MB "
            f"({(s['after_switch_vs_fresh'] - 1) * 100:+.1f}%); after one image each "
            f"{s['rss_after_switch_and_generate_mb']:.0f} vs {s['fresh_after_generate_mb']:.0f} MB "
            f"({(s['after_generate_vs_fresh'] - 1) * 100:+.1f}%)"
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
