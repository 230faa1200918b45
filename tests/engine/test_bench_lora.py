"""`spatiora bench lora` on the demo UNet: it runs end to end and writes every figure."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
KEYS = (
    "naive_ms",
    "resident_ms",
    "diffusers_set_adapters_ms",
    "ram_cache_ms",
    "cold_ms",
    "fused_switch_ms",
    "rss_growth_pct",
    "step_ms_no_adapter",
    "step_ms_unmerged",
    "step_ms_fused",
)


def test_bench_lora_on_the_demo_unet_prints_and_writes_every_figure(cache_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "lora.json"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "spatiora_tui",
            "bench",
            "lora",
            "--arch",
            "demo",
            "--rank",
            "4",
            "--switches",
            "6",
            "--leak-switches",
            "12",
            "--fuse-cycles",
            "5",
            "--step-side",
            "64",
            "--device",
            "cpu",
            "--json",
            str(out),
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr
    assert "resident switch" in run.stdout and "vs naive" in run.stdout
    figures = json.loads(out.read_text())
    assert all(isinstance(figures[k], (int, float)) for k in KEYS)
    assert all(figures[k] > 0 for k in KEYS if k != "rss_growth_pct")
    assert figures["resident_ms"] < figures["naive_ms"], "a resident switch beats reloading the file"
    assert figures["fuse_max_abs_diff"] == 0.0, "fused mode restores the base weights exactly"
    assert figures["leak_switches"] == 12 and figures["fuse_cycles"] == 5
    assert set(figures["cold_phases_ms"]) >= {"read", "parse", "copy", "activate"}
    assert "copy" in figures["ram_cache_phases_ms"], "the RAM-cache switches are in-place copies"
    assert set(figures["fused_phases_ms"]) >= {"fuse", "unfuse"}
    assert "in-place from RAM" in figures["paths"]
    tails = figures["p95_ms"]
    assert set(tails) == {"naive", "resident", "diffusers_set_adapters", "ram_cache", "cold", "fused"}
    assert tails["resident"] >= figures["resident_ms"] and tails["cold"] >= figures["cold_ms"]
    assert "p95 ms" in run.stdout
    assert figures["step_side"] == 64 and "one step at 64x64 (CFG)" in run.stdout


def test_p95_is_the_95th_percentile_or_the_largest_of_few() -> None:
    from spatiora_tui.bench.lora import p95

    assert p95([float(v) for v in range(1, 101)]) == 95.0
    assert p95([float(v) for v in range(1, 21)]) == 19.0
    assert p95([3.0, 1.0, 2.0]) == 3.0


@pytest.mark.parametrize("args", [["--switches", "1"], ["--step-side", "100"]])
def test_bench_lora_refuses_bad_arguments_in_one_line(args: list[str]) -> None:
    run = subprocess.run(
        [sys.executable, "-m", "spatiora_tui", "bench", "lora", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 2 and args[0] in run.stderr and "Traceback" not in run.stderr
