"""The GPU check's dry run: every section of benchmarks/gpu_check.py on the CPU with the demo
model, so the script a lent GPU runs once has not rotted in between (its first dry run found
benchmarks/ui_cost.py importing messages that no longer existed)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.gpu_check import SECTIONS

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(660)  # above the run's own 600 s, which a busy machine can near
def test_the_gpu_checks_dry_run_runs_every_section_and_writes_its_report(tmp_path: Path) -> None:
    out = tmp_path / "report"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.gpu_check",
            "--dry-run",
            "--jobs",
            "2",
            "--out",
            str(out),
            "--budget",
            "540",
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    report = json.loads((out / "gpu-check.json").read_text(encoding="utf-8"))
    statuses = {name: entry["status"] for name, entry in report["sections"].items()}
    assert statuses == {section.name: "ok" for section in SECTIONS}, (out / "gpu-check.log").read_text()
    assert list(statuses) == [section.name for section in SECTIONS], "the report keeps the sections' order"
    assert proc.returncode == 0, proc.stdout + proc.stderr
    gauge = report["sections"]["gauge"]["figures"]
    assert gauge["oom"]["outcome"] == "EngineOOM" and gauge["oom"]["next_request_ok"] is True
    assert [row["stage"] for row in gauge["gauge"]][:3] == ["before load", "model loaded", "adapter active"]
    assert report["sections"]["lora"]["figures"]["switches"] == 5
    for mode in ("reduce-overhead", "default"):  # traced with the eager backend, compiled by inductor
        compiled = report["sections"][f"compile-{mode}"]["figures"]
        assert compiled["compiled_graphs_added_by_switches_and_images"] == 0
        assert "in-place from RAM" in compiled["compiled_switch_ms"] and "resident" in compiled["compiled_switch_ms"]
        assert all(diff["max_abs"] <= 1 for diff in compiled["compiled_vs_eager"].values())
        assert "compiling the UNet for 64x64" in compiled["compiled_first_notices"][0]
    for mode in ("model", "group", "sequential"):  # each compared with mode none's images, run before it
        assert "first_vs_none" in report["sections"][f"offload-{mode}"]["figures"], mode
    markdown = (out / "gpu-check.md").read_text(encoding="utf-8")
    assert "dry run on the CPU" in markdown and all(f"## {s.name}:" in markdown for s in SECTIONS)
